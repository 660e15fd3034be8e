//! The browser bundle: everything the web page needs to rebuild a model, as plain files it can
//! fetch. `config.json` (the [`MllmConfig`]), `weights.safetensors` (every parameter under its
//! module path, `vision.blocks.0.attn.qkv.weight`, in f16 or f32), `tokenizer.json`, and
//! `bundle.json` (what the files are and why the weights have the precision they have: f16 or
//! f32 per part, vision / projector / llm).
//!
//! Loading goes through bytes only (no file system), so the page and the native tests share
//! [`decode_weights`]. f16 halves the download; f32 compute is kept on every backend, so f16 only
//! changes the weights' rounding, which [`rounded`] reproduces natively for the export's check.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::params::{ParamPath, host_params};
use super::safetensors::to_f32;
use crate::config::MllmConfig;
use crate::model::Mllm;
use crate::{Error, Result};

pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const MANIFEST_FILE: &str = "bundle.json";
/// `bundle.json`'s `format`, so a page given some other folder says so instead of failing later.
pub const FORMAT: &str = "condenser-bundle";
pub const VERSION: u32 = 1;

/// The three parts of the model, whose weights may be stored at different precisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Vision,
    Projector,
    Llm,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Vision, Part::Projector, Part::Llm];

    fn of(path: &str) -> Option<Part> {
        let top = path.split('.').next()?;
        Part::ALL.into_iter().find(|p| p.name() == top)
    }

    pub fn name(self) -> &'static str {
        match self {
            Part::Vision => "vision",
            Part::Projector => "projector",
            Part::Llm => "llm",
        }
    }
}

/// Which parts are stored as f16 (the others as f32). Compute is f32 everywhere; this is only
/// how the weights travel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precision {
    pub f16: Vec<Part>,
}

impl Precision {
    pub fn f32() -> Precision {
        Precision { f16: Vec::new() }
    }

    pub fn f16() -> Precision {
        Precision {
            f16: Part::ALL.to_vec(),
        }
    }

    pub fn only(parts: &[Part]) -> Precision {
        let mut f16 = parts.to_vec();
        f16.sort();
        f16.dedup();
        Precision { f16 }
    }

    fn dtype_of(&self, path: &str) -> Dtype {
        match Part::of(path) {
            Some(p) if self.f16.contains(&p) => Dtype::F16,
            _ => Dtype::F32,
        }
    }

    /// `f16`, `f32`, or e.g. `f16 vision+projector, f32 llm`.
    pub fn label(&self) -> String {
        let half: Vec<&str> = Part::ALL
            .iter()
            .filter(|p| self.f16.contains(p))
            .map(|p| p.name())
            .collect();
        let full: Vec<&str> = Part::ALL
            .iter()
            .filter(|p| !self.f16.contains(p))
            .map(|p| p.name())
            .collect();
        match (half.is_empty(), full.is_empty()) {
            (true, _) => "f32".into(),
            (_, true) => "f16".into(),
            _ => format!("f16 {}, f32 {}", half.join("+"), full.join("+")),
        }
    }
}

/// One precision tried against the f32 weights on a question set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub precision: Precision,
    /// Questions whose greedy answer changed.
    pub differing: usize,
    /// The first change, `id: "f32 answer" -> "answer"`, to show what the rounding broke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<String>,
}

/// The export's check: precisions tried in order of size, the first that changes no answer
/// is the bundle's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecisionCheck {
    /// Where the questions came from (e.g. `data/shapes/test.json`).
    pub questions_from: String,
    pub questions: usize,
    pub trials: Vec<Trial>,
}

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub precision: Precision,
    /// Why this precision: the check's verdict, or the user's explicit choice.
    pub reason: String,
    pub params: usize,
    pub weights_bytes: u64,
    /// The checkpoint the bundle was made from.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<PrecisionCheck>,
}

impl Manifest {
    /// Reads `bundle.json`'s text, refusing other formats and newer versions by name.
    pub fn parse(text: &str, origin: &Path) -> Result<Manifest> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::json(origin, e))?;
        let format = v.get("format").and_then(|f| f.as_str()).unwrap_or("");
        let version = v.get("version").and_then(|f| f.as_u64()).unwrap_or(0);
        if format != FORMAT || version > VERSION as u64 {
            return Err(Error::Checkpoint {
                path: origin.into(),
                message: format!(
                    "format {format:?} version {version} is not a {FORMAT} of version <= {VERSION}"
                ),
            });
        }
        serde_json::from_value(v).map_err(|e| Error::json(origin, e))
    }
}

/// The model's weights as one safetensors file at `precision` (f16: round to nearest even).
pub fn encode_weights(model: &Mllm, precision: &Precision) -> Result<Vec<u8>> {
    let tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = host_params(model)
        .into_iter()
        .map(|(k, t)| {
            let dtype = precision.dtype_of(&k);
            let b: Vec<u8> = match dtype {
                Dtype::F16 => t
                    .values
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
                _ => t.values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            };
            (k, (dtype, t.shape, b))
        })
        .collect();
    super::safetensors::serialize(&tensors, FORMAT)
        .map_err(|e| Error::Invalid(format!("cannot serialise weights: {e}")))
}

/// Replaces every parameter by the file's tensor of the same path, recording what is missing
/// or misshapen.
struct Loader<'a> {
    path: ParamPath,
    file: &'a SafeTensors<'a>,
    device: Device,
    used: usize,
    problems: Vec<String>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.path.current();
        let want = param.val().dims().to_vec();
        let Ok(view) = self.file.tensor(&name) else {
            self.problems.push(format!("{name}: missing"));
            return param;
        };
        if view.shape() != want.as_slice() {
            self.problems.push(format!(
                "{name}: file has {:?}, model needs {want:?}",
                view.shape()
            ));
            return param;
        }
        let values = match view.dtype() {
            Dtype::F32 | Dtype::F16 => {
                to_f32(view.dtype(), view.data()).expect("f16 and f32 convert")
            }
            other => {
                self.problems
                    .push(format!("{name}: dtype {other:?} (f16 or f32 expected)"));
                return param;
            }
        };
        self.used += 1;
        let value = Tensor::<D>::from_data(TensorData::new(values, want), &self.device);
        param.map(|_| value)
    }
}

/// Builds the model of `config` on `device` from the bytes of a `weights.safetensors`;
/// `origin` names them in errors. Every parameter must be present with its shape, and the file
/// must hold nothing else (a bundle of another model is refused, never half-loaded).
pub fn decode_weights(
    config: &MllmConfig,
    bytes: &[u8],
    origin: &Path,
    device: &Device,
) -> Result<Mllm> {
    let bad = |message: String| Error::Checkpoint {
        path: origin.into(),
        message,
    };
    config.validate().map_err(|e| bad(format!("config: {e}")))?;
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let mut loader = Loader {
        path: ParamPath::default(),
        file: &file,
        device: device.clone(),
        used: 0,
        problems: Vec::new(),
    };
    let model = Mllm::new(config, 0, device).map(&mut loader);
    let extra = file.len().saturating_sub(loader.used);
    if !loader.problems.is_empty() || extra > 0 {
        let mut shown: Vec<String> = loader.problems.iter().take(5).cloned().collect();
        if loader.problems.len() > 5 {
            shown.push(format!("... {} more", loader.problems.len() - 5));
        }
        if loader.problems.is_empty() {
            shown.push(format!("{extra} tensors the model does not have"));
        }
        return Err(bad(format!(
            "these weights do not fit the bundle's config: {}",
            shown.join("; ")
        )));
    }
    Ok(model)
}

/// The model with its weights rounded through `precision`: exactly what a page that loads a
/// bundle of that precision computes with.
pub fn rounded(model: &Mllm, precision: &Precision) -> Result<Mllm> {
    let device = model.vision.position_embedding.val().device();
    let bytes = encode_weights(model, precision)?;
    decode_weights(&model.config, &bytes, Path::new("(in memory)"), &device)
}

/// Writes a bundle folder: the four files go to a temporary sibling folder that is renamed into
/// place, so `dir` is either the old bundle or the new one, never a mix. An existing `dir` is
/// replaced only when it is an earlier bundle or empty: anything else (a run folder given as
/// `-o` by mistake) is refused, never deleted.
pub fn write_bundle(
    dir: &Path,
    model: &Mllm,
    tokenizer_json: &[u8],
    mut manifest: Manifest,
) -> Result<Manifest> {
    if dir.exists() && !dir.join(MANIFEST_FILE).is_file() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::Invalid(format!(
                "{}: exists and is not a bundle (no {MANIFEST_FILE}); choose a new or empty \
                 folder, it would be replaced",
                dir.display()
            )));
        }
    }
    let weights = encode_weights(model, &manifest.precision)?;
    manifest.weights_bytes = weights.len() as u64;
    manifest.params = model.num_params();
    let tmp = crate::error::tmp_sibling(dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let write = |name: &str, bytes: &[u8]| {
        let p = tmp.join(name);
        std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))
    };
    write(WEIGHTS_FILE, &weights)?;
    write(
        CONFIG_FILE,
        serde_json::to_string_pretty(&model.config)
            .expect("serialisable")
            .as_bytes(),
    )?;
    write(TOKENIZER_FILE, tokenizer_json)?;
    write(
        MANIFEST_FILE,
        serde_json::to_string_pretty(&manifest)
            .expect("serialisable")
            .as_bytes(),
    )?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    Ok(manifest)
}

/// Answers the questions of `data` with the f32 weights, then with each candidate precision
/// (all f16 first, then f16 for some parts, the largest saving first) until one changes no
/// answer: what `--dtype auto` of `condenser export --web` decides with.
pub fn precision_check(
    model: &Mllm,
    tok: &crate::data::TextTokenizer,
    data: &crate::data::Dataset,
    limit: Option<usize>,
) -> Result<PrecisionCheck> {
    use crate::eval::answer_all;
    let full = answer_all(model, tok, data, 64, limit)?;
    let counts = model.param_counts();
    let saving = |p: &Precision| {
        p.f16
            .iter()
            .map(|part| match part {
                Part::Vision => counts.vision,
                Part::Projector => counts.projector,
                Part::Llm => counts.llm,
            })
            .sum::<usize>()
    };
    let mut candidates = vec![
        Precision::only(&[Part::Vision, Part::Projector]),
        Precision::only(&[Part::Llm, Part::Projector]),
        Precision::only(&[Part::Vision]),
        Precision::only(&[Part::Llm]),
    ];
    candidates.sort_by_key(|p| std::cmp::Reverse(saving(p)));
    candidates.insert(0, Precision::f16());
    let mut trials = Vec::new();
    for precision in candidates {
        let rounded = answer_all(&rounded(model, &precision)?, tok, data, 64, limit)?;
        let mut differing = 0;
        let mut first = None;
        for ((_, a), (_, b)) in full.iter().zip(&rounded) {
            if a.answer != b.answer {
                differing += 1;
                first.get_or_insert_with(|| format!("{}: {:?} -> {:?}", a.id, a.answer, b.answer));
            }
        }
        let done = differing == 0;
        trials.push(Trial {
            precision,
            differing,
            first_difference: first,
        });
        if done {
            break;
        }
    }
    Ok(PrecisionCheck {
        questions_from: data.path.display().to_string(),
        questions: full.len(),
        trials,
    })
}

impl PrecisionCheck {
    /// The smallest precision that changed no answer (f32 when every f16 choice did), and why.
    pub fn choice(&self) -> (Precision, String) {
        match self.trials.iter().find(|t| t.differing == 0) {
            Some(t) => (
                t.precision.clone(),
                format!(
                    "{} weights give the f32 answers to all {} questions",
                    t.precision.label(),
                    self.questions
                ),
            ),
            None => (
                Precision::f32(),
                format!(
                    "every f16 choice changed answers (all f16: {} of {})",
                    self.trials.first().map_or(0, |t| t.differing),
                    self.questions
                ),
            ),
        }
    }
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
