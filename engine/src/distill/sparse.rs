//! The teacher as a sparse distribution: at each position a teacher cache keeps the `k` most
//! likely tokens' log-probabilities and one tail bucket holding the rest of the mass (the
//! teacher cache, `train::teacher_cache`). The divergence is then taken between two
//! distributions over `k + 1` bins: the teacher's top-k tokens one by one, and everything else
//! together, the student's bins being its probabilities of the same tokens and the sum of the
//! others.
//!
//! That binned divergence is computed through the dense divergence of `divergence.rs` (and so
//! through the fused kernel where the run uses it) by spreading the teacher's tail mass over the
//! tail tokens in proportion to the student's own (detached) probabilities. Every divergence
//! Condenser offers is a sum over tokens of a term `f(p_s, p_t)` that is 1-homogeneous
//! (`f(c a, c b) = c f(a, b)`: the KLs, their skewed forms, JSD, TVD), so with tail tokens
//! `t_j = tail * p_j / S` (`S` = the student's tail mass) the tail's terms add up to
//! `f(S, tail)`, the bucket's term; and `d f / d p_j` at `(p_j, t_j)` is the same 0-homogeneous
//! derivative at `(S, tail)`, so the gradient through each tail token is the bucket's. Value and
//! gradient are the binned divergence's exactly; `binned_token_divergence` computes it from the
//! bins directly and is the test oracle.

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::log_softmax;

use super::divergence::{DivergenceSpec, sum_chunks, token_divergence, zscore};
use crate::backend::kernels::Kernels;

/// Log-mass a tail bucket never goes below (an empty tail: `k` covers the vocabulary), kept
/// finite so no `0 * -inf` reaches a divergence.
pub const EMPTY_TAIL_LOGP: f32 = -1e4;

/// The teacher's sparse distribution at `N` positions, on a device: token ids `[N, K]`, their
/// log-probabilities `[N, K]` and the tail's log-mass `[N]`, all at the temperature (and
/// z-scoring) the cache was built with.
#[derive(Clone)]
pub struct SparseRows {
    pub ids: Tensor<2, Int>,
    pub logp: Tensor<2>,
    pub tail: Tensor<1>,
}

impl SparseRows {
    /// Rows `start..start + len`.
    pub fn narrow(&self, start: usize, len: usize) -> SparseRows {
        SparseRows {
            ids: self.ids.clone().narrow(0, start, len),
            logp: self.logp.clone().narrow(0, start, len),
            tail: self.tail.clone().narrow(0, start, len),
        }
    }
}

/// 1 where a column is one of the row's top-k ids: `[N, V]`.
fn top_mask(ids: &Tensor<2, Int>, n: usize, v: usize, device: &Device) -> Tensor<2, Bool> {
    let k = ids.dims()[1];
    Tensor::<2>::zeros([n, v], device)
        .scatter(
            1,
            ids.clone(),
            Tensor::<2>::ones([n, k], device),
            IndexingUpdateOp::Add,
        )
        .greater_elem(0.5)
}

/// `log sum exp` over the last dimension of `[N, V]`, as `[N, 1]`.
fn logsumexp(x: Tensor<2>) -> Tensor<2> {
    let m = x.clone().max_dim(1);
    (x - m.clone()).exp().sum_dim(1).log() + m
}

/// Per-token binned divergence `[N]` between the student's logits `[N, V]` and the teacher's
/// sparse rows, before the `T^2` scale, through [`token_divergence`] (the fused kernel where
/// `kernels` says so). The student is z-scored here when the spec says so; the teacher was
/// z-scored, if at all, when the cache was built.
pub fn sparse_token_divergence(
    student: Tensor<2>,
    teacher: &SparseRows,
    spec: &DivergenceSpec,
    kernels: Kernels,
) -> Tensor<1> {
    let [n, v] = student.dims();
    let device = student.device();
    let student = if spec.zscore {
        zscore(student)
    } else {
        student
    };
    let temp = spec.temperature;
    let is_top = top_mask(&teacher.ids, n, v, &device);
    // the student's own log-probabilities, detached: they only shape the teacher's tail
    let ls = log_softmax(student.clone().detach() / temp, 1);
    let tail_lse = logsumexp(ls.clone().mask_fill(is_top.clone(), -1e30));
    let spread = ls + (teacher.tail.clone().reshape([n, 1]) - tail_lse);
    let dense = spread.mask_fill(is_top, 0.0).scatter(
        1,
        teacher.ids.clone(),
        teacher.logp.clone(),
        IndexingUpdateOp::Add,
    );
    // the divergence applies 1/T to both sides: the teacher's log-probs enter as T log p
    let plain = DivergenceSpec {
        zscore: false,
        ..*spec
    };
    token_divergence(student, dense * temp, &plain, kernels)
}

/// The binned divergence straight from the `k + 1` bins (plain burn ops; the oracle of
/// [`sparse_token_divergence`]).
pub fn binned_token_divergence(
    student: Tensor<2>,
    teacher: &SparseRows,
    spec: &DivergenceSpec,
) -> Tensor<1> {
    let [n, v] = student.dims();
    let device = student.device();
    let student = if spec.zscore {
        zscore(student)
    } else {
        student
    };
    let temp = spec.temperature;
    let ls = log_softmax(student / temp, 1);
    let is_top = top_mask(&teacher.ids, n, v, &device);
    let s_top = ls.clone().gather(1, teacher.ids.clone());
    let s_tail = logsumexp(ls.mask_fill(is_top, -1e30));
    let s_bins = Tensor::cat(vec![s_top, s_tail], 1);
    let t_bins = Tensor::cat(
        vec![teacher.logp.clone(), teacher.tail.clone().reshape([n, 1])],
        1,
    );
    let plain = DivergenceSpec {
        zscore: false,
        ..*spec
    };
    token_divergence(s_bins * temp, t_bins * temp, &plain, Kernels::Reference)
}

/// `sum_i w_i * div_i` for the student logits `hidden [N, H] @ weight [H, V]` against the
/// teacher's sparse rows, before the `T^2` scale; the student's logits are formed `chunk` rows
/// at a time (the sparse counterpart of `divergence::linear_divergence`).
pub fn linear_sparse_divergence(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    teacher: &SparseRows,
    row_weight: Tensor<1>,
    spec: &DivergenceSpec,
    kernels: Kernels,
    chunk: usize,
) -> Tensor<1> {
    let row_weight = row_weight.detach();
    sum_chunks(hidden.dims()[0], chunk, |start, len| {
        let s = hidden.clone().narrow(0, start, len).matmul(weight.clone());
        (sparse_token_divergence(s, &teacher.narrow(start, len), spec, kernels)
            * row_weight.clone().narrow(0, start, len))
        .sum()
    })
    .unwrap_or_else(|| hidden.sum().mul_scalar(0.0))
}

/// One row's top-k from its scaled logits `z` (already divided by T, z-scored if asked): the
/// ids of the `k` largest (ties to the lower id), their log-probabilities in decreasing order,
/// and the log-mass of the rest ([`EMPTY_TAIL_LOGP`] when `k` covers the row). Computed in
/// f64 on the host.
pub fn top_k_row(z: &[f32], k: usize) -> (Vec<u32>, Vec<f32>, f32) {
    let k = k.min(z.len());
    let max = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + z.iter().map(|x| (*x as f64 - max).exp()).sum::<f64>().ln();
    let mut order: Vec<u32> = (0..z.len() as u32).collect();
    let by_value = |a: &u32, b: &u32| z[*b as usize].total_cmp(&z[*a as usize]).then(a.cmp(b));
    if k < order.len() && k > 0 {
        order.select_nth_unstable_by(k - 1, by_value);
    }
    order.truncate(k);
    order.sort_by(by_value);
    let logp: Vec<f32> = order
        .iter()
        .map(|&i| (z[i as usize] as f64 - lse) as f32)
        .collect();
    let mut is_top = vec![false; z.len()];
    for &i in &order {
        is_top[i as usize] = true;
    }
    let rest: f64 = z
        .iter()
        .zip(&is_top)
        .filter(|(_, top)| !**top)
        .map(|(x, _)| (*x as f64 - max).exp())
        .sum();
    let tail = if rest > 0.0 {
        ((max + rest.ln() - lse) as f32).max(EMPTY_TAIL_LOGP)
    } else {
        EMPTY_TAIL_LOGP
    };
    (order, logp, tail)
}
