//! A distillation step: the frozen teacher and the student see the same batch; the student's
//! loss is the weighted sum of cross-entropy, response and visual divergences, RDist and the
//! hidden-state alignment of [`DistillSpec`]. The teacher runs on the inner (non-autodiff)
//! device, so no graph is ever built through it and its weights cannot change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::checkpoint;
use crate::backend::kernels;
use crate::config::{DistillSpec, KdTokens, MllmConfig, RelationFeatures};
use crate::data::{Dataset, Encoded, HostBatch, Padding, TextTokenizer, host_batch};
use crate::distill::divergence::linear_divergence;
use crate::distill::{
    DivergenceSpec, HiddenProjection, VocabAlignment, hidden_mse, masked_divergence, relation_loss,
    self_correlation,
};
use crate::model::{Mllm, Visual, masked_cross_entropy};
use crate::{Error, Result};

/// The loaded teacher and how its vocabulary lines up with the student's.
pub struct Teacher {
    pub model: Mllm,
    pub checkpoint: PathBuf,
    pub vocab: VocabAlignment,
}

/// Finds the tokenizer a teacher was trained with: the run folder holds a copy beside
/// `checkpoints/` (`<run>/checkpoints/<ckpt>/` -> `<run>/tokenizer.json`), a bare checkpoint
/// folder may hold its own.
fn teacher_tokenizer(ckpt: &Path) -> Option<PathBuf> {
    let own = ckpt.join("tokenizer.json");
    let run = ckpt
        .parent()
        .and_then(Path::parent)
        .map(|run| run.join("tokenizer.json"));
    std::iter::once(own).chain(run).find(|p| p.exists())
}

impl Teacher {
    /// Loads the teacher from `ckpt` onto `device` (an inner, non-autodiff device) and checks it
    /// against the student: same vision encoder shape (LLaVA-KD shares the frozen encoder, and
    /// RDist compares visual tokens one to one), same tokenizer, compatible vocabularies.
    pub fn load(
        ckpt: &Path,
        student: &MllmConfig,
        tokenizer: &TextTokenizer,
        device: &Device,
    ) -> Result<Teacher> {
        let config = checkpoint::load_config(ckpt)?;
        let bad = |message: String| Error::Checkpoint {
            path: ckpt.to_path_buf(),
            message,
        };
        if config.vision.num_visual_tokens() != student.vision.num_visual_tokens()
            || config.vision.image_size != student.vision.image_size
        {
            return Err(bad(format!(
                "the teacher sees {} visual tokens of {} px images, the student {} of {} px: \
                 teacher and student must share the vision encoder",
                config.vision.num_visual_tokens(),
                config.vision.image_size,
                student.vision.num_visual_tokens(),
                student.vision.image_size
            )));
        }
        let tok = teacher_tokenizer(ckpt).ok_or_else(|| {
            bad(
                "no tokenizer.json beside the teacher checkpoint: cannot check that teacher \
                 and student share a tokenizer"
                    .into(),
            )
        })?;
        let theirs = std::fs::read(&tok).map_err(|e| Error::io(&tok, e))?;
        let ours = std::fs::read(&tokenizer.path).map_err(|e| Error::io(&tokenizer.path, e))?;
        if theirs != ours {
            return Err(bad(format!(
                "the teacher's tokenizer ({}) differs from the student's ({}): distillation \
                 compares distributions over the same token ids, so both must use one tokenizer",
                tok.display(),
                tokenizer.path.display()
            )));
        }
        let vocab = VocabAlignment::new(
            student.llm.vocab_size,
            config.llm.vocab_size,
            tokenizer.vocab_size(),
        )
        .map_err(bad)?;
        let model = checkpoint::load_full(ckpt, device)?;
        Ok(Teacher {
            model,
            checkpoint: ckpt.to_path_buf(),
            vocab,
        })
    }
}

impl Teacher {
    /// Last hidden states `[B, T, D]` and logits over the shared vocabulary `[B, T, V]` of one
    /// batch, on the inner device.
    fn outputs(&self, hb: &HostBatch, visual: Visual, inner: &Device) -> (Tensor<3>, Tensor<3>) {
        let batch = hb.to_device(visual, inner);
        let hidden = self.model.hidden(&batch);
        let logits = self.vocab.narrow(self.model.llm.logits(hidden.clone()));
        (hidden, logits)
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
        chunk,
    ) * (spec.temperature * spec.temperature)
}

/// What the teacher says about one batch, already on the autodiff device as constants.
pub struct TeacherOut {
    /// `[B, T, V_shared]`.
    pub logits: Tensor<3>,
    /// `[B, T, D_teacher]`.
    pub hidden: Tensor<3>,
}

/// Runs the teacher on one batch.
pub fn teacher_forward(
    teacher: &Teacher,
    hb: &HostBatch,
    visual: Visual,
    ad: &Device,
) -> TeacherOut {
    let (hidden, logits) = teacher.outputs(hb, visual, &ad.clone().inner());
    TeacherOut {
        logits: logits.autodiff(),
        hidden: hidden.autodiff(),
    }
}

/// Rows `index` of `[B, T, D]` flattened, as `[B, N, D]`.
fn rows(x: Tensor<3>, index: &Tensor<1, Int>, b: usize, n: usize) -> Tensor<3> {
    let [bb, t, d] = x.dims();
    x.reshape([bb * t, d])
        .select(0, index.clone())
        .reshape([b, n, d])
}

/// The total loss and its named terms (unweighted, for the event log).
pub struct DistillLoss {
    pub total: Tensor<1>,
    pub terms: BTreeMap<String, f32>,
    /// The student's MoE routing in this step (empty when dense).
    pub routing: Vec<crate::model::moe::LayerRouting>,
    /// When asked for and the spec has a relation term: the first example's visual-token
    /// self-correlation `(n, teacher, student)`, row-major `n x n`, for the event log.
    pub relation: Option<(usize, Vec<f32>, Vec<f32>)>,
}

/// One distillation loss evaluation: `student_visual` is the batch's visual input for the
/// student, `t_out` the teacher's outputs on the same batch (live or from a [`TeacherCache`]).
#[allow(clippy::too_many_arguments)]
pub fn distill_loss(
    student: &Mllm,
    align: Option<&HiddenProjection>,
    teacher: &Teacher,
    spec: &DistillSpec,
    hb: &HostBatch,
    student_visual: Visual,
    t_out: TeacherOut,
    want_relation: bool,
    ad: &Device,
) -> DistillLoss {
    let batch = hb.to_device(student_visual, ad);
    let (s_hidden, trace) = student.hidden_routed(&batch, crate::model::moe::Phase::Train);
    // Without cross-entropy and logit-based RDist nothing needs the student's logits whole: the
    // divergences then go through the fused-linear kernels from the hidden states and the head.
    let fused = spec.ce == 0.0
        && (spec.rel == 0.0 || spec.relation == RelationFeatures::Hidden)
        && !spec.divergence.zscore
        && kernels::kernels_apply(spec.divergence.kernels, ad);
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
        Some((s, _)) => masked_divergence(s.clone(), t_out.logits.clone(), mask, &spec.divergence),
        None => linear_masked_divergence(
            s_hidden.clone(),
            head(),
            t_out.logits.clone(),
            mask,
            &spec.divergence,
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
                relation = Some((n, first(&yt), first(&ys)));
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
    let total = super::router::add_router_losses(student, &trace, total, &mut terms);
    DistillLoss {
        total,
        terms,
        routing: trace.layers,
        relation,
    }
}

/// The teacher's outputs on every example of a stage, computed once. The teacher and its
/// encoder are frozen and the examples do not change, so over a many-epoch stage this replaces
/// one teacher forward per step by a host-side copy (DESIGN.md: "teacher logits can be computed
/// once and cached"). Right padding and the causal mask make an example's outputs independent
/// of what it is batched with, so the cached values are the live ones up to float rounding.
pub struct TeacherCache {
    logits: Vec<Vec<f32>>,
    hidden: Vec<Vec<f32>>,
    vocab: usize,
    width: usize,
}

/// Largest cache built; above it the teacher runs live every step.
pub const TEACHER_CACHE_MAX_BYTES: usize = 4 << 30;

impl TeacherCache {
    /// Bytes a cache of `data` would take (f32 logits and hidden states per token).
    pub fn bytes(teacher: &Teacher, data: &Dataset) -> usize {
        let tokens: usize = data.encoded.iter().map(|e| e.ids.len()).sum();
        tokens * (teacher.vocab.shared + teacher.model.config.llm.hidden) * 4
    }

    /// Runs the teacher over every example in chunks; `visual(idx)` gives the teacher's visual
    /// input for a chunk on the inner device.
    pub fn build(
        teacher: &Teacher,
        data: &Dataset,
        pad: u32,
        visual: &dyn Fn(&[usize]) -> Visual,
        inner: &Device,
    ) -> TeacherCache {
        let nv = teacher.model.config.vision.num_visual_tokens();
        let vocab = teacher.vocab.shared;
        let width = teacher.model.config.llm.hidden;
        let mut logits = Vec::with_capacity(data.len());
        let mut hidden = Vec::with_capacity(data.len());
        let all: Vec<usize> = (0..data.len()).collect();
        for chunk in all.chunks(64) {
            let examples: Vec<&Encoded> = chunk.iter().map(|&i| &data.encoded[i]).collect();
            let hb = host_batch(&examples, nv, pad, Padding::Right);
            let (h, l) = teacher.outputs(&hb, visual(chunk), inner);
            let h: Vec<f32> = h
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32");
            let l: Vec<f32> = l
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32");
            for (r, e) in examples.iter().enumerate() {
                let n = e.ids.len();
                let at = r * hb.t;
                logits.push(l[at * vocab..(at + n) * vocab].to_vec());
                hidden.push(h[at * width..(at + n) * width].to_vec());
            }
        }
        TeacherCache {
            logits,
            hidden,
            vocab,
            width,
        }
    }

    /// The cached outputs of examples `idx`, laid out like `hb` (right padding, zeros beyond
    /// each example's end, where every mask is 0).
    pub fn batch(&self, idx: &[usize], hb: &HostBatch, ad: &Device) -> TeacherOut {
        let (b, t) = (hb.b, hb.t);
        let mut l = vec![0.0f32; b * t * self.vocab];
        let mut h = vec![0.0f32; b * t * self.width];
        for (r, &i) in idx.iter().enumerate() {
            let src = &self.logits[i];
            l[r * t * self.vocab..r * t * self.vocab + src.len()].copy_from_slice(src);
            let src = &self.hidden[i];
            h[r * t * self.width..r * t * self.width + src.len()].copy_from_slice(src);
        }
        TeacherOut {
            logits: Tensor::from_data(TensorData::new(l, [b, t, self.vocab]), ad),
            hidden: Tensor::from_data(TensorData::new(h, [b, t, self.width]), ad),
        }
    }
}
