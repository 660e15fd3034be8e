//! The checkpoint folder format: model weights (burnpack) and config, optimiser state
//! (burnpack) and the training position (`state.json`), written into a temporary folder that is
//! renamed into place, so a checkpoint folder either exists whole or not at all. Where
//! checkpoints sit in a run folder, and which is the newest, is [`crate::run::RunDir`]'s.

use std::path::Path;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};

use crate::distill::HiddenProjection;
use crate::model::moe::{MoeMlp, independent_copy};
use crate::model::{DecoderLayer, Ffn, Mllm};
use crate::{Error, Result};

pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIM_FILE: &str = "optim.bpk";
pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.json";
/// LLaVADI's hidden-alignment projection and its optimiser state, present while a distillation
/// stage with a hidden term is under way.
pub const ALIGN_FILE: &str = "align.bpk";
pub const ALIGN_OPTIM_FILE: &str = "align-optim.bpk";

/// `dir` is a checkpoint folder (it holds model weights).
pub fn is_checkpoint(dir: &Path) -> bool {
    dir.join(MODEL_FILE).exists()
}

/// `dir` is a checkpoint folder a run can resume from (it holds a training position).
pub fn has_state(dir: &Path) -> bool {
    dir.join(STATE_FILE).exists()
}

/// Where training stands: enough to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Stage being trained (index into the recipe's stages).
    pub stage: usize,
    /// Optimiser steps done in that stage; the data order is a pure function of (seed, stage,
    /// epoch), so this is also the data position.
    pub step: usize,
    pub global_step: usize,
    /// True when `stage` is finished (checkpoint written at a stage end).
    pub stage_done: bool,
}

/// Builds the folder `target` under a temporary sibling name (`fill` writes its files there)
/// and renames it into place, replacing an existing one: a checkpoint folder exists whole or
/// not at all.
fn write_folder(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = crate::error::tmp_sibling(target);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    fill(&tmp)?;
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(|e| Error::io(target, e))?;
    }
    std::fs::rename(&tmp, target).map_err(|e| Error::io(target, e))
}

/// Writes the model's weights and config into `folder`.
fn write_model(folder: &Path, model: &Mllm) -> Result<()> {
    write_record(model.clone().into_record(), &folder.join(MODEL_FILE))?;
    write_json(&folder.join(CONFIG_FILE), &model.config)
}

fn write_record(record: ModuleRecord, p: &Path) -> Result<()> {
    record.save(p).map_err(|e| Error::Checkpoint {
        path: p.into(),
        message: e.to_string(),
    })
}

fn write_json(p: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(p, text).map_err(|e| Error::io(p, e))
}

/// Writes the checkpoint folder `target` atomically.
pub fn save(
    target: &Path,
    model: &Mllm,
    optim: Option<&ModuleOptimizer>,
    align: Option<(&HiddenProjection, &ModuleOptimizer)>,
    state: &TrainState,
) -> Result<()> {
    write_folder(target, |tmp| {
        let optim_file = |o: &ModuleOptimizer, file: &str| {
            let p = tmp.join(file);
            o.save(&p).map_err(|e| Error::Checkpoint {
                path: p.clone(),
                message: e.to_string(),
            })
        };
        write_model(tmp, model)?;
        if let Some(o) = optim {
            optim_file(o, OPTIM_FILE)?;
        }
        if let Some((module, o)) = align {
            write_record(module.clone().into_record(), &tmp.join(ALIGN_FILE))?;
            optim_file(o, ALIGN_OPTIM_FILE)?;
        }
        write_json(&tmp.join(STATE_FILE), state)
    })
}

/// Writes a model alone (no training state) as a checkpoint folder `dir`, with `extra` files
/// beside it, all or nothing. An existing `dir` is replaced.
pub fn save_weights(dir: &Path, model: &Mllm, extra: &[(&str, Vec<u8>)]) -> Result<()> {
    if dir.file_name().is_none() {
        return Err(Error::Invalid(format!(
            "{}: name a new folder for the checkpoint",
            dir.display()
        )));
    }
    write_folder(dir, |tmp| {
        write_model(tmp, model)?;
        for (file, bytes) in extra {
            let p = tmp.join(file);
            std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
        }
        Ok(())
    })
}

pub fn load_state(ckpt: &Path) -> Result<TrainState> {
    let p = ckpt.join(STATE_FILE);
    let text = crate::error::read_to_string(&p)?;
    serde_json::from_str(&text).map_err(|e| Error::json(&p, e))
}

/// Loads weights into `model`, checking every parameter is present with the right shape.
pub fn load_model(ckpt: &Path, model: Mllm) -> Result<Mllm> {
    let p = ckpt.join(MODEL_FILE);
    let record = read_record(&p)?;
    model
        .try_load_record(record)
        .map_err(|e| Error::Checkpoint {
            path: p.clone(),
            message: format!("does not fit this model: {e}"),
        })
}

/// Reads a model record file.
pub fn read_record(p: &Path) -> Result<ModuleRecord> {
    if !p.exists() {
        return Err(Error::Checkpoint {
            path: p.into(),
            message: "checkpoint file not found".into(),
        });
    }
    ModuleRecord::load(p).map_err(|e| Error::Checkpoint {
        path: p.into(),
        message: format!("cannot read: {e}"),
    })
}

/// The model config a checkpoint was written with.
pub fn load_config(ckpt: &Path) -> Result<crate::config::MllmConfig> {
    let p = ckpt.join(CONFIG_FILE);
    let text = crate::error::read_to_string(&p)?;
    serde_json::from_str(&text).map_err(|e| Error::json(&p, e))
}

/// Builds the model a checkpoint holds and loads its weights.
pub fn load_full(ckpt: &Path, device: &burn::prelude::Device) -> Result<Mllm> {
    let config = load_config(ckpt)?;
    load_model(ckpt, Mllm::new(&config, 0, device))
}

/// Replaces `model`'s vision encoder with the one in `ckpt` (the shared, frozen encoder of the
/// papers). The encoder shapes must agree.
pub fn load_vision(ckpt: &Path, model: Mllm) -> Result<Mllm> {
    let source = load_config(ckpt)?;
    if source.vision != model.config.vision {
        return Err(Error::Checkpoint {
            path: ckpt.join(CONFIG_FILE),
            message: format!(
                "its vision encoder {:?} differs from the recipe's {:?}",
                source.vision, model.config.vision
            ),
        });
    }
    let device = model.vision.position_embedding.val().device();
    let donor = load_full(ckpt, &device)?;
    Ok(Mllm {
        vision: donor.vision,
        ..model
    })
}

/// Checks that the dense checkpoint `ckpt` is `want` without its MoE layers (sparse upcycling).
pub fn check_upcycle(ckpt: &Path, want: &crate::config::MllmConfig) -> Result<()> {
    let source = load_config(ckpt)?;
    let dense = crate::config::MllmConfig {
        llm: want.llm.dense(),
        ..want.clone()
    };
    let problem = if want.llm.moe.is_none() {
        Some("the recipe's model has no [model.llm.moe] to upcycle into".to_string())
    } else if source.llm.moe.is_some() {
        Some("the checkpoint is already sparse: upcycling starts from a dense model".to_string())
    } else if source != dense {
        Some(format!(
            "the recipe's model without [model.llm.moe] must equal the checkpoint's \
             (checkpoint {source:?}, recipe {dense:?})"
        ))
    } else {
        None
    };
    match problem {
        Some(message) => Err(Error::Checkpoint {
            path: ckpt.join(CONFIG_FILE),
            message,
        }),
        None => Ok(()),
    }
}

/// Sparse upcycling (LLaVA-MoD): loads the dense checkpoint into `model`, every MoE layer's
/// experts becoming copies of that layer's dense FFN and its router keeping `model`'s fresh,
/// seeded weights. Right after, the model computes what the dense one did (renormalised top-k
/// weights sum to 1) except for tokens a capacity limit drops.
pub fn load_upcycled(ckpt: &Path, model: Mllm) -> Result<Mllm> {
    check_upcycle(ckpt, &model.config)?;
    let device = model.vision.position_embedding.val().device();
    let dense = load_full(ckpt, &device)?;
    let Mllm {
        llm: sparse_llm,
        config,
        ..
    } = model;
    let mut llm = dense.llm;
    let dense_layers = std::mem::take(&mut llm.layers);
    llm.layers = sparse_llm
        .layers
        .into_iter()
        .zip(dense_layers)
        .map(|(s, d)| {
            let mlp = match (s.mlp, d.mlp) {
                (Ffn::Moe(m), Ffn::Dense(dense_mlp)) => Ffn::Moe(MoeMlp {
                    experts: (0..m.experts.len())
                        .map(|_| independent_copy(&dense_mlp))
                        .collect(),
                    ..m
                }),
                (_, dense_ffn) => dense_ffn,
            };
            DecoderLayer { mlp, ..d }
        })
        .collect();
    llm.config = sparse_llm.config;
    Ok(Mllm {
        vision: dense.vision,
        projector: dense.projector,
        llm,
        config,
    })
}

/// Checks that a student LLM of shape `want` can start from the checkpoint's first layers.
pub fn check_llm_prefix(ckpt: &Path, want: &crate::config::LlmConfig) -> Result<()> {
    let source = load_config(ckpt)?;
    let same_but_depth = crate::config::LlmConfig {
        layers: want.layers,
        ..source.llm.clone()
    };
    if same_but_depth != *want || want.layers > source.llm.layers {
        return Err(Error::Checkpoint {
            path: ckpt.join(CONFIG_FILE),
            message: format!(
                "cannot start the student's LLM from the teacher's first layers: the student \
                 must equal the teacher in everything but depth, and be no deeper \
                 (teacher {:?}, student {:?})",
                source.llm, want
            ),
        });
    }
    Ok(())
}

/// LLaVADI's initialisation: the student's LLM becomes the teacher's embeddings, first
/// `student.layers` decoder layers, final norm and head. Everything but the depth must match
/// (width, heads, vocabulary, RoPE), or the copied layers would not fit.
pub fn load_llm_prefix(ckpt: &Path, model: Mllm) -> Result<Mllm> {
    check_llm_prefix(ckpt, &model.config.llm)?;
    let want = &model.config.llm;
    let device = model.vision.position_embedding.val().device();
    let donor = load_full(ckpt, &device)?;
    let mut llm = donor.llm;
    llm.layers.truncate(want.layers);
    llm.config = want.clone();
    Ok(Mllm { llm, ..model })
}

/// Loads optimiser state.
pub fn load_optim(ckpt: &Path, optim: ModuleOptimizer) -> Result<ModuleOptimizer> {
    read_optim(&ckpt.join(OPTIM_FILE), optim)
}

fn read_optim(p: &Path, optim: ModuleOptimizer) -> Result<ModuleOptimizer> {
    optim.load(p).map_err(|e| Error::Checkpoint {
        path: p.to_path_buf(),
        message: format!("cannot read optimiser state: {e}"),
    })
}

/// Restores the hidden-alignment projection and its optimiser state of a mid-stage checkpoint.
pub fn load_align(
    ckpt: &Path,
    module: HiddenProjection,
    optim: ModuleOptimizer,
) -> Result<(HiddenProjection, ModuleOptimizer)> {
    let p = ckpt.join(ALIGN_FILE);
    let module = module
        .try_load_record(read_record(&p)?)
        .map_err(|e| Error::Checkpoint {
            path: p.clone(),
            message: format!("does not fit this alignment projection: {e}"),
        })?;
    let optim = read_optim(&ckpt.join(ALIGN_OPTIM_FILE), optim)?;
    Ok((module, optim))
}
