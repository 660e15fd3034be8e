//! A whole multimodal checkpoint written as a transformers LLaVA folder: `config.json`
//! (`LlavaForConditionalGeneration`), `model.safetensors` in the layout transformers'
//! `save_pretrained` writes (`vision_tower.*`, `multi_modal_projector.*`,
//! `language_model.model.*`, `language_model.lm_head.weight`), and, with a tokenizer, what
//! `AutoProcessor` needs: `tokenizer.json` + `tokenizer_config.json`, the image processor's
//! `preprocessor_config.json` (LLaVA's, which pads, resizes and crops as
//! `VisionConfig::preprocess` says), `processor_config.json`, the chat template and
//! `generation_config.json`.
//!
//! What transformers' LLaVA can express: a CLIP, SigLIP or DINOv2 tower whose features are a
//! block's raw output (`vision_feature_layer = -1` on the tower cut where Condenser cut it), the
//! mlp2x_gelu projector, a Llama or Qwen2 decoder. Not expressible, and refused by name:
//! an encoder with a final LayerNorm on its features (`post_norm`, what Condenser's own encoders
//! have: LLaVA reads hidden states from before a tower's last norm), switch combinations that
//! are none of the three families, and MoE decoders.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::export::{hf_llm_config_json, hf_tensors, write_safetensors};
use super::hf_vision::{Tower, vision_name};
use super::params::{Layout, host_params};
use super::safetensors::HostTensor;
use crate::config::{Resample, Resize, VisionAct, VisionConfig};
use crate::data::TextTokenizer;
use crate::data::template::CHAT_TEMPLATE_JINJA;
use crate::model::Mllm;
use crate::{Error, Result};

/// The tower family transformers would build for `v`, or why there is none.
pub fn llava_tower(v: &VisionConfig) -> std::result::Result<Tower, String> {
    if v.post_norm {
        return Err(
            "the vision encoder ends with a LayerNorm on its features (post_norm), and \
                    transformers' LLaVA reads a tower's hidden states from before its final \
                    norm: Condenser's own encoders cannot be expressed; an imported CLIP, \
                    SigLIP or DINOv2 tower can"
                .into(),
        );
    }
    match (
        v.class_token,
        v.patch_bias,
        v.pre_norm,
        v.layer_scale,
        v.act,
    ) {
        (true, false, true, false, VisionAct::QuickGelu | VisionAct::Gelu) => Ok(Tower::Clip),
        (false, true, false, false, VisionAct::GeluTanh | VisionAct::Gelu) => Ok(Tower::Siglip),
        (true, true, false, true, VisionAct::Gelu) if v.mlp_hidden.is_multiple_of(v.hidden) => {
            Ok(Tower::Dinov2)
        }
        (true, true, false, true, VisionAct::Gelu) => Err(format!(
            "DINOv2's config gives the MLP width as a whole multiple of the hidden size; \
             {} is not a multiple of {}",
            v.mlp_hidden, v.hidden
        )),
        other => Err(format!(
            "no transformers vision tower has this encoder's switches (class_token, patch_bias, \
             pre_norm, layer_scale, act) = {other:?}: CLIP, SigLIP and DINOv2 are expressible"
        )),
    }
}

fn act_name(a: VisionAct) -> &'static str {
    match a {
        VisionAct::Gelu => "gelu",
        VisionAct::GeluTanh => "gelu_pytorch_tanh",
        VisionAct::QuickGelu => "quick_gelu",
    }
}

/// The tower's transformers config.
fn vision_config_json(v: &VisionConfig, tower: Tower) -> Value {
    let common = json!({
        "hidden_size": v.hidden,
        "num_hidden_layers": v.layers,
        "num_attention_heads": v.heads,
        "image_size": v.image_size,
        "patch_size": v.patch_size,
        "num_channels": 3,
        "hidden_act": act_name(v.act),
        "layer_norm_eps": v.layer_norm_eps,
    });
    let mut c = common.as_object().cloned().unwrap_or_default();
    let extra = match tower {
        Tower::Clip => {
            json!({"model_type": "clip_vision_model", "intermediate_size": v.mlp_hidden})
        }
        Tower::Siglip => json!({"model_type": "siglip_vision_model",
                                "intermediate_size": v.mlp_hidden, "vision_use_head": false}),
        Tower::Dinov2 => json!({"model_type": "dinov2",
                                "mlp_ratio": v.mlp_hidden / v.hidden,
                                "layerscale_value": 1.0, "use_swiglu_ffn": false,
                                "qkv_bias": true}),
    };
    c.extend(extra.as_object().cloned().unwrap_or_default());
    Value::Object(c)
}

/// An encoder parameter in transformers' layout (the inverse of the import's conversion).
fn to_hf(t: HostTensor, layout: Layout, hf_shape: Option<Vec<usize>>) -> HostTensor {
    match layout {
        Layout::Same => t,
        Layout::Transposed => t.transposed(),
        Layout::Conv | Layout::Reshaped => {
            let t = if layout == Layout::Conv {
                t.transposed()
            } else {
                t
            };
            HostTensor {
                shape: hf_shape.unwrap_or(t.shape.clone()),
                values: t.values,
            }
        }
    }
}

/// Every tensor of the LLaVA checkpoint, by name.
fn llava_tensors(model: &Mllm, tower: Tower) -> BTreeMap<String, HostTensor> {
    let v = &model.config.vision;
    let (c, p, n) = (v.hidden, v.patch_size, v.num_positions());
    let mut out = BTreeMap::new();
    for (path, t) in host_params(&model.vision) {
        let (name, layout) = vision_name(tower, "vision_tower.", &path);
        let shape = match (path.as_str(), tower) {
            ("patch_embedding.weight", _) => Some(vec![c, 3, p, p]),
            ("class_embedding", Tower::Dinov2) => Some(vec![1, 1, c]),
            ("class_embedding", _) => Some(vec![c]),
            ("position_embedding", Tower::Dinov2) => Some(vec![1, n, c]),
            ("position_embedding", _) => Some(vec![n, c]),
            _ => None,
        };
        out.insert(name, to_hf(t, layout, shape));
    }
    // parts transformers' tower has that LLaVA's features never pass through: the final norm
    // (identity) and DINOv2's mask token (masking is off)
    let ones = || HostTensor {
        shape: vec![c],
        values: vec![1.0; c],
    };
    let zeros = |shape: Vec<usize>| HostTensor {
        values: vec![0.0; shape.iter().product()],
        shape,
    };
    let norm = match tower {
        Tower::Dinov2 => "vision_tower.layernorm",
        _ => "vision_tower.post_layernorm",
    };
    out.insert(format!("{norm}.weight"), ones());
    out.insert(format!("{norm}.bias"), zeros(vec![c]));
    if tower == Tower::Dinov2 {
        out.insert(
            "vision_tower.embeddings.mask_token".into(),
            zeros(vec![1, c]),
        );
    }
    for (path, t) in host_params(&model.projector) {
        let t = if path.ends_with(".weight") {
            t.transposed()
        } else {
            t
        };
        out.insert(format!("multi_modal_projector.{path}"), t);
    }
    for (name, t) in hf_tensors(&model.llm) {
        let name = match name.strip_prefix("model.") {
            Some(rest) => format!("language_model.model.{rest}"),
            None => format!("language_model.{name}"),
        };
        out.insert(name, t);
    }
    out
}

/// The image processor's config: LLaVA's processor pads (optionally), resizes, crops, rescales
/// and normalises, which covers every [`crate::config::Preprocess`].
fn preprocessor_json(v: &VisionConfig) -> Value {
    let pre = &v.preprocess;
    let s = v.image_size;
    let (size, crop) = match pre.resize {
        Resize::Squash => (json!({"height": s, "width": s}), false),
        Resize::ShortestEdge => (json!({"shortest_edge": pre.edge(s)}), true),
    };
    json!({
        "image_processor_type": "LlavaImageProcessor",
        "do_resize": true,
        "size": size,
        "resample": match pre.resample { Resample::Bilinear => 2, Resample::Bicubic => 3 },
        "do_center_crop": crop,
        "crop_size": {"height": s, "width": s},
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": v.mean,
        "image_std": v.std,
        "do_pad": pre.pad_to_square,
        "do_convert_rgb": true,
    })
}

fn write_json(dir: &Path, name: &str, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    crate::error::write_atomic(dir.join(name), text.as_bytes())
}

/// Writes `model` to `dir` as a transformers LLaVA folder. `image_token` is the id the
/// decoder's input holds at image positions; with `tokenizer`, the tokenizer and processor
/// files are written too. Returns the tower family it was written as.
pub fn export_hf_llava(
    model: &Mllm,
    image_token: u32,
    tokenizer: Option<&TextTokenizer>,
    dir: &Path,
) -> Result<Tower> {
    let cfg = &model.config;
    let refuse = |message: String| Error::Checkpoint {
        path: dir.into(),
        message,
    };
    let tower = llava_tower(&cfg.vision).map_err(refuse)?;
    if cfg.llm.moe.is_some() {
        return Err(refuse(
            "an MoE decoder has no transformers LLaVA counterpart: export its dense base".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_safetensors(dir, llava_tensors(model, tower))?;
    let v = &cfg.vision;
    let strategy = if v.drop_cls { "default" } else { "full" };
    write_json(
        dir,
        "config.json",
        &json!({
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava",
            "image_token_index": image_token,
            "image_seq_length": v.num_visual_tokens(),
            "projector_hidden_act": "gelu",
            "multimodal_projector_bias": true,
            "vision_feature_layer": -1,
            "vision_feature_select_strategy": strategy,
            "tie_word_embeddings": cfg.llm.tie_embeddings,
            "vision_config": vision_config_json(v, tower),
            "text_config": hf_llm_config_json(&cfg.llm),
        }),
    )?;
    let Some(tok) = tokenizer else {
        return Ok(tower);
    };
    crate::error::write_atomic(dir.join("tokenizer.json"), tok.to_json()?.as_bytes())?;
    let s = tok.special;
    let name = |id: u32| tok.id_to_token(id);
    write_json(
        dir,
        "tokenizer_config.json",
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": name(s.bos),
            "eos_token": name(s.end),
            "pad_token": name(s.pad),
            "model_max_length": cfg.llm.max_positions,
            "add_bos_token": false,
            "chat_template": CHAT_TEMPLATE_JINJA,
        }),
    )?;
    write_json(dir, "preprocessor_config.json", &preprocessor_json(v))?;
    write_json(
        dir,
        "processor_config.json",
        &json!({
            "processor_class": "LlavaProcessor",
            "patch_size": v.patch_size,
            "vision_feature_select_strategy": strategy,
            "num_additional_image_tokens": usize::from(v.class_token),
            "image_token": name(s.image),
        }),
    )?;
    crate::error::write_atomic(
        dir.join("chat_template.jinja"),
        CHAT_TEMPLATE_JINJA.as_bytes(),
    )?;
    let mut stops = tok.stop_ids();
    stops.retain(|&i| (i as usize) < cfg.llm.vocab_size);
    write_json(
        dir,
        "generation_config.json",
        &json!({
            "bos_token_id": s.bos,
            "eos_token_id": stops,
            "pad_token_id": s.pad,
            "do_sample": false,
        }),
    )?;
    Ok(tower)
}
