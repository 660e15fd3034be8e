//! `condenser bench step RECIPE`: training steps of one stage, timed as users compare them.

use std::path::PathBuf;

use anyhow::Context;
use condenser_engine::bench::{StepBench, StepBenchOptions, bench_step};
use condenser_engine::run::Runs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Recipe file (TOML); its data, `[init]` and `[teacher]` are used as a run would.
    pub recipe: PathBuf,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// The stage to run (by name); default: the recipe's first stage.
    #[arg(long)]
    pub stage: Option<String>,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first (allocator pools, kernel compilation).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Override the recipe's data folder.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The runs folder `[init]` and `[teacher]` names resolve in; the benchmark's own run is
    /// made there and deleted.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Keep frozen-tower features between steps (as a run does). Off by default, so every step
    /// encodes its images, as a peer framework's training step does.
    #[arg(long)]
    pub feature_cache: bool,
    /// Also write the figures and every step's batch shapes as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Split each step's batch over N workers (as `condenser run --data-parallel N`).
    #[arg(long, default_value_t = 1)]
    pub data_parallel: usize,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let mut recipe = Runs::new(&args.runs_dir).load_recipe(&args.recipe)?;
    if let Some(d) = args.data {
        recipe.data = d;
    }
    let (device, info) = args.device.device()?;
    let opts = StepBenchOptions {
        stage: args.stage,
        steps: args.steps,
        warmup: args.warmup,
        runs_dir: args.runs_dir,
        feature_cache_bytes: if args.feature_cache {
            condenser_engine::train::DEFAULT_FEATURE_CACHE_BYTES
        } else {
            0
        },
        data_parallel: args.data_parallel.max(1),
    };
    let b = bench_step(&recipe, &device, &info, &opts)?;
    println!("{}", summary(&b));
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&b)?;
        condenser_engine::cache::write_atomic(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The figures as lines.
fn summary(b: &StepBench) -> String {
    let mfu = b
        .mfu
        .map_or("-".to_string(), |m| format!("{:.1}%", 100.0 * m));
    let peak = b
        .peak_flops
        .map_or("-".to_string(), |p| format!("{:.1} GFLOP/s", p / 1e9));
    let device_mib = b
        .peak_device_mib
        .map_or(String::new(), |m| format!(", device pool {m:.0} MiB"));
    format!(
        "recipe {} stage {} on {} ({} threads, {} data-parallel worker(s))\n\
         {} timed steps after {} warm-up: {:.1} tokens/s, {:.3} s/step, MFU {mfu} of a {peak} matmul peak\n\
         start-up (process start to first step): {:.1} s\n\
         peak memory: host {:.0} MiB{device_mib}",
        b.recipe,
        b.stage,
        b.device,
        b.threads,
        b.data_parallel,
        b.timed_steps,
        b.warmup_steps,
        b.tokens_per_s,
        b.step_s_mean,
        b.startup_s,
        b.peak_host_mib,
    )
}
