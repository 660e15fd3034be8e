//! What a stage minimises. Each objective kind of a recipe (`objective = { kind = ... }`) has
//! its own file here and one variant of [`StageObjective`]; every one of them turns a batch into
//! the same [`StepLoss`], so the stage loop (`super::stage`) never looks inside a loss:
//!
//! | recipe kind       | file                 | what                                            |
//! |-------------------|----------------------|-------------------------------------------------|
//! | `language_model`  | `language_model.rs`  | next-token cross-entropy on the responses       |
//! | `contrastive`     | `contrastive.rs`     | CLIP-style image-caption InfoNCE (+ regions)     |
//! | `distill`         | `distill.rs`         | LLaVA-KD / LLaVADI terms against a frozen teacher |
//! | `preference`      | `preference.rs`      | LLaVA-MoD's DPO family, teacher as reference    |
//!
//! The MoE router losses any of them adds for a sparse student are in `router.rs`.

mod contrastive;
mod distill;
mod language_model;
mod preference;
mod router;

use std::collections::BTreeMap;
use std::path::Path;

use burn::optim::ModuleOptimizer;
use burn::prelude::*;

pub use contrastive::{ContrastiveTargets, REGION_VIEW_SEPARATOR, info_nce};
pub(crate) use distill::relation_cols;
pub(crate) use language_model::loss as language_model_loss;
pub use preference::reference_logps;

use super::teacher::Teacher;
use super::teacher_cache::CachedTeacher;
use super::visual::PixelBatch;
use crate::backend::kernels::Kernels;
use crate::config::{Objective, Recipe, StageSpec};
use crate::data::{Dataset, HostBatch, TextTokenizer};
use crate::distill::HiddenProjection;
use crate::model::Mllm;
use crate::model::Visual;
use crate::model::moe::LayerRouting;
use crate::{Error, Result};

/// One step's loss, whatever the objective: the value to differentiate and what the event log
/// records of it.
pub struct StepLoss {
    pub total: Tensor<1>,
    /// Named, unweighted terms (`ce`, `res`, `pref`, `moe_aux`, ...).
    pub terms: BTreeMap<String, f32>,
    /// The student's MoE routing in this step (empty when dense).
    pub routing: Vec<LayerRouting>,
    /// When asked for and the objective has a relation term: the first example's visual-token
    /// self-correlations.
    pub relation: Option<RelationSnapshot>,
}

impl StepLoss {
    fn plain(total: Tensor<1>) -> Self {
        StepLoss {
            total,
            terms: BTreeMap::new(),
            routing: Vec::new(),
            relation: None,
        }
    }
}

/// The visual tokens' self-correlation matrices (row-major `n x n`) of teacher and student.
pub struct RelationSnapshot {
    pub n: usize,
    pub teacher: Vec<f32>,
    pub student: Vec<f32>,
}

/// One step's batch as the objectives see it.
pub struct StepInput<'b> {
    pub hb: &'b HostBatch,
    /// The records of the batch (indices into the stage's data).
    pub idx: &'b [usize],
    /// The student's visual input for the batch.
    pub visual: Visual,
    /// The batch's decoded images, for a teacher that encodes them itself.
    pub pixels: &'b PixelBatch,
    /// Whether to take a [`RelationSnapshot`] this step.
    pub want_relation: bool,
    /// The autodiff device.
    pub device: &'b Device,
}

/// What an objective may read while it prepares a stage.
pub struct StageSetup<'a, 'm> {
    pub recipe: &'m Recipe,
    pub spec: &'m StageSpec,
    pub stage: usize,
    pub data: &'a Dataset,
    pub tokenizer: &'m TextTokenizer,
    pub teacher: Option<&'a Teacher>,
    /// The teacher cache distillation stages read instead of the teacher, when the recipe has
    /// one.
    pub teacher_cache: Option<&'a CachedTeacher>,
    /// The student as it enters the stage (freeze policy applied).
    pub model: &'m Mllm,
    /// The checkpoint a mid-stage resume continues from.
    pub resume: Option<&'m Path>,
    /// Where the fused kernels run (resolved once for the run).
    pub kernels: Kernels,
    /// The autodiff device.
    pub device: &'m Device,
    /// Byte budget of each frozen tower's feature cache (`RunOptions::feature_cache_bytes`).
    pub feature_cache_bytes: usize,
}

impl<'a> StageSetup<'a, '_> {
    /// The teacher, which the recipe's validation guarantees for stages that need one.
    fn teacher(&self) -> Result<&'a Teacher> {
        self.teacher.ok_or_else(|| {
            Error::Invalid(format!(
                "stage {:?} needs a [teacher]: its objective compares the student with one",
                self.spec.name
            ))
        })
    }
}

/// A stage's objective with everything it prepared once for the stage (teacher outputs,
/// reference log-probs, tokenised captions, LLaVADI's projection).
pub enum StageObjective<'a> {
    LanguageModel,
    Contrastive(contrastive::Contrastive),
    Distill(Box<distill::Distill<'a>>),
    Preference(preference::Preference),
}

impl<'a> StageObjective<'a> {
    /// Prepares the stage's objective (the expensive once-per-stage work is done here).
    pub fn prepare(setup: &StageSetup<'a, '_>) -> Result<Self> {
        Ok(match setup.spec.objective {
            Objective::LanguageModel => StageObjective::LanguageModel,
            Objective::Contrastive {
                temperature,
                regions,
            } => StageObjective::Contrastive(contrastive::Contrastive::prepare(
                setup,
                temperature,
                regions,
            )?),
            Objective::Distill(d) => {
                StageObjective::Distill(Box::new(distill::Distill::prepare(setup, d)?))
            }
            Objective::Preference(p) => {
                StageObjective::Preference(preference::Preference::prepare(setup, p)?)
            }
        })
    }

    /// The loss of one batch.
    pub fn loss(&self, model: &Mllm, input: StepInput) -> StepLoss {
        match self {
            StageObjective::LanguageModel => language_model::loss(model, input),
            StageObjective::Contrastive(c) => c.loss(model, input),
            StageObjective::Distill(d) => d.loss(model, input),
            StageObjective::Preference(p) => p.loss(model, input),
        }
    }

    /// The trainable module the objective owns beside the model (LLaVADI's hidden-state
    /// projection) with its optimiser, for the optimiser step and mid-stage checkpoints.
    pub fn aux_mut(&mut self) -> Option<&mut Option<(HiddenProjection, ModuleOptimizer)>> {
        match self {
            StageObjective::Distill(d) => Some(&mut d.align),
            _ => None,
        }
    }

    pub fn aux(&self) -> Option<(&HiddenProjection, &ModuleOptimizer)> {
        match self {
            StageObjective::Distill(d) => d.align.as_ref().map(|(m, o)| (m, o)),
            _ => None,
        }
    }
}
