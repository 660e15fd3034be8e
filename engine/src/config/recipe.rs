//! TOML recipes: a run is an ordered list of stages over one model. A recipe is resolved (every
//! default filled in) and saved with the run, so the run can be reproduced from its folder alone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{KernelPolicy, MllmConfig, Objective};
use crate::{Error, Result};

/// A whole recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Run name: the run folder is `runs/<name>/`.
    pub name: String,
    /// One seed for initialisation and data order.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Dataset folder in LLaVA layout (`tokenizer.json`, `captions.json`, `train.json`,
    /// `val.json`, `test.json`, `images/`). Relative paths are taken from the working directory.
    pub data: PathBuf,
    /// Where the records' image paths are resolved, when not the data folder: LLaVA's
    /// `image_folder` (its JSON files in one place, the images, e.g. COCO's, in another).
    /// Relative paths are taken from the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_folder: Option<PathBuf>,
    /// The tokenizer, when not the data folder's `tokenizer.json`: a real decoder's, as
    /// `condenser import --chat-tokens` writes it beside the imported checkpoint. Relative
    /// paths are taken from the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// The model to build. May be left out when `[init] model_from` names a checkpoint: the
    /// model is then that checkpoint's (the saved, resolved recipe spells it out).
    pub model: MllmConfig,
    /// Where initial weights come from.
    #[serde(default)]
    pub init: InitSpec,
    /// The teacher of distillation stages (required when a stage's objective is `distill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherSpec>,
    /// Require `<image>` in every conversation (a multimodal recipe does).
    #[serde(default = "yes")]
    pub require_image: bool,
    /// `auto` runs Condenser's WGSL kernels on wgpu devices; `reference` runs the plain
    /// burn-ops composition everywhere (A/B runs). Left out of the saved recipe when `auto`.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub kernels: KernelPolicy,
    /// Stages, run in order.
    #[serde(rename = "stage")]
    pub stages: Vec<StageSpec>,
}

fn yes() -> bool {
    true
}
fn is_auto(p: &KernelPolicy) -> bool {
    *p == KernelPolicy::Auto
}
fn default_seed() -> u64 {
    42
}

/// Initial weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// Take the vision encoder from this run (`runs/<run>/checkpoints/final`) or checkpoint
    /// folder; the shared, pre-trained encoder of the papers.
    #[serde(default)]
    pub vision_from: Option<String>,
    /// LLaVADI: start the LLM from the `[teacher]`'s embeddings and first layers (the student
    /// must equal the teacher in everything but depth).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub llm_from_teacher: bool,
    /// LLaVA-MoD's sparse upcycling: start from this dense run or checkpoint (whole model), each
    /// MoE layer's experts copies of its dense FFN and its router fresh. The recipe's model must
    /// be the checkpoint's with `[model.llm.moe]` added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcycle_from: Option<String>,
    /// Start from the whole model of this run or checkpoint, which must have exactly the
    /// recipe's `[model]` (e.g. a preference stage after a finished MoE run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_from: Option<String>,
}

/// Where the teacher comes from. It is loaded once, runs without gradients and never changes.
/// Distillation stages read it live, or from a teacher cache (`train::teacher_cache`): its
/// top-k outputs on the data, computed once, so the teacher is not resident while the student
/// trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherSpec {
    /// A finished run (`runs/<run>/checkpoints/final`) or a checkpoint folder. Needed by
    /// preference stages (the reference model), `llm_from_teacher`, live distillation and a
    /// cache the run builds itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Distillation stages read the teacher from a cache instead of running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<TeacherCacheSpec>,
}

impl TeacherSpec {
    /// A live teacher from a run or checkpoint.
    pub fn live(from: &str) -> Self {
        TeacherSpec {
            from: Some(from.to_string()),
            cache: None,
        }
    }
}

/// `[teacher] cache`: a folder made by `condenser teacher-cache` (`cache = "caches/t"`), or a
/// cache this run builds in its own folder from `from` before its first stage
/// (`cache = { top_k = 64 }`), after which the teacher is dropped from memory unless a stage
/// still needs it live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TeacherCacheSpec {
    Path(String),
    Build(CacheBuildSpec),
}

/// What a run's own teacher cache keeps; the temperature, z-scoring and positions come from
/// its distillation stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheBuildSpec {
    /// Tokens kept per position, besides the tail bucket.
    pub top_k: usize,
}

/// What a stage trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// `captions.json`: image-caption pairs (pre-training).
    Caption,
    /// `train.json`: multi-turn instruction conversations.
    Instruct,
    /// `prefs.json`: preference pairs (image, prompt, chosen, rejected), for preference
    /// distillation.
    Preference,
    /// Preference pairs mined from the model's own mistakes: at the start of the stage the
    /// model (as it enters the stage) answers every yes/no question of `train.json`, each asked
    /// alone; every wrong answer becomes a pair (chosen = the data's answer, rejected = the other
    /// word), and the side with fewer mistakes is topped up with right answers so "yes" and "no"
    /// are chosen equally often (`data::mined`). The pairs are saved in the run folder
    /// (`mined-<stage>.json`), and a resumed run trains on that file.
    Mined,
}

impl DataKind {
    /// Whether a stage on this data trains on preference pairs.
    pub fn is_preference(self) -> bool {
        matches!(self, DataKind::Preference | DataKind::Mined)
    }

    /// File name of the split this data kind reads for training (for `Mined`, the questions
    /// the pairs are mined from).
    pub fn train_file(self) -> &'static str {
        match self {
            DataKind::Caption => "captions.json",
            DataKind::Instruct => "train.json",
            DataKind::Preference => "prefs.json",
            DataKind::Mined => "train.json",
        }
    }
}

/// LLaVA-KD's stage kinds (Fig. 2) and TinyLLaVA's. A kind fixes what trains, on which data,
/// with which objective; a recipe that names a kind and contradicts it is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Distilled pre-training: captions, projector only, `L_PT + a L_res + b L_vis + g L_rel`.
    Dpt,
    /// Supervised fine-tuning: conversations, projector + LLM, cross-entropy only.
    Sft,
    /// Distilled fine-tuning: conversations, projector + LLM, `L_reg + a' L_res + b' L_vis + g' L_rel`.
    Dft,
}

impl StageKind {
    /// The data, the freeze policy, and whether the objective is distillation.
    pub fn contract(self) -> (DataKind, StageFreeze, bool) {
        let frozen = FreezeSpec::Named(FreezePolicy::Frozen);
        let full = FreezeSpec::Named(FreezePolicy::Full);
        match self {
            StageKind::Dpt => (
                DataKind::Caption,
                StageFreeze {
                    vision: frozen,
                    projector: full,
                    llm: frozen,
                },
                true,
            ),
            StageKind::Sft | StageKind::Dft => (
                DataKind::Instruct,
                StageFreeze {
                    vision: frozen,
                    projector: full,
                    llm: full,
                },
                self == StageKind::Dft,
            ),
        }
    }
}

/// Per-module tuning policy (TinyLLaVA): frozen, fully trained, or trained from layer k on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FreezeSpec {
    Named(FreezePolicy),
    Partial { from_layer: usize },
}

/// Named freeze policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreezePolicy {
    Frozen,
    Full,
    /// LLM only: the MoE blocks (experts and routers) train, everything else is frozen
    /// (LLaVA-MoD's dense-to-sparse and preference stages).
    Experts,
}

impl FreezeSpec {
    /// Is anything in this module trained?
    pub fn trains(self) -> bool {
        !matches!(self, FreezeSpec::Named(FreezePolicy::Frozen))
    }
    /// Does layer `i` train?
    pub fn trains_layer(self, i: usize) -> bool {
        match self {
            FreezeSpec::Named(FreezePolicy::Frozen) => false,
            FreezeSpec::Named(FreezePolicy::Full) => true,
            FreezeSpec::Named(FreezePolicy::Experts) => false,
            FreezeSpec::Partial { from_layer } => i >= from_layer,
        }
    }
    /// Do only the MoE blocks (experts and routers) train?
    pub fn experts_only(self) -> bool {
        self == FreezeSpec::Named(FreezePolicy::Experts)
    }
    /// Do the parts outside the layer stack (embeddings, final norms, heads) train?
    /// Under a partial policy they stay frozen, as in TinyLLaVA's partially-tune.
    pub fn trains_non_layer(self) -> bool {
        matches!(self, FreezeSpec::Named(FreezePolicy::Full))
    }
}

/// The freeze policy of each module in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageFreeze {
    pub vision: FreezeSpec,
    pub projector: FreezeSpec,
    pub llm: FreezeSpec,
}

/// One training stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    /// LLaVA-KD stage kind; when given, `data`, `freeze` and the objective must agree with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StageKind>,
    pub data: DataKind,
    #[serde(default)]
    pub objective: Objective,
    /// Passes over the stage's data (fractions allowed).
    #[serde(default = "one")]
    pub epochs: f64,
    pub batch_size: usize,
    pub lr: f64,
    /// Fraction of the stage's steps spent in linear warmup.
    #[serde(default = "default_warmup")]
    pub warmup: f64,
    /// Floor of the cosine decay, as a fraction of `lr`.
    #[serde(default)]
    pub min_lr_ratio: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    #[serde(default = "one")]
    pub grad_clip: f64,
    /// Checkpoint every N steps (0: only at the stage end).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// How examples are ordered (see [`DataOrder`]).
    #[serde(default)]
    pub order: DataOrder,
    pub freeze: StageFreeze,
}

/// Example order within a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DataOrder {
    /// Every epoch a fresh seeded permutation.
    #[default]
    Shuffled,
    /// The first epoch in file order, later epochs shuffled: a curriculum written into the data
    /// (the Shapes world lists its training conversations from the fewest objects to the most).
    /// A decoder trained from scratch first learns to read one object's attributes from the
    /// visual tokens, then to pick one object among several, instead of having to discover both
    /// at once.
    Curriculum,
    /// Shuffled, then batches of similar length: windows of 16 batches are sorted by length,
    /// re-cut and shuffled again, so batches carry less padding (same examples per epoch).
    Bucketed,
}

fn one() -> f64 {
    1.0
}
fn default_warmup() -> f64 {
    0.03
}

/// Parses a recipe from TOML text. `path` is only used in error messages. A recipe that leaves
/// `[model]` out and names `[init] model_from` needs that checkpoint's model: parse it with
/// [`parse_recipe_with`] (the runs folder resolves it, `run::Runs::load_recipe`).
pub fn parse_recipe(text: &str, path: &Path) -> Result<Recipe> {
    parse_recipe_with(text, path, &|spec| {
        Err(format!(
            "cannot resolve {spec:?} here: load the recipe through a runs folder"
        ))
    })
}

/// [`parse_recipe`], with `model_of` giving the model of an `[init] model_from` checkpoint for
/// a recipe that leaves `[model]` out (an imported real model's config is long and must match
/// exactly).
pub fn parse_recipe_with(
    text: &str,
    path: &Path,
    model_of: &dyn Fn(&str) -> std::result::Result<MllmConfig, String>,
) -> Result<Recipe> {
    let bad = |message: String| Error::Recipe {
        path: path.to_path_buf(),
        message,
    };
    let recipe: Recipe = match model_from_checkpoint(text, path, model_of)? {
        None => toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_string()))?,
        Some(table) => table
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string().trim_end().to_string()))?,
    };
    recipe.validate(path)?;
    Ok(recipe)
}

/// The recipe's table with `[model]` filled in from `[init] model_from`, or `None` when there
/// is nothing to fill.
fn model_from_checkpoint(
    text: &str,
    path: &Path,
    model_of: &dyn Fn(&str) -> std::result::Result<MllmConfig, String>,
) -> Result<Option<toml::Table>> {
    let Ok(mut table) = text.parse::<toml::Table>() else {
        return Ok(None); // the typed parse reports the syntax error with its position
    };
    if table.contains_key("model") {
        return Ok(None);
    }
    let Some(spec) = table
        .get("init")
        .and_then(|i| i.get("model_from"))
        .and_then(|m| m.as_str())
    else {
        return Ok(None);
    };
    let bad = |message: String| Error::Recipe {
        path: path.to_path_buf(),
        message,
    };
    let model =
        model_of(spec).map_err(|e| bad(format!("no [model] table, and [init] model_from: {e}")))?;
    let value = toml::Value::try_from(&model)
        .map_err(|e| bad(format!("cannot express the model of {spec:?} as TOML: {e}")))?;
    table.insert("model".into(), value);
    Ok(Some(table))
}

/// Loads and validates a recipe file (one that names its `[model]`, or whose `model_from`
/// needs no runs folder: see [`parse_recipe_with`]).
pub fn load_recipe(path: impl AsRef<Path>) -> Result<Recipe> {
    let path = path.as_ref();
    parse_recipe(&crate::error::read_to_string(path)?, path)
}

impl Recipe {
    /// The folder image paths are resolved against: `image_folder`, else the data folder.
    pub fn image_root(&self) -> PathBuf {
        self.image_folder
            .clone()
            .unwrap_or_else(|| self.data.clone())
    }

    /// The tokenizer file: `tokenizer`, else the data folder's `tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.tokenizer
            .clone()
            .unwrap_or_else(|| self.data.join("tokenizer.json"))
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| Error::Recipe {
            path: path.to_path_buf(),
            message,
        };
        self.model
            .validate()
            .map_err(|m| bad(format!("[model]: {m}")))?;
        if self.stages.is_empty() {
            return Err(bad("no [[stage]] given: a recipe needs at least one".into()));
        }
        if self.init.model_from.is_some()
            && (self.init.upcycle_from.is_some()
                || self.init.vision_from.is_some()
                || self.init.llm_from_teacher)
        {
            return Err(bad(
                "[init] model_from loads the whole model: it cannot be combined with \
                 vision_from, upcycle_from or llm_from_teacher"
                    .into(),
            ));
        }
        if self.init.upcycle_from.is_some() && self.model.llm.moe.is_none() {
            return Err(bad(
                "[init] upcycle_from needs MoE layers to upcycle into ([model.llm.moe])".into(),
            ));
        }
        let live_teacher = self.teacher.as_ref().is_some_and(|t| t.from.is_some());
        if self.init.llm_from_teacher && !live_teacher {
            return Err(bad(
                "[init] llm_from_teacher needs a [teacher] table naming the teacher (`from`)"
                    .into(),
            ));
        }
        if let Some(t) = &self.teacher {
            match (&t.from, &t.cache) {
                (None, None) => {
                    return Err(bad(
                        "[teacher] needs `from = <run or checkpoint>`, `cache = <folder>` or both"
                            .into(),
                    ));
                }
                (None, Some(TeacherCacheSpec::Build(_))) => {
                    return Err(bad(
                        "[teacher] cache = { top_k = ... } builds the cache from the teacher: \
                         add `from = <run or checkpoint>`"
                            .into(),
                    ));
                }
                (_, Some(TeacherCacheSpec::Build(b))) if b.top_k == 0 => {
                    return Err(bad("[teacher] cache.top_k must be at least 1".into()));
                }
                _ => {}
            }
            if matches!(t.cache, Some(TeacherCacheSpec::Build(_))) {
                let distill: Vec<_> = self
                    .stages
                    .iter()
                    .filter_map(|s| match &s.objective {
                        Objective::Distill(d) => Some(d.divergence),
                        _ => None,
                    })
                    .collect();
                if distill
                    .windows(2)
                    .any(|w| w[0].temperature != w[1].temperature || w[0].zscore != w[1].zscore)
                {
                    return Err(bad(
                        "[teacher] cache = { top_k = ... } builds one cache for every distill \
                         stage: they must share the divergence's temperature and zscore"
                            .into(),
                    ));
                }
            }
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return Err(bad(format!(
                "name {:?} is not usable as a folder name",
                self.name
            )));
        }
        for (i, s) in self.stages.iter().enumerate() {
            let at = format!("[[stage]] #{} ({:?})", i + 1, s.name);
            if s.batch_size == 0 {
                return Err(bad(format!("{at}: batch_size must be at least 1")));
            }
            if !s.epochs.is_finite() || s.epochs <= 0.0 {
                return Err(bad(format!("{at}: epochs must be positive")));
            }
            if !s.lr.is_finite() || s.lr <= 0.0 {
                return Err(bad(format!("{at}: lr must be positive")));
            }
            if !(0.0..1.0).contains(&s.warmup) {
                return Err(bad(format!("{at}: warmup must be in [0, 1)")));
            }
            if !(s.freeze.vision.trains() || s.freeze.projector.trains() || s.freeze.llm.trains()) {
                return Err(bad(format!(
                    "{at}: every module is frozen, nothing would train"
                )));
            }
            if s.freeze.vision.experts_only() || s.freeze.projector.experts_only() {
                return Err(bad(format!(
                    "{at}: freeze \"experts\" applies to the llm only"
                )));
            }
            if s.freeze.llm.experts_only() && self.model.llm.moe.is_none() {
                return Err(bad(format!(
                    "{at}: freeze.llm = \"experts\" needs MoE layers ([model.llm.moe])"
                )));
            }
            let pref_data = s.data.is_preference();
            if let Objective::Preference(p) = &s.objective {
                if !live_teacher {
                    return Err(bad(format!(
                        "{at}: a preference objective needs a [teacher] table with `from` (the teacher is the reference model)"
                    )));
                }
                if !pref_data {
                    return Err(bad(format!(
                        "{at}: a preference objective trains on data = \"preference\" or \"mined\", not {:?}",
                        s.data
                    )));
                }
                if !(p.beta > 0.0 && p.beta.is_finite()) {
                    return Err(bad(format!("{at}: objective.beta must be positive")));
                }
                if !(p.ce >= 0.0 && p.ce.is_finite()) {
                    return Err(bad(format!("{at}: objective.ce must be >= 0")));
                }
            } else if pref_data {
                return Err(bad(format!(
                    "{at}: preference data needs objective = {{ kind = \"preference\" }}"
                )));
            }
            if let Objective::Distill(d) = &s.objective {
                if self.teacher.is_none() {
                    return Err(bad(format!(
                        "{at}: a distill objective needs a [teacher] table with `from = <run or checkpoint>` or `cache = <teacher cache folder>`"
                    )));
                }
                let cached = self.teacher.as_ref().is_some_and(|t| t.cache.is_some());
                if cached && !matches!(s.data, DataKind::Caption | DataKind::Instruct) {
                    return Err(bad(format!(
                        "{at}: a teacher cache holds caption and instruction data; distilling on {:?} needs a live teacher",
                        s.data
                    )));
                }
                if cached && d.hidden > 0.0 {
                    return Err(bad(format!(
                        "{at}: objective.hidden aligns hidden states, which a teacher cache does not hold: use a live teacher (no `cache`)"
                    )));
                }
                d.divergence
                    .validate()
                    .map_err(|m| bad(format!("{at}: objective.divergence: {m}")))?;
                let weights = [d.ce, d.res, d.vis, d.rel, d.hidden];
                if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
                    return Err(bad(format!("{at}: loss weights must be finite and >= 0")));
                }
                if weights.iter().all(|w| *w == 0.0) {
                    return Err(bad(format!("{at}: every loss weight is 0")));
                }
            }
            if let Some(kind) = s.kind {
                let (data, freeze, distill) = kind.contract();
                let is_distill = matches!(s.objective, Objective::Distill(_));
                if s.data != data {
                    return Err(bad(format!(
                        "{at}: kind {kind:?} trains on {data:?} data, not {:?}",
                        s.data
                    )));
                }
                if s.freeze != freeze {
                    return Err(bad(format!(
                        "{at}: kind {kind:?} trains exactly {freeze:?}, the stage says {:?}",
                        s.freeze
                    )));
                }
                if distill != is_distill {
                    return Err(bad(format!(
                        "{at}: kind {kind:?} {} a distill objective",
                        if distill { "needs" } else { "does not take" }
                    )));
                }
            }
        }
        Ok(())
    }

    /// The resolved recipe as TOML (every default written out).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a recipe always serialises")
    }
}

#[cfg(test)]
#[path = "recipe_tests.rs"]
mod tests;
