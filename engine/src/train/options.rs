//! How a run is asked for ([`RunOptions`], [`StopFlag`]) and what it gives back
//! ([`RunOutcome`]).

use std::path::PathBuf;

use crate::eval::EvalResult;
use crate::model::Mllm;

/// Default feature-cache budget per frozen tower: 1 GiB holds DINOv2-S features at 112 px of
/// about 10,000 images.
pub const DEFAULT_FEATURE_CACHE_BYTES: usize = 1 << 30;

/// How to run a recipe.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Parent of run folders (`runs/`).
    pub runs_dir: PathBuf,
    /// Continue from the newest checkpoint when the run folder has one.
    pub resume: bool,
    /// Replace an existing run folder instead of refusing.
    pub overwrite: bool,
    /// Stop (as if killed) right after this many optimiser steps, with a checkpoint written.
    pub stop_after_steps: Option<usize>,
    /// Evaluate on the data's `test.json` at the end.
    pub eval: bool,
    /// Cap on evaluated questions (all when `None`).
    pub eval_limit: Option<usize>,
    /// Byte budget of each frozen vision tower's feature cache (`train::visual`): features are
    /// computed when a batch first needs them and kept up to this size, so memory does not grow
    /// with the number of images.
    pub feature_cache_bytes: usize,
    /// Raised by another thread (the desktop app's Stop button) to end the run after its
    /// current step with a checkpoint written, exactly as `--resume` expects.
    pub stop: StopFlag,
    /// Workers a splittable stage's batch is split over (`train::data_parallel`): 1 trains on
    /// the one device as before. The update equals the one-worker update.
    pub data_parallel: usize,
}

impl RunOptions {
    /// Whether the run stops (checkpoint written) after global step `global_step`: the
    /// `stop_after_steps` limit, or a stop requested through [`StopFlag`].
    pub(super) fn stop_due(&self, global_step: usize) -> bool {
        self.stop_after_steps == Some(global_step) || self.stop.requested()
    }
}

/// A request to stop a run cleanly, shared between the run and whoever may ask.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl StopFlag {
    pub fn request(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            runs_dir: PathBuf::from("runs"),
            resume: true,
            overwrite: false,
            stop_after_steps: None,
            eval: true,
            eval_limit: None,
            feature_cache_bytes: DEFAULT_FEATURE_CACHE_BYTES,
            stop: StopFlag::default(),
            data_parallel: 1,
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_dir: PathBuf,
    /// False when stopped early by `stop_after_steps`.
    pub finished: bool,
    pub final_checkpoint: Option<PathBuf>,
    pub eval: Option<EvalResult>,
    pub model: Option<Mllm>,
}

impl RunOutcome {
    /// A run stopped early by `stop_after_steps`, its newest checkpoint written.
    pub(super) fn stopped(run_dir: PathBuf, model: Mllm) -> Self {
        RunOutcome {
            run_dir,
            finished: false,
            final_checkpoint: None,
            eval: None,
            model: Some(model),
        }
    }
}

impl RunOptions {
    /// The runs folder these options name.
    pub fn runs(&self) -> crate::run::Runs {
        crate::run::Runs::new(&self.runs_dir)
    }
}
