//! The distillation objective (LLaVA-KD's MDist and RDist, LLaVADI's token, logit and
//! hidden-state alignment): the frozen teacher and the student see the same batch, and the
//! student's loss is the weighted sum of cross-entropy, response and visual divergences, RDist
//! and the hidden-state alignment of [`DistillSpec`].

use std::collections::BTreeMap;

use burn::optim::ModuleOptimizer;
use burn::prelude::*;

use super::super::teacher::{TEACHER_CACHE_MAX_BYTES, Teacher, TeacherCache};
use super::super::teacher_cache::CachedTeacher;
use super::super::visual::VisualSource;
use super::{RelationSnapshot, StageSetup, StepInput, StepLoss, router};
use crate::Result;
use crate::backend::kernels::Kernels;
use crate::config::{DistillSpec, KdTokens, RelationFeatures};
use crate::data::HostBatch;
use crate::distill::divergence::linear_divergence;
use crate::distill::sparse::linear_sparse_divergence;
use crate::distill::{
    HiddenProjection, correlation_loss, hidden_mse, linear_self_correlation, self_correlation,
};
use crate::model::{
    LabelledRows, Mllm, Visual, cross_entropy_chunk_rows, head_chunk_rows, labelled_cross_entropy,
};
use crate::run::checkpoint;

/// A distillation stage: the spec, where the teacher's outputs come from, LLaVADI's projection.
pub struct Distill<'a> {
    spec: DistillSpec,
    source: Source<'a>,
    kernels: Kernels,
    /// LLaVADI's projection of the student's hidden states to the teacher's width and its
    /// optimiser: it lives for the stage, and a mid-stage checkpoint carries it.
    pub(super) align: Option<(HiddenProjection, ModuleOptimizer)>,
}

/// Where a distillation stage reads the teacher. One per stage: the live variant's size does
/// not matter.
#[allow(clippy::large_enum_variant)]
enum Source<'a> {
    /// The teacher itself, run on each batch (its hidden states kept per example in memory
    /// as the stage meets them).
    Live {
        teacher: &'a Teacher,
        cache: TeacherCache,
        /// The teacher's visual input: its frozen tower's features, cached likewise.
        tvis: VisualSource,
        /// The teacher's LM head over the shared vocabulary `[D_teacher, V_shared]`, a
        /// constant on the autodiff device.
        head: Tensor<2>,
    },
    /// A teacher cache: top-k log-probs and relation matrices of the stage's data file.
    Cached {
        cache: &'a CachedTeacher,
        file: &'static str,
    },
}

impl<'a> Distill<'a> {
    pub fn prepare(setup: &StageSetup<'a, '_>, spec: DistillSpec) -> Result<Self> {
        let (source, teacher_width) = match setup.teacher_cache {
            Some(cache) => (
                Source::Cached {
                    cache,
                    file: setup.spec.data.train_file(),
                },
                cache.key().teacher.llm.hidden,
            ),
            None => {
                let teacher = setup.teacher()?;
                let head = teacher
                    .model
                    .llm
                    .head_weight()
                    .narrow(1, 0, teacher.vocab.shared)
                    .autodiff();
                (
                    Source::Live {
                        teacher,
                        cache: TeacherCache::new(teacher, TEACHER_CACHE_MAX_BYTES),
                        tvis: VisualSource::frozen(
                            &teacher.model.vision,
                            setup.feature_cache_bytes,
                        ),
                        head,
                    },
                    teacher.model.config.llm.hidden,
                )
            }
        };
        let align = if spec.hidden > 0.0 {
            let module = HiddenProjection::new(
                setup.recipe.model.llm.hidden,
                teacher_width,
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
            source,
            kernels: setup.kernels,
            align,
        })
    }

    pub fn loss(&self, model: &Mllm, input: StepInput) -> StepLoss {
        let inner = input.device.clone().inner();
        let side = match &self.source {
            Source::Live {
                teacher,
                cache,
                tvis,
                head,
            } => TeacherSide::Live {
                hidden: cache.batch(
                    teacher,
                    input.idx,
                    input.hb,
                    || tvis.for_pixels(input.pixels, &inner),
                    input.device,
                ),
                head,
            },
            Source::Cached { cache, file } => TeacherSide::Cached {
                cache,
                file,
                idx: input.idx,
            },
        };
        distill_loss(
            model,
            self.align.as_ref().map(|a| &a.0),
            side,
            &self.spec,
            self.kernels,
            input.hb,
            input.visual,
            input.want_relation,
            input.device,
        )
    }
}

/// The teacher's side of one step: its last hidden states on the batch and its head, or the
/// cached distributions of the batch's records.
#[allow(clippy::large_enum_variant)]
enum TeacherSide<'x> {
    Live {
        hidden: Tensor<3>,
        head: &'x Tensor<2>,
    },
    Cached {
        cache: &'x CachedTeacher,
        file: &'x str,
        idx: &'x [usize],
    },
}

impl TeacherSide<'_> {
    /// Vocabulary columns compared.
    fn shared(&self) -> usize {
        match self {
            TeacherSide::Live { head, .. } => head.dims()[1],
            TeacherSide::Cached { cache, .. } => cache.key().vocab,
        }
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
pub(crate) fn relation_cols(rows: usize) -> usize {
    ((32usize << 20) / (4 * rows.max(1))).max(1)
}

/// One distillation loss evaluation: `student_visual` is the batch's visual input for the
/// student, `teacher` the teacher's side of the same batch (live hidden states and head, from
/// memory or computed now, or a teacher cache). Every term reads logits only at the positions
/// it compares, through the heads a chunk at a time (LLaVA's visual and prompt tokens are most
/// of a batch, and a real vocabulary makes `[B, T, V]` logits the largest tensor of the step):
/// neither model's logits exist whole. `kernels` decides, once, whether the divergences run
/// the fused kernels.
#[allow(clippy::too_many_arguments)]
fn distill_loss(
    student: &Mllm,
    align: Option<&HiddenProjection>,
    teacher: TeacherSide,
    spec: &DistillSpec,
    kernels: Kernels,
    hb: &HostBatch,
    student_visual: Visual,
    want_relation: bool,
    ad: &Device,
) -> StepLoss {
    let batch = hb.to_device(student_visual, ad);
    let (s_hidden, trace) = student.hidden_routed(&batch, crate::model::moe::Phase::Train);
    let (b, t) = (hb.b, hb.t);
    let shared = teacher.shared();
    let full_head = student.llm.head_weight();
    let s_head = full_head.clone().narrow(1, 0, shared);
    let chunk = head_chunk_rows(shared);
    // the mean divergence over the positions `at`, scaled by T^2 (0 when there are none)
    let divergence = |at: Vec<i64>| {
        let n = at.len();
        if n == 0 {
            return s_hidden.clone().sum().mul_scalar(0.0);
        }
        let temp = spec.divergence.temperature;
        let weight = Tensor::<1>::full([n], 1.0 / n as f64, ad);
        let rows = |x: &Tensor<3>, at: Vec<i64>| {
            let d = x.dims()[2];
            let index = Tensor::<1, Int>::from_data(TensorData::new(at, [n]), ad);
            x.clone().reshape([b * t, d]).select(0, index)
        };
        let value = match &teacher {
            TeacherSide::Live { hidden, head } => linear_divergence(
                rows(&s_hidden, at.clone()),
                s_head.clone(),
                rows(hidden, at),
                (*head).clone(),
                weight,
                &spec.divergence,
                kernels,
                chunk,
            ),
            TeacherSide::Cached { cache, file, idx } => {
                let sparse = cache.rows(file, idx, t, &at, ad);
                linear_sparse_divergence(
                    rows(&s_hidden, at),
                    s_head.clone(),
                    &sparse,
                    weight,
                    &spec.divergence,
                    kernels,
                    chunk,
                )
            }
        };
        value * (temp * temp)
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
            let ys = rows(s_hidden.clone(), &index, b, n);
            let rs = match spec.relation {
                RelationFeatures::Logits => {
                    linear_self_correlation(ys, s_head.clone(), relation_cols(b * n))
                }
                RelationFeatures::Hidden => self_correlation(ys),
            };
            let rt = match &teacher {
                TeacherSide::Live { hidden, head } => {
                    let yt = rows(hidden.clone(), &index, b, n).detach();
                    Some(match spec.relation {
                        RelationFeatures::Logits => {
                            linear_self_correlation(yt, (*head).clone(), relation_cols(b * n))
                                .detach()
                        }
                        RelationFeatures::Hidden => self_correlation(yt),
                    })
                }
                TeacherSide::Cached { cache, file, idx } => {
                    cache.relations(file, idx, spec.relation, ad)
                }
            };
            if let Some(rt) = rt {
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
    }
    if spec.hidden > 0.0
        && let TeacherSide::Live { hidden, .. } = &teacher
    {
        let align = align.expect("a hidden-alignment projection when hidden > 0");
        let mse = hidden_mse(align.forward(s_hidden), hidden.clone(), token_mask);
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
