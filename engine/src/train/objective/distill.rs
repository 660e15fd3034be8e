//! The distillation objective (LLaVA-KD's MDist and RDist, LLaVADI's token, logit and
//! hidden-state alignment): the frozen teacher and the student see the same batch, and the
//! student's loss is the weighted sum of cross-entropy, response and visual divergences, RDist
//! and the hidden-state alignment of [`DistillSpec`].

use std::collections::BTreeMap;

use burn::optim::ModuleOptimizer;
use burn::prelude::*;

use super::super::teacher::{TEACHER_CACHE_MAX_BYTES, Teacher, TeacherCache};
use super::super::visual::VisualSource;
use super::{RelationSnapshot, StageSetup, StepInput, StepLoss, router};
use crate::Result;
use crate::backend::kernels::Kernels;
use crate::config::{DistillSpec, KdTokens, RelationFeatures};
use crate::data::HostBatch;
use crate::distill::divergence::linear_divergence;
use crate::distill::{
    HiddenProjection, correlation_loss, hidden_mse, linear_self_correlation, self_correlation,
};
use crate::model::{
    LabelledRows, Mllm, Visual, cross_entropy_chunk_rows, head_chunk_rows, labelled_cross_entropy,
};
use crate::run::checkpoint;

/// A distillation stage: the spec, the teacher and its outputs, LLaVADI's projection.
pub struct Distill<'a> {
    spec: DistillSpec,
    teacher: &'a Teacher,
    /// The teacher's hidden states, kept per example as the stage meets them.
    cache: TeacherCache,
    /// The teacher's visual input: its frozen tower's features, cached likewise.
    tvis: VisualSource,
    /// The teacher's LM head over the shared vocabulary `[D_teacher, V_shared]`, a constant
    /// on the autodiff device.
    teacher_head: Tensor<2>,
    kernels: Kernels,
    /// LLaVADI's projection of the student's hidden states to the teacher's width and its
    /// optimiser: it lives for the stage, and a mid-stage checkpoint carries it.
    pub(super) align: Option<(HiddenProjection, ModuleOptimizer)>,
}

impl<'a> Distill<'a> {
    pub fn prepare(setup: &StageSetup<'a, '_>, spec: DistillSpec) -> Result<Self> {
        let teacher = setup.teacher()?;
        let tvis = VisualSource::frozen(&teacher.model.vision, setup.feature_cache_bytes);
        let cache = TeacherCache::new(teacher, TEACHER_CACHE_MAX_BYTES);
        let align = if spec.hidden > 0.0 {
            let module = HiddenProjection::new(
                setup.recipe.model.llm.hidden,
                teacher.model.config.llm.hidden,
                setup.recipe.seed ^ ((setup.stage as u64 + 1) * 0x9E37),
                setup.device,
            );
            let o = super::super::schedule::adamw(setup.spec);
            Some(match setup.resume {
                Some(ck) => checkpoint::load_align(ck, module, o)?,
                None => (module, o),
            })
        } else {
            None
        };
        let teacher_head = teacher
            .model
            .llm
            .head_weight()
            .narrow(1, 0, teacher.vocab.shared)
            .autodiff();
        Ok(Distill {
            spec,
            teacher,
            cache,
            tvis,
            teacher_head,
            kernels: setup.kernels,
            align,
        })
    }

    pub fn loss(&self, model: &Mllm, input: StepInput) -> StepLoss {
        let inner = input.device.clone().inner();
        let t_hidden = self.cache.batch(
            self.teacher,
            input.idx,
            input.hb,
            || self.tvis.for_pixels(input.pixels, &inner),
            input.device,
        );
        distill_loss(
            model,
            self.align.as_ref().map(|a| &a.0),
            &self.teacher_head,
            &self.spec,
            self.kernels,
            input.hb,
            input.visual,
            t_hidden,
            input.want_relation,
            input.device,
        )
    }
}

/// Rows `index` of `[B, T, D]` flattened, as `[B, N, D]`.
fn rows(x: Tensor<3>, index: &Tensor<1, Int>, b: usize, n: usize) -> Tensor<3> {
    let [bb, t, d] = x.dims();
    x.reshape([bb * t, d])
        .select(0, index.clone())
        .reshape([b, n, d])
}

/// The flattened `[B T]` positions where `mask` is non-zero.
fn mask_rows(mask: &[f32]) -> Vec<i64> {
    (0..mask.len())
        .filter(|&i| mask[i] != 0.0)
        .map(|i| i as i64)
        .collect()
}

/// Vocabulary columns per chunk of RDist's logits for `rows` visual tokens (32 MiB of f32).
fn relation_cols(rows: usize) -> usize {
    ((32usize << 20) / (4 * rows.max(1))).max(1)
}

/// One distillation loss evaluation: `student_visual` is the batch's visual input for the
/// student, `t_hidden` the teacher's last hidden states on the same batch (live or from a
/// [`TeacherCache`]) and `t_head` its LM head over the shared vocabulary. Every term reads
/// logits only at the positions it compares, through the heads a chunk at a time (LLaVA's
/// visual and prompt tokens are most of a batch, and a real vocabulary makes `[B, T, V]`
/// logits the largest tensor of the step): neither model's logits exist whole. `kernels`
/// decides, once, whether the divergences run the fused kernels.
#[allow(clippy::too_many_arguments)]
fn distill_loss(
    student: &Mllm,
    align: Option<&HiddenProjection>,
    t_head: &Tensor<2>,
    spec: &DistillSpec,
    kernels: Kernels,
    hb: &HostBatch,
    student_visual: Visual,
    t_hidden: Tensor<3>,
    want_relation: bool,
    ad: &Device,
) -> StepLoss {
    let batch = hb.to_device(student_visual, ad);
    let (s_hidden, trace) = student.hidden_routed(&batch, crate::model::moe::Phase::Train);
    let (b, t) = (hb.b, hb.t);
    let [_, _, ds] = s_hidden.dims();
    let dt = t_hidden.dims()[2];
    let shared = t_head.dims()[1];
    let full_head = student.llm.head_weight();
    let s_head = full_head.clone().narrow(1, 0, shared);
    let chunk = head_chunk_rows(shared);
    // the mean divergence over the positions `at`, scaled by T^2 (0 when there are none)
    let divergence = |at: Vec<i64>| {
        let n = at.len();
        if n == 0 {
            return s_hidden.clone().sum().mul_scalar(0.0);
        }
        let index = Tensor::<1, Int>::from_data(TensorData::new(at, [n]), ad);
        let hs = s_hidden
            .clone()
            .reshape([b * t, ds])
            .select(0, index.clone());
        let ht = t_hidden.clone().reshape([b * t, dt]).select(0, index);
        let weight = Tensor::<1>::full([n], 1.0 / n as f64, ad);
        let temp = spec.divergence.temperature;
        linear_divergence(
            hs,
            s_head.clone(),
            ht,
            t_head.clone(),
            weight,
            &spec.divergence,
            kernels,
            chunk,
        ) * (temp * temp)
    };

    let mut total = Tensor::<1>::zeros([1], ad);
    let mut terms = BTreeMap::new();
    let mut relation = None;
    let mut add = |name: &str, weight: f64, value: Tensor<1>, total: &mut Tensor<1>| {
        terms.insert(name.to_string(), value.clone().into_scalar::<f32>());
        *total = total.clone() + value * weight;
    };

    if spec.ce > 0.0 {
        let at = LabelledRows::from_mask(&hb.loss_mask, &hb.targets);
        let v = full_head.dims()[1];
        let ce = labelled_cross_entropy(
            s_hidden.clone(),
            full_head.clone(),
            &at,
            cross_entropy_chunk_rows(v, kernels),
            kernels,
        );
        add("ce", spec.ce, ce, &mut total);
    }
    let (token_mask, token_rows) = match spec.tokens {
        KdTokens::Response => (batch.loss_mask.clone(), mask_rows(&hb.loss_mask)),
        KdTokens::All => (batch.attention_mask.clone(), mask_rows(&hb.attention_mask)),
    };
    if spec.res > 0.0 {
        add("res", spec.res, divergence(token_rows), &mut total);
    }
    if spec.vis > 0.0 {
        let at = mask_rows(&hb.visual_mask());
        add("vis", spec.vis, divergence(at), &mut total);
    }
    if spec.rel > 0.0 {
        let n = student.config.vision.num_visual_tokens();
        if let Some(index) = hb.visual_index(n) {
            let index = Tensor::<1, Int>::from_data(TensorData::new(index, [b * n]), ad);
            let (ys, yt) = (
                rows(s_hidden.clone(), &index, b, n),
                rows(t_hidden.clone(), &index, b, n),
            );
            let (rs, rt) = match spec.relation {
                RelationFeatures::Logits => {
                    let cols = relation_cols(b * n);
                    (
                        linear_self_correlation(ys, s_head.clone(), cols),
                        linear_self_correlation(yt.detach(), t_head.clone(), cols).detach(),
                    )
                }
                RelationFeatures::Hidden => (self_correlation(ys), self_correlation(yt.detach())),
            };
            if want_relation {
                let first = |r: &Tensor<3>| {
                    r.clone()
                        .slice(0..1)
                        .detach()
                        .into_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .expect("f32 data")
                };
                relation = Some(RelationSnapshot {
                    n,
                    teacher: first(&rt),
                    student: first(&rs),
                });
            }
            add("rel", spec.rel, correlation_loss(rs, rt), &mut total);
        }
    }
    if spec.hidden > 0.0 {
        let align = align.expect("a hidden-alignment projection when hidden > 0");
        let mse = hidden_mse(align.forward(s_hidden), t_hidden, token_mask);
        add("hidden", spec.hidden, mse, &mut total);
    }
    let total = router::add_router_losses(student, &trace, total, &mut terms);
    StepLoss {
        total,
        terms,
        routing: trace.layers,
        relation,
    }
}
