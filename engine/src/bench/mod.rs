//! Kernel benchmarks (`condenser bench`, `docs/results/kernels.md`): each fused kernel against the plain burn-ops composition it replaces, on
//! the same device in the same run, so the ratios are free of machine-to-machine noise.
//!
//! Time is the median of several synchronised forward+backward passes after a warm-up, the
//! kernel's and the reference's interleaved.
//! Memory is what the device's allocator reserved during one forward+backward beyond the
//! inputs, measured by [`run_probe`] in a fresh process per pass: burn's pools keep their pages,
//! so the reserve after the pass is its high-water mark, but only on a pool nothing else used.

//!
//! One file per kernel (`distill.rs`, `attention.rs`, `fused_linear.rs`, `head_loss.rs`,
//! `moe.rs`), each with its sweep and its table; this file holds what they share and the memory probes.

mod attention;
mod distill;
mod fused_linear;
mod head_loss;
mod moe;
mod step;

use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;

use crate::backend::kernels::Kernels;
use crate::config::{Divergence, DivergenceSpec};

pub use attention::{AttentionBenchRow, AttentionSize, attention_sweep, attention_table};
pub use distill::{DistillBenchRow, distill_sweep, distill_table};
pub use fused_linear::{FusedLinearBenchRow, fused_linear_sweep, fused_linear_table};
pub use head_loss::{
    HeadLossBenchRow, HeadLossPath, HeadLossSize, head_loss_sweep, head_loss_table,
};
pub use moe::{MoeBenchRow, MoePath, MoeSize, moe_sweep, moe_table};
pub use step::{StepBench, StepBenchOptions, bench_step};

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

/// Forward KL at T = 1, the LLaVA-KD default every sweep measures, and the path (`kernel`:
/// the fused kernels, else the burn-ops reference).
fn fkl(kernel: bool) -> (DivergenceSpec, Kernels) {
    let spec = DivergenceSpec {
        divergence: Divergence::ForwardKl,
        temperature: 1.0,
        zscore: false,
    };
    (spec, path(kernel))
}

/// The kernels, or the reference.
fn path(kernel: bool) -> Kernels {
    if kernel {
        Kernels::Fused
    } else {
        Kernels::Reference
    }
}

/// Seeded N(0, scale^2) values of `shape` on `device`: every sweep's inputs, and the same ones
/// again in a memory probe.
fn normal<const D: usize>(shape: [usize; D], seed: u64, scale: f64, device: &Device) -> Tensor<D> {
    let mut rng = crate::rng::Rng::new(seed);
    let n = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
    Tensor::from_data(TensorData::new(x, shape), device)
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
    HeadLoss {
        #[serde(flatten)]
        size: HeadLossSize,
        path: HeadLossPath,
        /// Measured on the CPU backend (resident-set high-water mark) instead of wgpu.
        cpu: bool,
    },
}

impl MemoryProbe {
    /// The backend the probe runs on: the CPU only for a CPU head-loss probe.
    pub fn backend(&self) -> crate::backend::BackendChoice {
        match self {
            MemoryProbe::HeadLoss { cpu: true, .. } => crate::backend::BackendChoice::Cpu,
            _ => crate::backend::BackendChoice::Wgpu,
        }
    }
}

/// A `/proc/self/status` field in bytes (`VmRSS`, `VmHWM`); 0 where it cannot be read.
pub(crate) fn proc_status_bytes(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs `pass` and returns the bytes of host memory it took beyond what was resident before:
/// the resident-set high-water mark is reset first (Linux `clear_refs` 5), so its value after
/// the pass is the pass's own peak.
fn host_peak(pass: impl FnOnce()) -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = proc_status_bytes("VmRSS");
    pass();
    proc_status_bytes("VmHWM").saturating_sub(before)
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
            let (s, t) = distill::distill_inputs(tokens, vocab, &ad);
            let before = reserved(&ad);
            distill::pass(&s, &t, kernel);
            mib(before)
        }
        MemoryProbe::Attention { size, kernel } => {
            let (q, k, v) = attention::attention_inputs(size, &ad);
            let before = reserved(&ad);
            attention::attention_pass(&q, &k, &v, kernel, false);
            mib(before)
        }
        MemoryProbe::FusedLinear {
            tokens,
            hidden,
            vocab,
            chunk,
            kernel,
        } => {
            let (h, w, t, rw) = fused_linear::linear_inputs(tokens, hidden, vocab, &ad);
            let before = reserved(&ad);
            fused_linear::linear_pass(&h, &w, &t, &rw, kernel, chunk);
            mib(before)
        }
        MemoryProbe::Moe { size, path } => {
            let (layer, x) = moe::moe_inputs(size, &ad);
            let before = reserved(&ad);
            moe::moe_pass(&layer, &x, path, false);
            mib(before)
        }
        MemoryProbe::HeadLoss { size, path, cpu } => {
            let (h, w, targets, mask) = head_loss::inputs(size, &ad);
            if cpu {
                let bytes = host_peak(|| {
                    head_loss::pass(&h, &w, &targets, &mask, path);
                });
                return bytes as f64 / (1024.0 * 1024.0);
            }
            let before = reserved(&ad);
            head_loss::pass(&h, &w, &targets, &mask, path);
            mib(before)
        }
    }
}
