//! Flash attention against the burn-ops attention (the `[B, H, T, T]` scores formed).

use burn::prelude::*;
use serde::Serialize;

use super::{MemoryProbe, interleaved_median_ms, max_abs_diff, normal};
use crate::backend::kernels;

/// One size of the attention sweep: causal self-attention with grouped-query heads, in f32 or
/// (on an adapter with `shader-f16`) with q, k and v in f16 for kernel and reference alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AttentionSize {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seq: usize,
    pub head_dim: usize,
    #[serde(default)]
    pub half: bool,
}

impl AttentionSize {
    /// The precision of q, k and v (and of the output and the gradients).
    pub fn dtype(&self) -> burn::tensor::FloatDType {
        if self.half {
            burn::tensor::FloatDType::F16
        } else {
            burn::tensor::FloatDType::F32
        }
    }

    pub fn dtype_name(&self) -> &'static str {
        if self.half { "f16" } else { "f32" }
    }
}

/// The command-line spelling, `BxHxHKVxTxD` with `:f16` for a half size.
impl std::fmt::Display for AttentionSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}x{}x{}x{}{}",
            self.batch,
            self.heads,
            self.kv_heads,
            self.seq,
            self.head_dim,
            if self.half { ":f16" } else { "" }
        )
    }
}

/// One row of the attention sweep.
#[derive(Debug, Clone, Serialize)]
pub struct AttentionBenchRow {
    #[serde(flatten)]
    pub size: AttentionSize,
    /// Median forward+backward time (output and the gradients of q, k, v), milliseconds.
    pub kernel_ms: f64,
    pub reference_ms: f64,
    /// Device memory reserved by one forward+backward, MiB (measured in a fresh process).
    pub kernel_mib: f64,
    pub reference_mib: f64,
    /// Largest |kernel - reference| over the outputs, a sanity check of the timed code.
    pub out_diff: f64,
}

impl AttentionBenchRow {
    pub fn speedup(&self) -> f64 {
        self.reference_ms / self.kernel_ms
    }
    pub fn memory_ratio(&self) -> f64 {
        self.reference_mib / self.kernel_mib.max(1e-9)
    }
}

/// One causal forward+backward; returns the output on the host when `keep` (else empty).
pub(super) fn attention_pass(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    kernel: bool,
    keep: bool,
) -> Vec<f32> {
    use crate::model::attention::{attention_reference, causal_bias};
    let [b, _, t, d] = q.dims();
    let device = q.device();
    let (q, k, v) = (
        q.clone().require_grad(),
        k.clone().require_grad(),
        v.clone().require_grad(),
    );
    let out = if kernel {
        let mask = Tensor::<2>::ones([b, t], &device);
        kernels::flash_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            mask,
            true,
            1.0 / (d as f32).sqrt(),
        )
    } else {
        let bias = causal_bias(t, t, &device).cast(q.dtype());
        attention_reference(q.clone(), k.clone(), v.clone(), bias)
    };
    let grads = out.clone().sum().backward();
    for g in [q.grad(&grads), k.grad(&grads), v.grad(&grads)] {
        // reading one element waits for the whole gradient
        let _ = g
            .expect("gradient")
            .slice([0..1, 0..1, 0..1, 0..1])
            .into_scalar::<f32>();
    }
    if keep {
        out.into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// q, k and v of the attention sweep (made in f32, then cast for a half size).
pub(super) fn attention_inputs(a: AttentionSize, ad: &Device) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let AttentionSize {
        batch: b,
        heads: h,
        kv_heads: hk,
        seq: t,
        head_dim: d,
        ..
    } = a;
    let seed = (t * 13 + d) as u64;
    let dtype = a.dtype();
    let make = |shape: [usize; 4], seed| normal(shape, seed, 1.0, ad).cast(dtype).detach();
    (
        make([b, h, t, d], seed),
        make([b, hk, t, d], seed + 1),
        make([b, hk, t, d], seed + 2),
    )
}

/// Causal attention forward+backward over `sizes` on a wgpu device, kernel against
/// `attention_reference` in the same precision (memory as in [`distill_sweep`]).
pub fn attention_sweep(
    device: &Device,
    sizes: &[AttentionSize],
    repeats: usize,
    memory: &mut dyn FnMut(MemoryProbe) -> crate::Result<f64>,
    progress: &mut dyn FnMut(&AttentionBenchRow),
) -> crate::Result<Vec<AttentionBenchRow>> {
    let ad = device.clone().autodiff();
    let mut rows = Vec::new();
    for &size in sizes {
        let (q, k, v) = attention_inputs(size, &ad);
        let ko = attention_pass(&q, &k, &v, true, true);
        let ro = attention_pass(&q, &k, &v, false, true);
        let out_diff = max_abs_diff(&ko, &ro);
        let ms = interleaved_median_ms(
            repeats,
            &mut [
                &mut || {
                    attention_pass(&q, &k, &v, true, false);
                },
                &mut || {
                    attention_pass(&q, &k, &v, false, false);
                },
            ],
        );
        let (kernel_ms, reference_ms) = (ms[0], ms[1]);
        let probe = |kernel| MemoryProbe::Attention { size, kernel };
        let row = AttentionBenchRow {
            size,
            kernel_ms,
            reference_ms,
            kernel_mib: memory(probe(true))?,
            reference_mib: memory(probe(false))?,
            out_diff,
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The generated `docs/results/kernels.md` section for attention.
pub fn attention_table(device_name: &str, rows: &[AttentionBenchRow], command: &str) -> String {
    let mut md = format!(
        "## Attention (causal, grouped-query heads): flash WGSL kernels vs burn ops\n\n\
         Device: **{device_name}**. Generated by `{command}`.\n\
         Time: median forward+backward (output and the gradients of q, k and v). Memory: device \
         memory reserved during one forward+backward beyond the inputs.\n\n\
         | batch | heads (kv) | seq | head dim | dtype | kernel ms | burn ops ms | speed-up | kernel MiB | burn ops MiB | memory ratio | max out diff |\n\
         |---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} ({}) | {} | {} | {} | {:.2} | {:.2} | {:.2}x | {:.1} | {:.1} | {:.2}x | {:.1e} |\n",
            r.size.batch,
            r.size.heads,
            r.size.kv_heads,
            r.size.seq,
            r.size.head_dim,
            r.size.dtype_name(),
            r.kernel_ms,
            r.reference_ms,
            r.speedup(),
            r.kernel_mib,
            r.reference_mib,
            r.memory_ratio(),
            r.out_diff
        ));
    }
    md
}
