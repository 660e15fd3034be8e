//! Condenser's own WGSL kernels under burn autodiff (docs/ARCHITECTURE.md, "Kernels").
//!
//! [`KernelOps`] is a burn backend extension: on the CubeCL backend (wgpu) its methods launch the
//! shaders in `shaders/`, and on `Autodiff<CubeBackend>` they record a custom backward that
//! launches the backward shaders. Other backends (the CPU's `flex`) never reach it: a run
//! resolves one [`Kernels`] value from the recipe's policy and its device, and the callers in
//! `distill` and `model` take that value and use the plain burn-ops reference when it says so.
//! The reference is also the oracle of every kernel test. The tensor-level entry points of all
//! three kernels (attention, MoE routing, distillation loss) are in `ops.rs`.

mod attention;
mod buffers;
mod cross_entropy;
mod distill;
mod fused_linear;
mod moe;
mod moe_gemm;
mod moe_kernel;
mod ops;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::CubeBackend;
use burn::backend::{DispatchDevice, backend_extension};
use burn::prelude::Device;

use crate::config::KernelPolicy;
pub use attention::{ATTENTION_MAX_HEAD_DIM, flash_attention_unsupported};
pub use distill::{DISTILL_MAX_ROW_BYTES, DistillKind, distill_slab_rows};
pub use moe_kernel::MOE_MAX_EXPERTS;
pub use ops::{
    MoeDispatch, distill_rows, flash_attention, fused_linear_cross_entropy, fused_linear_distill,
    moe_dispatch, moe_gather_matmul,
};

/// Where the fused kernels run, resolved once from the recipe's [`KernelPolicy`] and the
/// device, then handed to every model and loss that may use them: the one carrier of that
/// decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The WGSL kernels (wgpu devices, with the `auto` policy).
    Fused,
    /// The plain burn-ops reference (other devices, or the `reference` policy).
    Reference,
}

impl Kernels {
    /// `Fused` when `policy` allows the kernels and `device` runs them (a CubeCL device, i.e.
    /// wgpu, with or without autodiff).
    /// Training runs on autodiff devices: they answer for the device they wrap (an autodiff
    /// device is never itself a Cube device, and testing only for that once kept every kernel
    /// out of training while the kernel tests, which call the kernels directly, passed).
    pub fn resolve(policy: KernelPolicy, device: &Device) -> Kernels {
        let cube = matches!(
            device.clone().inner().as_dispatch(),
            DispatchDevice::Cube(_)
        );
        if policy == KernelPolicy::Auto && cube {
            Kernels::Fused
        } else {
            Kernels::Reference
        }
    }

    /// What a model or loss made without a run gets: the kernels wherever the device runs them.
    pub fn for_device(device: &Device) -> Kernels {
        Kernels::resolve(KernelPolicy::Auto, device)
    }

    pub fn fused(self) -> bool {
        self == Kernels::Fused
    }
}

/// The fused operations. Implemented for `CubeBackend` (launches) and `Autodiff<CubeBackend>`
/// (launches plus a custom backward); calling them on another backend panics, which
/// [`Kernels::resolve`] prevents.
#[backend_extension(Autodiff, Cube)]
pub trait KernelOps: burn::backend::Backend {
    /// Per-row divergence `[N]` between `softmax(teacher * inv_temp)` and
    /// `softmax(student * inv_temp)` for logits `[N, V]`; `kind` is a [`DistillKind`] code and
    /// `param` its beta or alpha. Gradients flow to `student` only. The rows are processed
    /// about `slab_rows` at a time (each slab one storage binding; rounded to keep the slabs'
    /// byte offsets bindable), inside one operation, so the gradient is one `[N, V]` buffer.
    fn distill_rows(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
        slab_rows: u32,
    ) -> FloatTensor<Self>;

    /// Fused-linear distillation: `sum_i w_i * div_i` where `div_i` is the divergence of row i of
    /// the student logits `hidden [N, H] @ weight [H, V]` from the teacher's `teacher_hidden
    /// [N, Ht] @ teacher_weight [Ht, V]` (as [`KernelOps::distill_rows`]), taken `chunk` rows at
    /// a time so neither model's `[N, V]` logits ever exist whole. Returns `[1]`; gradients flow
    /// to `hidden` and `weight` (the teacher is a constant).
    #[allow(clippy::too_many_arguments)]
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
    ) -> FloatTensor<Self>;

    /// Fused-linear cross-entropy: `sum_i w_i (lse_i - l_i[t_i])` for the logits `l = hidden
    /// [N, H] @ weight [H, V]`, `targets [N]` (negative: no label, no loss) and row weights
    /// `[N]`, taken `chunk` rows at a time (fewer where one chunk's logits would exceed the
    /// device's largest buffer) so the `[N, V]` logits never exist whole. Returns `[1]`;
    /// gradients flow to `hidden` and `weight`.
    fn fused_linear_cross_entropy(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        row_weight: FloatTensor<Self>,
        chunk: u32,
    ) -> FloatTensor<Self>;

    /// Flash attention `softmax(scale q k^T + mask) v` for `q [B, H, Tq, D]`, `k`/`v
    /// [B, Hk, Tk, D]` (grouped-query heads when `Hk < H`) and a `[B, Tk]` 0/1 key mask;
    /// `causal` (0/1) lets query i see keys up to `i + Tk - Tq`. A query that sees no key gets a
    /// zero output. Gradients flow to q, k and v. Head dimension a multiple of 4, at most
    /// [`ATTENTION_MAX_HEAD_DIM`].
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_mask: FloatTensor<Self>,
        causal: u32,
        scale: f32,
    ) -> FloatTensor<Self>;

    /// MoE routing: for router logits `[N, E]` and a `[N]` 0/1 mask of routed tokens, the
    /// top-`k` experts of each token (ties to the lower index; `E` for padding) and their
    /// weights renormalised over the chosen `k` (0 for padding): `(weights [N, k], experts
    /// [N, k])`. Gradients flow from the weights to the logits. At most [`MOE_MAX_EXPERTS`].
    fn moe_route(
        logits: FloatTensor<Self>,
        routed: FloatTensor<Self>,
        k: u32,
    ) -> (FloatTensor<Self>, IntTensor<Self>);

    /// MoE dispatch: a stable counting sort of the assignments `experts [N, k]` by expert,
    /// filled slot-major with at most `capacity` per expert: `(sorted_rows [N k], slot_pos
    /// [N, k], offsets [E + 1], counts [E])`; see `shaders/moe_sort.wgsl`.
    fn moe_sort(
        experts: IntTensor<Self>,
        num_experts: u32,
        capacity: u32,
    ) -> (
        IntTensor<Self>,
        IntTensor<Self>,
        IntTensor<Self>,
        IntTensor<Self>,
    );

    /// MoE expert GEMM over the sorted rows: row s of the `[S, Nd]` result is
    /// `a[rows[s]] @ w[e]` (`gather` 1) or `a[s] @ w[e]` (`gather` 0) for the expert e whose
    /// segment of `offsets` holds s; rows at or past `offsets[E]` are 0. `w` is `[E, Kd, Nd]`.
    /// Gradients flow to `a` and `w`.
    fn moe_gather_matmul(
        a: FloatTensor<Self>,
        rows: IntTensor<Self>,
        w: FloatTensor<Self>,
        offsets: IntTensor<Self>,
        gather: u32,
    ) -> FloatTensor<Self>;
}

impl KernelOps for CubeBackend {
    fn distill_rows(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
        slab_rows: u32,
    ) -> FloatTensor<Self> {
        distill::cube_distill_rows(student, teacher, kind, param, inv_temp, slab_rows as usize)
    }

    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_mask: FloatTensor<Self>,
        causal: u32,
        scale: f32,
    ) -> FloatTensor<Self> {
        attention::cube_attention(q, k, v, key_mask, causal, scale)
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
        let p = distill::Params {
            kind,
            param,
            inv_temp,
            // a chunk's logits are bound whole: one slab
            slab_rows: usize::MAX,
        };
        let what = fused_linear::ChunkLoss::Distill {
            teacher_hidden,
            teacher_weight,
            p,
        };
        fused_linear::cube_fused_linear(hidden, weight, row_weight, what, chunk as usize)
    }

    fn fused_linear_cross_entropy(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        row_weight: FloatTensor<Self>,
        chunk: u32,
    ) -> FloatTensor<Self> {
        let what = fused_linear::ChunkLoss::CrossEntropy { targets };
        fused_linear::cube_fused_linear(hidden, weight, row_weight, what, chunk as usize)
    }

    fn moe_route(
        logits: FloatTensor<Self>,
        routed: FloatTensor<Self>,
        k: u32,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        moe::cube_route(logits, routed, k)
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
        moe::cube_sort(experts, num_experts, capacity)
    }

    fn moe_gather_matmul(
        a: FloatTensor<Self>,
        rows: IntTensor<Self>,
        w: FloatTensor<Self>,
        offsets: IntTensor<Self>,
        gather: u32,
    ) -> FloatTensor<Self> {
        moe_gemm::cube_gather_matmul(a, rows, w, offsets, gather)
    }
}

impl<C: CheckpointStrategy> KernelOps for Autodiff<CubeBackend, C> {
    fn distill_rows(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
        slab_rows: u32,
    ) -> FloatTensor<Self> {
        distill::autodiff_distill_rows::<C>(
            student,
            teacher,
            kind,
            param,
            inv_temp,
            slab_rows as usize,
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
        attention::autodiff_attention::<C>(q, k, v, key_mask, causal, scale)
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
        let p = distill::Params {
            kind,
            param,
            inv_temp,
            // a chunk's logits are bound whole: one slab
            slab_rows: usize::MAX,
        };
        let what = fused_linear::ChunkLoss::Distill {
            teacher_hidden: teacher_hidden.into_primitive(),
            teacher_weight: teacher_weight.into_primitive(),
            p,
        };
        fused_linear::autodiff_fused_linear::<C>(hidden, weight, row_weight, what, chunk as usize)
    }

    fn fused_linear_cross_entropy(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        row_weight: FloatTensor<Self>,
        chunk: u32,
    ) -> FloatTensor<Self> {
        let what = fused_linear::ChunkLoss::CrossEntropy { targets };
        fused_linear::autodiff_fused_linear::<C>(hidden, weight, row_weight, what, chunk as usize)
    }

    fn moe_route(
        logits: FloatTensor<Self>,
        routed: FloatTensor<Self>,
        k: u32,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        moe::autodiff_route::<C>(logits, routed, k)
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
        moe::cube_sort(experts, num_experts, capacity)
    }

    fn moe_gather_matmul(
        a: FloatTensor<Self>,
        rows: IntTensor<Self>,
        w: FloatTensor<Self>,
        offsets: IntTensor<Self>,
        gather: u32,
    ) -> FloatTensor<Self> {
        moe_gemm::autodiff_gather_matmul::<C>(a, rows, w, offsets, gather)
    }
}

#[cfg(test)]
mod attention_tests;
#[cfg(test)]
mod moe_tests;
#[cfg(test)]
mod tests;
