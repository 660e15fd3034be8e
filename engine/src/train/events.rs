//! Run events: one JSON object per line in `events.jsonl` (append-only), and the same values
//! handed to an [`Observer`] so faces can draw progress without computing anything themselves.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Something that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStart {
        run: String,
        device: String,
        resumed_from: Option<String>,
        /// The device's measured f32 matmul peak (FLOP/s), the denominator of `mfu`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peak_flops: Option<f64>,
    },
    ModelBuilt {
        params: usize,
        vision: usize,
        projector: usize,
        llm: usize,
    },
    StageStart {
        stage: usize,
        name: String,
        steps: usize,
        trainable: usize,
        examples: usize,
    },
    Step {
        stage: usize,
        name: String,
        step: usize,
        steps: usize,
        global_step: usize,
        loss: f32,
        /// The loss's named parts when it has several (e.g. `region` of the contrastive
        /// objective), unweighted.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        terms: BTreeMap<String, f32>,
        lr: f64,
        grad_norm: f32,
        tokens_per_s: f64,
        elapsed_s: f64,
        /// Real (unpadded) tokens of the batch, visual tokens included.
        #[serde(default)]
        tokens: usize,
        /// Wall time of the step, waiting for its images included.
        #[serde(default)]
        step_s: f64,
        /// Model FLOPs utilisation: the step's model FLOPs (`train::flops`) per second over
        /// the device's matmul peak.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mfu: Option<f64>,
        /// Per MoE layer: the tokens each expert took (visual / text), drops and router
        /// entropy in this step. Absent for dense models.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        routing: Vec<crate::model::moe::LayerRouting>,
    },
    /// The visual-token self-correlation matrices (RDist, LLaVA-KD eq. 4) of the first
    /// example of a distillation batch, row-major `n x n`, logged every
    /// [`RELATION_EVERY`](super::RELATION_EVERY) steps of a stage with a relation term.
    Relation {
        stage: usize,
        name: String,
        global_step: usize,
        n: usize,
        teacher: Vec<f32>,
        student: Vec<f32>,
    },
    Checkpoint {
        path: String,
        global_step: usize,
    },
    /// The run was asked to stop (not killed): its newest checkpoint is written and
    /// `--resume` continues from it.
    Stopped {
        global_step: usize,
    },
    StageEnd {
        stage: usize,
        name: String,
        mean_loss: f32,
        seconds: f64,
    },
    Eval {
        split: String,
        accuracy: f64,
        questions: usize,
    },
    RunEnd {
        seconds: f64,
    },
}

/// Receives events as they happen (progress bars, GUI channels).
pub trait Observer {
    fn on_event(&mut self, event: &Event);
}

/// Ignores everything.
pub struct Silent;
impl Observer for Silent {
    fn on_event(&mut self, _: &Event) {}
}

/// Appends events to `events.jsonl`, writes their scalars to a TensorBoard event file beside
/// it, and forwards them to an observer.
pub struct EventLog<'a> {
    path: PathBuf,
    file: std::fs::File,
    /// `None` once writing it failed: TensorBoard is a view, never a reason to stop a run.
    tensorboard: Option<super::tensorboard::TensorBoard>,
    observer: &'a mut dyn Observer,
}

impl<'a> EventLog<'a> {
    pub fn open(path: &Path, observer: &'a mut dyn Observer) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tensorboard = super::tensorboard::TensorBoard::create(dir)
            .inspect_err(|e| log::warn!("no TensorBoard events for this run: {e}"))
            .ok();
        Ok(EventLog {
            path: path.into(),
            file,
            tensorboard,
            observer,
        })
    }

    pub fn emit(&mut self, event: Event) -> Result<()> {
        let line = serde_json::to_string(&event).expect("events serialise");
        writeln!(self.file, "{line}").map_err(|e| Error::io(&self.path, e))?;
        if let Some(tb) = &mut self.tensorboard
            && let Err(e) = tb.on_event(&event)
        {
            log::warn!("TensorBoard events stop here: {e}");
            self.tensorboard = None;
        }
        self.observer.on_event(&event);
        Ok(())
    }
}
