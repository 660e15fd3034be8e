//! Token-level divergences between a teacher's and a student's next-token distributions
//! (METHODS.md section 2), on plain burn ops. The fused WGSL kernel of the kernels issue
//! implements the same [`DivergenceSpec`] and is checked against this file.
//!
//! Every divergence is computed from log-softmaxes, so no probability is ever logged after it
//! underflowed, and every one returns the *true* divergence: 0 when the two distributions are
//! identical. (The official LLaVA-KD code logs the cross-entropy form `-sum p_T log p_S`, which
//! has the same gradient but a floor at the teacher's entropy, so a log line cannot say how far
//! apart the models are.)

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use crate::backend::kernels::{self, DistillKind, KernelOps, KernelPolicy};
use crate::model::masked_mean;

/// Which divergence compares `p_T` (teacher) and `p_S` (student).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Divergence {
    /// `KL(p_T || p_S)`: mode-covering, the Hinton default.
    #[default]
    ForwardKl,
    /// `KL(p_S || p_T)`: mode-seeking (MiniLLM).
    ReverseKl,
    /// Generalised Jensen-Shannon (TRL GKD): `M = beta p_T + (1 - beta) p_S`,
    /// `beta KL(p_T || M) + (1 - beta) KL(p_S || M)`.
    Jsd {
        #[serde(default = "half")]
        beta: f64,
    },
    /// `KL(p_T || a p_T + (1 - a) p_S)` (DistiLLM).
    SkewForwardKl {
        #[serde(default = "tenth")]
        alpha: f64,
    },
    /// `KL(p_S || a p_S + (1 - a) p_T)` (DistiLLM).
    SkewReverseKl {
        #[serde(default = "tenth")]
        alpha: f64,
    },
    /// Total variation `0.5 sum |p_T - p_S|`.
    Tvd,
}

fn half() -> f64 {
    0.5
}
fn tenth() -> f64 {
    0.1
}

impl Divergence {
    /// Short name for logs and tables.
    pub fn label(&self) -> String {
        match self {
            Divergence::ForwardKl => "fkl".into(),
            Divergence::ReverseKl => "rkl".into(),
            Divergence::Jsd { beta } => format!("jsd({beta})"),
            Divergence::SkewForwardKl { alpha } => format!("skl({alpha})"),
            Divergence::SkewReverseKl { alpha } => format!("srkl({alpha})"),
            Divergence::Tvd => "tvd".into(),
        }
    }
}

/// A divergence with its temperature and logit normalisation: everything needed to turn two
/// logit tensors into one loss value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DivergenceSpec {
    #[serde(default)]
    pub divergence: Divergence,
    /// Softmax temperature applied to both models; the loss is scaled by `T^2` so that the
    /// gradient keeps its size as T changes (Hinton et al.).
    #[serde(default = "one")]
    pub temperature: f64,
    /// LLaVADI's per-token z-score of the logits (`(z - mean) / std` over the vocabulary) before
    /// the temperature: it removes the scale difference between a large and a small model's
    /// logits, so the student matches the teacher's ranking rather than its confidence.
    #[serde(default)]
    pub zscore: bool,
    /// Set from the recipe's top-level `kernels` when the stage starts (not a per-objective
    /// key): whether the fused WGSL kernel may replace the reference below.
    #[serde(skip)]
    pub kernels: KernelPolicy,
}

fn one() -> f64 {
    1.0
}

impl Default for DivergenceSpec {
    fn default() -> Self {
        DivergenceSpec {
            divergence: Divergence::ForwardKl,
            temperature: 1.0,
            zscore: false,
            kernels: KernelPolicy::Auto,
        }
    }
}

impl DivergenceSpec {
    /// Rejects values for which the divergence is undefined or degenerate, with a message the
    /// recipe loader prefixes with the file and stage.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let bad = |what: String| Err(what);
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!(
                "temperature must be a positive number, got {}",
                self.temperature
            ));
        }
        match self.divergence {
            Divergence::Jsd { beta } if !(beta > 0.0 && beta < 1.0) => bad(format!(
                "jsd beta must lie strictly between 0 and 1, got {beta}"
            )),
            Divergence::SkewForwardKl { alpha } | Divergence::SkewReverseKl { alpha }
                if !(0.0..1.0).contains(&alpha) =>
            {
                bad(format!("skew alpha must lie in [0, 1), got {alpha}"))
            }
            _ => Ok(()),
        }
    }
}

/// Per-token z-score over the last dimension; the epsilon keeps a constant row finite.
pub fn zscore<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    let last = D - 1;
    let centred = z.clone() - z.mean_dim(last);
    let std = (centred.clone().powi_scalar(2).mean_dim(last) + 1e-6).sqrt();
    centred / std
}

/// `log(a e^x + (1 - a) e^y)` elementwise, computed without leaving log space.
fn log_mix(a: f64, lx: Tensor<2>, ly: Tensor<2>) -> Tensor<2> {
    let x = lx + a.ln();
    let y = ly + (1.0 - a).ln();
    let m = x.clone().max_pair(y.clone());
    let d = (x - y).abs().neg();
    m + d.exp().log1p()
}

/// `sum_j p_j (lp_j - lq_j)` per row, with `p = exp(lp)`: `[N, V] -> [N]`.
fn kl_rows(lp: Tensor<2>, lq: Tensor<2>) -> Tensor<1> {
    let n = lp.dims()[0];
    (lp.clone().exp() * (lp - lq)).sum_dim(1).reshape([n])
}

/// Per-token divergence `[N]` between student and teacher logits `[N, V]`, *before* the `T^2`
/// scale. The teacher is detached: gradients only reach the student.
pub fn token_divergence(
    student: Tensor<2>,
    teacher: Tensor<2>,
    spec: &DivergenceSpec,
) -> Tensor<1> {
    let teacher = teacher.detach();
    let (student, teacher) = if spec.zscore {
        (zscore(student), zscore(teacher))
    } else {
        (student, teacher)
    };
    if kernels::kernels_apply(spec.kernels, &student.device()) {
        let rows = kernels::distill_slab_rows(student.dims()[1]);
        return fused_token_divergence(student, teacher, spec, rows);
    }
    let inv_t = 1.0 / spec.temperature;
    let ls = log_softmax(student * inv_t, 1);
    let lt = log_softmax(teacher * inv_t, 1);
    match spec.divergence {
        Divergence::ForwardKl => kl_rows(lt, ls),
        Divergence::ReverseKl => kl_rows(ls, lt),
        Divergence::Jsd { beta } => {
            let lm = log_mix(beta, lt.clone(), ls.clone());
            kl_rows(lt, lm.clone()) * beta + kl_rows(ls, lm) * (1.0 - beta)
        }
        Divergence::SkewForwardKl { alpha } => {
            let lm = log_mix(alpha, lt.clone(), ls);
            kl_rows(lt, lm)
        }
        Divergence::SkewReverseKl { alpha } => {
            let lm = log_mix(alpha, ls.clone(), lt);
            kl_rows(ls, lm)
        }
        Divergence::Tvd => {
            let n = ls.dims()[0];
            ((ls.exp() - lt.exp()).abs().sum_dim(1) * 0.5).reshape([n])
        }
    }
}

/// The divergence's code and parameter in the WGSL kernels.
fn kernel_kind(d: Divergence) -> (DistillKind, f32) {
    match d {
        Divergence::ForwardKl => (DistillKind::ForwardKl, 0.0),
        Divergence::ReverseKl => (DistillKind::ReverseKl, 0.0),
        Divergence::Jsd { beta } => (DistillKind::Jsd, beta as f32),
        Divergence::SkewForwardKl { alpha } => (DistillKind::SkewForwardKl, alpha as f32),
        Divergence::SkewReverseKl { alpha } => (DistillKind::SkewReverseKl, alpha as f32),
        Divergence::Tvd => (DistillKind::Tvd, 0.0),
    }
}

/// [`token_divergence`] through the fused WGSL kernel (`shaders/distill_*.wgsl`): one
/// operation over all rows, launched a slab of about `rows` rows at a time (one slab must fit
/// one storage binding; the kernel code rounds slabs so their byte offsets stay bindable); the
/// softmaxes are never stored, and the backward writes one `[N, V]` gradient. Inputs are
/// already z-scored and the teacher detached. Only valid where [`kernels::kernels_apply`]
/// holds.
///
/// The slabs live inside the operation rather than as narrowed inputs of several: burn's
/// autodiff turns each narrow's gradient into a zero-filled `[N, V]` tensor, so `k` slabs
/// would hold `k` full gradients at once.
pub(crate) fn fused_token_divergence(
    student: Tensor<2>,
    teacher: Tensor<2>,
    spec: &DivergenceSpec,
    rows: usize,
) -> Tensor<1> {
    let (kind, param) = kernel_kind(spec.divergence);
    let inv_t = (1.0 / spec.temperature) as f32;
    Tensor::from_dispatch(burn::backend::Dispatch::distill_rows(
        student.into_dispatch(),
        teacher.into_dispatch(),
        kind.code(),
        param,
        inv_t,
        rows.min(u32::MAX as usize) as u32,
    ))
}

/// `sum_i w_i * div_i` for the student logits `hidden [N, H] @ weight [H, V]` against
/// `teacher [N, V]`, before the `T^2` scale; `row_weight [N]` carries the mask and the mean's
/// normaliser. On wgpu (and without z-scoring) the fused-linear kernel path runs, `chunk` rows
/// at a time, and the `[N, V]` student logits never exist whole; elsewhere the logits are formed
/// and [`token_divergence`] runs on them. Gradients reach `hidden` and `weight`.
pub fn linear_divergence(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    teacher: Tensor<2>,
    row_weight: Tensor<1>,
    spec: &DivergenceSpec,
    chunk: usize,
) -> Tensor<1> {
    let teacher = teacher.detach();
    let row_weight = row_weight.detach();
    if !spec.zscore && kernels::kernels_apply(spec.kernels, &hidden.device()) {
        let (kind, param) = kernel_kind(spec.divergence);
        return Tensor::from_dispatch(burn::backend::Dispatch::fused_linear_distill(
            hidden.into_dispatch(),
            weight.into_dispatch(),
            teacher.into_dispatch(),
            row_weight.into_dispatch(),
            kind.code(),
            param,
            (1.0 / spec.temperature) as f32,
            chunk.max(1) as u32,
        ));
    }
    let per_token = token_divergence(hidden.matmul(weight), teacher, spec);
    (per_token * row_weight).sum()
}

/// Mean divergence over the tokens where `mask` is 1, scaled by `T^2`: `student`/`teacher`
/// `[B, T, V]`, `mask [B, T]`. Returns a `[1]` tensor; 0 when no token is counted.
pub fn masked_divergence(
    student: Tensor<3>,
    teacher: Tensor<3>,
    mask: Tensor<2>,
    spec: &DivergenceSpec,
) -> Tensor<1> {
    let [b, t, v] = student.dims();
    let per_token = token_divergence(
        student.reshape([b * t, v]),
        teacher.reshape([b * t, v]),
        spec,
    );
    masked_mean(per_token, mask.reshape([b * t])) * (spec.temperature * spec.temperature)
}
