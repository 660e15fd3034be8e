//! Training: the stage loop over a recipe. `pipeline.rs` is the driver a newcomer reads first;
//! each concern it calls has one file:
//!
//! | file | concern |
//! |---|---|
//! | `pipeline.rs` | the driver: inputs -> run folder -> stages -> final checkpoint -> evaluation |
//! | `plan.rs` | several runs with dependencies, a few at a time (the main job, ablations) |
//! | `inputs.rs` | loading and checking the tokenizer, data and starting checkpoints |
//! | `memory_plan.rs` | the pre-flight estimate of each stage's largest buffer and peak memory |
//! | `stage.rs` | one stage: data order, objective, steps, stage checkpoints |
//! | `objective/` | what a stage minimises, one file per objective kind, one [`objective::StepLoss`] |
//! | `update.rs` | the optimiser step: backward, clipping, AdamW at the scheduled rate |
//! | `record.rs` | events and checkpoints written into the run folder (`crate::run`) |
//! | `teacher.rs` | the frozen teacher and its once-per-stage output cache |
//! | `visual.rs` | a stage's visual input (cached features of a frozen encoder, or pixels) |
//! | `events.rs`, `history.rs`, `tail.rs` | the event log, its replay and its live tail |
//! | `freeze.rs`, `order.rs`, `schedule.rs`, `clip.rs`, `mine.rs` | freeze policy, example order, learning rate, clipping, mined pairs |

pub mod clip;
pub mod data_parallel;
pub mod events;
pub mod flops;
pub mod freeze;
pub mod history;
pub(crate) mod inputs;
mod memory_plan;
mod mine;
pub mod objective;
mod options;
mod order;
mod pipeline;
mod plan;
mod prefetch;
mod record;
pub mod schedule;
pub(crate) mod stage;
pub mod tail;
pub mod teacher;
pub mod teacher_cache;
pub mod tensorboard;
mod update;
pub mod visual;

pub use events::{Event, EventLog, Observer, Silent};
pub use history::{Pace, RunHistory, RunStatus};
pub use memory_plan::{Buffer, MemoryPlan, StagePlan, plan_recipe};
pub use options::{DEFAULT_FEATURE_CACHE_BYTES, RunOptions, RunOutcome, StopFlag};
pub use pipeline::run_recipe;
pub use plan::{PlanObserver, PlannedRun, run_plan};
pub use tail::{BadLine, EventTail, read_events};

/// Steps between two [`Event::Relation`] snapshots in a stage with a relation term (and its
/// first and last step).
pub const RELATION_EVERY: usize = 25;
