//! Next-token cross-entropy computed only where there are labels. A batch of LLaVA
//! conversations carries a label on a few response tokens per example, while the visual tokens
//! and the prompt carry none, so the LM head (`[D, V]`, with V up to 150k for a real tokenizer)
//! is applied to the labelled positions alone: their hidden states are gathered first, then the
//! head and the log-softmax run over chunks of rows sized so that no `[rows, V]` block exceeds
//! [`HEAD_CHUNK_BYTES`]. The `[B, T, V]` logits of the whole batch never exist.
//!
//! Where the run resolved [`Kernels::Fused`], the chunks go through the fused-linear
//! cross-entropy kernel (`shaders/cross_entropy.wgsl`), which turns each chunk's logits into
//! their gradient in place and folds it into the hidden states' and the head's gradients at
//! once, so no chunk's logits outlive its step. Elsewhere the chunks are plain burn ops that do
//! the same: the gradients are formed in the forward pass, chunk by chunk.
//! [`masked_cross_entropy`](super::masked_cross_entropy) over the full logits is the reference
//! both are tested against.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::backend::kernels::{self, Kernels};

/// Largest block of logits formed at once (f32 bytes).
pub const HEAD_CHUNK_BYTES: usize = 32 << 20;

/// The labelled positions of a `[B, T]` batch (flattened row-major) and their targets.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledRows {
    pub rows: Vec<i64>,
    pub targets: Vec<i64>,
}

impl LabelledRows {
    /// The positions where `mask` is non-zero, with `targets` there (both `[B * T]`).
    pub fn from_mask(mask: &[f32], targets: &[i64]) -> Self {
        let rows: Vec<i64> = (0..mask.len())
            .filter(|&i| mask[i] != 0.0)
            .map(|i| i as i64)
            .collect();
        let targets = rows.iter().map(|&i| targets[i as usize]).collect();
        LabelledRows { rows, targets }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Rows of a `[rows, vocab]` logit block that fit [`HEAD_CHUNK_BYTES`] (at least one).
pub fn head_chunk_rows(vocab: usize) -> usize {
    (HEAD_CHUNK_BYTES / (4 * vocab.max(1))).max(1)
}

/// Largest block of logits one chunk of the fused-linear cross-entropy forms (f32 bytes). The
/// kernel turns a chunk's logits into their gradient in place, so a chunk is the only logit
/// buffer alive: it can be twice the burn-ops budget, and fewer, taller chunks keep the head's
/// matmuls efficient (on lavapipe, four 128-row chunks of a 65k vocabulary ran 12% slower than
/// the whole logits at once; one chunk of 512 rows does not).
pub const FUSED_CE_CHUNK_BYTES: usize = 64 << 20;

/// Rows per chunk of [`labelled_cross_entropy`] on the path `kernels` picks.
pub fn cross_entropy_chunk_rows(vocab: usize, kernels: Kernels) -> usize {
    if kernels.fused() {
        (FUSED_CE_CHUNK_BYTES / (4 * vocab.max(1))).max(1)
    } else {
        head_chunk_rows(vocab)
    }
}

/// Mean cross-entropy of the logits `hidden [B, T, D] @ head [D, V]` at the labelled positions
/// `at`, `chunk` rows at a time (`[1]`; 0, with zero gradients, when nothing is labelled).
/// Gradients reach `hidden` and `head`. `kernels` picks the fused kernel or plain ops.
pub fn labelled_cross_entropy(
    hidden: Tensor<3>,
    head: Tensor<2>,
    at: &LabelledRows,
    chunk: usize,
    kernels: Kernels,
) -> Tensor<1> {
    let device = hidden.device();
    let n = at.len();
    if n == 0 {
        // the graph stays attached, so a step without labels is a step with zero gradients
        return hidden.sum().mul_scalar(0.0);
    }
    let (h, targets) = gather_rows(hidden, at);
    if kernels.fused() {
        let weight = Tensor::<1>::full([n], 1.0 / n as f64, &device);
        return kernels::fused_linear_cross_entropy(h, head, targets, weight, chunk);
    }
    if n <= chunk.max(1) {
        // one chunk: the composed ops keep no more than it for the backward pass, and the
        // backward of its matmuls is faster on the CPU than the folding below (measured in
        // docs/results/head-loss-cpu.md)
        let lp = labelled_rows_log_probs(h, head, &targets, chunk);
        return lp.sum().div_scalar(n as f64).neg();
    }
    cross_entropy_with_grads(h, head, targets, chunk)
}

/// Mean cross-entropy of `h [n, D] @ head [D, V]` against `targets [n]` (all labelled) on plain
/// burn ops, with its gradients formed chunk by chunk in the forward pass, as the fused kernel
/// does: each chunk's `softmax - onehot` is folded into `d h` and `d head` at once and dropped,
/// so memory stays flat in the vocabulary beyond one chunk. (Composed ops under autodiff would
/// keep every chunk's logits and softmax for the backward pass: as much as the whole logits.)
///
/// The gradients reach the graph through `s - detach(s) + detach(loss)` with the surrogate
/// `s = sum(h * d h) + sum(head * d head)`: its value is the loss, and its gradients with
/// respect to `h` and `head` (scaled by whatever multiplies the loss downstream) are the
/// precomputed ones.
fn cross_entropy_with_grads(
    h: Tensor<2>,
    head: Tensor<2>,
    targets: Tensor<1, Int>,
    chunk: usize,
) -> Tensor<1> {
    let n = h.dims()[0];
    let chunk = chunk.max(1);
    let inv_n = 1.0 / n as f64;
    let grads = h.is_autodiff() || head.is_autodiff();
    // the chunks run on the inner device: nothing of them is recorded for a backward pass
    let (hi, wi) = (h.clone().inner(), head.clone().inner());
    let targets = targets.inner();
    let wt = wi.clone().transpose();
    let mut loss: Option<Tensor<1>> = None;
    let mut dh_parts = Vec::new();
    let mut dw: Option<Tensor<2>> = None;
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let hc = hi.clone().narrow(0, start, len);
        let logits = hc.clone().matmul(wi.clone());
        let t = targets.clone().narrow(0, start, len).reshape([len, 1]);
        let picked = logits.clone().gather(1, t.clone());
        let max = logits.clone().max_dim(1);
        let e = (logits - max.clone()).exp();
        let sum = e.clone().sum_dim(1);
        let part = (max + sum.clone().log() - picked).sum().mul_scalar(inv_n);
        loss = Some(match loss {
            Some(l) => l + part,
            None => part,
        });
        if !grads {
            continue;
        }
        // (softmax - onehot) / n: the gradient of the chunk's logits
        let minus_one = Tensor::<2>::full([len, 1], -1.0, &hc.device());
        let g = (e / sum)
            .scatter(1, t, minus_one, burn::tensor::IndexingUpdateOp::Add)
            .mul_scalar(inv_n);
        dh_parts.push(g.clone().matmul(wt.clone()));
        let dw_c = hc.transpose().matmul(g);
        dw = Some(match dw {
            Some(a) => a + dw_c,
            None => dw_c,
        });
    }
    let loss = loss.expect("at least one labelled row");
    if !grads {
        return loss;
    }
    let dh = Tensor::cat(dh_parts, 0).autodiff();
    let dw = dw.expect("at least one labelled row").autodiff();
    let surrogate = (h * dh).sum() + (head * dw).sum();
    surrogate.clone() - surrogate.detach() + loss.autodiff()
}

/// The log-probability of the target `[n]` at each labelled position `at` of the logits
/// `hidden [B, T, D] @ head [D, V]`, `chunk` rows at a time on plain burn ops (`[0]` when
/// nothing is labelled). Gradients reach `hidden` and `head`.
pub fn labelled_log_probs(
    hidden: Tensor<3>,
    head: Tensor<2>,
    at: &LabelledRows,
    chunk: usize,
) -> Tensor<1> {
    let device = hidden.device();
    let n = at.len();
    if n == 0 {
        return Tensor::<1>::zeros([0], &device);
    }
    let (h, targets) = gather_rows(hidden, at);
    labelled_rows_log_probs(h, head, &targets, chunk)
}

/// Summed log-probability of each example's labelled tokens `[B]` (DPO's sequence
/// log-probability) from `hidden [B, T, D]` and `head [D, V]`, with the logits formed only at
/// the labelled positions, `chunk` rows at a time. Gradients reach `hidden` and `head`.
pub fn sequence_log_probs(
    hidden: Tensor<3>,
    head: Tensor<2>,
    at: &LabelledRows,
    chunk: usize,
) -> Tensor<1> {
    let [b, t, _] = hidden.dims();
    let device = hidden.device();
    let n = at.len();
    if n == 0 {
        return hidden.sum_dim(2).sum_dim(1).reshape([b]).mul_scalar(0.0);
    }
    // example r owns the flattened rows r T .. (r + 1) T: a [B, n] 0/1 matrix sums them
    let mut owner = vec![0.0f32; b * n];
    for (j, &row) in at.rows.iter().enumerate() {
        owner[(row as usize / t) * n + j] = 1.0;
    }
    let owner = Tensor::<2>::from_data(TensorData::new(owner, [b, n]), &device);
    let lp = labelled_log_probs(hidden, head, at, chunk);
    owner.matmul(lp.reshape([n, 1])).reshape([b])
}

/// The hidden states `[n, D]` of the labelled positions of `hidden [B, T, D]`, and their
/// targets `[n]`.
fn gather_rows(hidden: Tensor<3>, at: &LabelledRows) -> (Tensor<2>, Tensor<1, Int>) {
    let [b, t, d] = hidden.dims();
    let device = hidden.device();
    let n = at.len();
    let rows = Tensor::<1, Int>::from_data(TensorData::new(at.rows.clone(), [n]), &device);
    let targets = Tensor::<1, Int>::from_data(TensorData::new(at.targets.clone(), [n]), &device);
    (hidden.reshape([b * t, d]).select(0, rows), targets)
}

/// Log-probabilities of `targets [n]` under the logits `h [n, D] @ head`, a chunk at a time.
fn labelled_rows_log_probs(
    h: Tensor<2>,
    head: Tensor<2>,
    targets: &Tensor<1, Int>,
    chunk: usize,
) -> Tensor<1> {
    let n = h.dims()[0];
    let chunk = chunk.max(1);
    let parts: Vec<Tensor<1>> = (0..n)
        .step_by(chunk)
        .map(|start| {
            let len = chunk.min(n - start);
            let logits = h.clone().narrow(0, start, len).matmul(head.clone());
            log_softmax(logits, 1)
                .gather(1, targets.clone().narrow(0, start, len).reshape([len, 1]))
                .reshape([len])
        })
        .collect();
    Tensor::cat(parts, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::masked_cross_entropy;
    use crate::rng::Rng;

    fn normal<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
        let mut rng = Rng::new(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * scale, "{what}[{i}]: {g} vs {w}");
        }
    }

    /// Against the full-logit reference: the loss and both gradients, on a vocabulary the size
    /// of SmolLM2's with chunks that split the labelled rows unevenly, a row without labels,
    /// and labels at odd positions.
    fn matches_the_full_logit_reference_on(device: Device) {
        let (b, t, d, v) = (3, 7, 16, 49_158);
        let mut mask = vec![0.0f32; b * t];
        for i in [2usize, 3, 4, 6, 15, 16, 19, 20] {
            mask[i] = 1.0; // row 1 (positions 7..14) has no label at all
        }
        let mut rng = Rng::new(5);
        let targets: Vec<i64> = (0..b * t).map(|_| rng.below(v) as i64).collect();
        let at = LabelledRows::from_mask(&mask, &targets);
        assert_eq!(at.len(), 8);
        let h0 = normal([b, t, d], 1, &device);
        let w0 = normal([d, v], 2, &device).mul_scalar(0.3);
        let kernels = Kernels::for_device(&device);
        let run = |labelled: Option<usize>| {
            let h = h0.clone().detach().require_grad();
            let w = w0.clone().detach().require_grad();
            let loss = match labelled {
                Some(chunk) => labelled_cross_entropy(h.clone(), w.clone(), &at, chunk, kernels),
                None => {
                    let logits = h.clone().reshape([b * t, d]).matmul(w.clone());
                    let tg = Tensor::<2, Int>::from_data(
                        TensorData::new(targets.clone(), [b, t]),
                        &device,
                    );
                    let m = Tensor::<2>::from_data(TensorData::new(mask.clone(), [b, t]), &device);
                    masked_cross_entropy(logits.reshape([b, t, v]), tg, m)
                }
            };
            // an upstream gradient other than 1: the chunked paths must scale theirs
            let grads = loss.clone().mul_scalar(3.0).backward();
            (
                host(loss),
                host(h.grad(&grads).expect("hidden gradient")),
                host(w.grad(&grads).expect("head gradient")),
            )
        };
        let (rl, rh, rw) = run(None);
        for chunk in [3, 8, head_chunk_rows(v)] {
            let (l, gh, gw) = run(Some(chunk));
            close(&format!("loss, chunk {chunk}"), &l, &rl, 1e-5);
            close(&format!("d hidden, chunk {chunk}"), &gh, &rh, 1e-4);
            close(&format!("d head, chunk {chunk}"), &gw, &rw, 1e-4);
        }
    }

    #[test]
    fn matches_the_full_logit_reference() {
        matches_the_full_logit_reference_on(Device::flex().autodiff());
    }

    /// The same on the wgpu device (lavapipe in CI); fails without an adapter.
    #[test]
    fn matches_the_full_logit_reference_on_wgpu() {
        let (device, _) = crate::backend::select(crate::backend::BackendChoice::Wgpu)
            .expect("a wgpu adapter (scripts/setup.sh installs lavapipe)");
        matches_the_full_logit_reference_on(device.autodiff());
    }

    /// Per-example response log-probabilities against the full-logit formula
    /// (`distill::sequence_logps`), values and head gradient, with one example unlabelled.
    #[test]
    fn sequence_log_probs_match_the_full_logits() {
        let device = Device::flex().autodiff();
        let (b, t, d, v) = (3, 5, 6, 41);
        let mut mask = vec![0.0f32; b * t];
        for i in [1usize, 2, 4, 11, 13, 14] {
            mask[i] = 1.0; // example 1 (positions 5..9) has no label
        }
        let mut rng = Rng::new(9);
        let targets: Vec<i64> = (0..b * t).map(|_| rng.below(v) as i64).collect();
        let at = LabelledRows::from_mask(&mask, &targets);
        let h = normal([b, t, d], 7, &device);
        let w0 = normal([d, v], 8, &device);
        let run = |chunked: bool| {
            let w = w0.clone().detach().require_grad();
            let lp = if chunked {
                sequence_log_probs(h.clone(), w.clone(), &at, 4)
            } else {
                let logits = h.clone().matmul(w.clone().unsqueeze_dim(0));
                let tg =
                    Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [b, t]), &device);
                let m = Tensor::<2>::from_data(TensorData::new(mask.clone(), [b, t]), &device);
                crate::distill::sequence_logps(logits, tg, m)
            };
            let g = (lp.clone() * Tensor::<1>::from_data([1.0f32, 2.0, 3.0], &device))
                .sum()
                .backward();
            (host(lp), host(w.grad(&g).unwrap()))
        };
        let (l0, g0) = run(false);
        let (l1, g1) = run(true);
        close("log-probs", &l1, &l0, 1e-5);
        assert_eq!(l1[1], 0.0);
        close("d head", &g1, &g0, 1e-5);
    }

    #[test]
    fn no_label_is_a_zero_loss_with_zero_gradients() {
        let device = Device::flex().autodiff();
        let h = normal([2, 3, 4], 3, &device).require_grad();
        let w = normal([4, 9], 4, &device).require_grad();
        let at = LabelledRows::from_mask(&[0.0; 6], &[1; 6]);
        let loss = labelled_cross_entropy(h.clone(), w, &at, 4, Kernels::Reference);
        assert_eq!(host(loss.clone()), vec![0.0]);
        let grads = loss.backward();
        assert!(host(h.grad(&grads).unwrap()).iter().all(|x| *x == 0.0));
    }
}
