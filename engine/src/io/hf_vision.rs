//! CLIP, SigLIP and DINOv2 vision towers from a Hugging Face folder (`CLIPVisionModel`,
//! `SiglipVisionModel`, `Dinov2Model`, or the vision half of a `CLIPModel` / `SiglipModel`), or
//! a DINOv2 backbone from an ONNX file (see [`super::onnx_dinov2`]), read by their HF tensor
//! names into [`VisionEncoder`]. A tower may be imported for another input size than it was
//! trained at: its position embeddings are then resized as transformers does
//! ([`super::positions`]).
//!
//! Multimodal models do not use a tower's last output: LLaVA and TinyLLaVA take
//! `hidden_states[vision_feature_layer]` (the penultimate block's raw output by default), before
//! any final LayerNorm. The tower is therefore imported cut at that layer, without the final
//! norm, so our encoder's output is exactly what the projector saw in the original model and no
//! compute is spent on blocks whose output is thrown away.

use std::path::Path;

use burn::prelude::*;
use serde::Deserialize;

use super::params::{Layout, LoadReport, layer_index, load_named};
use super::positions::resize_positions;
use super::safetensors::TensorFolder;
use crate::config::{Preprocess, Resample, Resize, VisionAct, VisionConfig};
use crate::model::VisionEncoder;
use crate::rng::Rng;
use crate::{Error, Result};

/// The tower families this importer knows; they differ in the switches of [`VisionConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tower {
    /// OpenAI CLIP: CLS token, no patch bias, a LayerNorm before the first block.
    Clip,
    /// SigLIP: no CLS token, patch bias, no LayerNorm before the blocks.
    Siglip,
    /// DINOv2: CLS token, patch bias, layer scale, exact GELU, other HF names.
    Dinov2,
}

impl Tower {
    /// The family's image processing when the folder has no `preprocessor_config.json`
    /// (transformers' defaults for its processor), at an input of `image_size`: CLIP resizes
    /// the shorter side to the input and crops the centre, DINOv2 resizes it to 256/224 of the
    /// input first, SigLIP resizes to the square; all bicubic.
    pub fn preprocess(self, image_size: usize) -> Preprocess {
        match self {
            Tower::Clip => Preprocess {
                resize: Resize::ShortestEdge,
                shortest_edge: Some(image_size),
                resample: Resample::Bicubic,
                pad_to_square: false,
            },
            Tower::Dinov2 => Preprocess {
                resize: Resize::ShortestEdge,
                shortest_edge: Some((256 * image_size + 112) / 224),
                resample: Resample::Bicubic,
                pad_to_square: false,
            },
            Tower::Siglip => Preprocess {
                resample: Resample::Bicubic,
                ..Preprocess::default()
            },
        }
    }
}

/// OpenAI CLIP's pixel normalisation (transformers' `OPENAI_CLIP_MEAN` / `_STD`).
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
/// ImageNet's pixel normalisation, DINOv2's.
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The keys of a HF vision config this importer reads. Absent keys take the defaults of the
/// tower's transformers config class (older `save_pretrained` wrote only non-default values).
#[derive(Debug, Deserialize)]
struct HfVisionConfig {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_channels: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    /// DINOv2 gives its MLP width as a ratio of the hidden size.
    mlp_ratio: Option<f64>,
    /// DINOv2-g's SwiGLU MLP, which the encoder does not have.
    use_swiglu_ffn: Option<bool>,
}

/// How a multimodal model uses the tower: which hidden state, and whether CLS goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureSelect {
    /// Index into HF's `hidden_states` (0 = the embeddings, `L` = the last block; negative
    /// counts from the end, -1 = the last block).
    pub layer: i64,
    /// Drop the first token before the projector: LLaVA's `default` / TinyLLaVA's `patch`
    /// strategy, which slice it off whatever it is (on a SigLIP tower, which has no CLS, that
    /// is the first patch, and an imported model must do the same to give the same numbers).
    /// `None`: drop the CLS token when the tower has one, nothing otherwise.
    pub drop_first: Option<bool>,
    /// Input size in pixels, when not the one the tower was trained at: the position
    /// embeddings are resized to the new patch grid. `None`: the tower's own.
    pub image_size: Option<usize>,
}

impl Default for FeatureSelect {
    /// LLaVA's and TinyLLaVA's default: the penultimate block, patches only, the tower's size.
    fn default() -> Self {
        FeatureSelect {
            layer: -2,
            drop_first: None,
            image_size: None,
        }
    }
}

/// A vision tower's config and family from a HF config object: a vision config, or a
/// `clip`/`siglip` config holding one under `vision_config`. `key` names where the object sat
/// (`"vision_config."` inside a LLaVA config) for the errors.
pub(crate) fn vision_config_from_json(
    value: &serde_json::Value,
    path: &Path,
    key: &str,
    select: FeatureSelect,
) -> Result<(VisionConfig, Tower)> {
    let refuse = |message: String| Error::Checkpoint {
        path: path.into(),
        message: format!("{key}{message}"),
    };
    let top_type = value.get("model_type").and_then(|v| v.as_str());
    let (value, key) = match (top_type, value.get("vision_config")) {
        (Some("clip" | "siglip"), Some(inner)) => (inner, format!("{key}vision_config.")),
        _ => (value, key.to_string()),
    };
    let c: HfVisionConfig =
        serde_json::from_value(value.clone()).map_err(|e| Error::Checkpoint {
            path: path.into(),
            message: format!("{key}{e}"),
        })?;
    let tower = match c.model_type.as_deref().or(top_type) {
        Some("clip_vision_model" | "clip") => Tower::Clip,
        Some("siglip_vision_model" | "siglip") => Tower::Siglip,
        Some("dinov2") => Tower::Dinov2,
        other => {
            return Err(refuse(format!(
                "model_type {other:?} is not a vision tower this importer knows \
                 (clip_vision_model, siglip_vision_model, dinov2)"
            )));
        }
    };
    if c.use_swiglu_ffn == Some(true) {
        return Err(refuse(
            "use_swiglu_ffn: a SwiGLU vision MLP (DINOv2-g) is not supported".into(),
        ));
    }
    let (patch, act, eps) = match tower {
        Tower::Clip => (32, "quick_gelu", 1e-5),
        Tower::Siglip => (16, "gelu_pytorch_tanh", 1e-6),
        Tower::Dinov2 => (14, "gelu", 1e-6),
    };
    let act = match c.hidden_act.as_deref().unwrap_or(act) {
        "quick_gelu" => VisionAct::QuickGelu,
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => VisionAct::GeluTanh,
        "gelu" => VisionAct::Gelu,
        other => {
            return Err(refuse(format!(
                "hidden_act {other:?}: the vision MLP supports quick_gelu, gelu, \
                 gelu_pytorch_tanh"
            )));
        }
    };
    if let Some(ch) = c.num_channels
        && ch != 3
    {
        return Err(refuse(format!(
            "num_channels {ch}: only RGB (3) towers are supported"
        )));
    }
    let layers = c.num_hidden_layers.unwrap_or(12);
    let l = layers as i64;
    let cut = if select.layer < 0 {
        l + 1 + select.layer
    } else {
        select.layer
    };
    if !(0..=l).contains(&cut) {
        return Err(refuse(format!(
            "vision_feature_layer {} is outside this tower's hidden states (-{} ..= {l})",
            select.layer,
            l + 1
        )));
    }
    let patch_size = c.patch_size.unwrap_or(patch);
    let image_size = select.image_size.or(c.image_size).unwrap_or(224);
    if patch_size == 0 || !image_size.is_multiple_of(patch_size) {
        return Err(refuse(format!(
            "image_size {image_size} is not a multiple of patch_size {patch_size}"
        )));
    }
    let (mean, std) = match tower {
        Tower::Clip => (CLIP_MEAN, CLIP_STD),
        Tower::Siglip => ([0.5; 3], [0.5; 3]),
        Tower::Dinov2 => (IMAGENET_MEAN, IMAGENET_STD),
    };
    let hidden = c.hidden_size.unwrap_or(768);
    let mlp_hidden = c
        .intermediate_size
        .or(c.mlp_ratio.map(|r| (hidden as f64 * r).round() as usize))
        .unwrap_or(if tower == Tower::Dinov2 {
            4 * hidden
        } else {
            3072
        });
    let class_token = tower != Tower::Siglip;
    let config = VisionConfig {
        image_size,
        patch_size,
        hidden,
        layers: cut as usize,
        heads: c.num_attention_heads.unwrap_or(12),
        mlp_hidden,
        mean,
        std,
        preprocess: tower.preprocess(image_size),
        drop_cls: select.drop_first.unwrap_or(class_token),
        layer_norm_eps: c.layer_norm_eps.unwrap_or(eps),
        class_token,
        patch_bias: tower != Tower::Clip,
        pre_norm: tower == Tower::Clip,
        post_norm: false,
        act,
        layer_scale: tower == Tower::Dinov2,
    };
    if config.heads == 0 || !config.hidden.is_multiple_of(config.heads) {
        return Err(refuse(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            config.hidden, config.heads
        )));
    }
    Ok((config, tower))
}

/// burn's LayerNorm says gamma/beta where PyTorch says weight/bias.
fn torch_norm_name(p: &str) -> String {
    p.strip_suffix(".gamma")
        .map(|s| format!("{s}.weight"))
        .or_else(|| p.strip_suffix(".beta").map(|s| format!("{s}.bias")))
        .unwrap_or_else(|| p.to_string())
}

/// Our encoder's parameter path to the name under `prefix` (`vision_model.` in a tower's own
/// folder) and the layout it is stored in.
pub(crate) fn vision_name(tower: Tower, prefix: &str, path: &str) -> (String, Layout) {
    if tower == Tower::Dinov2 {
        return dinov2_name(prefix, path);
    }
    let hf = |rest: &str| format!("{prefix}{rest}");
    let renamed = torch_norm_name;
    match path {
        "patch_embedding.weight" => (hf("embeddings.patch_embedding.weight"), Layout::Conv),
        "patch_embedding.bias" => (hf("embeddings.patch_embedding.bias"), Layout::Same),
        "class_embedding" => (hf("embeddings.class_embedding"), Layout::Reshaped),
        "position_embedding" => (hf("embeddings.position_embedding.weight"), Layout::Reshaped),
        p if p.starts_with("layers.") => {
            let layout = if p.ends_with("_proj.weight")
                || p.ends_with("fc1.weight")
                || p.ends_with("fc2.weight")
            {
                Layout::Transposed
            } else {
                Layout::Same
            };
            (hf(&format!("encoder.{}", renamed(p))), layout)
        }
        p => (hf(&renamed(p)), Layout::Same),
    }
}

/// [`vision_name`] for DINOv2's spelling (`encoder.layer.N.attention.attention.query`, ...).
fn dinov2_name(prefix: &str, path: &str) -> (String, Layout) {
    let hf = |rest: &str| format!("{prefix}{rest}");
    match path {
        "patch_embedding.weight" => (
            hf("embeddings.patch_embeddings.projection.weight"),
            Layout::Conv,
        ),
        "patch_embedding.bias" => (
            hf("embeddings.patch_embeddings.projection.bias"),
            Layout::Same,
        ),
        "class_embedding" => (hf("embeddings.cls_token"), Layout::Reshaped),
        "position_embedding" => (hf("embeddings.position_embeddings"), Layout::Reshaped),
        p if p.starts_with("layers.") => {
            let rest = &p["layers.".len()..];
            let (index, part) = rest.split_once('.').unwrap_or((rest, ""));
            let part = torch_norm_name(part);
            let (name, layout) = match part.as_str() {
                "layer_scale1" | "layer_scale2" => (format!("{part}.lambda1"), Layout::Same),
                p => {
                    let renamed = [
                        ("layer_norm1.", "norm1."),
                        ("layer_norm2.", "norm2."),
                        ("self_attn.q_proj.", "attention.attention.query."),
                        ("self_attn.k_proj.", "attention.attention.key."),
                        ("self_attn.v_proj.", "attention.attention.value."),
                        ("self_attn.out_proj.", "attention.output.dense."),
                    ]
                    .iter()
                    .find_map(|(ours, theirs)| p.strip_prefix(ours).map(|r| format!("{theirs}{r}")))
                    .unwrap_or_else(|| p.to_string());
                    let layout = if renamed.ends_with(".weight") && !renamed.starts_with("norm") {
                        Layout::Transposed
                    } else {
                        Layout::Same
                    };
                    (renamed, layout)
                }
            };
            (hf(&format!("encoder.layer.{index}.{name}")), layout)
        }
        p => (
            hf(&torch_norm_name(p).replace("post_layernorm", "layernorm")),
            Layout::Same,
        ),
    }
}

/// Where a tower's modules sit under `base` (`""` for a tower's own folder): transformers 4
/// (and checkpoints made with it: LLaVA, TinyLLaVA, SigLIP/CLIP releases) nests them in
/// `vision_model.`, transformers 5 saves them at the tower's top.
pub(crate) fn tower_prefix(folder: &TensorFolder, base: &str) -> String {
    let nested = format!("{base}vision_model.");
    let probe = format!("{nested}embeddings.patch_embedding.weight");
    if folder.tensors.contains_key(&probe) {
        nested
    } else {
        base.to_string()
    }
}

/// The encoder of `config` filled from `folder` under `prefix`; problems go to `report`.
/// Stored position embeddings for another square grid are resized to the config's first.
pub(crate) fn load_vision_named(
    config: &VisionConfig,
    tower: Tower,
    folder: &mut TensorFolder,
    prefix: &str,
    device: &Device,
    report: &mut LoadReport,
) -> VisionEncoder {
    let (positions, _) = vision_name(tower, prefix, "position_embedding");
    if let Some((stored, _)) = folder.tensors.get_mut(&positions) {
        let rows = stored.values.len() / config.hidden.max(1);
        if rows != config.num_positions()
            && let Some(resized) =
                resize_positions(stored, usize::from(config.class_token), config.grid())
        {
            log::info!(
                "{positions}: {rows} positions resized to {} ({} px)",
                config.num_positions(),
                config.image_size
            );
            *stored = resized;
        }
    }
    let encoder = VisionEncoder::new(config, &mut Rng::new(0), device);
    load_named(
        encoder,
        folder,
        &|p| vision_name(tower, prefix, p),
        device,
        report,
    )
}

/// Tensors of a tower's checkpoint the cut encoder rightly leaves unused: blocks past the
/// feature layer, the final norm, SigLIP's pooling head, buffers.
pub(crate) fn is_unused_tower_part(name: &str, prefix: &str, config: &VisionConfig) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    if let Some(i) =
        layer_index(rest, "encoder.layers.").or_else(|| layer_index(rest, "encoder.layer."))
    {
        return i >= config.layers;
    }
    rest.starts_with("post_layernorm.")
        || rest.starts_with("layernorm.")
        || rest.starts_with("head.")
        || rest == "embeddings.position_ids"
        || rest == "embeddings.mask_token"
}

/// Reads a tower's config (and image processing) from its folder.
pub fn hf_vision_config(dir: &Path, select: FeatureSelect) -> Result<(VisionConfig, Tower)> {
    let path = dir.join("config.json");
    let text = crate::error::read_to_string(&path)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
    let (mut config, tower) = vision_config_from_json(&value, &path, "", select)?;
    apply_preprocessor(dir, &mut config)?;
    Ok((config, tower))
}

/// Takes the image processing of `dir`'s `preprocessor_config.json`, when it has one, over the
/// tower family's defaults: resize, crop and resampling scaled to the encoder's input size, and
/// the per-channel mean/std where the file gives them.
pub(crate) fn apply_preprocessor(dir: &Path, config: &mut VisionConfig) -> Result<()> {
    let path = dir.join("preprocessor_config.json");
    if !path.exists() {
        return Ok(());
    }
    let text = crate::error::read_to_string(&path)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
    let bad = |message: String| Error::Checkpoint {
        path: path.clone(),
        message,
    };
    let (pre, _crop) = Preprocess::from_hf(&value, config.image_size).map_err(bad)?;
    config.preprocess = pre;
    for (key, slot) in [
        ("image_mean", &mut config.mean),
        ("image_std", &mut config.std),
    ] {
        if let Some(v) = value.get(key) {
            *slot = serde_json::from_value::<[f32; 3]>(v.clone())
                .map_err(|e| bad(format!("{key}: expected three numbers ({e})")))?;
        }
    }
    Ok(())
}

/// Whether `path` names an ONNX file (a DINOv2 backbone) rather than a HF folder.
pub fn is_onnx(path: &Path) -> bool {
    super::detect(path) == Some(super::ModelFormat::Onnx)
}

/// Loads a CLIP/SigLIP/DINOv2 tower from a HF folder, or a DINOv2 backbone from an ONNX
/// file, cut at `select.layer`.
pub fn load_hf_vision(dir: &Path, select: FeatureSelect, device: &Device) -> Result<VisionEncoder> {
    let (config, tower, mut folder) = if is_onnx(dir) {
        let (value, folder) = super::onnx_dinov2::dinov2_from_onnx(dir)?;
        let (config, tower) = vision_config_from_json(&value, dir, "", select)?;
        (config, tower, folder)
    } else {
        let (config, tower) = hf_vision_config(dir, select)?;
        (config, tower, TensorFolder::read(dir)?)
    };
    let prefix = tower_prefix(&folder, "");
    let mut report = LoadReport::default();
    let encoder = load_vision_named(&config, tower, &mut folder, &prefix, device, &mut report);
    report.into_result(dir)?;
    // a CLIPModel / SiglipModel folder also holds the text tower and the projections
    super::hf_llm::warn_unused(&folder, &|k| {
        k.starts_with("text_model.")
            || [
                "logit_scale",
                "logit_bias",
                "text_projection.weight",
                "visual_projection.weight",
            ]
            .contains(&k)
            || is_unused_tower_part(k, &prefix, &config)
    });
    Ok(encoder)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A processor config that names no mean/std keeps the tower family's; one that names them
    /// wins; a bad one is named.
    #[test]
    fn preprocessor_config_overrides_only_what_it_names() {
        let dir = std::env::temp_dir().join(format!("condenser-pre-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let clip = serde_json::json!({"model_type": "clip_vision_model", "hidden_size": 32,
            "num_attention_heads": 4, "num_hidden_layers": 2, "image_size": 32, "patch_size": 8});
        let (mut config, _) =
            vision_config_from_json(&clip, &dir, "", FeatureSelect::default()).unwrap();
        let write = |v: serde_json::Value| {
            std::fs::write(dir.join("preprocessor_config.json"), v.to_string()).unwrap()
        };
        write(
            serde_json::json!({"size": {"shortest_edge": 32}, "do_center_crop": true,
                                 "crop_size": 32, "resample": 2}),
        );
        apply_preprocessor(&dir, &mut config).unwrap();
        assert_eq!(config.mean, CLIP_MEAN);
        assert_eq!(config.preprocess.resample, Resample::Bilinear);
        write(serde_json::json!({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.1, 0.2, 0.3]}));
        apply_preprocessor(&dir, &mut config).unwrap();
        assert_eq!((config.mean, config.std), ([0.5; 3], [0.1, 0.2, 0.3]));
        write(serde_json::json!({"image_mean": [0.5]}));
        let e = apply_preprocessor(&dir, &mut config)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("image_mean") && e.contains("three numbers"),
            "{e}"
        );
    }
}
