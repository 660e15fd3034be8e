//! Building a Condenser model from the ecosystem's checkpoints, for `condenser import`: a whole
//! LLaVA / TinyLLaVA folder, or a composition of a vision tower (a CLIP/SigLIP/DINOv2 HF
//! folder, a DINOv2 ONNX file, or the encoder of a Condenser checkpoint) and a decoder (a Llama/Qwen2 HF folder or a llama
//! GGUF file, optionally cut to its first layers as LLaVADI initialises a student) joined by a
//! fresh, seeded projector. The result is written as a checkpoint folder that recipes name in
//! `[init] model_from`, `vision_from` or `[teacher] from`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::Serialize;

use super::hf_llm::{hf_llm_config, llm_from_tensors};
use super::hf_mllm::{MllmFormat, load_hf_mllm};
use super::hf_vision::{FeatureSelect, load_hf_vision};
use super::safetensors::TensorFolder;
use crate::config::{LlmConfig, MllmConfig, ProjectorConfig};
use crate::model::{Llm, Mllm, Projector, VisionEncoder};
use crate::rng::Rng;
use crate::run::checkpoint;
use crate::{Error, Result};

/// What to import.
#[derive(Debug, Clone)]
pub enum ImportSource {
    /// A LLaVA / TinyLLaVA HF folder: every part from the file.
    Whole(PathBuf),
    /// A tower and a decoder from separate files; the projector starts fresh.
    Parts {
        /// A CLIP/SigLIP/DINOv2 HF folder, a DINOv2 ONNX file, or a Condenser checkpoint
        /// folder (its vision encoder).
        vision: PathBuf,
        /// A Llama/Qwen2 HF folder or a llama GGUF file.
        llm: PathBuf,
    },
}

/// How to import it.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// Which hidden state of a HF tower feeds the projector (parts only; a whole model says).
    pub select: FeatureSelect,
    /// Keep only the decoder's first layers (LLaVADI's student initialisation).
    pub llm_layers: Option<usize>,
    /// Seed of the fresh projector.
    pub seed: u64,
    /// Add the chat template's special tokens the tokenizer lacks, growing the decoder's
    /// vocabulary by as many rows.
    pub chat_tokens: bool,
}

/// Where each part came from, written beside the weights as `import.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub vision: String,
    pub projector: String,
    pub llm: String,
}

/// An imported model, its tokenizer when the sources carry one, and its provenance.
pub struct Imported {
    pub model: Mllm,
    pub tokenizer: Option<tokenizers::Tokenizer>,
    pub provenance: Provenance,
}

fn describe(p: &Path) -> String {
    p.display().to_string()
}

/// A HF folder's `tokenizer.json`, when it has one.
fn folder_tokenizer(dir: &Path) -> Result<Option<tokenizers::Tokenizer>> {
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        return Ok(None);
    }
    tokenizers::Tokenizer::from_file(&path)
        .map(Some)
        .map_err(|e| Error::Checkpoint {
            path,
            message: format!("cannot read the tokenizer: {e}"),
        })
}

/// A decoder from a HF folder or a GGUF file, cut to `layers` when asked.
fn load_decoder(
    path: &Path,
    layers: Option<usize>,
    device: &Device,
) -> Result<(Llm, Option<tokenizers::Tokenizer>, String)> {
    let cut = |mut c: LlmConfig| -> Result<LlmConfig> {
        if let Some(n) = layers {
            if n == 0 || n > c.layers {
                return Err(Error::Invalid(format!(
                    "--llm-layers {n}: {} has {} layers (keep 1 ..= {})",
                    path.display(),
                    c.layers,
                    c.layers
                )));
            }
            c.layers = n;
        }
        Ok(c)
    };
    #[cfg(not(target_family = "wasm"))]
    if super::detect(path) == Some(super::ModelFormat::Gguf) {
        let g = super::gguf::read_gguf(path)?;
        let config = cut(g.config)?;
        let llm = llm_from_tensors(&config, g.tensors, device)?;
        return Ok((llm, Some(g.tokenizer), format!("GGUF {}", describe(path))));
    }
    let config = cut(hf_llm_config(path)?)?;
    let llm = llm_from_tensors(&config, TensorFolder::read(path)?, device)?;
    let tokenizer = folder_tokenizer(path)?;
    Ok((llm, tokenizer, format!("HF folder {}", describe(path))))
}

/// A vision encoder from a HF tower folder or a Condenser checkpoint.
fn load_tower(
    path: &Path,
    select: FeatureSelect,
    device: &Device,
) -> Result<(VisionEncoder, String)> {
    if super::detect(path) == Some(super::ModelFormat::Checkpoint) {
        if select.image_size.is_some() {
            return Err(Error::Invalid(format!(
                "--image-size resizes a HF or ONNX tower; {} is a Condenser checkpoint, whose \
                 encoder keeps the size it was trained at",
                path.display()
            )));
        }
        let model = checkpoint::load_full(path, device)?;
        return Ok((
            model.vision,
            format!("Condenser checkpoint {}", describe(path)),
        ));
    }
    let tower = load_hf_vision(path, select, device)?;
    let what = format!(
        "{} {}, {} px, hidden state {}, first token {}",
        if super::hf_vision::is_onnx(path) {
            "DINOv2 ONNX"
        } else {
            "HF folder"
        },
        describe(path),
        tower.config.image_size,
        select.layer,
        if tower.config.drop_cls {
            "dropped"
        } else {
            "kept"
        }
    );
    Ok((tower, what))
}

/// Builds the model `source` describes.
pub fn import_model(
    source: &ImportSource,
    options: &ImportOptions,
    device: &Device,
) -> Result<Imported> {
    let mut imported = import_parts(source, options, device)?;
    if options.chat_tokens {
        let Some(tok) = imported.tokenizer.as_mut() else {
            return Err(Error::Invalid(
                "--chat-tokens: the sources carry no tokenizer.json to add the tokens to".into(),
            ));
        };
        let vocab = add_chat_tokens(tok, imported.model.config.llm.vocab_size)?;
        let llm = imported.model.llm.grow_vocab(vocab);
        imported.model.config.llm = llm.config.clone();
        imported.model.llm = llm;
    }
    Ok(imported)
}

/// Adds the chat template's special tokens `tok` lacks, after its last id; returns the
/// vocabulary the model needs then (never less than `model_vocab`).
pub fn add_chat_tokens(tok: &mut tokenizers::Tokenizer, model_vocab: usize) -> Result<usize> {
    let have = tok.get_vocab_size(true);
    if have > model_vocab {
        return Err(Error::Invalid(format!(
            "the tokenizer has {have} tokens but the decoder only {model_vocab} embeddings"
        )));
    }
    let missing: Vec<tokenizers::AddedToken> = crate::data::CHAT_TOKENS
        .iter()
        .filter(|t| tok.token_to_id(t).is_none())
        .map(|t| tokenizers::AddedToken::from(*t, true))
        .collect();
    tok.add_special_tokens(&missing);
    Ok(model_vocab.max(tok.get_vocab_size(true)))
}

fn import_parts(
    source: &ImportSource,
    options: &ImportOptions,
    device: &Device,
) -> Result<Imported> {
    match source {
        ImportSource::Whole(dir) => {
            if options.llm_layers.is_some() {
                return Err(Error::Invalid(
                    "--llm-layers cuts a decoder imported on its own (--llm); a whole LLaVA \
                     model keeps its depth"
                        .into(),
                ));
            }
            let hf = load_hf_mllm(dir, device)?;
            let family = match hf.format {
                MllmFormat::Llava => "LLaVA",
                MllmFormat::TinyLlava => "TinyLLaVA",
            };
            let tokenizer = folder_tokenizer(dir)?;
            let from = format!("{family} folder {}", describe(dir));
            Ok(Imported {
                model: hf.model,
                tokenizer,
                provenance: Provenance {
                    vision: from.clone(),
                    projector: from.clone(),
                    llm: from,
                },
            })
        }
        ImportSource::Parts { vision, llm } => {
            let (vision, vision_from) = load_tower(vision, options.select, device)?;
            let (llm, tokenizer, llm_from) = load_decoder(llm, options.llm_layers, device)?;
            let config = MllmConfig {
                vision: vision.config.clone(),
                projector: ProjectorConfig::Mlp2xGelu,
                llm: llm.config.clone(),
            };
            config.validate().map_err(Error::Invalid)?;
            let projector = Projector::new(
                config.vision.hidden,
                config.llm.hidden,
                &mut Rng::new(options.seed).fork(2),
                device,
            );
            Ok(Imported {
                model: Mllm {
                    vision,
                    projector,
                    llm,
                    config,
                },
                tokenizer,
                provenance: Provenance {
                    vision: vision_from,
                    projector: format!("fresh, seed {}", options.seed),
                    llm: llm_from,
                },
            })
        }
    }
}

/// Writes an imported model as a checkpoint folder (model, config, `import.json`, and
/// `tokenizer.json` when there is one), all or nothing.
pub fn write_imported(imported: &Imported, dir: &Path) -> Result<()> {
    let provenance =
        serde_json::to_vec_pretty(&imported.provenance).expect("provenance is serialisable");
    let mut extra = vec![("import.json", provenance)];
    if let Some(tok) = &imported.tokenizer {
        let text = tok.to_string(true).map_err(|e| Error::Checkpoint {
            path: dir.join("tokenizer.json"),
            message: format!("cannot serialise the tokenizer: {e}"),
        })?;
        extra.push(("tokenizer.json", text.into_bytes()));
    }
    checkpoint::save_weights(dir, &imported.model, &extra)
}
