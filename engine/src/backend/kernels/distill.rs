//! Launch code of the distillation-loss kernels (`shaders/distill_*.wgsl`) and their autodiff
//! wiring. The reference they replace is `distill::divergence::token_divergence`.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::Shape;

use super::buffers::{as_f32, empty_f32};

/// Threads per workgroup; one workgroup reduces one row.
const WG: u32 = 256;
/// Workgroups per dispatch dimension (WebGPU's guaranteed minimum limit).
const MAX_PER_DIM: u32 = 65_535;
/// The largest `[rows, V]` slab one launch may bind: lavapipe caps a storage-buffer binding at
/// 128 MiB, so callers split bigger logits by rows (see `distill::divergence`).
pub const DISTILL_MAX_ROW_BYTES: usize = 128 << 20;

/// Rows of `vocab` logits that one launch may bind (at least one).
pub fn distill_slab_rows(vocab: usize) -> usize {
    (DISTILL_MAX_ROW_BYTES / (vocab * 4)).max(1)
}

/// Divergence codes shared with the WGSL (`KIND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DistillKind {
    ForwardKl = 0,
    ReverseKl = 1,
    Jsd = 2,
    SkewForwardKl = 3,
    SkewReverseKl = 4,
    Tvd = 5,
}

impl DistillKind {
    pub fn code(self) -> u32 {
        self as u32
    }
}

const COMMON: &str = include_str!("../../../../shaders/distill_common.wgsl");
const FORWARD: &str = include_str!("../../../../shaders/distill_forward.wgsl");
const BACKWARD: &str = include_str!("../../../../shaders/distill_backward.wgsl");

/// One compiled variant: which shader and which divergence (a compile-time constant in WGSL,
/// so that branches on it are uniform).
#[derive(Debug, Clone, Copy)]
struct DistillKernel {
    backward: bool,
    kind: u32,
}

impl KernelSource for DistillKernel {
    fn source(&self) -> SourceTemplate {
        let body = if self.backward { BACKWARD } else { FORWARD };
        SourceTemplate::new(body)
            .add_template(COMMON)
            .register("wg", WG.to_string())
            .register("kind", self.kind.to_string())
    }

    fn id(&self) -> KernelId {
        // The cache is keyed by id alone: the shader text's length rides along so that an
        // edited shader is never served from a stale cache entry within one build.
        KernelId::new::<Self>().info((
            self.backward,
            self.kind,
            WG,
            COMMON.len() + FORWARD.len() + BACKWARD.len(),
        ))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

const LOGITS: &str = "the distillation kernels' logits";

/// The divergence and its scalars, as the forward and backward launches take them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Params {
    pub kind: u32,
    pub param: f32,
    pub inv_temp: f32,
}

/// Launches one variant over `n` rows of `v`: the info buffer (n, v, rows per x, 1/T, param)
/// goes last, after `buffers` in binding order.
fn launch(backward: bool, p: Params, n: usize, v: usize, buffers: Vec<&CubeTensor>) {
    let client = buffers[0].client.clone();
    let rows = n as u32;
    let per_x = rows.clamp(1, MAX_PER_DIM);
    let words = [
        rows,
        v as u32,
        per_x,
        p.inv_temp.to_bits(),
        p.param.to_bits(),
    ];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let info = client.create_from_slice(&bytes);
    let mut bindings: Vec<_> = buffers.iter().map(|t| t.handle.clone().binding()).collect();
    bindings.push(info.binding());
    client.launch(
        Box::new(SourceKernel::new(
            DistillKernel {
                backward,
                kind: p.kind,
            },
            CubeDim::new_1d(WG),
        )),
        CubeCount::Static(per_x, rows.div_ceil(per_x), 1),
        KernelArguments::new().with_buffers(bindings),
    );
}

fn rows_and_vocab(t: &CubeTensor) -> (usize, usize) {
    let shape = t.meta.shape();
    assert_eq!(
        shape.num_dims(),
        2,
        "distillation kernels take [N, V] logits"
    );
    let (n, v) = (shape[0], shape[1]);
    assert!(
        n > 0 && v > 0,
        "distillation kernels need N, V > 0, got [{n}, {v}]"
    );
    assert!(
        n * v * 4 <= DISTILL_MAX_ROW_BYTES,
        "[{n}, {v}] logits exceed one binding ({DISTILL_MAX_ROW_BYTES} bytes): split the rows"
    );
    (n, v)
}

/// Forward launch: `(divergence [N], log-sum-exps [N, 2])`.
pub(super) fn forward(
    student: CubeTensor,
    teacher: CubeTensor,
    p: Params,
) -> (CubeTensor, CubeTensor) {
    let student = as_f32(student, LOGITS);
    let teacher = as_f32(teacher, LOGITS);
    let (n, v) = rows_and_vocab(&student);
    assert_eq!(
        teacher.meta.shape(),
        student.meta.shape(),
        "student and teacher logits must have the same shape"
    );
    let div = empty_f32(&student, Shape::new([n]));
    let lse = empty_f32(&student, Shape::new([n, 2]));
    launch(false, p, n, v, vec![&student, &teacher, &div, &lse]);
    (div, lse)
}

/// Backward launch: the gradient `[N, V]` with respect to the student logits.
pub(super) fn backward(
    student: CubeTensor,
    teacher: CubeTensor,
    lse: CubeTensor,
    grad_out: CubeTensor,
    p: Params,
) -> CubeTensor {
    let student = as_f32(student, LOGITS);
    let teacher = as_f32(teacher, LOGITS);
    let grad_out = as_f32(grad_out, "the distillation kernels' upstream gradient");
    let (n, v) = rows_and_vocab(&student);
    let grad = empty_f32(&student, Shape::new([n, v]));
    launch(
        true,
        p,
        n,
        v,
        vec![&student, &teacher, &lse, &grad_out, &grad],
    );
    grad
}

/// `distill_rows` on the CubeCL backend (no autodiff).
pub(super) fn cube_distill_rows(
    student: CubeTensor,
    teacher: CubeTensor,
    kind: u32,
    param: f32,
    inv_temp: f32,
) -> CubeTensor {
    forward(
        student,
        teacher,
        Params {
            kind,
            param,
            inv_temp,
        },
    )
    .0
}

/// What the backward pass needs: both logit tensors (the teacher as a constant), the
/// forward's normalisers, and the divergence's parameters.
#[derive(Debug, Clone)]
struct DistillState {
    student: CubeTensor,
    teacher: CubeTensor,
    lse: CubeTensor,
    params: Params,
}

#[derive(Debug)]
struct DistillBackward;

impl Backward<CubeBackend, 1> for DistillBackward {
    type State = DistillState;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [student_node] = ops.parents;
        let grad_out = grads.consume::<CubeBackend>(&ops.node);
        let s = ops.state;
        if let Some(node) = student_node {
            let grad = backward(s.student, s.teacher, s.lse, grad_out, s.params);
            grads.register::<CubeBackend>(node.id, grad);
        }
    }
}

/// `distill_rows` under autodiff.
pub(super) fn autodiff_distill_rows<C: CheckpointStrategy>(
    student: FloatTensor<Autodiff<CubeBackend, C>>,
    teacher: FloatTensor<Autodiff<CubeBackend, C>>,
    kind: u32,
    param: f32,
    inv_temp: f32,
) -> FloatTensor<Autodiff<CubeBackend, C>> {
    {
        // The teacher is a constant: only the student is a parent of this node.
        let teacher = teacher.into_primitive();
        let params = Params {
            kind,
            param,
            inv_temp,
        };
        match DistillBackward
            .prepare::<C>([student.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let student = student.into_primitive();
                let (div, lse) = forward(student.clone(), teacher.clone(), params);
                let state = DistillState {
                    student,
                    teacher,
                    lse,
                    params,
                };
                prep.finish(state, div)
            }
            OpsKind::UnTracked(prep) => {
                let (div, _) = forward(student.into_primitive(), teacher, params);
                prep.finish(div)
            }
        }
    }
}

#[cfg(test)]
/// Every variant's filled-in WGSL, named `shader(kind)`, for validation tests.
pub(crate) fn all_sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for backward in [false, true] {
        for kind in 0..6 {
            let name = format!(
                "shaders/distill_{}.wgsl (kind {kind})",
                if backward { "backward" } else { "forward" }
            );
            out.push((name, DistillKernel { backward, kind }.source().complete()));
        }
    }
    out
}
