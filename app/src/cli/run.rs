//! `condenser run <recipe>`: run a recipe; resumes an interrupted run of the same recipe.

use std::path::PathBuf;

use condenser_engine::run::{RunDir, Runs};
use condenser_engine::train::{RunOptions, plan_recipe, run_recipe};

use super::progress::{self, Bars};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Recipe file (TOML). See assets/recipes/ for examples.
    pub recipe: PathBuf,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// Parent folder of run folders.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Override the recipe's data folder.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Override the recipe's image_folder: where the records' image paths are resolved
    /// (LLaVA's image_folder; default: the data folder).
    #[arg(long)]
    pub image_folder: Option<PathBuf>,
    /// Override the run name (the folder under --runs-dir).
    #[arg(long)]
    pub name: Option<String>,
    /// Override the recipe's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue from the newest checkpoint of an existing run folder (the default is to refuse
    /// to touch an existing run).
    #[arg(long, conflicts_with = "fresh")]
    pub resume: bool,
    /// Delete an existing run folder of the same name and start over.
    #[arg(long)]
    pub fresh: bool,
    /// Skip the final evaluation on the data's test.json.
    #[arg(long)]
    pub no_eval: bool,
    /// `auto`: Condenser's WGSL kernels on wgpu devices; `reference`: the plain burn-ops
    /// composition everywhere (for A/B runs). Overrides the recipe's `kernels`.
    #[arg(long)]
    pub kernels: Option<condenser_engine::config::KernelPolicy>,
    /// Print the memory plan (each stage's largest tensors and estimated peak memory on this
    /// device) and exit without training. A run checks the same plan before it starts and
    /// refuses a stage whose tensor cannot fit the device.
    #[arg(long)]
    pub plan: bool,
    /// Memory for each frozen vision tower's features, in MiB: a feature is computed when a
    /// batch first needs it and kept while this budget lasts, so memory does not grow with the
    /// number of images (images past the budget are encoded again when seen again).
    #[arg(long, default_value_t = (condenser_engine::train::DEFAULT_FEATURE_CACHE_BYTES >> 20) as u64)]
    pub feature_cache_mib: u64,
    /// Split each step's batch over N workers (data parallel, train::data_parallel): each runs
    /// forward and backward on its share on its own thread, the gradients are summed on the
    /// main device and one optimiser step is taken; the update equals the one-worker update.
    /// Stages with a language-model objective and a dense model split; the others run on one
    /// worker. On the CPU backend give each worker a thread (`--threads N`).
    #[arg(long, default_value_t = 1)]
    pub data_parallel: usize,
    /// Stop after this many optimiser steps, with a checkpoint written (as if killed).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let mut recipe = Runs::new(&args.runs_dir).load_recipe(&args.recipe)?;
    if let Some(d) = args.data {
        recipe.data = d;
    }
    if let Some(f) = args.image_folder {
        recipe.image_folder = Some(f);
    }
    if let Some(n) = args.name {
        recipe.name = n;
    }
    if let Some(s) = args.seed {
        recipe.seed = s;
    }
    if let Some(k) = args.kernels {
        recipe.kernels = k;
    }
    let (device, info) = args.device.device()?;
    let opts = RunOptions {
        runs_dir: args.runs_dir,
        resume: args.resume,
        overwrite: args.fresh,
        stop_after_steps: args.stop_after,
        eval: !args.no_eval,
        eval_limit: None,
        feature_cache_bytes: (args.feature_cache_mib as usize) << 20,
        stop: Default::default(),
        data_parallel: args.data_parallel.max(1),
    };
    if args.plan {
        let plan = plan_recipe(&recipe, &device, &info, &opts)?;
        print!("{}", plan.render());
        plan.check()?;
        println!("every stage fits");
        return Ok(());
    }
    let out = run_recipe(&recipe, &device, &info, &opts, &mut Bars::default())?;
    if out.finished {
        progress::result(&format!("run folder: {}", out.run_dir.display()));
        if let Some(e) = out.eval {
            progress::result(&format!(
                "held-out exact match: {:.1}% over {} questions (report: {})",
                100.0 * e.accuracy,
                e.questions,
                RunDir::new(&out.run_dir).report_md().display()
            ));
        }
    } else {
        progress::result(&format!(
            "stopped early; continue with --resume ({})",
            out.run_dir.display()
        ));
    }
    Ok(())
}
