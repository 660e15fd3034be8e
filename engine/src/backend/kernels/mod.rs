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
mod autodiff;
mod buffers;
mod cross_entropy;
mod distill;
mod fused_linear;
mod launches;
#[cfg(feature = "fusion")]
mod meta;
mod moe;
mod moe_gemm;
mod moe_kernel;
mod ops;

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::CubeBackend;
use burn::backend::{DispatchDevice, backend_extension};
use burn::prelude::Device;

use crate::config::KernelPolicy;
pub use attention::{ATTENTION_MAX_HEAD_DIM, flash_attention_unsupported};
pub use distill::{DISTILL_MAX_ROW_BYTES, DistillKind, distill_slab_rows};
pub use launches::{KernelLaunches, kernel_launches};
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
#[backend_extension(Autodiff, Cube, Fusion: cfg(feature = "fusion"))]
pub trait KernelOps: burn::backend::Backend {
    /// Per-row divergence `[N]` between `softmax(teacher * inv_temp)` and
    /// `softmax(student * inv_temp)` for logits `[N, V]`; `kind` is a [`DistillKind`] code and
    /// `param` its beta or alpha. Gradients flow to `student` only. The rows are processed
    /// about `slab_rows` at a time (each slab one storage binding; rounded to keep the slabs'
    /// byte offsets bindable), inside one operation, so the gradient is one `[N, V]` buffer.
    #[fusion(meta = meta::rows_f32)]
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
    #[fusion(meta = meta::fused_linear_distill)]
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
    #[fusion(meta = meta::fused_linear_cross_entropy)]
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
    #[fusion(dtype = q, shape = q)]
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
    #[fusion(meta = meta::moe_route)]
    fn moe_route(
        logits: FloatTensor<Self>,
        routed: FloatTensor<Self>,
        k: u32,
    ) -> (FloatTensor<Self>, IntTensor<Self>);

    /// MoE dispatch: a stable counting sort of the assignments `experts [N, k]` by expert,
    /// filled slot-major with at most `capacity` per expert: `(sorted_rows [N k], slot_pos
    /// [N, k], offsets [E + 1], counts [E])`; see `shaders/moe_sort.wgsl`.
    #[fusion(meta = meta::moe_sort)]
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
    #[fusion(meta = meta::moe_gather_matmul)]
    fn moe_gather_matmul(
        a: FloatTensor<Self>,
        rows: IntTensor<Self>,
        w: FloatTensor<Self>,
        offsets: IntTensor<Self>,
        gather: u32,
    ) -> FloatTensor<Self>;
}

/// The passes the autodiff wiring of [`KernelOps`] is built from: forward passes that also
/// return what the backward needs, and the backward passes. Declared as their own backend
/// extension so that the autodiff implementation is generic over the backend it wraps: the
/// plain CubeCL backend, or burn's `Fusion` over it (feature `fusion`), where each pass is a
/// custom operation of the fused stream instead of an immediate launch.
#[backend_extension(Cube, Fusion: cfg(feature = "fusion"))]
pub trait KernelPasses: burn::backend::Backend {
    /// [`KernelOps::distill_rows`] and the forward's log-sum-exps `[N, 2]` (for the backward).
    #[fusion(meta = meta::distill_forward)]
    fn distill_rows_forward(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
        slab_rows: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The gradient `[N, V]` of `sum_i grad_out_i div_i` with respect to the student logits.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = meta::distill_backward)]
    fn distill_rows_backward(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
        slab_rows: u32,
    ) -> FloatTensor<Self>;

    /// [`KernelOps::fused_linear_distill`] with its gradients formed chunk by chunk in the same
    /// pass: `(loss [1], d hidden, d weight)`, not yet scaled by the upstream gradient.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = meta::fused_linear_distill_grads)]
    fn fused_linear_distill_grads(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        teacher_hidden: FloatTensor<Self>,
        teacher_weight: FloatTensor<Self>,
        row_weight: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
        chunk: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// [`KernelOps::fused_linear_cross_entropy`] with its gradients, as
    /// [`KernelPasses::fused_linear_distill_grads`].
    #[fusion(meta = meta::fused_linear_cross_entropy_grads)]
    fn fused_linear_cross_entropy_grads(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        row_weight: FloatTensor<Self>,
        chunk: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// [`KernelOps::flash_attention`] and its log-sum-exps `[B, H, Tq]`.
    #[fusion(meta = meta::attention_forward)]
    fn flash_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_mask: FloatTensor<Self>,
        causal: u32,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `(dq, dk, dv)` from the forward's inputs, output, log-sum-exps and the output gradient.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = meta::attention_backward)]
    fn flash_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_mask: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        causal: u32,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The router-logit gradient `[N, E]` from the routing's outputs and the weights' gradient.
    #[fusion(meta = meta::moe_route_backward)]
    fn moe_route_backward(
        weights: FloatTensor<Self>,
        experts: IntTensor<Self>,
        grad: FloatTensor<Self>,
        num_experts: u32,
    ) -> FloatTensor<Self>;

    /// `(d a, d w)` of [`KernelOps::moe_gather_matmul`] from its inputs and output gradient.
    #[fusion(meta = meta::moe_gather_matmul_backward)]
    fn moe_gather_matmul_backward(
        a: FloatTensor<Self>,
        rows: IntTensor<Self>,
        w: FloatTensor<Self>,
        offsets: IntTensor<Self>,
        grad: FloatTensor<Self>,
        gather: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

fn distill_params(kind: u32, param: f32, inv_temp: f32, slab_rows: u32) -> distill::Params {
    distill::Params {
        kind,
        param,
        inv_temp,
        slab_rows: slab_rows as usize,
    }
}

fn fused_distill_loss(
    teacher_hidden: FloatTensor<CubeBackend>,
    teacher_weight: FloatTensor<CubeBackend>,
    kind: u32,
    param: f32,
    inv_temp: f32,
) -> fused_linear::ChunkLoss {
    fused_linear::ChunkLoss::Distill {
        teacher_hidden,
        teacher_weight,
        // a chunk's logits are bound whole: one slab
        p: distill_params(kind, param, inv_temp, u32::MAX),
    }
}

impl KernelPasses for CubeBackend {
    fn distill_rows_forward(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
        slab_rows: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let p = distill_params(kind, param, inv_temp, slab_rows);
        distill::forward(student, teacher, p)
    }

    fn distill_rows_backward(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
        slab_rows: u32,
    ) -> FloatTensor<Self> {
        let p = distill_params(kind, param, inv_temp, slab_rows);
        distill::backward(student, teacher, lse, grad_out, p)
    }

    fn fused_linear_distill_grads(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        teacher_hidden: FloatTensor<Self>,
        teacher_weight: FloatTensor<Self>,
        row_weight: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
        chunk: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let what = fused_distill_loss(teacher_hidden, teacher_weight, kind, param, inv_temp);
        let (loss, g) = fused_linear::run(hidden, weight, row_weight, &what, chunk as usize, true);
        let (dh, dw) = g.expect("gradients asked for");
        (loss, dh, dw)
    }

    fn fused_linear_cross_entropy_grads(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        row_weight: FloatTensor<Self>,
        chunk: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let what = fused_linear::ChunkLoss::CrossEntropy { targets };
        let (loss, g) = fused_linear::run(hidden, weight, row_weight, &what, chunk as usize, true);
        let (dh, dw) = g.expect("gradients asked for");
        (loss, dh, dw)
    }

    fn flash_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_mask: FloatTensor<Self>,
        causal: u32,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        attention::cube_forward(q, k, v, key_mask, causal, scale)
    }

    fn flash_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_mask: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        causal: u32,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        attention::cube_backward(q, k, v, key_mask, out, lse, grad_out, causal, scale)
    }

    fn moe_route_backward(
        weights: FloatTensor<Self>,
        experts: IntTensor<Self>,
        grad: FloatTensor<Self>,
        num_experts: u32,
    ) -> FloatTensor<Self> {
        moe::route_backward(&weights, &experts, num_experts as usize, grad)
    }

    fn moe_gather_matmul_backward(
        a: FloatTensor<Self>,
        rows: IntTensor<Self>,
        w: FloatTensor<Self>,
        offsets: IntTensor<Self>,
        grad: FloatTensor<Self>,
        gather: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        moe_gemm::GemmInputs::new(a, rows, w, offsets, gather).backward(grad)
    }
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
        Self::distill_rows_forward(student, teacher, kind, param, inv_temp, slab_rows).0
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
        let what = fused_distill_loss(teacher_hidden, teacher_weight, kind, param, inv_temp);
        fused_linear::run(hidden, weight, row_weight, &what, chunk as usize, false).0
    }

    fn fused_linear_cross_entropy(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        row_weight: FloatTensor<Self>,
        chunk: u32,
    ) -> FloatTensor<Self> {
        let what = fused_linear::ChunkLoss::CrossEntropy { targets };
        fused_linear::run(hidden, weight, row_weight, &what, chunk as usize, false).0
    }

    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_mask: FloatTensor<Self>,
        causal: u32,
        scale: f32,
    ) -> FloatTensor<Self> {
        attention::cube_forward(q, k, v, key_mask, causal, scale).0
    }

    fn moe_route(
        logits: FloatTensor<Self>,
        routed: FloatTensor<Self>,
        k: u32,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        moe::route_forward(logits, routed, k as usize)
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
        moe_gemm::GemmInputs::new(a, rows, w, offsets, gather).forward()
    }
}

#[cfg(test)]
mod attention_tests;
#[cfg(test)]
mod moe_tests;
#[cfg(test)]
mod tests;
