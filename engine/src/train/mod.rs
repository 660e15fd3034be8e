//! Training: the stage loop over a recipe, AdamW with warmup + cosine, global-norm clipping,
//! per-module freeze policy, atomic checkpoints with exact resume, and the event log.

pub mod checkpoint;
pub mod clip;
pub mod contrastive;
pub mod distill;
pub mod events;
pub mod freeze;
pub mod history;
mod mine;
mod order;
mod pipeline;
pub mod preference;
pub mod router;
pub mod runs;
pub mod schedule;
pub mod tail;

pub use events::{Event, EventLog, Observer, Silent};
pub use history::{RunHistory, RunStatus};
pub use pipeline::{RunOptions, RunOutcome, StopFlag, resolve_checkpoint, run_recipe};
pub use tail::{BadLine, EventTail, read_events};

/// Steps between two [`Event::Relation`] snapshots in a stage with a relation term (and its
/// first and last step).
pub const RELATION_EVERY: usize = 25;
