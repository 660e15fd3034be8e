//! Kernel benchmarks: each fused kernel against the plain burn-ops composition it replaces, on
//! the same device in the same run, so the ratios are free of machine-to-machine noise.
//!
//! Time is the median of several synchronised forward+backward passes after a warm-up, the
//! kernel's and the reference's interleaved.
//! Memory is what the device's allocator reserved during one forward+backward beyond the
//! inputs, measured by [`run_probe`] in a fresh process per pass: burn's pools keep their pages,
//! so the reserve after the pass is its high-water mark, but only on a pool nothing else used.

mod moe;

use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;

use super::KernelPolicy;
use crate::distill::divergence::fused_token_divergence;
use crate::distill::{Divergence, DivergenceSpec, token_divergence};

pub use moe::{MoeBenchRow, MoePath, MoeSize, moe_sweep, moe_table};

/// One size of the distillation-loss sweep.
#[derive(Debug, Clone, Serialize)]
pub struct DistillBenchRow {
    pub tokens: usize,
    pub vocab: usize,
    pub divergence: String,
    /// Median forward+backward time, milliseconds.
    pub kernel_ms: f64,
    pub reference_ms: f64,
    /// Device memory reserved by one forward+backward, MiB (measured in a fresh process).
    pub kernel_mib: f64,
    pub reference_mib: f64,
    /// Largest |kernel - reference| of the mean loss, a sanity check of the timed code.
    pub loss_diff: f64,
}

impl DistillBenchRow {
    pub fn speedup(&self) -> f64 {
        self.reference_ms / self.kernel_ms
    }
    pub fn memory_ratio(&self) -> f64 {
        self.reference_mib / self.kernel_mib.max(1e-9)
    }
}

/// Median wall times (ms) of `repeats` runs of each pass (each one synchronises on its
/// results). The passes are interleaved, in an order that rotates every round, so that a slow
/// spell of the machine (lavapipe shares two cores with everything else) lands on all of them
/// instead of on whichever ran during it.
fn interleaved_median_ms(repeats: usize, passes: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let k = passes.len();
    let mut times = vec![Vec::new(); k];
    for round in 0..repeats.max(1) {
        for j in 0..k {
            let p = (round + j) % k;
            let t0 = Instant::now();
            (passes[p])();
            times[p].push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(|a, b| a.total_cmp(b));
            t[t.len() / 2]
        })
        .collect()
}

/// Largest |a - b| over two outputs of the same pass, a sanity check of the timed code.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

fn reserved(device: &Device) -> u64 {
    device
        .memory_pool_usage()
        .map(|u| u.bytes_reserved)
        .unwrap_or(0)
}

/// Forward KL at T = 1, the LLaVA-KD default every sweep measures; `kernel` picks the path.
fn fkl(kernel: bool) -> DivergenceSpec {
    DivergenceSpec {
        divergence: Divergence::ForwardKl,
        temperature: 1.0,
        zscore: false,
        kernels: if kernel {
            KernelPolicy::Auto
        } else {
            KernelPolicy::Reference
        },
    }
}

/// Seeded N(0, scale^2) values of `shape` on `device`: every sweep's inputs, and the same ones
/// again in a memory probe.
fn normal<const D: usize>(shape: [usize; D], seed: u64, scale: f64, device: &Device) -> Tensor<D> {
    let mut rng = crate::model::Rng::new(seed);
    let n = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
    Tensor::from_data(TensorData::new(x, shape), device)
}

/// Student and teacher logits `[n, v]` of the distillation sweep.
fn distill_inputs(n: usize, v: usize, ad: &Device) -> (Tensor<2>, Tensor<2>) {
    let seed = (n * 31 + v) as u64;
    (
        normal([n, v], seed, 2.0, ad),
        normal([n, v], seed + 1, 3.0, ad),
    )
}

/// One forward+backward of the mean divergence; returns the loss.
fn pass(s: &Tensor<2>, t: &Tensor<2>, kernel: bool) -> f32 {
    let spec = fkl(kernel);
    let student = s.clone().require_grad();
    // the slab split of the training path
    let rows = super::distill_slab_rows(s.dims()[1]);
    let per_token = if kernel {
        fused_token_divergence(student.clone(), t.clone(), &spec, rows)
    } else {
        token_divergence(student.clone(), t.clone(), &spec)
    };
    let loss = per_token.mean();
    let grads = loss.clone().backward();
    let g = student.grad(&grads).expect("student gradient");
    // reading one element waits for the whole gradient
    let _ = g.slice([0..1, 0..1]).into_scalar::<f32>();
    loss.into_scalar::<f32>()
}

/// Forward KL at temperature 1 (the LLaVA-KD default) over `(tokens, vocab)` sizes on a wgpu
/// device (`device` must be one; the caller checks). `memory` measures a pass's peak memory
/// (in a fresh process: [`run_probe`]); `progress` hears about each size.
pub fn distill_sweep(
    device: &Device,
    sizes: &[(usize, usize)],
    repeats: usize,
    memory: &mut dyn FnMut(MemoryProbe) -> crate::Result<f64>,
    progress: &mut dyn FnMut(&DistillBenchRow),
) -> crate::Result<Vec<DistillBenchRow>> {
    let ad = device.clone().autodiff();
    let mut rows = Vec::new();
    for &(n, v) in sizes {
        let (s, t) = distill_inputs(n, v, &ad);
        // warm-ups compile the kernels outside the timings, and give the losses
        let (kl, rl) = (pass(&s, &t, true), pass(&s, &t, false));
        let ms = interleaved_median_ms(
            repeats,
            &mut [
                &mut || {
                    pass(&s, &t, true);
                },
                &mut || {
                    pass(&s, &t, false);
                },
            ],
        );
        let (kernel_ms, reference_ms) = (ms[0], ms[1]);
        let probe = |kernel| MemoryProbe::Distill {
            tokens: n,
            vocab: v,
            kernel,
        };
        let row = DistillBenchRow {
            tokens: n,
            vocab: v,
            divergence: Divergence::ForwardKl.label(),
            kernel_ms,
            reference_ms,
            kernel_mib: memory(probe(true))?,
            reference_mib: memory(probe(false))?,
            loss_diff: (kl - rl).abs() as f64,
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The generated `docs/results/kernels.md` section for the distillation loss.
pub fn distill_table(device_name: &str, rows: &[DistillBenchRow], command: &str) -> String {
    let mut md = format!(
        "## Distillation loss (forward KL, T = 1): fused WGSL kernel vs burn ops\n\n\
         Device: **{device_name}**. Generated by `{command}`.\n\
         Time: median forward+backward (loss and student gradient). Memory: device memory \
         reserved during one forward+backward beyond the inputs.\n\n\
         | tokens | vocab | kernel ms | burn ops ms | speed-up | kernel MiB | burn ops MiB | memory ratio | loss diff |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2}x | {:.1} | {:.1} | {:.2}x | {:.1e} |\n",
            r.tokens,
            r.vocab,
            r.kernel_ms,
            r.reference_ms,
            r.speedup(),
            r.kernel_mib,
            r.reference_mib,
            r.memory_ratio(),
            r.loss_diff
        ));
    }
    md
}

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
fn attention_pass(
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
        super::flash_attention(
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
fn attention_inputs(a: AttentionSize, ad: &Device) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
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

/// One size of the fused-linear sweep.
#[derive(Debug, Clone, Serialize)]
pub struct FusedLinearBenchRow {
    pub tokens: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub chunk: usize,
    /// Median forward+backward (loss, then the gradients of hidden states and head weight), ms.
    pub fused_ms: f64,
    pub reference_ms: f64,
    /// Device memory reserved by one forward+backward beyond the inputs, MiB (measured in a
    /// fresh process).
    pub fused_mib: f64,
    pub reference_mib: f64,
    /// The head-weight gradient `[hidden, vocab]` itself, MiB: memory no variant can avoid.
    pub weight_grad_mib: f64,
    pub loss_diff: f64,
}

/// One forward+backward of the fused-linear loss (or its reference: the logits formed, then
/// burn ops); returns the loss.
fn linear_pass(
    hid: &Tensor<2>,
    w: &Tensor<2>,
    t: &Tensor<2>,
    rw: &Tensor<1>,
    fused: bool,
    chunk: usize,
) -> f32 {
    use crate::distill::divergence::linear_divergence;
    let spec = fkl(fused);
    let hs = hid.clone().require_grad();
    let ws = w.clone().require_grad();
    let loss = linear_divergence(hs.clone(), ws.clone(), t.clone(), rw.clone(), &spec, chunk);
    let grads = loss.clone().backward();
    let _ = hs
        .grad(&grads)
        .expect("hidden gradient")
        .slice([0..1, 0..1])
        .into_scalar::<f32>();
    let _ = ws
        .grad(&grads)
        .expect("weight gradient")
        .slice([0..1, 0..1])
        .into_scalar::<f32>();
    loss.into_scalar::<f32>()
}

/// Hidden states, head weight, teacher logits and row weights (a plain mean) of the
/// fused-linear sweep.
fn linear_inputs(
    n: usize,
    h: usize,
    v: usize,
    ad: &Device,
) -> (Tensor<2>, Tensor<2>, Tensor<2>, Tensor<1>) {
    let seed = (n * 7 + h * 3 + v) as u64;
    (
        normal([n, h], seed, 1.0, ad),
        normal([h, v], seed + 1, 1.0 / (h as f64).sqrt(), ad),
        normal([n, v], seed + 2, 3.0, ad),
        Tensor::<1>::full([n], 1.0 / n as f32, ad),
    )
}

/// Forward KL through the head over `(tokens, hidden, vocab)` sizes on a wgpu device: the
/// fused-linear kernel path (`chunk` rows at a time) against forming the logits and running
/// burn ops (memory as in [`distill_sweep`]).
pub fn fused_linear_sweep(
    device: &Device,
    sizes: &[(usize, usize, usize)],
    chunk: usize,
    repeats: usize,
    memory: &mut dyn FnMut(MemoryProbe) -> crate::Result<f64>,
    progress: &mut dyn FnMut(&FusedLinearBenchRow),
) -> crate::Result<Vec<FusedLinearBenchRow>> {
    let ad = device.clone().autodiff();
    let mut rows = Vec::new();
    for &(n, h, v) in sizes {
        let (hid, w, t, rw) = linear_inputs(n, h, v, &ad);
        let fl = linear_pass(&hid, &w, &t, &rw, true, chunk);
        let rl = linear_pass(&hid, &w, &t, &rw, false, chunk);
        let ms = interleaved_median_ms(
            repeats,
            &mut [
                &mut || {
                    linear_pass(&hid, &w, &t, &rw, true, chunk);
                },
                &mut || {
                    linear_pass(&hid, &w, &t, &rw, false, chunk);
                },
            ],
        );
        let (fused_ms, reference_ms) = (ms[0], ms[1]);
        let probe = |kernel| MemoryProbe::FusedLinear {
            tokens: n,
            hidden: h,
            vocab: v,
            chunk,
            kernel,
        };
        let row = FusedLinearBenchRow {
            tokens: n,
            hidden: h,
            vocab: v,
            chunk,
            fused_ms,
            reference_ms,
            fused_mib: memory(probe(true))?,
            reference_mib: memory(probe(false))?,
            weight_grad_mib: (h * v * 4) as f64 / (1024.0 * 1024.0),
            loss_diff: (fl - rl).abs() as f64,
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The generated `docs/results/kernels.md` section for the fused-linear loss.
pub fn fused_linear_table(
    device_name: &str,
    rows: &[FusedLinearBenchRow],
    command: &str,
) -> String {
    let mut md = format!(
        "## Fused-linear distillation loss (forward KL through the head): kernel path vs logits + burn ops\n\n\
         Device: **{device_name}**. Generated by `{command}`.\n\
         Time: median forward+backward (loss, gradients of the hidden states and of the head \
         weight). Memory: device memory reserved during one forward+backward beyond the inputs; \
         the head-weight gradient column is the share of it that any variant must hold.\n\n\
         | tokens | hidden | vocab | chunk | fused ms | burn ops ms | speed-up | fused MiB | burn ops MiB | memory ratio | weight grad MiB | loss diff |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2}x | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1e} |\n",
            r.tokens,
            r.hidden,
            r.vocab,
            r.chunk,
            r.fused_ms,
            r.reference_ms,
            r.reference_ms / r.fused_ms,
            r.fused_mib,
            r.reference_mib,
            r.reference_mib / r.fused_mib.max(1e-9),
            r.weight_grad_mib,
            r.loss_diff
        ));
    }
    md
}

/// One forward+backward whose peak device memory is measured alone, in a fresh process: a
/// memory pool only grows, so within one process every measurement after the first sees the
/// pages its predecessors left and reports too little. `condenser bench` runs each probe as
/// `condenser bench --probe <text>` and reads the MiB it prints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "probe", rename_all = "kebab-case")]
pub enum MemoryProbe {
    Distill {
        tokens: usize,
        vocab: usize,
        kernel: bool,
    },
    Attention {
        #[serde(flatten)]
        size: AttentionSize,
        kernel: bool,
    },
    FusedLinear {
        tokens: usize,
        hidden: usize,
        vocab: usize,
        chunk: usize,
        kernel: bool,
    },
    Moe {
        #[serde(flatten)]
        size: MoeSize,
        path: MoePath,
    },
}

/// Runs one probe on a device nothing else has used yet (the sweep's own inputs); returns the
/// MiB its pass reserved beyond the inputs.
pub fn run_probe(device: &Device, probe: MemoryProbe) -> f64 {
    let ad = device.clone().autodiff();
    let mib = |before: u64| reserved(&ad).saturating_sub(before) as f64 / (1024.0 * 1024.0);
    match probe {
        MemoryProbe::Distill {
            tokens,
            vocab,
            kernel,
        } => {
            let (s, t) = distill_inputs(tokens, vocab, &ad);
            let before = reserved(&ad);
            pass(&s, &t, kernel);
            mib(before)
        }
        MemoryProbe::Attention { size, kernel } => {
            let (q, k, v) = attention_inputs(size, &ad);
            let before = reserved(&ad);
            attention_pass(&q, &k, &v, kernel, false);
            mib(before)
        }
        MemoryProbe::FusedLinear {
            tokens,
            hidden,
            vocab,
            chunk,
            kernel,
        } => {
            let (h, w, t, rw) = linear_inputs(tokens, hidden, vocab, &ad);
            let before = reserved(&ad);
            linear_pass(&h, &w, &t, &rw, kernel, chunk);
            mib(before)
        }
        MemoryProbe::Moe { size, path } => {
            let (layer, x) = moe::moe_inputs(size, &ad);
            let before = reserved(&ad);
            moe::moe_pass(&layer, &x, path, false);
            mib(before)
        }
    }
}
