//! Condenser's own WGSL kernels under burn autodiff (DESIGN.md, "Backends and kernels").
//!
//! [`KernelOps`] is a burn backend extension: on the CubeCL backend (wgpu) its methods launch the
//! shaders in `shaders/`, and on `Autodiff<CubeBackend>` they record a custom backward that
//! launches the backward shaders. Other backends (the CPU's `flex`) never reach it: the callers
//! in `distill` and `model` check [`kernels_apply`] and use the plain burn-ops reference instead,
//! which is also the oracle of every kernel test.

pub mod bench;
mod distill;

use burn::backend::tensor::FloatTensor;
use burn::backend::{DispatchDevice, backend_extension};
use burn::prelude::Device;
use serde::{Deserialize, Serialize};

pub use distill::{DISTILL_MAX_ROW_BYTES, DistillKind, distill_slab_rows};

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

/// True when `policy` allows the kernels and `device` runs them (a CubeCL device, i.e. wgpu).
pub fn kernels_apply(policy: KernelPolicy, device: &Device) -> bool {
    policy == KernelPolicy::Auto && matches!(device.as_dispatch(), DispatchDevice::Cube(_))
}

/// The fused operations. Implemented for `CubeBackend` (launches) and `Autodiff<CubeBackend>`
/// (launches plus a custom backward); calling them on another backend panics, which
/// [`kernels_apply`] prevents.
#[backend_extension(Autodiff, Cube)]
pub trait KernelOps: burn::backend::Backend {
    /// Per-row divergence `[N]` between `softmax(teacher * inv_temp)` and
    /// `softmax(student * inv_temp)` for logits `[N, V]`; `kind` is a [`DistillKind`] code and
    /// `param` its beta or alpha. Gradients flow to `student` only.
    fn distill_rows(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        kind: u32,
        param: f32,
        inv_temp: f32,
    ) -> FloatTensor<Self>;
}

#[cfg(test)]
mod tests;
