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

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Shape};

use super::buffers::{as_f32, empty_f32, empty_i32};

type B = CubeBackend;

/// Most experts the kernels take: the routing kernel keeps the chosen set as a 32-bit mask and
/// the sort keeps a `[64 x E]` histogram in workgroup memory.
pub const MOE_MAX_EXPERTS: usize = 32;
/// Rows of one GEMM workgroup, each an accumulator of every invocation.
pub(super) const GEMM_ROWS: u32 = 16;
// the weight gradient reads the rows of one input row as vec4s
const _: () = assert!(GEMM_ROWS.is_multiple_of(4));
/// Invocations of one GEMM workgroup, 4 columns each.
pub(super) const GEMM_LANES: u32 = 32;
pub(super) const MAX_PER_DIM: usize = 65_535;

const ROUTE_COMMON: &str = include_str!("../../../../shaders/moe_route_common.wgsl");
const ROUTE: &str = include_str!("../../../../shaders/moe_route.wgsl");
const ROUTE_BACKWARD: &str = include_str!("../../../../shaders/moe_route_backward.wgsl");
const SORT: &str = include_str!("../../../../shaders/moe_sort.wgsl");
const GEMM_COMMON: &str = include_str!("../../../../shaders/moe_gemm_common.wgsl");
const GEMM: &str = include_str!("../../../../shaders/moe_gemm.wgsl");
const WEIGHT_GRAD: &str = include_str!("../../../../shaders/moe_weight_grad.wgsl");

/// One compiled variant. The expert count, top-k and the GEMM's inner and outer widths are
/// compile-time constants (fixed per model), so loops over them unroll and bound checks fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum MoeKernel {
    Route {
        e: u32,
        k: u32,
    },
    RouteBackward {
        e: u32,
        k: u32,
    },
    Sort {
        e: u32,
        k: u32,
    },
    Gemm {
        e: u32,
        kd: u32,
        nd: u32,
        gather: bool,
    },
    WeightGrad {
        kd: u32,
        nd: u32,
        gather: bool,
    },
}

impl KernelSource for MoeKernel {
    fn source(&self) -> SourceTemplate {
        match *self {
            MoeKernel::Route { e, k } => SourceTemplate::new(ROUTE)
                .add_template(ROUTE_COMMON)
                .register("e", e.to_string())
                .register("k", k.to_string()),
            MoeKernel::RouteBackward { e, k } => SourceTemplate::new(ROUTE_BACKWARD)
                .add_template(ROUTE_COMMON)
                .register("e", e.to_string())
                .register("k", k.to_string()),
            MoeKernel::Sort { e, k } => SourceTemplate::new(SORT)
                .register("e", e.to_string())
                .register("k", k.to_string()),
            MoeKernel::Gemm { e, kd, nd, gather } => {
                let code = super::moe_gemm::gemm_snippets(kd, nd);
                let mut t = SourceTemplate::new(GEMM)
                    .add_template(GEMM_COMMON)
                    .register("e", e.to_string())
                    .register("kd", kd.to_string())
                    .register("nd", nd.to_string())
                    .register("gather", gather.to_string())
                    .register("r", GEMM_ROWS.to_string())
                    .register("wg", GEMM_LANES.to_string());
                for (name, text) in code {
                    t = t.register(name, text);
                }
                t
            }
            MoeKernel::WeightGrad { kd, nd, gather } => {
                let code = super::moe_gemm::weight_grad_snippets(kd, nd);
                let mut t = SourceTemplate::new(WEIGHT_GRAD)
                    .add_template(GEMM_COMMON)
                    .register("kd", kd.to_string())
                    .register("nd", nd.to_string())
                    .register("gather", gather.to_string())
                    .register("r", GEMM_ROWS.to_string())
                    .register("wg", GEMM_LANES.to_string());
                for (name, text) in code {
                    t = t.register(name, text);
                }
                t
            }
        }
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((
            *self,
            ROUTE_COMMON.len()
                + ROUTE.len()
                + ROUTE_BACKWARD.len()
                + SORT.len()
                + GEMM_COMMON.len()
                + GEMM.len()
                + WEIGHT_GRAD.len(),
        ))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

pub(super) fn launch(
    kernel: MoeKernel,
    threads: u32,
    count: (usize, usize, usize),
    buffers: &[&CubeTensor],
    info: &[u32],
) {
    let client = buffers[0].client.clone();
    let bytes: Vec<u8> = info.iter().flat_map(|w| w.to_le_bytes()).collect();
    let info = client.create_from_slice(&bytes);
    let mut bindings: Vec<_> = buffers.iter().map(|t| t.handle.clone().binding()).collect();
    bindings.push(info.binding());
    assert!(
        count.0 <= MAX_PER_DIM && count.1 <= MAX_PER_DIM && count.2 <= MAX_PER_DIM,
        "MoE kernel dispatch {count:?} exceeds a dispatch dimension"
    );
    client.launch(
        Box::new(SourceKernel::new(kernel, CubeDim::new_1d(threads))),
        CubeCount::Static(count.0 as u32, count.1 as u32, count.2 as u32),
        KernelArguments::new().with_buffers(bindings),
    );
}

pub(super) fn as_i32(t: CubeTensor, what: &str) -> CubeTensor {
    assert_eq!(t.dtype, DType::I32, "{what} must be i32, got {:?}", t.dtype);
    into_contiguous(t)
}

pub(super) fn dims2(t: &CubeTensor, what: &str) -> (usize, usize) {
    let s = t.meta.shape();
    assert_eq!(s.num_dims(), 2, "{what} must be 2-d, got {s:?}");
    (s[0], s[1])
}

// ---------------------------------------------------------------------------------------------
// routing

/// Forward of [`route`]: `(weights [N, K], experts [N, K])`.
fn route_forward(logits: CubeTensor, routed: CubeTensor, k: usize) -> (CubeTensor, CubeTensor) {
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
fn route_backward(
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

pub(super) fn cube_route(
    logits: CubeTensor,
    routed: CubeTensor,
    k: u32,
) -> (CubeTensor, CubeTensor) {
    route_forward(logits, routed, k as usize)
}

#[derive(Debug, Clone)]
struct RouteState {
    weights: CubeTensor,
    experts: CubeTensor,
    e: usize,
}

#[derive(Debug)]
struct RouteBackward;

impl Backward<B, 1> for RouteBackward {
    type State = RouteState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let s = &ops.state;
            grads.register::<B>(node.id, route_backward(&s.weights, &s.experts, s.e, grad));
        }
    }
}

pub(super) fn autodiff_route<C: CheckpointStrategy>(
    logits: FloatTensor<Autodiff<B, C>>,
    routed: FloatTensor<Autodiff<B, C>>,
    k: u32,
) -> (FloatTensor<Autodiff<B, C>>, IntTensor<Autodiff<B, C>>) {
    let routed = routed.into_primitive();
    match RouteBackward
        .prepare::<C>([logits.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let inner = logits.into_primitive();
            let e = inner.meta.shape()[1];
            let (weights, experts) = route_forward(inner, routed, k as usize);
            let state = RouteState {
                weights: weights.clone(),
                experts: experts.clone(),
                e,
            };
            (prep.finish(state, weights), experts)
        }
        OpsKind::UnTracked(prep) => {
            let (weights, experts) = route_forward(logits.into_primitive(), routed, k as usize);
            (prep.finish(weights), experts)
        }
    }
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

#[cfg(test)]
/// Every kernel's filled-in WGSL at a few sizes, for validation tests.
pub(crate) fn all_sources() -> Vec<(String, String)> {
    let mut kernels = Vec::new();
    for (e, k) in [(1u32, 1u32), (8, 2), (32, 4)] {
        kernels.push(MoeKernel::Route { e, k });
        kernels.push(MoeKernel::RouteBackward { e, k });
        kernels.push(MoeKernel::Sort { e, k });
    }
    for (kd, nd) in [(5u32, 7u32), (64, 128), (96, 200), (3, 70)] {
        for gather in [false, true] {
            kernels.push(MoeKernel::Gemm {
                e: 8,
                kd,
                nd,
                gather,
            });
            kernels.push(MoeKernel::WeightGrad { kd, nd, gather });
        }
    }
    kernels
        .into_iter()
        .map(|k| (format!("shaders/moe ({k:?})"), k.source().complete()))
        .collect()
}
