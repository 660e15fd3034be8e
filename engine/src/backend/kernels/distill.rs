//! Launch code of the distillation-loss kernels (`shaders/distill_*.wgsl`) and their autodiff
//! wiring. The reference they replace is `distill::divergence::token_divergence`.

use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
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
/// 128 MiB, so bigger logits are processed a slab of rows at a time.
pub const DISTILL_MAX_ROW_BYTES: usize = 128 << 20;

/// Rows of `vocab` logits that one launch may bind (at least one).
pub fn distill_slab_rows(vocab: usize) -> usize {
    (DISTILL_MAX_ROW_BYTES / (vocab * 4)).max(1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Row ranges `(start, len)` covering `n` rows of `v` logits, about `want` rows each. A slab is
/// bound as a view at its byte offset into the logits, the gradient and the per-row outputs,
/// and a device binds only at multiples of `align` bytes, so every slab but the last holds a
/// multiple of the rows that keep all three offsets aligned.
pub(super) fn slabs(n: usize, v: usize, want: usize, align: usize) -> Vec<(usize, usize)> {
    let rows_for = |row_bytes: usize| align / gcd(row_bytes, align);
    // logits rows; the [N] divergences (4-byte rows: the [N, 2] normalisers then align too)
    let (a, b) = (rows_for(4 * v), rows_for(4));
    let unit = a / gcd(a, b) * b;
    let rows = (want / unit).max(1) * unit;
    (0..n).step_by(rows).map(|r| (r, rows.min(n - r))).collect()
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
    /// Rows per launch (see [`slabs`]).
    pub slab_rows: usize,
}

/// Rows `start..start + len` of a contiguous tensor as a view of the same buffer (no copy), for
/// binding at its byte offset.
fn rows_view(t: &CubeTensor, start: usize, len: usize) -> CubeTensor {
    let shape = t.meta.shape();
    let n = shape[0];
    let row: usize = shape.iter().skip(1).product();
    let mut dims: Vec<usize> = shape.iter().copied().collect();
    dims[0] = len;
    let bytes = |rows: usize| (rows * row * 4) as u64;
    let handle = t
        .handle
        .clone()
        .offset_start(bytes(start))
        .offset_end(bytes(n - start - len));
    CubeTensor::new_contiguous(
        t.client.clone(),
        t.device.clone(),
        Shape::from(dims),
        handle,
        t.dtype,
    )
}

/// Launches one variant over the rows of `tensors[0]` (`[N, V]`) a slab at a time: every
/// tensor is bound as the slab's rows of itself.
fn launch_slabs(backward: bool, p: Params, tensors: &[&CubeTensor]) {
    let (n, v) = rows_and_vocab(tensors[0]);
    let align = tensors[0].client.properties().memory.alignment as usize;
    let want = p.slab_rows.min(distill_slab_rows(v));
    let parts = slabs(n, v, want, align);
    if let [(_, len)] = parts[..] {
        return launch(backward, p, len, v, tensors.to_vec());
    }
    for (start, len) in parts {
        let views: Vec<CubeTensor> = tensors.iter().map(|t| rows_view(t, start, len)).collect();
        launch(backward, p, len, v, views.iter().collect());
    }
}

/// Launches one variant over `n` rows of `v`: the info buffer (n, v, rows per x, 1/T, param)
/// goes last, after `buffers` in binding order.
fn launch(backward: bool, p: Params, n: usize, v: usize, buffers: Vec<&CubeTensor>) {
    assert!(
        n * v * 4 <= DISTILL_MAX_ROW_BYTES,
        "a [{n}, {v}] slab of logits exceeds one binding ({DISTILL_MAX_ROW_BYTES} bytes)"
    );
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
    super::launches::record(super::launches::Family::Distill);
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
    let (n, _) = rows_and_vocab(&student);
    assert_eq!(
        teacher.meta.shape(),
        student.meta.shape(),
        "student and teacher logits must have the same shape"
    );
    let div = empty_f32(&student, Shape::new([n]));
    let lse = empty_f32(&student, Shape::new([n, 2]));
    launch_slabs(false, p, &[&student, &teacher, &div, &lse]);
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
    launch_slabs(true, p, &[&student, &teacher, &lse, &grad_out, &grad]);
    grad
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

#[cfg(test)]
mod slab_tests {
    use super::slabs;

    #[test]
    fn slabs_cover_every_row_once_at_bindable_offsets() {
        for (n, v, want, align) in [
            (130, 1001, 5, 256),
            (70, 100_000, 2, 256),
            (4096, 32_000, 1048, 256),
            (7, 3, 1, 32),
            (1, 1, 1, 256),
        ] {
            let parts = slabs(n, v, want, align);
            let mut next = 0;
            for &(start, len) in &parts {
                assert_eq!(start, next, "{n}x{v}: contiguous");
                assert!(len > 0);
                for bytes in [start * v * 4, start * 4, start * 8] {
                    assert_eq!(bytes % align, 0, "{n}x{v}: offset {bytes} unaligned");
                }
                next += len;
            }
            assert_eq!(next, n, "{n}x{v}: every row");
        }
        // 1048 wanted rows of 32k logits round down to 1024: four slabs for 4096 tokens
        assert_eq!(slabs(4096, 32_000, 1048, 256).len(), 4);
        // an odd vocabulary forces 64-row slabs
        assert_eq!(slabs(130, 1001, 5, 256), vec![(0, 64), (64, 64), (128, 2)]);
    }
}
