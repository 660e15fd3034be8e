//! The distillation objective (LLaVA-KD's MDist and RDist, LLaVADI's token, logit and
//! hidden-state alignment): the frozen teacher and the student see the same batch, and the
//! student's loss is the weighted sum of cross-entropy, response and visual divergences, RDist
//! and the hidden-state alignment of [`DistillSpec`].

use std::collections::BTreeMap;
use std::time::Instant;

use burn::optim::ModuleOptimizer;
use burn::prelude::*;

use super::super::teacher::{
    TEACHER_CACHE_MAX_BYTES, Teacher, TeacherCache, TeacherOut, teacher_forward,
};
use super::super::visual::VisualSource;
use super::{RelationSnapshot, StageSetup, StepInput, StepLoss, router};
use crate::Result;
use crate::backend::kernels::Kernels;
use crate::config::{DistillSpec, KdTokens, RelationFeatures};
use crate::data::{Dataset, HostBatch};
use crate::distill::divergence::linear_divergence;
use crate::distill::{
    DivergenceSpec, HiddenProjection, hidden_mse, masked_divergence, relation_loss,
    self_correlation,
};
use crate::model::{Mllm, Visual, masked_cross_entropy};
use crate::run::checkpoint;

/// Where a distillation stage's teacher outputs come from.
enum TeacherSource {
    /// Computed once for every example of the stage.
    Cached(TeacherCache),
    /// Computed every step (the cache would not fit in memory).
    Live(Box<VisualSource>),
}

/// A distillation stage: the spec, the teacher and its outputs, LLaVADI's projection.
pub struct Distill<'a> {
    spec: DistillSpec,
    teacher: &'a Teacher,
    data: &'a Dataset,
    source: TeacherSource,
    kernels: Kernels,
    /// LLaVADI's projection of the student's hidden states to the teacher's width and its
    /// optimiser: it lives for the stage, and a mid-stage checkpoint carries it.
    pub(super) align: Option<(HiddenProjection, ModuleOptimizer)>,
}

impl<'a> Distill<'a> {
    pub fn prepare(setup: &StageSetup<'a, '_>, spec: DistillSpec) -> Result<Self> {
        let teacher = setup.teacher()?;
        let data = setup.data;
        let inner = setup.device.clone().inner();
        let tvis = VisualSource::frozen(&teacher.model.vision, data, &inner);
        let bytes = TeacherCache::bytes(teacher, data);
        let source = if bytes <= TEACHER_CACHE_MAX_BYTES {
            let t0 = Instant::now();
            let cache = TeacherCache::build(
                teacher,
                data,
                setup.tokenizer.special.pad,
                &|idx| tvis.for_batch(data, idx, &inner),
                &inner,
            );
            log::info!(
                "stage {:?}: teacher outputs cached for {} examples ({:.0} MB) in {:.1} s",
                setup.spec.name,
                data.len(),
                bytes as f64 / 1e6,
                t0.elapsed().as_secs_f64()
            );
            TeacherSource::Cached(cache)
        } else {
            TeacherSource::Live(Box::new(tvis))
        };
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
        Ok(Distill {
            spec,
            teacher,
            data,
            source,
            kernels: setup.kernels,
            align,
        })
    }

    pub fn loss(&self, model: &Mllm, input: StepInput) -> StepLoss {
        let inner = input.device.clone().inner();
        let t_out = match &self.source {
            TeacherSource::Cached(c) => c.batch(input.idx, input.hb, input.device),
            TeacherSource::Live(tvis) => teacher_forward(
                self.teacher,
                input.hb,
                tvis.for_batch(self.data, input.idx, &inner),
                input.device,
            ),
        };
        distill_loss(
            model,
            self.align.as_ref().map(|a| &a.0),
            self.teacher,
            &self.spec,
            self.kernels,
            input.hb,
            input.visual,
            t_out,
            input.want_relation,
            input.device,
        )
    }
}

/// [`masked_divergence`] from the student's hidden states `[B, T, D]` and head `[D, V]`
/// through the fused-linear kernels: the `[B T, V]` student logits are never formed whole.
fn linear_masked_divergence(
    hidden: Tensor<3>,
    head: Tensor<2>,
    teacher: Tensor<3>,
    mask: Tensor<2>,
    spec: &DivergenceSpec,
    kernels: Kernels,
) -> Tensor<1> {
    let [b, t, d] = hidden.dims();
    let v = head.dims()[1];
    let count = mask.clone().sum().clamp_min(1.0);
    let row_weight = mask.reshape([b * t]) / count;
    // chunks of at most 32 MiB of logits
    let chunk = ((32usize << 20) / (4 * v)).max(64);
    linear_divergence(
        hidden.reshape([b * t, d]),
        head,
        teacher.reshape([b * t, v]),
        row_weight,
        spec,
        kernels,
        chunk,
    ) * (spec.temperature * spec.temperature)
}

/// Rows `index` of `[B, T, D]` flattened, as `[B, N, D]`.
fn rows(x: Tensor<3>, index: &Tensor<1, Int>, b: usize, n: usize) -> Tensor<3> {
    let [bb, t, d] = x.dims();
    x.reshape([bb * t, d])
        .select(0, index.clone())
        .reshape([b, n, d])
}

/// One distillation loss evaluation: `student_visual` is the batch's visual input for the
/// student, `t_out` the teacher's outputs on the same batch (live or from a [`TeacherCache`]).
/// `kernels` decides, once, whether the divergences run the fused kernels.
#[allow(clippy::too_many_arguments)]
fn distill_loss(
    student: &Mllm,
    align: Option<&HiddenProjection>,
    teacher: &Teacher,
    spec: &DistillSpec,
    kernels: Kernels,
    hb: &HostBatch,
    student_visual: Visual,
    t_out: TeacherOut,
    want_relation: bool,
    ad: &Device,
) -> StepLoss {
    let batch = hb.to_device(student_visual, ad);
    let (s_hidden, trace) = student.hidden_routed(&batch, crate::model::moe::Phase::Train);
    // Without cross-entropy and logit-based RDist nothing needs the student's logits whole: the
    // divergences then go through the fused-linear kernels from the hidden states and the head.
    let fused = spec.ce == 0.0
        && (spec.rel == 0.0 || spec.relation == RelationFeatures::Hidden)
        && !spec.divergence.zscore
        && kernels.fused();
    let s_logits = (!fused).then(|| {
        let full = student.llm.logits(s_hidden.clone());
        (teacher.vocab.narrow(full.clone()), full)
    });
    let head = || {
        let w = student.llm.head_weight();
        let shared = t_out.logits.dims()[2];
        w.clone().narrow(1, 0, shared)
    };
    let divergence = |mask: Tensor<2>| match &s_logits {
        Some((s, _)) => masked_divergence(
            s.clone(),
            t_out.logits.clone(),
            mask,
            &spec.divergence,
            kernels,
        ),
        None => linear_masked_divergence(
            s_hidden.clone(),
            head(),
            t_out.logits.clone(),
            mask,
            &spec.divergence,
            kernels,
        ),
    };
    let (b, t) = (hb.b, hb.t);
    let mask2 = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [b, t]), ad);

    let mut total = Tensor::<1>::zeros([1], ad);
    let mut terms = BTreeMap::new();
    let mut relation = None;
    let mut add = |name: &str, weight: f64, value: Tensor<1>, total: &mut Tensor<1>| {
        terms.insert(name.to_string(), value.clone().into_scalar::<f32>());
        *total = total.clone() + value * weight;
    };

    if let (true, Some((_, full))) = (spec.ce > 0.0, &s_logits) {
        let ce = masked_cross_entropy(full.clone(), batch.targets.clone(), batch.loss_mask.clone());
        add("ce", spec.ce, ce, &mut total);
    }
    let token_mask = match spec.tokens {
        KdTokens::Response => batch.loss_mask.clone(),
        KdTokens::All => batch.attention_mask.clone(),
    };
    if spec.res > 0.0 {
        add("res", spec.res, divergence(token_mask.clone()), &mut total);
    }
    if spec.vis > 0.0 {
        add(
            "vis",
            spec.vis,
            divergence(mask2(hb.visual_mask())),
            &mut total,
        );
    }
    if spec.rel > 0.0 {
        let n = student.config.vision.num_visual_tokens();
        if let Some(index) = hb.visual_index(n) {
            let index = Tensor::<1, Int>::from_data(TensorData::new(index, [b * n]), ad);
            let (ys, yt) = match (spec.relation, &s_logits) {
                (RelationFeatures::Logits, Some((s, _))) => (s.clone(), t_out.logits.clone()),
                (RelationFeatures::Logits, None) => unreachable!("logit RDist forms the logits"),
                (RelationFeatures::Hidden, _) => (s_hidden.clone(), t_out.hidden.clone()),
            };
            let (ys, yt) = (rows(ys, &index, b, n), rows(yt, &index, b, n));
            if want_relation {
                let first = |y: &Tensor<3>| {
                    let r = self_correlation(y.clone().slice(0..1).detach());
                    r.into_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .expect("f32 data")
                };
                relation = Some(RelationSnapshot {
                    n,
                    teacher: first(&yt),
                    student: first(&ys),
                });
            }
            let rel = relation_loss(ys, yt);
            add("rel", spec.rel, rel, &mut total);
        }
    }
    if spec.hidden > 0.0 {
        let align = align.expect("a hidden-alignment projection when hidden > 0");
        let mse = hidden_mse(align.forward(s_hidden), t_out.hidden, token_mask);
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
