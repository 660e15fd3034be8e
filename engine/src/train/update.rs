//! The optimiser step of a stage: backward through the step's loss, LLaVADI's projection (when
//! the objective has one) stepped on its own gradients, global-norm clipping, then AdamW on the
//! model at the warmup + cosine learning rate.

use std::path::Path;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::objective::StageObjective;
use super::{clip, schedule};
use crate::Result;
use crate::config::StageSpec;
use crate::model::Mllm;
use crate::run::checkpoint;

/// The optimiser of one stage and its schedule.
pub struct Update<'s> {
    spec: &'s StageSpec,
    steps: usize,
    optim: ModuleOptimizer,
}

/// What one optimiser step did, for the event log.
pub struct Stepped {
    pub lr: f64,
    pub grad_norm: f32,
}

impl<'s> Update<'s> {
    /// A fresh optimiser, or the one a mid-stage checkpoint saved (`resume`).
    pub fn new(spec: &'s StageSpec, steps: usize, resume: Option<&Path>) -> Result<Self> {
        let mut optim = schedule::adamw(spec);
        if let Some(ck) = resume {
            optim = checkpoint::load_optim(ck, optim)?;
        }
        Ok(Update { spec, steps, optim })
    }

    /// The optimiser state, for a mid-stage checkpoint.
    pub fn optim(&self) -> &ModuleOptimizer {
        &self.optim
    }

    fn lr(&self, step: usize) -> f64 {
        let s = self.spec;
        schedule::lr_at(step, self.steps, s.lr, s.warmup, s.min_lr_ratio)
    }

    /// Differentiates `loss` and takes step `step` (0-based within the stage) on `model` and on
    /// the objective's own trainable module.
    pub fn step(
        &mut self,
        model: Mllm,
        loss: Tensor<1>,
        objective: &mut StageObjective,
        step: usize,
    ) -> (Mllm, Stepped) {
        let mut raw = loss.backward();
        if let Some(aux) = objective.aux_mut()
            && let Some((module, mut o)) = aux.take()
        {
            let g = GradientsParams::from_module(&mut raw, &module);
            let module = o.step(self.lr(step), module, g);
            *aux = Some((module, o));
        }
        let grads = GradientsParams::from_grads(raw, &model);
        self.step_grads(model, grads, step)
    }

    /// Takes step `step` on `model` with gradients already formed (a data-parallel step's,
    /// summed over its workers): clipping, then AdamW.
    pub fn step_grads(
        &mut self,
        model: Mllm,
        mut grads: GradientsParams,
        step: usize,
    ) -> (Mllm, Stepped) {
        let grad_norm = clip::clip_global_norm(&model, &mut grads, self.spec.grad_clip);
        let lr = self.lr(step);
        let model = self.optim.step(lr, model, grads);
        (model, Stepped { lr, grad_norm })
    }
}
