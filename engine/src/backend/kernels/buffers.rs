//! Device buffers as the WGSL kernels bind them: contiguous f32 (or, for the attention kernels,
//! f16) inputs and fresh outputs.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::tensor::{DType, Shape};

/// `t` as a contiguous f32 buffer; `what` names it in the panic of a wrong dtype (e.g.
/// "the attention kernels' queries").
pub(super) fn as_f32(t: CubeTensor, what: &str) -> CubeTensor {
    as_dtype(t, DType::F32, what)
}

/// `t` as a contiguous buffer of `dtype`; `what` names it in the panic of a wrong dtype.
pub(super) fn as_dtype(t: CubeTensor, dtype: DType, what: &str) -> CubeTensor {
    assert_eq!(
        t.dtype, dtype,
        "{what} must be {dtype:?}, got {:?}",
        t.dtype
    );
    into_contiguous(t)
}

/// A fresh contiguous f32 tensor of `shape` on `like`'s device (contents undefined).
pub(super) fn empty_f32(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty(like, shape, DType::F32)
}

/// A fresh contiguous i32 tensor (indices the kernels write) of `shape` on `like`'s device.
pub(super) fn empty_i32(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty(like, shape, DType::I32)
}

/// A fresh contiguous tensor of `shape` and `dtype` on `like`'s device (contents undefined).
pub(super) fn empty(like: &CubeTensor, shape: Shape, dtype: DType) -> CubeTensor {
    let bytes = shape.num_elements() * dtype.size();
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        like.client.empty(bytes),
        dtype,
    )
}
