//! What a run leaves behind while it trains: the event log and the checkpoints, both written
//! into its [`RunDir`]. A checkpoint is written whole before `latest` names it, so a killed run
//! resumes from the newest complete one.

use std::path::PathBuf;
use std::time::Instant;

use burn::optim::ModuleOptimizer;

use super::events::{Event, EventLog, Observer};
use crate::Result;
use crate::distill::HiddenProjection;
use crate::model::Mllm;
use crate::run::checkpoint::{self, TrainState};
use crate::run::{CheckpointName, RunDir};

/// The run's event log and checkpoint writer.
pub struct Recorder<'o> {
    run: RunDir,
    log: EventLog<'o>,
    started: Instant,
}

impl<'o> Recorder<'o> {
    /// Appends to the run's `events.jsonl` (a resumed run continues its log).
    pub fn open(run: &RunDir, observer: &'o mut dyn Observer) -> Result<Self> {
        Ok(Recorder {
            log: EventLog::open(&run.events_file(), observer)?,
            run: run.clone(),
            started: Instant::now(),
        })
    }

    pub fn run(&self) -> &RunDir {
        &self.run
    }

    pub fn emit(&mut self, event: Event) -> Result<()> {
        self.log.emit(event)
    }

    /// Seconds since the recorder opened (this attempt of the run).
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Writes a checkpoint (with the optimiser states when given, for a mid-stage resume),
    /// makes it the newest, and logs it.
    pub fn checkpoint(
        &mut self,
        name: CheckpointName,
        model: &Mllm,
        optim: Option<&ModuleOptimizer>,
        align: Option<(&HiddenProjection, &ModuleOptimizer)>,
        state: &TrainState,
    ) -> Result<()> {
        let p = self.save(&name, model, optim, align, state)?;
        self.emit(Event::Checkpoint {
            path: p.display().to_string(),
            global_step: state.global_step,
        })
    }

    /// Writes the final checkpoint (the evaluation and the report follow it).
    pub fn save_final(&self, model: &Mllm, state: &TrainState) -> Result<PathBuf> {
        self.save(&CheckpointName::Final, model, None, None, state)
    }

    fn save(
        &self,
        name: &CheckpointName,
        model: &Mllm,
        optim: Option<&ModuleOptimizer>,
        align: Option<(&HiddenProjection, &ModuleOptimizer)>,
        state: &TrainState,
    ) -> Result<PathBuf> {
        let target = self.run.checkpoint(name);
        checkpoint::save(&target, model, optim, align, state)?;
        self.run.set_latest(name)?;
        Ok(target)
    }
}
