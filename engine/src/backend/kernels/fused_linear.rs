//! The fused-linear distillation loss (the Liger fused-linear-JSD / Cut Cross-Entropy idea): the
//! student's logits are `hidden @ weight`, and a `[tokens, vocab]` logit matrix is never stored
//! whole. Tokens are taken a chunk at a time: the chunk's logits are formed, the distillation
//! kernels give its divergences and the gradient with respect to them, and that gradient is
//! folded at once into `d hidden` (rows of the chunk) and `d weight` (accumulated), after which
//! the chunk's logits are dropped. Peak memory beyond the inputs and their gradients is one
//! chunk's `[rows, vocab]` logits and their gradient, whatever the number of tokens.
//!
//! The op returns the scalar `sum_i w_i * div_i` (row weights carry the mask and the mean's
//! normaliser), so the gradients can be formed in the forward pass and only scaled by the
//! upstream gradient in the backward pass.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::tensor::{Shape, Slice};

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

/// Loss, and the gradients of `hidden` and `weight` when `grads` (not yet scaled by the
/// upstream gradient).
fn run(
    hidden: CubeTensor,
    weight: CubeTensor,
    teacher: CubeTensor,
    row_weight: CubeTensor,
    p: Params,
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
    assert_eq!(
        teacher.meta.shape().clone(),
        Shape::new([n, v]),
        "teacher logits must be [tokens, vocab]"
    );
    // chunks of a multiple of 64 rows: every row slice of the teacher logits and of the row
    // weights then starts at a multiple of 256 bytes, the storage-binding offset alignment
    let chunk = chunk.max(1).div_ceil(64) * 64;
    let mut loss: Option<CubeTensor> = None;
    let mut dh_parts = Vec::new();
    let mut dw: Option<CubeTensor> = None;
    let weight_t = B::float_transpose(weight.clone());
    for r0 in (0..n).step_by(chunk) {
        let r1 = (r0 + chunk).min(n);
        let h_c = rows(hidden.clone(), r0, r1);
        let logits = B::float_matmul(h_c.clone(), weight.clone());
        let t_c = rows(teacher.clone(), r0, r1);
        let w_c = B::float_slice(
            row_weight.clone(),
            &[Slice::new(r0 as isize, Some(r1 as isize), 1)],
        );
        let (div, lse) = distill::forward(logits.clone(), t_c.clone(), p);
        let part = B::float_sum(B::float_mul(div, w_c.clone()));
        loss = Some(match loss {
            Some(l) => B::float_add(l, part),
            None => part,
        });
        if grads {
            let g = distill::backward(logits, t_c, lse, w_c, p);
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

pub(super) fn cube_fused_linear(
    hidden: CubeTensor,
    weight: CubeTensor,
    teacher: CubeTensor,
    row_weight: CubeTensor,
    p: Params,
    chunk: usize,
) -> CubeTensor {
    run(hidden, weight, teacher, row_weight, p, chunk, false).0
}

#[derive(Debug, Clone)]
struct FusedState {
    d_hidden: CubeTensor,
    d_weight: CubeTensor,
}

#[derive(Debug)]
struct FusedBackward;

impl Backward<CubeBackend, 2> for FusedBackward {
    type State = FusedState;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [nh, nw] = ops.parents;
        // the upstream gradient of a scalar: broadcast over the precomputed gradients
        let g = grads.consume::<CubeBackend>(&ops.node);
        let s = ops.state;
        let scale = |t: CubeTensor| {
            let shape = t.meta.shape().clone();
            let g1 = B::float_reshape(g.clone(), Shape::new([1, 1]));
            let g1 = B::float_expand(g1, shape);
            B::float_mul(t, g1)
        };
        if let Some(node) = nh {
            grads.register::<CubeBackend>(node.id, scale(s.d_hidden));
        }
        if let Some(node) = nw {
            grads.register::<CubeBackend>(node.id, scale(s.d_weight));
        }
    }
}

pub(super) fn autodiff_fused_linear<C: CheckpointStrategy>(
    hidden: FloatTensor<Autodiff<CubeBackend, C>>,
    weight: FloatTensor<Autodiff<CubeBackend, C>>,
    teacher: FloatTensor<Autodiff<CubeBackend, C>>,
    row_weight: FloatTensor<Autodiff<CubeBackend, C>>,
    p: Params,
    chunk: usize,
) -> FloatTensor<Autodiff<CubeBackend, C>> {
    let teacher = teacher.into_primitive();
    let row_weight = row_weight.into_primitive();
    match FusedBackward
        .prepare::<C>([hidden.node(), weight.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (loss, g) = run(
                hidden.into_primitive(),
                weight.into_primitive(),
                teacher,
                row_weight,
                p,
                chunk,
                true,
            );
            let (d_hidden, d_weight) = g.expect("gradients asked for");
            prep.finish(FusedState { d_hidden, d_weight }, loss)
        }
        OpsKind::UnTracked(prep) => {
            let (loss, _) = run(
                hidden.into_primitive(),
                weight.into_primitive(),
                teacher,
                row_weight,
                p,
                chunk,
                false,
            );
            prep.finish(loss)
        }
    }
}
