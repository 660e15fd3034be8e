//! Launch code of the flash-attention kernels (`shaders/attention_*.wgsl`) and their autodiff
//! wiring. The reference they replace is `model::attention::attention_reference`, which
//! materialises the `[B, H, Tq, Tk]` scores; these keep `O(T)` memory per head: the forward saves
//! only the output and one log-sum-exp per query row, and the backward recomputes the
//! probabilities tile by tile.

use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::Shape;

use burn::tensor::DType;

use super::buffers::{as_dtype, as_f32, empty, empty_f32};

/// Query (or key) rows per workgroup, one per invocation.
const WG: u32 = 64;
/// Largest head dimension (a multiple of 4): an invocation keeps up to four rows of this size
/// in registers.
pub const ATTENTION_MAX_HEAD_DIM: usize = 128;
/// WebGPU's guaranteed workgroup memory (`maxComputeWorkgroupStorageSize`), which every kernel
/// must fit: a browser's adapter may offer no more (lavapipe offers 32 KiB).
const WORKGROUP_BYTES: u32 = 16_384;
const MAX_PER_DIM: usize = 65_535;

const COMMON: &str = include_str!("../../../../shaders/attention_common.wgsl");
const FORWARD: &str = include_str!("../../../../shaders/attention_forward.wgsl");
const BACKWARD_DQ: &str = include_str!("../../../../shaders/attention_backward_dq.wgsl");
const BACKWARD_DKV: &str = include_str!("../../../../shaders/attention_backward_dkv.wgsl");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pass {
    Forward,
    BackwardQ,
    BackwardKv,
}

/// One compiled variant: the pass, the head dimension (a compile-time constant, so the row
/// accumulators are fixed-size private arrays) and whether q, k, v, the output and their
/// gradients are f16 (WGSL's `shader-f16`). Half variants only store in f16: every tile,
/// accumulator, log-sum-exp and delta is f32, as in FlashAttention's mixed precision, so the
/// softmax of a long row does not lose its small terms.
#[derive(Debug, Clone, Copy)]
struct AttentionKernel {
    pass: Pass,
    d: u32,
    half: bool,
}

impl AttentionKernel {
    /// Rows per tile: each kernel holds two `[TR, D]` tiles and at most two `[TR]` vectors in
    /// workgroup memory, 8 TR (D + 1) bytes, which must fit [`WORKGROUP_BYTES`].
    fn tile_rows(&self) -> u32 {
        // (less a little for the uniform loop bounds)
        let fit = (WORKGROUP_BYTES - 64) / (8 * (self.d + 1));
        // a power of two keeps the key loop regular
        1 << (31 - fit.max(1).leading_zeros())
    }
}

/// One statement per vec4 of the head dimension, `f(n)` for n in 0..d/4, on indented lines.
fn per_vec4(d4: u32, f: impl Fn(u32) -> String) -> String {
    (0..d4).map(f).collect::<Vec<_>>().join("\n        ")
}

/// The unrolled row code the shaders splice in (see attention_common.wgsl).
fn snippets(d4: u32) -> Vec<(&'static str, String)> {
    vec![
        (
            "fwd_init",
            per_vec4(d4, |n| {
                format!("var q{n} = vec4<f32>(q[qb + {n}u]) * p.scale; var a{n} = vec4<f32>(0.0);")
            }),
        ),
        (
            "fwd_dot",
            per_vec4(d4, |n| format!("s += dot(q{n}, k_tile[kb + {n}u]);")),
        ),
        (
            "fwd_update",
            per_vec4(d4, |n| format!("a{n} = a{n} * c + e * v_tile[kb + {n}u];")),
        ),
        (
            "fwd_store",
            per_vec4(d4, |n| format!("out[qb + {n}u] = E4(a{n} * inv);")),
        ),
        (
            "dq_init",
            per_vec4(d4, |n| {
                format!(
                    "var q{n} = vec4<f32>(q[qb + {n}u]) * p.scale; \
                     var g{n} = vec4<f32>(d_o[qb + {n}u]); \
                     dlt += dot(g{n}, vec4<f32>(o[qb + {n}u])); var a{n} = vec4<f32>(0.0);"
                )
            }),
        ),
        (
            "dq_dots",
            per_vec4(d4, |n| {
                format!("s += dot(q{n}, k_tile[kb + {n}u]); dp += dot(g{n}, v_tile[kb + {n}u]);")
            }),
        ),
        (
            "dq_add",
            per_vec4(d4, |n| format!("a{n} += ds * k_tile[kb + {n}u];")),
        ),
        (
            "dq_store",
            per_vec4(d4, |n| format!("dq[qb + {n}u] = E4(a{n} * p.scale);")),
        ),
        (
            "dkv_init",
            per_vec4(d4, |n| {
                format!(
                    "var k{n} = vec4<f32>(k[kb + {n}u]); var v{n} = vec4<f32>(v[kb + {n}u]); \
                     var dk{n} = vec4<f32>(0.0); var dv{n} = vec4<f32>(0.0);"
                )
            }),
        ),
        (
            "dkv_dots",
            per_vec4(d4, |n| {
                format!("s += dot(q_tile[qt + {n}u], k{n}); dp += dot(do_tile[qt + {n}u], v{n});")
            }),
        ),
        (
            "dkv_add",
            per_vec4(d4, |n| {
                format!("dv{n} += pr * do_tile[qt + {n}u]; dk{n} += ds * q_tile[qt + {n}u];")
            }),
        ),
        (
            "dkv_store",
            per_vec4(d4, |n| {
                format!("dk[kb + {n}u] = E4(dk{n}); dv[kb + {n}u] = E4(dv{n});")
            }),
        ),
    ]
}

impl KernelSource for AttentionKernel {
    fn source(&self) -> SourceTemplate {
        let body = match self.pass {
            Pass::Forward => FORWARD,
            Pass::BackwardQ => BACKWARD_DQ,
            Pass::BackwardKv => BACKWARD_DKV,
        };
        let tr = self.tile_rows();
        let d4 = self.d / 4;
        let mut t = SourceTemplate::new(body)
            .add_template(COMMON)
            .register("d", self.d.to_string())
            .register("d4", d4.to_string())
            .register("wg", WG.to_string())
            .register("tr", tr.to_string())
            .register("tile4", (tr * d4).to_string())
            .register("elem", if self.half { "f16" } else { "f32" })
            .register("enable", if self.half { "enable f16;" } else { "" });
        for (name, code) in snippets(d4) {
            t = t.register(name, code);
        }
        t
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((
            self.pass,
            self.d,
            self.half,
            WG,
            COMMON.len() + FORWARD.len() + BACKWARD_DQ.len() + BACKWARD_DKV.len(),
        ))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Why the flash kernels cannot take these sizes (`None` when they can): the model runs the
/// reference instead, the bench refuses the size, and the launch asserts it.
pub fn flash_attention_unsupported(
    b: usize,
    h: usize,
    hk: usize,
    tq: usize,
    tk: usize,
    d: usize,
    causal: bool,
) -> Option<String> {
    if hk == 0 || !h.is_multiple_of(hk) {
        return Some(format!(
            "query heads ({h}) must be a multiple of key/value heads ({hk})"
        ));
    }
    if !(1..=ATTENTION_MAX_HEAD_DIM).contains(&d) || !d.is_multiple_of(4) {
        return Some(format!(
            "head dimension {d}: the kernels take multiples of 4 up to {ATTENTION_MAX_HEAD_DIM}"
        ));
    }
    if b == 0 || tq == 0 || tk == 0 || (causal && tk < tq) {
        return Some(format!(
            "B {b}, Tq {tq}, Tk {tk}: sizes must be positive, and Tk >= Tq when causal"
        ));
    }
    if b * h > MAX_PER_DIM {
        return Some(format!("B*H = {} exceeds one dispatch dimension", b * h));
    }
    None
}

/// The sizes and mask of one attention call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    h: usize,
    hk: usize,
    tq: usize,
    tk: usize,
    d: usize,
    causal: bool,
    scale: f32,
}

impl Dims {
    fn of(
        q: &CubeTensor,
        k: &CubeTensor,
        v: &CubeTensor,
        mask: &CubeTensor,
        causal: bool,
        scale: f32,
    ) -> Dims {
        let (qs, ks, vs, ms) = (
            q.meta.shape(),
            k.meta.shape(),
            v.meta.shape(),
            mask.meta.shape(),
        );
        assert!(
            qs.num_dims() == 4 && ks.num_dims() == 4 && ms.num_dims() == 2,
            "attention kernels take q [B, H, Tq, D], k/v [B, Hk, Tk, D], key mask [B, Tk]"
        );
        let (b, h, tq, d) = (qs[0], qs[1], qs[2], qs[3]);
        let (hk, tk) = (ks[1], ks[2]);
        assert_eq!(ks, vs, "k and v must have the same shape");
        assert!(
            ks[0] == b && ks[3] == d && ms[0] == b && ms[1] == tk,
            "attention shapes disagree: q {qs:?}, k {ks:?}, key mask {ms:?}"
        );
        if let Some(why) = flash_attention_unsupported(b, h, hk, tq, tk, d, causal) {
            panic!("{why}");
        }
        Dims {
            b,
            h,
            hk,
            tq,
            tk,
            d,
            causal,
            scale,
        }
    }

    fn info(&self, like: &CubeTensor) -> burn::cubecl::server::Handle {
        let words = [
            self.b as u32,
            self.h as u32,
            self.hk as u32,
            self.tq as u32,
            self.tk as u32,
            self.causal as u32,
            (self.tk - self.tq.min(self.tk)) as u32,
            self.scale.to_bits(),
        ];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        like.client.create_from_slice(&bytes)
    }
}

fn launch(pass: Pass, dims: &Dims, rows: usize, groups: usize, buffers: Vec<&CubeTensor>) {
    let client = buffers[0].client.clone();
    let info = dims.info(buffers[0]);
    let mut bindings: Vec<_> = buffers.iter().map(|t| t.handle.clone().binding()).collect();
    bindings.push(info.binding());
    super::launches::record(super::launches::Family::Attention);
    client.launch(
        Box::new(SourceKernel::new(
            AttentionKernel {
                pass,
                d: dims.d as u32,
                // every launch binds q first; its type is the kernel's element type
                half: buffers[0].dtype == DType::F16,
            },
            CubeDim::new_1d(WG),
        )),
        CubeCount::Static((rows as u32).div_ceil(WG), groups as u32, 1),
        KernelArguments::new().with_buffers(bindings),
    );
}

/// Forward launch: `(out [B, H, Tq, D], lse [B, H, Tq])`.
fn forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: CubeTensor,
    causal: bool,
    scale: f32,
) -> (CubeTensor, CubeTensor) {
    let dtype = q.dtype;
    assert!(
        matches!(dtype, DType::F32 | DType::F16),
        "the attention kernels take f32 or f16 queries, got {dtype:?}"
    );
    let (q, k, v) = (
        as_dtype(q, dtype, "the attention kernels' queries"),
        as_dtype(k, dtype, "the attention kernels' keys (like the queries)"),
        as_dtype(v, dtype, "the attention kernels' values (like the queries)"),
    );
    let mask = as_f32(mask, "the attention kernels' key mask");
    let dims = Dims::of(&q, &k, &v, &mask, causal, scale);
    let out = empty(&q, q.meta.shape().clone(), dtype);
    let lse = empty_f32(&q, Shape::new([dims.b, dims.h, dims.tq]));
    launch(
        Pass::Forward,
        &dims,
        dims.tq,
        dims.b * dims.h,
        vec![&q, &k, &v, &mask, &out, &lse],
    );
    (out, lse)
}

/// Backward launches: `(dq, dk, dv)` from the forward's inputs, output and log-sum-exps.
#[allow(clippy::too_many_arguments)]
pub(super) fn cube_backward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: CubeTensor,
    out: CubeTensor,
    lse: CubeTensor,
    grad_out: CubeTensor,
    causal: u32,
    scale: f32,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let dtype = q.dtype;
    let (q, k, v) = (
        as_dtype(q, dtype, "the attention kernels' queries"),
        as_dtype(k, dtype, "the attention kernels' keys (like the queries)"),
        as_dtype(v, dtype, "the attention kernels' values (like the queries)"),
    );
    let mask = as_f32(mask, "the attention kernels' key mask");
    let out = as_dtype(out, dtype, "the attention kernels' output");
    let lse = as_f32(lse, "the attention kernels' log-sum-exps");
    let d_o = as_dtype(grad_out, dtype, "the attention kernels' output gradient");
    let dims = Dims::of(&q, &k, &v, &mask, causal == 1, scale);
    let dq = empty(&q, q.meta.shape().clone(), dtype);
    let delta = empty_f32(&q, Shape::new([dims.b, dims.h, dims.tq]));
    launch(
        Pass::BackwardQ,
        &dims,
        dims.tq,
        dims.b * dims.h,
        vec![&q, &k, &v, &mask, &out, &d_o, &lse, &dq, &delta],
    );
    let dk = empty(&k, k.meta.shape().clone(), dtype);
    let dv = empty(&v, v.meta.shape().clone(), dtype);
    launch(
        Pass::BackwardKv,
        &dims,
        dims.tk,
        dims.b * dims.hk,
        vec![&q, &k, &v, &mask, &d_o, &lse, &delta, &dk, &dv],
    );
    (dq, dk, dv)
}

/// The forward pass on the CubeCL backend: `(out [B, H, Tq, D], lse [B, H, Tq])`.
pub(super) fn cube_forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: CubeTensor,
    causal: u32,
    scale: f32,
) -> (CubeTensor, CubeTensor) {
    forward(q, k, v, mask, causal == 1, scale)
}

#[cfg(test)]
/// Every pass's filled-in WGSL at a few head dimensions, for validation tests.
pub(crate) fn all_sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pass in [Pass::Forward, Pass::BackwardQ, Pass::BackwardKv] {
        for d in [4u32, 16, 64, 80, 128] {
            for half in [false, true] {
                out.push((
                    format!("shaders/attention ({pass:?}, d {d}, half {half})"),
                    AttentionKernel { pass, d, half }.source().complete(),
                ));
            }
        }
    }
    out
}
