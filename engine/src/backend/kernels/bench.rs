//! Kernel benchmarks: each fused kernel against the plain burn-ops composition it replaces, on
//! the same device in the same run, so the ratios are free of machine-to-machine noise.
//!
//! Time is the median of several synchronised forward+backward passes after a warm-up.
//! Memory is what the device's allocator reserved during one forward+backward beyond what it
//! held before (inputs included in neither): burn's pools keep pages until a cleanup, so the
//! reserve after the pass is its high-water mark.

use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;

use super::KernelPolicy;
use crate::distill::divergence::fused_token_divergence;
use crate::distill::{Divergence, DivergenceSpec, token_divergence};

/// One size of the distillation-loss sweep.
#[derive(Debug, Clone, Serialize)]
pub struct DistillBenchRow {
    pub tokens: usize,
    pub vocab: usize,
    pub divergence: String,
    /// Median forward+backward time, milliseconds.
    pub kernel_ms: f64,
    pub reference_ms: f64,
    /// Device memory reserved by one forward+backward, MiB.
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

fn reserved(device: &Device) -> u64 {
    device
        .memory_pool_usage()
        .map(|u| u.bytes_reserved)
        .unwrap_or(0)
}

/// One forward+backward of the mean divergence; returns the loss.
fn pass(s: &Tensor<2>, t: &Tensor<2>, spec: &DivergenceSpec, fused: bool) -> f32 {
    let student = s.clone().require_grad();
    // the slab split of the training path
    let rows = super::distill_slab_rows(s.dims()[1]);
    let per_token = if fused {
        fused_token_divergence(student.clone(), t.clone(), spec, rows)
    } else {
        token_divergence(student.clone(), t.clone(), spec)
    };
    let loss = per_token.mean();
    let grads = loss.clone().backward();
    let g = student.grad(&grads).expect("student gradient");
    // reading one element waits for the whole gradient
    let _ = g.slice([0..1, 0..1]).into_scalar::<f32>();
    loss.into_scalar::<f32>()
}

fn measure(
    s: &Tensor<2>,
    t: &Tensor<2>,
    spec: &DivergenceSpec,
    fused: bool,
    repeats: usize,
) -> (f64, f64, f32) {
    let device = s.device();
    device.memory_cleanup();
    let before = reserved(&device);
    let loss = pass(s, t, spec, fused);
    let mib = reserved(&device).saturating_sub(before) as f64 / (1024.0 * 1024.0);
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let t0 = Instant::now();
            pass(s, t, spec, fused);
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], mib, loss)
}

/// Forward KL at temperature 1 (the LLaVA-KD default) over `(tokens, vocab)` sizes on a wgpu
/// device (`device` must be one; the caller checks). `progress` hears about each size.
pub fn distill_sweep(
    device: &Device,
    sizes: &[(usize, usize)],
    repeats: usize,
    progress: &mut dyn FnMut(&DistillBenchRow),
) -> Vec<DistillBenchRow> {
    let ad = device.clone().autodiff();
    let mut rows = Vec::new();
    for &(n, v) in sizes {
        let mut rng = crate::model::Rng::new((n * 31 + v) as u64);
        let mut data = |scale: f64| -> Tensor<2> {
            let x: Vec<f32> = (0..n * v).map(|_| (rng.normal() * scale) as f32).collect();
            Tensor::from_data(TensorData::new(x, [n, v]), &ad)
        };
        let s = data(2.0);
        let t = data(3.0);
        let spec = |kernels| DivergenceSpec {
            divergence: Divergence::ForwardKl,
            temperature: 1.0,
            zscore: false,
            kernels,
        };
        // warm-up compiles the kernels outside the timings
        pass(&s, &t, &spec(KernelPolicy::Auto), true);
        pass(&s, &t, &spec(KernelPolicy::Reference), false);
        let (kernel_ms, kernel_mib, kl) = measure(&s, &t, &spec(KernelPolicy::Auto), true, repeats);
        let (reference_ms, reference_mib, rl) =
            measure(&s, &t, &spec(KernelPolicy::Reference), false, repeats);
        let row = DistillBenchRow {
            tokens: n,
            vocab: v,
            divergence: Divergence::ForwardKl.label(),
            kernel_ms,
            reference_ms,
            kernel_mib,
            reference_mib,
            loss_diff: (kl - rl).abs() as f64,
        };
        progress(&row);
        rows.push(row);
    }
    rows
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
