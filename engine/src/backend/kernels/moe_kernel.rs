//! The MoE kernels as launchable sources: the variants (`MoeKernel`: sizes baked in as
//! constants), their WGSL filled in from `shaders/moe_*.wgsl` (with the `*_common.wgsl`
//! pieces and the generated per-row GEMM code), and the one launch helper. The operations that
//! use them are in `moe.rs` (routing, sort) and `moe_gemm.rs` (expert GEMMs).

use burn::backend::wgpu::{
    CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::DType;

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
                let code = gemm_snippets(kd, nd);
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
                let code = weight_grad_snippets(kd, nd);
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
    super::launches::record(super::launches::Family::Moe);
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

/// One statement per accumulator row, `f(r)` for r in 0..rows, on indented lines.
fn per_row(rows: u32, f: &dyn Fn(u32) -> String) -> String {
    (0..rows).map(f).collect::<Vec<_>>().join("\n        ")
}

/// Four columns of a row-major `[.., nd]` array named `name` at element offset `at` (`col` is
/// the invocation's first column; `c0..c3` its clamped columns): one vec4 load when `nd` is a
/// multiple of 4 (the array is then bound as vec4s), else four scalar loads.
fn load4(name: &str, at: &str, nd: u32) -> String {
    if nd.is_multiple_of(4) {
        format!("{name}[(({at}) + col) / 4u]")
    } else {
        format!(
            "vec4<f32>({name}[({at}) + c0], {name}[({at}) + c1], {name}[({at}) + c2], {name}[({at}) + c3])"
        )
    }
}

fn vec4_or_f32(vec4: bool) -> String {
    if vec4 { "vec4<f32>" } else { "f32" }.to_string()
}

/// The generated parts of `shaders/moe_gemm.wgsl`: per-row accumulators and sources, and the
/// depth loop. Loads cost far more than multiply-adds where invocations are SIMD lanes (a
/// load per lane is a gather), so the loop is shaped to load little per multiply-add: the
/// weights as 4-column vec4s, and, when `kd` is a multiple of 4, each row's input as a vec4
/// covering four depth steps (R + 4 loads for 16 R multiply-adds).
fn gemm_snippets(kd: u32, nd: u32) -> Vec<(&'static str, String)> {
    let r = |f: &dyn Fn(u32) -> String| per_row(GEMM_ROWS, f);
    let a4 = kd.is_multiple_of(4);
    let depth = if a4 {
        let xs = r(&|i| {
            format!(
                "let x{i} = a[(s{i}.x + k) / 4u] * m{i}; \
                 acc{i} += x{i}.x * b0 + x{i}.y * b1 + x{i}.z * b2 + x{i}.w * b3;"
            )
        });
        format!(
            "var wb = e * KD * ND;
        for (var k = 0u; k < KD; k += 4u) {{
            let b0 = {}; let b1 = {}; let b2 = {}; let b3 = {};
            {xs}
            wb += 4u * ND;
        }}",
            load4("w", "wb", nd),
            load4("w", "wb + ND", nd),
            load4("w", "wb + 2u * ND", nd),
            load4("w", "wb + 3u * ND", nd),
        )
    } else {
        let fma = r(&|i| format!("acc{i} += (a[s{i}.x + k] * m{i}) * b;"));
        format!(
            "var wb = e * KD * ND;
        for (var k = 0u; k < KD; k++) {{
            let b = {};
            {fma}
            wb += ND;
        }}",
            load4("w", "wb", nd)
        )
    };
    vec![
        ("a_type", vec4_or_f32(a4)),
        ("w_type", vec4_or_f32(nd.is_multiple_of(4))),
        ("init", r(&|i| format!("var acc{i} = vec4<f32>(0.0);"))),
        (
            "sources",
            r(&|i| format!("let s{i} = source(r0 + {i}u, lo, hi); let m{i} = f32(s{i}.y);")),
        ),
        ("depth_loop", depth),
        (
            "store",
            r(&|i| format!("store(r0 + {i}u, s_rows, col, acc{i});")),
        ),
    ]
}

/// The generated parts of `shaders/moe_weight_grad.wgsl`; as [`gemm_snippets`], with the R
/// input values of a row read as R / 4 vec4s when `kd` is a multiple of 4.
fn weight_grad_snippets(kd: u32, nd: u32) -> Vec<(&'static str, String)> {
    let r = |f: &dyn Fn(u32) -> String| per_row(GEMM_ROWS, f);
    let a4 = kd.is_multiple_of(4);
    let quads = |f: &dyn Fn(u32) -> String| per_row(GEMM_ROWS / 4, f);
    let (init, fma) = if a4 {
        (
            format!(
                "{}\n    {}",
                r(&|i| format!("var acc{i} = vec4<f32>(0.0);")),
                quads(&|q| format!("let q{q} = min(k0 / 4u + {q}u, KD / 4u - 1u);"))
            ),
            quads(&|q| {
                let lanes = ["x", "y", "z", "w"];
                let adds: Vec<String> = (0..4)
                    .map(|j| format!("acc{} += x{q}.{} * gv;", 4 * q + j, lanes[j as usize]))
                    .collect();
                format!("let x{q} = a[ab / 4u + q{q}]; {}", adds.join(" "))
            }),
        )
    } else {
        (
            r(&|i| format!("var acc{i} = vec4<f32>(0.0); let o{i} = min(k0 + {i}u, KD - 1u);")),
            r(&|i| format!("acc{i} += a[ab + o{i}] * gv;")),
        )
    };
    vec![
        ("a_type", vec4_or_f32(a4)),
        ("g_type", vec4_or_f32(nd.is_multiple_of(4))),
        ("load_g", load4("g", "gb", nd)),
        ("init", init),
        ("fma", fma),
        (
            "store",
            r(&|i| format!("store(k0 + {i}u, e, col, acc{i});")),
        ),
    ]
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
