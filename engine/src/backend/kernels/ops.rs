//! The tensor-level entry points of Condenser's kernels, side by side: flash attention, MoE
//! routing and expert GEMM, the distillation divergence (per row, and fused with the LM head)
//! and the fused-linear cross-entropy. Each turns burn tensors into one [`KernelOps`] call;
//! callers reach them only where the run resolved [`Kernels::Fused`], and otherwise run the
//! burn-ops reference in `model/` or `distill/`.

use burn::backend::Dispatch;
use burn::prelude::{Int, Tensor};

#[allow(unused_imports)]
use super::{DistillKind, KernelOps, Kernels};

/// Flash attention on a wgpu device (see [`KernelOps::flash_attention`]); only valid where
/// [`Kernels::Fused`] was resolved. `key_mask` is `[B, Tk]`, 1 for real keys. q, k and v are all f32,
/// or all f16 on an adapter with `shader-f16` (the output and gradients then are f16 too, the
/// arithmetic f32); the mask is read as f32 whatever its type.
pub fn flash_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    key_mask: Tensor<2>,
    causal: bool,
    scale: f32,
) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::flash_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        key_mask.cast(burn::tensor::FloatDType::F32).into_dispatch(),
        causal as u32,
        scale,
    ))
}

/// The routing of one MoE layer on the device (see [`KernelOps::moe_route`] and
/// [`KernelOps::moe_sort`]); only valid where [`Kernels::Fused`] was resolved.
pub struct MoeDispatch {
    /// `[N, k]` renormalised weights of the chosen experts (differentiable).
    pub weights: Tensor<2>,
    /// `[N, k]` chosen experts, `E` for padding.
    pub experts: Tensor<2, Int>,
    /// `[N k]` tokens of the kept assignments grouped by expert.
    pub sorted_rows: Tensor<1, Int>,
    /// `[N, k]` row of each assignment in the sorted order (`N k - 1`, a zero row, when
    /// dropped or padding).
    pub slot_pos: Tensor<2, Int>,
    /// `[E + 1]` segment starts; the last is the kept total.
    pub offsets: Tensor<1, Int>,
    /// `[E]` assignments per expert before the capacity.
    pub counts: Tensor<1, Int>,
}

/// Routes `logits [N, E]` to the top `k` experts with at most `capacity` assignments each.
pub fn moe_dispatch(
    logits: Tensor<2>,
    routed: Tensor<1>,
    k: usize,
    capacity: usize,
) -> MoeDispatch {
    let e = logits.dims()[1];
    let (weights, experts) =
        Dispatch::moe_route(logits.into_dispatch(), routed.into_dispatch(), k as u32);
    let experts = Tensor::<2, Int>::from_dispatch(experts);
    let (sorted, pos, offsets, counts) = Dispatch::moe_sort(
        experts.clone().into_dispatch(),
        e as u32,
        capacity.min(u32::MAX as usize) as u32,
    );
    MoeDispatch {
        weights: Tensor::from_dispatch(weights),
        experts,
        sorted_rows: Tensor::from_dispatch(sorted),
        slot_pos: Tensor::from_dispatch(pos),
        offsets: Tensor::from_dispatch(offsets),
        counts: Tensor::from_dispatch(counts),
    }
}

/// The expert GEMM (see [`KernelOps::moe_gather_matmul`]); only valid where [`Kernels::Fused`]
/// holds.
pub fn moe_gather_matmul(
    a: Tensor<2>,
    rows: Tensor<1, Int>,
    w: Tensor<3>,
    offsets: Tensor<1, Int>,
    gather: bool,
) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::moe_gather_matmul(
        a.into_dispatch(),
        rows.into_dispatch(),
        w.into_dispatch(),
        offsets.into_dispatch(),
        gather as u32,
    ))
}

/// Per-row divergence `[N]` between the teacher's and the student's softmaxes of logits
/// `[N, V]` at inverse temperature `inv_temp` (see [`KernelOps::distill_rows`]), launched about
/// `slab_rows` rows at a time inside one operation. Gradients reach `student` only.
pub fn distill_rows(
    student: Tensor<2>,
    teacher: Tensor<2>,
    kind: DistillKind,
    param: f32,
    inv_temp: f32,
    slab_rows: usize,
) -> Tensor<1> {
    Tensor::from_dispatch(Dispatch::distill_rows(
        student.into_dispatch(),
        teacher.into_dispatch(),
        kind.code(),
        param,
        inv_temp,
        slab_rows.min(u32::MAX as usize) as u32,
    ))
}

/// `sum_i row_weight_i * div_i` for the student logits `hidden [N, H] @ weight [H, V]` against
/// the teacher's `teacher_hidden [N, Ht] @ teacher_weight [Ht, V]` (see
/// [`KernelOps::fused_linear_distill`]), `chunk` rows at a time: neither model's logits exist
/// whole. Gradients reach `hidden` and `weight`.
#[allow(clippy::too_many_arguments)]
pub fn fused_linear_distill(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    teacher_hidden: Tensor<2>,
    teacher_weight: Tensor<2>,
    row_weight: Tensor<1>,
    kind: DistillKind,
    param: f32,
    inv_temp: f32,
    chunk: usize,
) -> Tensor<1> {
    Tensor::from_dispatch(Dispatch::fused_linear_distill(
        hidden.into_dispatch(),
        weight.into_dispatch(),
        teacher_hidden.into_dispatch(),
        teacher_weight.into_dispatch(),
        row_weight.into_dispatch(),
        kind.code(),
        param,
        inv_temp,
        chunk.max(1) as u32,
    ))
}

/// Mean-style cross-entropy `sum_i row_weight_i * (lse_i - logit_i[targets_i])` of the logits
/// `hidden [N, H] @ weight [H, V]` (see [`KernelOps::fused_linear_cross_entropy`]), `chunk`
/// rows at a time: the logits never exist whole. A negative target is a row without a label.
/// Gradients reach `hidden` and `weight`.
pub fn fused_linear_cross_entropy(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    targets: Tensor<1, Int>,
    row_weight: Tensor<1>,
    chunk: usize,
) -> Tensor<1> {
    Tensor::from_dispatch(Dispatch::fused_linear_cross_entropy(
        hidden.into_dispatch(),
        weight.into_dispatch(),
        targets.cast(burn::tensor::IntDType::I32).into_dispatch(),
        row_weight.into_dispatch(),
        chunk.clamp(1, u32::MAX as usize) as u32,
    ))
}
