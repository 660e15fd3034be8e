//! Condenser's own WGSL kernels under burn autodiff (DESIGN.md, "Backends and kernels").
//!
//! [`KernelOps`] is a burn backend extension: on the CubeCL backend (wgpu) its methods launch the
//! shaders in `shaders/`, and on `Autodiff<CubeBackend>` they record a custom backward that
//! launches the backward shaders. Other backends (the CPU's `flex`) never reach it: the callers
//! in `distill` and `model` check [`kernels_apply`] and use the plain burn-ops reference instead,
//! which is also the oracle of every kernel test.

mod attention;
pub mod bench;
mod buffers;
mod distill;
mod fused_linear;
mod moe;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::CubeBackend;
use burn::backend::{DispatchDevice, backend_extension};
use burn::prelude::Device;
use serde::{Deserialize, Serialize};

pub use attention::{ATTENTION_MAX_HEAD_DIM, flash_attention_unsupported};
pub use distill::{DISTILL_MAX_ROW_BYTES, DistillKind, distill_slab_rows};
pub use moe::MOE_MAX_EXPERTS;

/// Whether the fused kernels run where they can (`auto`, the default) or the plain burn-ops
/// reference runs everywhere (`reference`), for A/B runs and for bisecting a numerical
/// difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelPolicy {
    #[default]
    Auto,
    Reference,
}

impl std::str::FromStr for KernelPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "reference" => Ok(Self::Reference),
            other => Err(format!(
                "unknown kernels policy {other:?}: expected auto or reference"
            )),
        }
    }
}

/// True when `policy` allows the kernels and `device` runs them (a CubeCL device, i.e. wgpu, with
/// or without autodiff).
/// Training runs on autodiff devices: they answer for the device they wrap (an autodiff device
/// is never itself a Cube device, and testing only for that once kept every kernel out of
/// training while the kernel tests, which call the kernels directly, passed).
pub fn kernels_apply(policy: KernelPolicy, device: &Device) -> bool {
    policy == KernelPolicy::Auto
        && matches!(
            device.clone().inner().as_dispatch(),
            DispatchDevice::Cube(_)
        )
}

/// The fused operations. Implemented for `CubeBackend` (launches) and `Autodiff<CubeBackend>`
/// (launches plus a custom backward); calling them on another backend panics, which
/// [`kernels_apply`] prevents.
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
    /// the student logits `hidden [N, H] @ weight [H, V]` from `teacher [N, V]` (as
    /// [`KernelOps::distill_rows`]), taken `chunk` rows at a time so the `[N, V]` student logits
    /// never exist whole. Returns `[1]`; gradients flow to `hidden` and `weight`.
    fn fused_linear_distill(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        row_weight: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
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
        teacher: FloatTensor<Self>,
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
        fused_linear::cube_fused_linear(hidden, weight, teacher, row_weight, p, chunk as usize)
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
        moe::cube_gather_matmul(a, rows, w, offsets, gather)
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
        teacher: FloatTensor<Self>,
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
        fused_linear::autodiff_fused_linear::<C>(
            hidden,
            weight,
            teacher,
            row_weight,
            p,
            chunk as usize,
        )
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
        moe::autodiff_gather_matmul::<C>(a, rows, w, offsets, gather)
    }
}

/// Flash attention on a wgpu device (see [`KernelOps::flash_attention`]); only valid where
/// [`kernels_apply`] holds. `key_mask` is `[B, Tk]`, 1 for real keys. q, k and v are all f32,
/// or all f16 on an adapter with `shader-f16` (the output and gradients then are f16 too, the
/// arithmetic f32); the mask is read as f32 whatever its type.
pub fn flash_attention(
    q: burn::prelude::Tensor<4>,
    k: burn::prelude::Tensor<4>,
    v: burn::prelude::Tensor<4>,
    key_mask: burn::prelude::Tensor<2>,
    causal: bool,
    scale: f32,
) -> burn::prelude::Tensor<4> {
    burn::prelude::Tensor::from_dispatch(burn::backend::Dispatch::flash_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        key_mask.cast(burn::tensor::FloatDType::F32).into_dispatch(),
        causal as u32,
        scale,
    ))
}

/// The routing of one MoE layer on the device (see [`KernelOps::moe_route`] and
/// [`KernelOps::moe_sort`]); only valid where [`kernels_apply`] holds.
pub struct MoeDispatch {
    /// `[N, k]` renormalised weights of the chosen experts (differentiable).
    pub weights: burn::prelude::Tensor<2>,
    /// `[N, k]` chosen experts, `E` for padding.
    pub experts: burn::prelude::Tensor<2, burn::prelude::Int>,
    /// `[N k]` tokens of the kept assignments grouped by expert.
    pub sorted_rows: burn::prelude::Tensor<1, burn::prelude::Int>,
    /// `[N, k]` row of each assignment in the sorted order (`N k - 1`, a zero row, when
    /// dropped or padding).
    pub slot_pos: burn::prelude::Tensor<2, burn::prelude::Int>,
    /// `[E + 1]` segment starts; the last is the kept total.
    pub offsets: burn::prelude::Tensor<1, burn::prelude::Int>,
    /// `[E]` assignments per expert before the capacity.
    pub counts: burn::prelude::Tensor<1, burn::prelude::Int>,
}

/// Routes `logits [N, E]` to the top `k` experts with at most `capacity` assignments each.
pub fn moe_dispatch(
    logits: burn::prelude::Tensor<2>,
    routed: burn::prelude::Tensor<1>,
    k: usize,
    capacity: usize,
) -> MoeDispatch {
    use burn::prelude::Tensor;
    let e = logits.dims()[1];
    let (weights, experts) = burn::backend::Dispatch::moe_route(
        logits.into_dispatch(),
        routed.into_dispatch(),
        k as u32,
    );
    let experts = Tensor::<2, burn::prelude::Int>::from_dispatch(experts);
    let (sorted, pos, offsets, counts) = burn::backend::Dispatch::moe_sort(
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

/// The expert GEMM (see [`KernelOps::moe_gather_matmul`]); only valid where [`kernels_apply`]
/// holds.
pub fn moe_gather_matmul(
    a: burn::prelude::Tensor<2>,
    rows: burn::prelude::Tensor<1, burn::prelude::Int>,
    w: burn::prelude::Tensor<3>,
    offsets: burn::prelude::Tensor<1, burn::prelude::Int>,
    gather: bool,
) -> burn::prelude::Tensor<2> {
    burn::prelude::Tensor::from_dispatch(burn::backend::Dispatch::moe_gather_matmul(
        a.into_dispatch(),
        rows.into_dispatch(),
        w.into_dispatch(),
        offsets.into_dispatch(),
        gather as u32,
    ))
}

#[cfg(test)]
mod attention_tests;
#[cfg(test)]
mod moe_tests;
#[cfg(test)]
mod tests;
