//! Launch code of the MoE routing kernels (`shaders/moe_*.wgsl`) and their autodiff wiring.
//!
//! Three operations, composed by `model::moe` into a whole expert layer:
//! - [`route`]: top-k of the router logits with weights renormalised over the chosen experts
//!   (differentiable with respect to the logits);
//! - [`sort`]: a stable counting sort of the token-expert assignments by expert, with the
//!   capacity applied (integer outputs, no gradient); its per-expert histogram is the routing
//!   telemetry;
//! - [`gather_matmul`]: the expert GEMM over the sorted rows, each row multiplied by its own
//!   expert's weights, gathering tokens as it loads them (differentiable with respect to the
//!   input and the stacked weights; the backward is the transposed GEMM and a per-expert
//!   weight-gradient GEMM over the same segments).
//!
//! The reference they replace is `MoeMlp::forward` with [`super::KernelPolicy::Reference`]:
//! routing decided on the host, then per expert a select, the FFN and a scatter-add.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, IndexingUpdateOp, Shape};

use super::buffers::{as_f32, empty_f32};

type B = CubeBackend;

/// Most experts the kernels take: the routing kernel keeps the chosen set as a 32-bit mask and
/// the sort keeps a `[64 x E]` histogram in workgroup memory.
pub const MOE_MAX_EXPERTS: usize = 32;
/// Rows (and columns) of one GEMM tile.
const TILE: usize = 64;
const MAX_PER_DIM: usize = 65_535;

const ROUTE: &str = include_str!("../../../../shaders/moe_route.wgsl");
const ROUTE_BACKWARD: &str = include_str!("../../../../shaders/moe_route_backward.wgsl");
const SORT: &str = include_str!("../../../../shaders/moe_sort.wgsl");
const GEMM: &str = include_str!("../../../../shaders/moe_gemm.wgsl");
const WEIGHT_GRAD: &str = include_str!("../../../../shaders/moe_weight_grad.wgsl");

/// One compiled variant. The expert count, top-k and the GEMM's inner and outer widths are
/// compile-time constants (fixed per model), so loops over them unroll and bound checks fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MoeKernel {
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
        trans: bool,
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
                .register("e", e.to_string())
                .register("k", k.to_string()),
            MoeKernel::RouteBackward { e, k } => SourceTemplate::new(ROUTE_BACKWARD)
                .register("e", e.to_string())
                .register("k", k.to_string()),
            MoeKernel::Sort { e, k } => SourceTemplate::new(SORT)
                .register("e", e.to_string())
                .register("k", k.to_string()),
            MoeKernel::Gemm {
                e,
                kd,
                nd,
                trans,
                gather,
            } => SourceTemplate::new(GEMM)
                .register("e", e.to_string())
                .register("kd", kd.to_string())
                .register("nd", nd.to_string())
                .register("trans", trans.to_string())
                .register("gather", gather.to_string()),
            MoeKernel::WeightGrad { kd, nd, gather } => SourceTemplate::new(WEIGHT_GRAD)
                .register("kd", kd.to_string())
                .register("nd", nd.to_string())
                .register("gather", gather.to_string()),
        }
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((
            *self,
            ROUTE.len() + ROUTE_BACKWARD.len() + SORT.len() + GEMM.len() + WEIGHT_GRAD.len(),
        ))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

fn launch(
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

/// A fresh contiguous i32 tensor of `shape` on `like`'s device (contents undefined).
fn empty_i32(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let bytes = shape.num_elements() * 4;
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        like.client.empty(bytes),
        DType::I32,
    )
}

fn as_i32(t: CubeTensor, what: &str) -> CubeTensor {
    assert_eq!(t.dtype, DType::I32, "{what} must be i32, got {:?}", t.dtype);
    into_contiguous(t)
}

fn dims2(t: &CubeTensor, what: &str) -> (usize, usize) {
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

// ---------------------------------------------------------------------------------------------
// expert GEMM

/// `c [S, Nd]`, row s = `a[src(s)] @ W[e(s)]` (see `shaders/moe_gemm.wgsl`); `w` is `[E, Kd, Nd]`,
/// or `[E, Nd, Kd]` used transposed when `trans`.
fn gemm(
    a: &CubeTensor,
    rows: &CubeTensor,
    w: &CubeTensor,
    offsets: &CubeTensor,
    trans: bool,
    gather: bool,
) -> CubeTensor {
    let ws = w.meta.shape();
    assert_eq!(ws.num_dims(), 3, "MoE expert weights must be [E, in, out]");
    let (e, kd, nd) = if trans {
        (ws[0], ws[2], ws[1])
    } else {
        (ws[0], ws[1], ws[2])
    };
    let s = rows.meta.shape().num_elements();
    let (m, ak) = dims2(a, "the MoE expert input");
    assert_eq!(ak, kd, "MoE expert input width {ak} vs weights' {kd}");
    assert!(
        gather || m == s,
        "an ungathered MoE input has one row per sorted row"
    );
    assert_eq!(
        offsets.meta.shape().num_elements(),
        e + 1,
        "offsets are [E + 1]"
    );
    let c = empty_f32(a, Shape::new([s, nd]));
    if s > 0 && nd > 0 {
        launch(
            MoeKernel::Gemm {
                e: e as u32,
                kd: kd as u32,
                nd: nd as u32,
                trans,
                gather,
            },
            256,
            (s.div_ceil(TILE), nd.div_ceil(TILE), 1),
            &[a, rows, w, offsets, &c],
            &[s as u32],
        );
    }
    c
}

/// `dW [E, Kd, Nd]` = per expert, the sum over its rows of `a[src(s)]^T g[s]`.
fn weight_grad(
    a: &CubeTensor,
    rows: &CubeTensor,
    g: &CubeTensor,
    offsets: &CubeTensor,
    e: usize,
    gather: bool,
) -> CubeTensor {
    let (_, kd) = dims2(a, "the MoE expert input");
    let (s, nd) = dims2(g, "the MoE expert output gradient");
    let dw = empty_f32(a, Shape::new([e, kd, nd]));
    launch(
        MoeKernel::WeightGrad {
            kd: kd as u32,
            nd: nd as u32,
            gather,
        },
        256,
        (kd.div_ceil(TILE), nd.div_ceil(TILE), e),
        &[a, rows, g, offsets, &dw],
        &[s as u32],
    );
    dw
}

/// The inputs of one expert GEMM, as the backward needs them.
#[derive(Debug, Clone)]
struct GemmInputs {
    a: CubeTensor,
    rows: CubeTensor,
    w: CubeTensor,
    offsets: CubeTensor,
    gather: bool,
}

impl GemmInputs {
    fn new(
        a: CubeTensor,
        rows: CubeTensor,
        w: CubeTensor,
        offsets: CubeTensor,
        gather: u32,
    ) -> Self {
        GemmInputs {
            a: as_f32(a, "the MoE expert input"),
            rows: as_i32(rows, "the MoE sorted rows"),
            w: as_f32(w, "the MoE expert weights"),
            offsets: as_i32(offsets, "the MoE expert offsets"),
            gather: gather == 1,
        }
    }

    fn forward(&self) -> CubeTensor {
        gemm(
            &self.a,
            &self.rows,
            &self.w,
            &self.offsets,
            false,
            self.gather,
        )
    }

    /// `(da, dw)` from the output gradient `[S, Nd]`.
    fn backward(&self, grad: CubeTensor) -> (CubeTensor, CubeTensor) {
        let g = as_f32(grad, "the MoE expert output gradient");
        let e = self.w.meta.shape()[0];
        // sorted-order input gradient, then (gathered inputs) summed back onto the tokens
        let da_sorted = gemm(&g, &self.rows, &self.w, &self.offsets, true, false);
        let da = if self.gather {
            let zeros = B::float_zeros(
                self.a.meta.shape().clone(),
                &self.a.device,
                DType::F32.into(),
            );
            B::float_select_assign(
                zeros,
                0,
                self.rows.clone(),
                da_sorted,
                IndexingUpdateOp::Add,
            )
        } else {
            da_sorted
        };
        let dw = weight_grad(&self.a, &self.rows, &g, &self.offsets, e, self.gather);
        (da, dw)
    }
}

pub(super) fn cube_gather_matmul(
    a: CubeTensor,
    rows: CubeTensor,
    w: CubeTensor,
    offsets: CubeTensor,
    gather: u32,
) -> CubeTensor {
    GemmInputs::new(a, rows, w, offsets, gather).forward()
}

#[derive(Debug)]
struct GemmBackward;

impl Backward<B, 2> for GemmBackward {
    type State = GemmInputs;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [na, nw] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (da, dw) = ops.state.backward(grad);
        if let Some(node) = na {
            grads.register::<B>(node.id, da);
        }
        if let Some(node) = nw {
            grads.register::<B>(node.id, dw);
        }
    }
}

pub(super) fn autodiff_gather_matmul<C: CheckpointStrategy>(
    a: FloatTensor<Autodiff<B, C>>,
    rows: IntTensor<Autodiff<B, C>>,
    w: FloatTensor<Autodiff<B, C>>,
    offsets: IntTensor<Autodiff<B, C>>,
    gather: u32,
) -> FloatTensor<Autodiff<B, C>> {
    match GemmBackward
        .prepare::<C>([a.node(), w.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let inputs = GemmInputs::new(
                a.into_primitive(),
                rows,
                w.into_primitive(),
                offsets,
                gather,
            );
            let c = inputs.forward();
            prep.finish(inputs, c)
        }
        OpsKind::UnTracked(prep) => {
            let c = GemmInputs::new(
                a.into_primitive(),
                rows,
                w.into_primitive(),
                offsets,
                gather,
            )
            .forward();
            prep.finish(c)
        }
    }
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
    for (kd, nd) in [(5u32, 7u32), (64, 128), (96, 200)] {
        for trans in [false, true] {
            for gather in [false, true] {
                kernels.push(MoeKernel::Gemm {
                    e: 8,
                    kd,
                    nd,
                    trans,
                    gather,
                });
            }
        }
        for gather in [false, true] {
            kernels.push(MoeKernel::WeightGrad { kd, nd, gather });
        }
    }
    kernels
        .into_iter()
        .map(|k| (format!("shaders/moe ({k:?})"), k.source().complete()))
        .collect()
}
