//! The fused-linear losses (the Liger fused-linear-JSD / Cut Cross-Entropy idea): the student's
//! logits are `hidden @ weight`, and a `[tokens, vocab]` logit matrix is never stored whole.
//! Tokens are taken a chunk at a time: the chunk's logits are formed, a kernel gives the
//! chunk's losses (distillation divergences, or cross-entropy) and the gradient with respect to
//! the logits, and that gradient is
//! folded at once into `d hidden` (rows of the chunk) and `d weight` (accumulated), after which
//! the chunk's logits are dropped. Peak memory beyond the inputs and their gradients is one
//! chunk's `[rows, vocab]` logits and their gradient, whatever the number of tokens.
//!
//! The op returns the scalar `sum_i w_i * div_i` (row weights carry the mask and the mean's
//! normaliser), so the gradients can be formed in the forward pass and only scaled by the
//! upstream gradient in the backward pass.

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::tensor::Slice;

use super::cross_entropy;
use super::distill::{self, Params};

type B = CubeBackend;

fn rows(t: CubeTensor, r0: usize, r1: usize) -> CubeTensor {
    let cols = t.meta.shape()[1];
    B::float_slice(
        t,
        &[
            Slice::new(r0 as isize, Some(r1 as isize), 1),
            Slice::new(0, Some(cols as isize), 1),
        ],
    )
}

/// What is computed from each chunk's logits.
#[derive(Debug, Clone)]
pub(super) enum ChunkLoss {
    /// The divergence from the teacher's logits `teacher_hidden [N, Ht] @ teacher_weight
    /// [Ht, V]` (see [`distill::forward`]), formed a chunk at a time like the student's.
    Distill {
        teacher_hidden: CubeTensor,
        teacher_weight: CubeTensor,
        p: Params,
    },
    /// Cross-entropy against `targets [N]` (i32, negative for no label; see
    /// [`cross_entropy::rows`]).
    CrossEntropy { targets: CubeTensor },
}

/// Rows per chunk: at most `want`, no more than one buffer of the device holds, and a multiple
/// of the rows that keep every chunk's byte offset into the `[N]` row weights and targets at
/// the device's binding alignment.
fn chunk_rows(like: &CubeTensor, want: usize, vocab: usize) -> usize {
    let memory = &like.client.properties().memory;
    let unit = (memory.alignment as usize / 4).max(1);
    let fit = (memory.max_page_size as usize / (4 * vocab.max(1))).max(1);
    (want.min(fit) / unit).max(1) * unit
}

/// `sum_i w_i * loss_i` over the rows of `hidden [N, H] @ weight [H, V]`, and the gradients of
/// `hidden` and `weight` when `grads` (not yet scaled by the upstream gradient).
pub(super) fn run(
    hidden: CubeTensor,
    weight: CubeTensor,
    row_weight: CubeTensor,
    what: &ChunkLoss,
    chunk: usize,
    grads: bool,
) -> (CubeTensor, Option<(CubeTensor, CubeTensor)>) {
    let hs = hidden.meta.shape().clone();
    let ws = weight.meta.shape().clone();
    let (n, h, v) = (hs[0], hs[1], ws[1]);
    assert_eq!(
        ws[0], h,
        "weight must be [hidden, vocab]: {ws:?} vs hidden {hs:?}"
    );
    if let ChunkLoss::Distill {
        teacher_hidden,
        teacher_weight,
        ..
    } = what
    {
        let (th, tw) = (teacher_hidden.meta.shape(), teacher_weight.meta.shape());
        assert!(
            th[0] == n && tw[0] == th[1] && tw[1] == v,
            "teacher hidden states [{n}, Ht] and head [Ht, {v}] expected, got {th:?} and {tw:?}"
        );
    }
    let chunk = chunk_rows(&hidden, chunk, v);
    let mut loss: Option<CubeTensor> = None;
    let mut dh_parts = Vec::new();
    let mut dw: Option<CubeTensor> = None;
    let weight_t = B::float_transpose(weight.clone());
    for r0 in (0..n).step_by(chunk) {
        let r1 = (r0 + chunk).min(n);
        let h_c = rows(hidden.clone(), r0, r1);
        let logits = B::float_matmul(h_c.clone(), weight.clone());
        let w_c = B::float_slice(
            row_weight.clone(),
            &[Slice::new(r0 as isize, Some(r1 as isize), 1)],
        );
        let (part, g) = match what {
            ChunkLoss::Distill {
                teacher_hidden,
                teacher_weight,
                p,
            } => {
                let t_c =
                    B::float_matmul(rows(teacher_hidden.clone(), r0, r1), teacher_weight.clone());
                let (div, lse) = distill::forward(logits.clone(), t_c.clone(), *p);
                let part = B::float_sum(B::float_mul(div, w_c.clone()));
                let g = grads.then(|| distill::backward(logits, t_c, lse, w_c, *p));
                (part, g)
            }
            ChunkLoss::CrossEntropy { targets } => {
                let t_c = B::int_slice(
                    targets.clone(),
                    &[Slice::new(r0 as isize, Some(r1 as isize), 1)],
                );
                // the matmul's fresh output is ours alone: the kernel turns it into the gradient
                let part = B::float_sum(cross_entropy::rows(&logits, t_c, w_c, grads));
                (part, grads.then_some(logits))
            }
        };
        loss = Some(match loss {
            Some(l) => B::float_add(l, part),
            None => part,
        });
        if let Some(g) = g {
            dh_parts.push(B::float_matmul(g.clone(), weight_t.clone()));
            let dw_c = B::float_matmul(B::float_transpose(h_c), g);
            dw = Some(match dw {
                Some(a) => B::float_add(a, dw_c),
                None => dw_c,
            });
        }
    }
    let loss = loss.expect("at least one token");
    let grads = grads.then(|| (B::float_cat(dh_parts, 0), dw.expect("at least one token")));
    (loss, grads)
}
