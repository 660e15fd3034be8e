//! Token-level divergences between a teacher's and a student's next-token distributions
//! (docs/METHODS.md section 2), on plain burn ops, and the choice between them and the fused
//! WGSL kernel (`backend::kernels`), which implements the same [`DivergenceSpec`] and is
//! checked against this file. The choice is the run's one [`Kernels`] value, passed in.
//!
//! Every divergence is computed from log-softmaxes, so no probability is ever logged after it
//! underflowed, and every one returns the *true* divergence: 0 when the two distributions are
//! identical. (The official LLaVA-KD code logs the cross-entropy form `-sum p_T log p_S`, which
//! has the same gradient but a floor at the teacher's entropy, so a log line cannot say how far
//! apart the models are.)

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::backend::kernels::{self, DistillKind, Kernels};
pub use crate::config::{Divergence, DivergenceSpec};
use crate::model::masked_mean;

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
    kernels: Kernels,
) -> Tensor<1> {
    let teacher = teacher.detach();
    let (student, teacher) = if spec.zscore {
        (zscore(student), zscore(teacher))
    } else {
        (student, teacher)
    };
    if kernels.fused() {
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
/// already z-scored and the teacher detached. Only valid where the run resolved
/// [`Kernels::Fused`].
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
    kernels::distill_rows(student, teacher, kind, param, inv_t, rows)
}

/// `sum_i w_i * div_i` for the student logits `hidden [N, H] @ weight [H, V]` against the
/// teacher's `teacher_hidden [N, Ht] @ teacher_weight [Ht, V]`, before the `T^2` scale;
/// `row_weight [N]` carries the mean's normaliser. Both models' logits are formed `chunk` rows
/// at a time and never exist whole: with the kernels (and without z-scoring) through the
/// fused-linear kernel, elsewhere as plain burn ops over each chunk's logits (z-scoring is per
/// row, so it chunks too). Gradients reach `hidden` and `weight`; the teacher is a constant.
#[allow(clippy::too_many_arguments)]
pub fn linear_divergence(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    teacher_hidden: Tensor<2>,
    teacher_weight: Tensor<2>,
    row_weight: Tensor<1>,
    spec: &DivergenceSpec,
    kernels: Kernels,
    chunk: usize,
) -> Tensor<1> {
    let teacher_hidden = teacher_hidden.detach();
    let teacher_weight = teacher_weight.detach();
    let row_weight = row_weight.detach();
    if !spec.zscore && kernels.fused() {
        let (kind, param) = kernel_kind(spec.divergence);
        let inv_t = (1.0 / spec.temperature) as f32;
        return kernels::fused_linear_distill(
            hidden,
            weight,
            teacher_hidden,
            teacher_weight,
            row_weight,
            kind,
            param,
            inv_t,
            chunk,
        );
    }
    sum_chunks(hidden.dims()[0], chunk, |start, len| {
        let s = hidden.clone().narrow(0, start, len).matmul(weight.clone());
        let t = teacher_hidden
            .clone()
            .narrow(0, start, len)
            .matmul(teacher_weight.clone());
        (token_divergence(s, t, spec, kernels) * row_weight.clone().narrow(0, start, len)).sum()
    })
    .unwrap_or_else(|| hidden.sum().mul_scalar(0.0))
}

/// The sum of `part(start, len)` over `n` rows taken `chunk` at a time (`None` without rows):
/// the chunk loop of the linear divergences, whose logits exist a chunk at a time.
pub(crate) fn sum_chunks(
    n: usize,
    chunk: usize,
    mut part: impl FnMut(usize, usize) -> Tensor<1>,
) -> Option<Tensor<1>> {
    let chunk = chunk.max(1);
    (0..n)
        .step_by(chunk)
        .map(|start| part(start, chunk.min(n - start)))
        .reduce(|sum, p| sum + p)
}

/// Mean divergence over the tokens where `mask` is 1, scaled by `T^2`: `student`/`teacher`
/// `[B, T, V]`, `mask [B, T]`. Returns a `[1]` tensor; 0 when no token is counted.
pub fn masked_divergence(
    student: Tensor<3>,
    teacher: Tensor<3>,
    mask: Tensor<2>,
    spec: &DivergenceSpec,
    kernels: Kernels,
) -> Tensor<1> {
    let [b, t, v] = student.dims();
    let per_token = token_divergence(
        student.reshape([b * t, v]),
        teacher.reshape([b * t, v]),
        spec,
        kernels,
    );
    masked_mean(per_token, mask.reshape([b * t])) * (spec.temperature * spec.temperature)
}
