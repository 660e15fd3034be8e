//! Launch code of the cross-entropy kernel (`shaders/cross_entropy.wgsl`): one chunk of the
//! fused-linear cross-entropy (`fused_linear.rs`). Its reference is
//! `model::head_loss::labelled_cross_entropy` on plain burn ops.

use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::Shape;

use super::buffers::{as_f32, empty_f32};
use super::moe_kernel::as_i32;

/// Threads per workgroup; one workgroup reduces one row.
const WG: u32 = 256;
/// Workgroups per dispatch dimension (WebGPU's guaranteed minimum limit).
const MAX_PER_DIM: u32 = 65_535;

const SOURCE: &str = include_str!("../../../../shaders/cross_entropy.wgsl");

/// One compiled variant: with or without the in-place gradient.
#[derive(Debug, Clone, Copy)]
struct CrossEntropyKernel {
    grad: bool,
}

impl KernelSource for CrossEntropyKernel {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(SOURCE)
            .register("wg", WG.to_string())
            .register("grad", self.grad.to_string())
    }

    fn id(&self) -> KernelId {
        // the shader text's length keys the cache too, so an edited shader is never served stale
        KernelId::new::<Self>().info((self.grad, WG, SOURCE.len()))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Weighted per-row cross-entropy `[n]` of `logits [n, V]` against `targets [n]` (i32,
/// negative for no label) with `row_weight [n]`. With `grad`, the gradient of the summed loss
/// with respect to the logits is written over `logits`, which the caller must own alone.
pub(super) fn rows(
    logits: &CubeTensor,
    targets: CubeTensor,
    row_weight: CubeTensor,
    grad: bool,
) -> CubeTensor {
    let shape = logits.meta.shape();
    assert_eq!(shape.num_dims(), 2, "cross-entropy logits must be [n, V]");
    let (n, v) = (shape[0], shape[1]);
    assert!(
        n > 0 && v > 0,
        "cross-entropy needs n, V > 0, got [{n}, {v}]"
    );
    assert!(
        logits.is_contiguous(),
        "the cross-entropy kernel writes its logits in place: they must be contiguous"
    );
    let targets = as_i32(targets, "the cross-entropy targets");
    let row_weight = as_f32(row_weight, "the cross-entropy row weights");
    assert_eq!(
        targets.meta.shape().clone(),
        Shape::new([n]),
        "targets must be [n]"
    );
    assert_eq!(
        row_weight.meta.shape().clone(),
        Shape::new([n]),
        "row weights must be [n]"
    );
    let loss = empty_f32(logits, Shape::new([n]));
    let client = logits.client.clone();
    let rows = n as u32;
    let per_x = rows.clamp(1, MAX_PER_DIM);
    let words = [rows, v as u32, per_x];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let info = client.create_from_slice(&bytes);
    let bindings = vec![
        logits.handle.clone().binding(),
        targets.handle.clone().binding(),
        row_weight.handle.clone().binding(),
        loss.handle.clone().binding(),
        info.binding(),
    ];
    super::launches::record(super::launches::Family::CrossEntropy);
    client.launch(
        Box::new(SourceKernel::new(
            CrossEntropyKernel { grad },
            CubeDim::new_1d(WG),
        )),
        CubeCount::Static(per_x, rows.div_ceil(per_x), 1),
        KernelArguments::new().with_buffers(bindings),
    );
    loss
}

#[cfg(test)]
/// Both variants' filled-in WGSL, for validation tests.
pub(crate) fn all_sources() -> Vec<(String, String)> {
    [false, true]
        .into_iter()
        .map(|grad| {
            (
                format!("shaders/cross_entropy.wgsl (grad {grad})"),
                CrossEntropyKernel { grad }.source().complete(),
            )
        })
        .collect()
}
