//! The autodiff wiring of [`KernelOps`]: every differentiable kernel op on `Autodiff<B>` runs
//! its forward pass from [`KernelPasses`] and records a backward node that calls the matching
//! backward pass. Generic over the wrapped backend `B`, so the same wiring serves the CubeCL
//! backend and burn's `Fusion` over it (feature `fusion`), where each pass is one custom
//! operation in the fused stream rather than a launch made on the spot.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, TensorMetadata};
use burn::tensor::Shape;

use super::{KernelOps, KernelPasses};

/// The backends the wiring wraps.
pub trait Inner: KernelOps + KernelPasses {}
impl<B: KernelOps + KernelPasses> Inner for B {}

// ---------------------------------------------------------------------------------------------
// distillation divergence per row

#[derive(Debug, Clone)]
struct DistillState<B: Backend> {
    student: FloatTensor<B>,
    teacher: FloatTensor<B>,
    lse: FloatTensor<B>,
    kind: u32,
    param: f32,
    inv_temp: f32,
    slab_rows: u32,
}

#[derive(Debug)]
struct DistillBackward;

impl<B: Inner> Backward<B, 1> for DistillBackward {
    type State = DistillState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [student] = ops.parents;
        let grad_out = grads.consume::<B>(&ops.node);
        let s = ops.state;
        if let Some(node) = student {
            let grad = B::distill_rows_backward(
                s.student,
                s.teacher,
                s.lse,
                grad_out,
                s.kind,
                s.param,
                s.inv_temp,
                s.slab_rows,
            );
            grads.register::<B>(node.id, grad);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fused-linear losses: gradients formed in the forward pass, scaled in the backward

#[derive(Debug, Clone)]
struct FusedState<B: Backend> {
    d_hidden: FloatTensor<B>,
    d_weight: FloatTensor<B>,
}

#[derive(Debug)]
struct FusedBackward;

impl<B: Inner> Backward<B, 2> for FusedBackward {
    type State = FusedState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [nh, nw] = ops.parents;
        // the upstream gradient of a scalar: broadcast over the precomputed gradients
        let g = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let scale = |t: FloatTensor<B>| {
            let shape = t.shape();
            let g1 = B::float_reshape(g.clone(), Shape::new([1, 1]));
            B::float_mul(t, B::float_expand(g1, shape))
        };
        if let Some(node) = nh {
            grads.register::<B>(node.id, scale(s.d_hidden));
        }
        if let Some(node) = nw {
            grads.register::<B>(node.id, scale(s.d_weight));
        }
    }
}

/// Records the fused-linear node: `grads_pass` when gradients are needed, `loss_pass` otherwise.
fn fused_linear<B: Inner, C: CheckpointStrategy>(
    hidden: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    grads_pass: impl FnOnce(FloatTensor<B>, FloatTensor<B>) -> [FloatTensor<B>; 3],
    loss_pass: impl FnOnce(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    match FusedBackward
        .prepare::<C>([hidden.node(), weight.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let [loss, d_hidden, d_weight] =
                grads_pass(hidden.into_primitive(), weight.into_primitive());
            prep.finish(FusedState { d_hidden, d_weight }, loss)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(loss_pass(hidden.into_primitive(), weight.into_primitive()))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// flash attention

#[derive(Debug, Clone)]
struct AttentionState<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    mask: FloatTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    causal: u32,
    scale: f32,
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: Inner> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [nq, nk, nv] = ops.parents;
        let grad_out = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let (dq, dk, dv) = B::flash_attention_backward(
            s.q, s.k, s.v, s.mask, s.out, s.lse, grad_out, s.causal, s.scale,
        );
        for (node, grad) in [(nq, dq), (nk, dk), (nv, dv)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MoE routing and expert GEMM

#[derive(Debug, Clone)]
struct RouteState<B: Backend> {
    weights: FloatTensor<B>,
    experts: IntTensor<B>,
    num_experts: u32,
}

#[derive(Debug)]
struct RouteBackward;

impl<B: Inner> Backward<B, 1> for RouteBackward {
    type State = RouteState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let s = ops.state;
            let d = B::moe_route_backward(s.weights, s.experts, grad, s.num_experts);
            grads.register::<B>(node.id, d);
        }
    }
}

#[derive(Debug, Clone)]
struct GemmState<B: Backend> {
    a: FloatTensor<B>,
    rows: IntTensor<B>,
    w: FloatTensor<B>,
    offsets: IntTensor<B>,
    gather: u32,
}

#[derive(Debug)]
struct GemmBackward;

impl<B: Inner> Backward<B, 2> for GemmBackward {
    type State = GemmState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [na, nw] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let (da, dw) = B::moe_gather_matmul_backward(s.a, s.rows, s.w, s.offsets, grad, s.gather);
        if let Some(node) = na {
            grads.register::<B>(node.id, da);
        }
        if let Some(node) = nw {
            grads.register::<B>(node.id, dw);
        }
    }
}

// ---------------------------------------------------------------------------------------------

impl<B: Inner, C: CheckpointStrategy> KernelOps for Autodiff<B, C> {
    fn distill_rows(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
        slab_rows: u32,
    ) -> FloatTensor<Self> {
        // The teacher is a constant: only the student is a parent of this node.
        let teacher = teacher.into_primitive();
        match DistillBackward
            .prepare::<C>([student.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let student = student.into_primitive();
                let (div, lse) = B::distill_rows_forward(
                    student.clone(),
                    teacher.clone(),
                    kind,
                    param,
                    inv_temp,
                    slab_rows,
                );
                let state = DistillState {
                    student,
                    teacher,
                    lse,
                    kind,
                    param,
                    inv_temp,
                    slab_rows,
                };
                prep.finish(state, div)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::distill_rows(
                student.into_primitive(),
                teacher,
                kind,
                param,
                inv_temp,
                slab_rows,
            )),
        }
    }

    fn fused_linear_distill(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        teacher_hidden: FloatTensor<Self>,
        teacher_weight: FloatTensor<Self>,
        row_weight: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
        chunk: u32,
    ) -> FloatTensor<Self> {
        // the teacher and the row weights are constants
        let th = teacher_hidden.into_primitive();
        let tw = teacher_weight.into_primitive();
        let rw = row_weight.into_primitive();
        let (th2, tw2, rw2) = (th.clone(), tw.clone(), rw.clone());
        fused_linear::<B, C>(
            hidden,
            weight,
            |h, w| {
                let (l, dh, dw) =
                    B::fused_linear_distill_grads(h, w, th, tw, rw, kind, param, inv_temp, chunk);
                [l, dh, dw]
            },
            |h, w| B::fused_linear_distill(h, w, th2, tw2, rw2, kind, param, inv_temp, chunk),
        )
    }

    fn fused_linear_cross_entropy(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        row_weight: FloatTensor<Self>,
        chunk: u32,
    ) -> FloatTensor<Self> {
        let rw = row_weight.into_primitive();
        let (targets2, rw2) = (targets.clone(), rw.clone());
        fused_linear::<B, C>(
            hidden,
            weight,
            |h, w| {
                let (l, dh, dw) = B::fused_linear_cross_entropy_grads(h, w, targets, rw, chunk);
                [l, dh, dw]
            },
            |h, w| B::fused_linear_cross_entropy(h, w, targets2, rw2, chunk),
        )
    }

    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_mask: FloatTensor<Self>,
        causal: u32,
        scale: f32,
    ) -> FloatTensor<Self> {
        // the key mask is a constant
        let mask = key_mask.into_primitive();
        match AttentionBackward
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
                let (out, lse) = B::flash_attention_forward(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    mask.clone(),
                    causal,
                    scale,
                );
                let state = AttentionState {
                    q,
                    k,
                    v,
                    mask,
                    out: out.clone(),
                    lse,
                    causal,
                    scale,
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::flash_attention(
                q.into_primitive(),
                k.into_primitive(),
                v.into_primitive(),
                mask,
                causal,
                scale,
            )),
        }
    }

    fn moe_route(
        logits: FloatTensor<Self>,
        routed: FloatTensor<Self>,
        k: u32,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        let routed = routed.into_primitive();
        match RouteBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let logits = logits.into_primitive();
                let num_experts = logits.shape()[1] as u32;
                let (weights, experts) = B::moe_route(logits, routed, k);
                let state = RouteState {
                    weights: weights.clone(),
                    experts: experts.clone(),
                    num_experts,
                };
                (prep.finish(state, weights), experts)
            }
            OpsKind::UnTracked(prep) => {
                let (weights, experts) = B::moe_route(logits.into_primitive(), routed, k);
                (prep.finish(weights), experts)
            }
        }
    }

    fn moe_sort(
        experts: IntTensor<Self>,
        num_experts: u32,
        capacity: u32,
    ) -> (
        IntTensor<Self>,
        IntTensor<Self>,
        IntTensor<Self>,
        IntTensor<Self>,
    ) {
        B::moe_sort(experts, num_experts, capacity)
    }

    fn moe_gather_matmul(
        a: FloatTensor<Self>,
        rows: IntTensor<Self>,
        w: FloatTensor<Self>,
        offsets: IntTensor<Self>,
        gather: u32,
    ) -> FloatTensor<Self> {
        match GemmBackward
            .prepare::<C>([a.node(), w.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (a, w) = (a.into_primitive(), w.into_primitive());
                let c = B::moe_gather_matmul(
                    a.clone(),
                    rows.clone(),
                    w.clone(),
                    offsets.clone(),
                    gather,
                );
                let state = GemmState {
                    a,
                    rows,
                    w,
                    offsets,
                    gather,
                };
                prep.finish(state, c)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::moe_gather_matmul(
                a.into_primitive(),
                rows,
                w.into_primitive(),
                offsets,
                gather,
            )),
        }
    }
}
