//! Launch code of the MoE routing kernels (`shaders/moe_*.wgsl`) and their autodiff wiring.
//!
//! Three operations, composed by `model::moe` into a whole expert layer:
//! - [`route`]: top-k of the router logits with weights renormalised over the chosen experts
//!   (differentiable with respect to the logits);
//! - [`sort`]: a stable counting sort of the token-expert assignments by expert, with the
//!   capacity applied (integer outputs, no gradient); its per-expert histogram is the routing
//!   telemetry;
//! - `gather_matmul` (`moe_gemm.rs`): the expert GEMM over the sorted rows, each row multiplied by its own
//!   expert's weights, gathering tokens as it loads them (differentiable with respect to the
//!   input and the stacked weights; the backward is the same GEMM on transposed weights and a per-expert
//!   weight-gradient GEMM over the same segments).
//!
//! The reference they replace is `MoeMlp::forward` with [`super::Kernels::Reference`]:
//! routing decided on the host, then per expert a select, the FFN and a scatter-add.

use burn::backend::wgpu::CubeTensor;
use burn::tensor::Shape;

use super::buffers::{as_f32, empty_f32, empty_i32};
use super::moe_kernel::{MOE_MAX_EXPERTS, MoeKernel, as_i32, dims2, launch};

// ---------------------------------------------------------------------------------------------
// routing

/// Forward of [`route`]: `(weights [N, K], experts [N, K])`.
pub(super) fn route_forward(
    logits: CubeTensor,
    routed: CubeTensor,
    k: usize,
) -> (CubeTensor, CubeTensor) {
    let logits = as_f32(logits, "the MoE router logits");
    let routed = as_f32(routed, "the MoE routed-token mask");
    let (n, e) = dims2(&logits, "the MoE router logits");
    assert!(
        (1..=MOE_MAX_EXPERTS).contains(&e) && (1..=e).contains(&k),
        "MoE kernels take 1..={MOE_MAX_EXPERTS} experts and 1 <= top-k <= experts (got {e}, {k})"
    );
    assert_eq!(
        routed.meta.shape().num_elements(),
        n,
        "one routed flag per token"
    );
    let weights = empty_f32(&logits, Shape::new([n, k]));
    let experts = empty_i32(&logits, Shape::new([n, k]));
    if n > 0 {
        launch(
            MoeKernel::Route {
                e: e as u32,
                k: k as u32,
            },
            64,
            (n.div_ceil(64), 1, 1),
            &[&logits, &routed, &weights, &experts],
            &[n as u32],
        );
    }
    (weights, experts)
}

/// Backward of [`route`]: the router-logit gradient `[N, E]`.
pub(super) fn route_backward(
    weights: &CubeTensor,
    experts: &CubeTensor,
    e: usize,
    grad: CubeTensor,
) -> CubeTensor {
    let g = as_f32(grad, "the MoE routing weights' gradient");
    let (n, k) = dims2(weights, "the MoE routing weights");
    let dlogits = empty_f32(weights, Shape::new([n, e]));
    if n > 0 {
        launch(
            MoeKernel::RouteBackward {
                e: e as u32,
                k: k as u32,
            },
            64,
            (n.div_ceil(64), 1, 1),
            &[weights, experts, &g, &dlogits],
            &[n as u32],
        );
    }
    dlogits
}

// ---------------------------------------------------------------------------------------------
// dispatch sort

/// [`sort`] on the CubeCL backend: `(sorted_rows [N K], slot_pos [N, K], offsets [E + 1],
/// counts [E])`.
pub(super) fn cube_sort(
    experts: CubeTensor,
    num_experts: u32,
    capacity: u32,
) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
    let experts = as_i32(experts, "the MoE expert choices");
    let (n, k) = dims2(&experts, "the MoE expert choices");
    let e = num_experts as usize;
    assert!(
        (1..=MOE_MAX_EXPERTS).contains(&e),
        "MoE kernels take 1..={MOE_MAX_EXPERTS} experts (got {e})"
    );
    let s = n * k;
    let sorted = empty_i32(&experts, Shape::new([s]));
    let pos = empty_i32(&experts, Shape::new([n, k]));
    let offsets = empty_i32(&experts, Shape::new([e + 1]));
    let counts = empty_i32(&experts, Shape::new([e]));
    launch(
        MoeKernel::Sort {
            e: e as u32,
            k: k as u32,
        },
        64,
        (1, 1, 1),
        &[&experts, &sorted, &pos, &offsets, &counts],
        &[n as u32, capacity],
    );
    (sorted, pos, offsets, counts)
}
