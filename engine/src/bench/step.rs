//! `condenser bench step`: N training steps of one stage of a recipe, through the same pipeline
//! a run uses, with the figures users compare: tokens/s, MFU, start-up time (process start to
//! the first step) and peak memory per device. It also returns every step's batch shapes, so a
//! peer (`scripts/peer-bench.sh`, PyTorch) can run the very same steps.
//!
//! The stage runs alone, as a run of its own in the runs folder (so `[init]` and `[teacher]`
//! resolve as in a real run) that is deleted afterwards; it stops after warm-up + N steps.

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;

use crate::backend::DeviceInfo;
use crate::config::{MllmConfig, Recipe, StageFreeze};
use crate::data::{HostBatch, Padding, host_batch};
use crate::run::Runs;
use crate::train::inputs::Inputs;
use crate::train::stage::stage_batches;
use crate::train::{Event, Observer, RunOptions, run_recipe};
use crate::{Error, Result};

/// What to measure.
#[derive(Debug, Clone)]
pub struct StepBenchOptions {
    /// The stage to run (its name); the recipe's first stage when `None`.
    pub stage: Option<String>,
    /// Timed steps.
    pub steps: usize,
    /// Steps run first and not timed (allocator pools, kernel compilation).
    pub warmup: usize,
    /// The runs folder the recipe's `[init]` and `[teacher]` names resolve in.
    pub runs_dir: PathBuf,
    /// Feature-cache budget; 0 makes a frozen tower encode every step, as a peer does.
    pub feature_cache_bytes: usize,
    /// Data-parallel workers (`RunOptions::data_parallel`).
    pub data_parallel: usize,
}

/// One batch row as a peer needs it: text tokens after the visual ones, labelled tokens last.
#[derive(Debug, Clone, Serialize)]
pub struct RowShape {
    pub text_len: usize,
    pub labels: usize,
    pub image: bool,
}

/// One step's rows.
#[derive(Debug, Clone, Serialize)]
pub struct StepShape {
    pub rows: Vec<RowShape>,
}

/// The optimiser as a peer configures it.
#[derive(Debug, Clone, Serialize)]
pub struct OptimizerShape {
    pub lr: f64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
}

/// The figures, and what a peer needs to run the same steps.
#[derive(Debug, Clone, Serialize)]
pub struct StepBench {
    pub recipe: String,
    pub stage: String,
    /// The stage's data file and the SHA-256 of its bytes.
    pub data: String,
    pub data_sha256: String,
    pub device: String,
    pub threads: usize,
    /// Data-parallel workers the batches were split over.
    pub data_parallel: usize,
    pub warmup_steps: usize,
    pub timed_steps: usize,
    /// Real tokens (visual included) of the timed steps.
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub step_s_mean: f64,
    /// Mean MFU of the timed steps.
    pub mfu: Option<f64>,
    pub peak_flops: Option<f64>,
    /// Process start to the start of the first step.
    pub startup_s: f64,
    /// Peak resident set of the process.
    pub peak_host_mib: f64,
    /// What the device's allocator reserved at the end (wgpu), its high-water mark.
    pub peak_device_mib: Option<f64>,
    pub model: MllmConfig,
    pub freeze: StageFreeze,
    pub optimizer: OptimizerShape,
    /// Every step's rows, warm-up first.
    pub steps: Vec<StepShape>,
}

/// Collects the step events with their arrival times.
#[derive(Default)]
struct Timings {
    peak_flops: Option<f64>,
    /// (arrival, tokens, step seconds, mfu) per step.
    steps: Vec<(Instant, usize, f64, Option<f64>)>,
}

impl Observer for Timings {
    fn on_event(&mut self, e: &Event) {
        match e {
            Event::RunStart { peak_flops, .. } => self.peak_flops = *peak_flops,
            Event::Step {
                tokens,
                step_s,
                mfu,
                global_step,
                steps,
                ..
            } => {
                self.steps.push((Instant::now(), *tokens, *step_s, *mfu));
                log::info!("bench step {global_step}/{steps}: {step_s:.2} s, {tokens} tokens");
            }
            _ => {}
        }
    }
}

/// Runs the benchmark.
pub fn bench_step(
    recipe: &Recipe,
    device: &Device,
    info: &DeviceInfo,
    opts: &StepBenchOptions,
) -> Result<StepBench> {
    if opts.steps == 0 {
        return Err(Error::Invalid("--steps must be at least 1".into()));
    }
    let si = match &opts.stage {
        None => 0,
        Some(name) => recipe
            .stages
            .iter()
            .position(|s| &s.name == name)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "recipe {:?} has no stage {name:?} (its stages: {})",
                    recipe.name,
                    recipe
                        .stages
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
    };
    let total = opts.warmup + opts.steps;
    let mut spec = recipe.stages[si].clone();
    spec.checkpoint_every = 0;
    let mut one = recipe.clone();
    one.name = format!("bench-step-{}-{}", recipe.name, std::process::id());
    // the batches the stage will see, from its own data (tokenised once, cached)
    let runs = Runs::new(&opts.runs_dir);
    let inputs = Inputs::load(&one, &runs)?;
    let data = &inputs.data[&spec.data];
    let data_sha256 = std::fs::read(&data.path)
        .map(|b| crate::cache::sha256_hex(&b))
        .unwrap_or_default();
    let data_path = data.path.display().to_string();
    let units = data.units().max(1);
    let needed = (total * spec.batch_size) as f64 / units as f64;
    if spec.epochs < needed {
        spec.epochs = needed;
    }
    one.stages = vec![spec.clone()];
    let nv = recipe.model.vision.num_visual_tokens();
    let pad = inputs.tokenizer.special.pad;
    let shapes: Vec<StepShape> = stage_batches(one.seed, 0, &spec, data, 0..total)
        .iter()
        .map(|idx| {
            let examples: Vec<_> = idx.iter().map(|&i| &data.encoded[i]).collect();
            step_shape(&host_batch(&examples, nv, pad, Padding::Right), nv)
        })
        .collect();
    drop(inputs);

    let run_opts = RunOptions {
        runs_dir: opts.runs_dir.clone(),
        resume: false,
        overwrite: true,
        stop_after_steps: Some(total),
        eval: false,
        feature_cache_bytes: opts.feature_cache_bytes,
        data_parallel: opts.data_parallel,
        ..RunOptions::default()
    };
    let mut timings = Timings::default();
    let outcome = run_recipe(&one, device, info, &run_opts, &mut timings);
    let _ = std::fs::remove_dir_all(runs.run(&one.name).path());
    outcome?;
    if timings.steps.len() < total {
        return Err(Error::Invalid(format!(
            "the stage ran {} steps, fewer than the {total} asked for",
            timings.steps.len()
        )));
    }
    let timed = &timings.steps[opts.warmup..total];
    let tokens: usize = timed.iter().map(|s| s.1).sum();
    let seconds: f64 = timed.iter().map(|s| s.2).sum();
    let mfus: Vec<f64> = timed.iter().filter_map(|s| s.3).collect();
    let first = timings.steps[0];
    let first_start = first.0 - std::time::Duration::from_secs_f64(first.2);
    let startup_s = process_age_s() - first_start.elapsed().as_secs_f64();
    Ok(StepBench {
        recipe: recipe.name.clone(),
        stage: spec.name.clone(),
        data: data_path,
        data_sha256,
        device: format!("{} ({})", info.backend, info.name),
        threads: crate::backend::cpu_threads(),
        data_parallel: opts.data_parallel,
        warmup_steps: opts.warmup,
        timed_steps: opts.steps,
        tokens,
        seconds,
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
        step_s_mean: seconds / opts.steps as f64,
        mfu: (!mfus.is_empty()).then(|| mfus.iter().sum::<f64>() / mfus.len() as f64),
        peak_flops: timings.peak_flops,
        startup_s,
        peak_host_mib: super::proc_status_bytes("VmHWM") as f64 / (1 << 20) as f64,
        peak_device_mib: device
            .memory_pool_usage()
            .map(|u| u.bytes_reserved as f64 / (1 << 20) as f64),
        model: recipe.model.clone(),
        freeze: spec.freeze,
        optimizer: OptimizerShape {
            lr: spec.lr,
            weight_decay: spec.weight_decay,
            betas: [0.9, 0.999],
            eps: 1e-8,
        },
        steps: shapes,
    })
}

/// The rows of a batch as a peer rebuilds them.
fn step_shape(hb: &HostBatch, nv: usize) -> StepShape {
    let visual = hb.visual_mask();
    let rows = (0..hb.b)
        .map(|r| {
            let span = r * hb.t..(r + 1) * hb.t;
            let real = hb.attention_mask[span.clone()]
                .iter()
                .filter(|m| **m > 0.0)
                .count();
            let image = visual[span.clone()].iter().any(|v| *v > 0.0);
            RowShape {
                text_len: real - if image { nv } else { 0 },
                labels: hb.loss_mask[span].iter().filter(|m| **m > 0.0).count(),
                image,
            }
        })
        .collect();
    StepShape { rows }
}

/// Seconds since this process started (its start time in `/proc/self/stat`, in clock ticks
/// since boot, against `/proc/uptime`), so start-up counts the loader and everything before
/// `main`; elsewhere, since the engine's first use of this clock.
fn process_age_s() -> f64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
        // fields after the command name (which may hold spaces) start at field 3
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let start_ticks = after
            .split_whitespace()
            .nth(19)
            .and_then(|v| v.parse::<f64>().ok());
        let up = uptime
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        // SAFETY: sysconf reads a constant of the system.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        if let (Some(s), Some(u)) = (start_ticks, up)
            && hz > 0.0
        {
            return u - s / hz;
        }
    }
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}
