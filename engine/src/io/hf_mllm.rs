//! Whole multimodal checkpoints: transformers' `LlavaForConditionalGeneration` (both of its
//! tensor layouts: `language_model.model.*` before transformers 4.52, `model.language_model.*`
//! since) and TinyLLaVA Factory's `TinyLlavaForConditionalGeneration` (`connector._connector.0`,
//! `vision_tower._vision_tower.*`). The tower is cut at the configured feature layer (see
//! [`super::hf_vision`]), the mlp2x_gelu connector becomes our projector, the decoder loads as
//! in [`super::hf_llm`].

use std::path::Path;

use burn::prelude::*;

use super::hf_llm::{
    LlmNames, is_expected_extra, llm_config_from_json, load_llm_named, warn_unused,
};
use super::hf_vision::{
    FeatureSelect, Tower, is_unused_tower_part, load_vision_named, tower_prefix,
    vision_config_from_json,
};
use super::params::{Layout, LoadReport, load_named};
use super::safetensors::TensorFolder;
use crate::config::{MllmConfig, ProjectorConfig};
use crate::model::{Mllm, Projector};
use crate::rng::Rng;
use crate::{Error, Result};

/// The multimodal checkpoint families this importer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MllmFormat {
    /// transformers' LLaVA (`model_type = "llava"`).
    Llava,
    /// TinyLLaVA Factory (`model_type = "tinyllava"`).
    TinyLlava,
}

/// Where the three parts sit in the checkpoint.
#[derive(Debug, Clone)]
struct Names {
    vision: String,
    projector: [&'static str; 2],
    llm: LlmNames,
}

impl Names {
    fn of(format: MllmFormat, folder: &TensorFolder) -> Names {
        match format {
            MllmFormat::Llava
                if folder
                    .tensors
                    .keys()
                    .any(|k| k.starts_with("model.language_model.")) =>
            {
                Names {
                    vision: tower_prefix(folder, "model.vision_tower."),
                    projector: [
                        "model.multi_modal_projector.linear_1",
                        "model.multi_modal_projector.linear_2",
                    ],
                    llm: LlmNames {
                        body: "model.language_model.",
                        head: "lm_head.weight",
                    },
                }
            }
            MllmFormat::Llava => Names {
                vision: tower_prefix(folder, "vision_tower."),
                projector: [
                    "multi_modal_projector.linear_1",
                    "multi_modal_projector.linear_2",
                ],
                llm: LlmNames {
                    body: "language_model.model.",
                    head: "language_model.lm_head.weight",
                },
            },
            MllmFormat::TinyLlava => Names {
                vision: tower_prefix(folder, "vision_tower._vision_tower."),
                projector: ["connector._connector.0", "connector._connector.2"],
                llm: LlmNames {
                    body: "language_model.model.",
                    head: "language_model.lm_head.weight",
                },
            },
        }
    }

    /// A projector parameter path (`linear_1.weight`) to its checkpoint name.
    fn projector(&self, path: &str) -> (String, Layout) {
        let (layer, param) = path.split_once('.').unwrap_or((path, ""));
        let base = if layer == "linear_1" {
            self.projector[0]
        } else {
            self.projector[1]
        };
        let layout = if param == "weight" {
            Layout::Transposed
        } else {
            Layout::Same
        };
        (format!("{base}.{param}"), layout)
    }
}

/// A whole model and where it came from.
pub struct HfMllm {
    pub model: Mllm,
    pub format: MllmFormat,
}

/// Reads the model config of a LLaVA / TinyLLaVA folder.
pub fn hf_mllm_config(dir: &Path) -> Result<(MllmConfig, MllmFormat)> {
    mllm_config(dir).map(|(config, format, _)| (config, format))
}

/// [`hf_mllm_config`] and the tower family, which names the vision tensors.
fn mllm_config(dir: &Path) -> Result<(MllmConfig, MllmFormat, Tower)> {
    let path = dir.join("config.json");
    let text = crate::error::read_to_string(&path)?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
    let refuse = |message: String| Error::Checkpoint {
        path: path.clone(),
        message,
    };
    let str_key = |k: &str| v.get(k).and_then(|x| x.as_str());
    let format = match str_key("model_type") {
        Some("llava") => MllmFormat::Llava,
        Some("tinyllava") => MllmFormat::TinyLlava,
        other => {
            return Err(refuse(format!(
                "model_type {other:?} is not a multimodal model this importer knows (llava, \
                 tinyllava); a bare decoder or vision tower imports with --llm / --vision"
            )));
        }
    };
    let layer = match v.get("vision_feature_layer") {
        None => -2,
        Some(x) => x.as_i64().ok_or_else(|| {
            refuse(format!(
                "vision_feature_layer {x}: only a single layer is supported (not a list)"
            ))
        })?,
    };
    let strategy = str_key("vision_feature_select_strategy");
    let drop_first = match (format, strategy) {
        (MllmFormat::Llava, None | Some("default"))
        | (MllmFormat::TinyLlava, None | Some("patch")) => true,
        (MllmFormat::Llava, Some("full")) | (MllmFormat::TinyLlava, Some("cls_patch")) => false,
        (_, Some(s)) => {
            return Err(refuse(format!(
                "vision_feature_select_strategy {s:?} is not supported (default/full, or \
                 TinyLLaVA's patch/cls_patch)"
            )));
        }
    };
    match format {
        MllmFormat::Llava => {
            if let Some(act) = str_key("projector_hidden_act")
                && act != "gelu"
            {
                return Err(refuse(format!(
                    "projector_hidden_act {act:?}: the projector is mlp2x_gelu (exact GELU)"
                )));
            }
            if v.get("multimodal_projector_bias").and_then(|b| b.as_bool()) == Some(false) {
                return Err(refuse(
                    "multimodal_projector_bias = false: the projector has biases here".into(),
                ));
            }
        }
        MllmFormat::TinyLlava => {
            if let Some(c) = str_key("connector_type")
                && c != "mlp2x_gelu"
            {
                return Err(refuse(format!(
                    "connector_type {c:?}: only mlp2x_gelu is supported"
                )));
            }
        }
    }
    let part = |k: &str| {
        v.get(k)
            .filter(|x| x.is_object())
            .ok_or_else(|| refuse(format!("no `{k}` object")))
    };
    let select = FeatureSelect {
        layer,
        drop_first: Some(drop_first),
        image_size: None,
    };
    let (mut vision, tower) =
        vision_config_from_json(part("vision_config")?, &path, "vision_config.", select)?;
    super::hf_vision::apply_preprocessor(dir, &mut vision)?;
    // the original LLaVA-1.5 and TinyLLaVA configs say how images were made square
    vision.preprocess.pad_to_square = v
        .get("image_aspect_ratio")
        .and_then(|x| x.as_str())
        .is_some_and(|a| a == "pad");
    let llm = llm_config_from_json(part("text_config")?.clone(), &path, "text_config.")?;
    let config = MllmConfig {
        vision,
        projector: ProjectorConfig::Mlp2xGelu,
        llm,
    };
    config.validate().map_err(refuse)?;
    Ok((config, format, tower))
}

/// Loads a LLaVA / TinyLLaVA folder as one model. Every tensor the model needs must be there
/// (the error lists all that are missing or misshapen).
pub fn load_hf_mllm(dir: &Path, device: &Device) -> Result<HfMllm> {
    let (config, format, tower) = mllm_config(dir)?;
    let mut folder = TensorFolder::read(dir)?;
    let names = Names::of(format, &folder);
    let mut report = LoadReport::default();
    let vision = load_vision_named(
        &config.vision,
        tower,
        &mut folder,
        &names.vision,
        device,
        &mut report,
    );
    let projector = Projector::new(
        config.vision.hidden,
        config.llm.hidden,
        &mut Rng::new(0),
        device,
    );
    let projector = load_named(
        projector,
        &mut folder,
        &|p| names.projector(p),
        device,
        &mut report,
    );
    let llm = load_llm_named(&config.llm, &mut folder, names.llm, device, &mut report);
    report.into_result(dir)?;
    warn_unused(&folder, &|k| {
        is_unused_tower_part(k, &names.vision, &config.vision)
            || is_expected_extra(k, &config.llm, names.llm)
    });
    Ok(HfMllm {
        model: Mllm {
            vision,
            projector,
            llm,
            config,
        },
        format,
    })
}
