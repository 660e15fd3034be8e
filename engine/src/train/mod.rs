//! Training: the stage loop over a recipe, AdamW with warmup + cosine, global-norm clipping,
//! per-module freeze policy, atomic checkpoints with exact resume, and the event log.

pub mod checkpoint;
pub mod clip;
pub mod contrastive;
pub mod distill;
pub mod events;
pub mod freeze;
mod order;
mod pipeline;
pub mod preference;
pub mod router;
pub mod schedule;

pub use events::{Event, EventLog, Observer, Silent};
pub use pipeline::{RunOptions, RunOutcome, run_recipe};
