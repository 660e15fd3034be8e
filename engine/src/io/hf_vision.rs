//! CLIP and SigLIP vision towers from a Hugging Face folder (`CLIPVisionModel`,
//! `SiglipVisionModel`, or the vision half of a `CLIPModel` / `SiglipModel`), read by their HF
//! tensor names into [`VisionEncoder`].
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
use super::safetensors::TensorFolder;
use crate::config::{VisionAct, VisionConfig};
use crate::model::VisionEncoder;
use crate::model::init::Rng;
use crate::{Error, Result};

/// The tower families this importer knows; they differ in the switches of [`VisionConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tower {
    /// OpenAI CLIP: CLS token, no patch bias, a LayerNorm before the first block.
    Clip,
    /// SigLIP: no CLS token, patch bias, no LayerNorm before the blocks.
    Siglip,
}

/// OpenAI CLIP's pixel normalisation (transformers' `OPENAI_CLIP_MEAN` / `_STD`).
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

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
}

impl Default for FeatureSelect {
    /// LLaVA's and TinyLLaVA's default: the penultimate block, patches only.
    fn default() -> Self {
        FeatureSelect {
            layer: -2,
            drop_first: None,
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
        other => {
            return Err(refuse(format!(
                "model_type {other:?} is not a vision tower this importer knows \
                 (clip_vision_model, siglip_vision_model)"
            )));
        }
    };
    let (patch, act, eps) = match tower {
        Tower::Clip => (32, "quick_gelu", 1e-5),
        Tower::Siglip => (16, "gelu_pytorch_tanh", 1e-6),
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
    let (image_size, patch_size) = (c.image_size.unwrap_or(224), c.patch_size.unwrap_or(patch));
    if patch_size == 0 || !image_size.is_multiple_of(patch_size) {
        return Err(refuse(format!(
            "image_size {image_size} is not a multiple of patch_size {patch_size}"
        )));
    }
    let (mean, std) = match tower {
        Tower::Clip => (CLIP_MEAN, CLIP_STD),
        Tower::Siglip => ([0.5; 3], [0.5; 3]),
    };
    let config = VisionConfig {
        image_size,
        patch_size,
        hidden: c.hidden_size.unwrap_or(768),
        layers: cut as usize,
        heads: c.num_attention_heads.unwrap_or(12),
        mlp_hidden: c.intermediate_size.unwrap_or(3072),
        mean,
        std,
        drop_cls: select.drop_first.unwrap_or(tower == Tower::Clip),
        layer_norm_eps: c.layer_norm_eps.unwrap_or(eps),
        class_token: tower == Tower::Clip,
        patch_bias: tower == Tower::Siglip,
        pre_norm: tower == Tower::Clip,
        post_norm: false,
        act,
    };
    if config.heads == 0 || !config.hidden.is_multiple_of(config.heads) {
        return Err(refuse(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            config.hidden, config.heads
        )));
    }
    Ok((config, tower))
}

/// Our encoder's parameter path to the name under `prefix` (`vision_model.` in a tower's own
/// folder) and the layout it is stored in.
pub(crate) fn vision_name(prefix: &str, path: &str) -> (String, Layout) {
    let hf = |rest: &str| format!("{prefix}{rest}");
    // burn's LayerNorm says gamma/beta where PyTorch says weight/bias
    let renamed = |p: &str| {
        p.strip_suffix(".gamma")
            .map(|s| format!("{s}.weight"))
            .or_else(|| p.strip_suffix(".beta").map(|s| format!("{s}.bias")))
            .unwrap_or_else(|| p.to_string())
    };
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
pub(crate) fn load_vision_named(
    config: &VisionConfig,
    folder: &mut TensorFolder,
    prefix: &str,
    device: &Device,
    report: &mut LoadReport,
) -> VisionEncoder {
    let encoder = VisionEncoder::new(config, &mut Rng::new(0), device);
    load_named(encoder, folder, &|p| vision_name(prefix, p), device, report)
}

/// Tensors of a tower's checkpoint the cut encoder rightly leaves unused: blocks past the
/// feature layer, the final norm, SigLIP's pooling head, buffers.
pub(crate) fn is_unused_tower_part(name: &str, prefix: &str, config: &VisionConfig) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    if let Some(i) = layer_index(rest, "encoder.layers.") {
        return i >= config.layers;
    }
    rest.starts_with("post_layernorm.")
        || rest.starts_with("head.")
        || rest == "embeddings.position_ids"
}

/// Per-channel mean/std from the folder's `preprocessor_config.json`, when it has one.
fn preprocessor_norm(dir: &Path) -> Result<Option<([f32; 3], [f32; 3])>> {
    let path = dir.join("preprocessor_config.json");
    if !path.exists() {
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct Pre {
        image_mean: Option<[f32; 3]>,
        image_std: Option<[f32; 3]>,
    }
    let text = crate::error::read_to_string(&path)?;
    let p: Pre = serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
    Ok(p.image_mean.zip(p.image_std))
}

/// Reads a tower's config (and pixel normalisation) from its folder.
pub fn hf_vision_config(dir: &Path, select: FeatureSelect) -> Result<(VisionConfig, Tower)> {
    let path = dir.join("config.json");
    let text = crate::error::read_to_string(&path)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
    let (mut config, tower) = vision_config_from_json(&value, &path, "", select)?;
    if let Some((mean, std)) = preprocessor_norm(dir)? {
        config.mean = mean;
        config.std = std;
    }
    Ok((config, tower))
}

/// Loads a CLIP/SigLIP tower from a HF folder, cut at `select.layer`.
pub fn load_hf_vision(dir: &Path, select: FeatureSelect, device: &Device) -> Result<VisionEncoder> {
    let (config, _) = hf_vision_config(dir, select)?;
    let mut folder = TensorFolder::read(dir)?;
    let prefix = tower_prefix(&folder, "");
    let mut report = LoadReport::default();
    let encoder = load_vision_named(&config, &mut folder, &prefix, device, &mut report);
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
