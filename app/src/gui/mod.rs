//! `condenser gui`: the desktop app. A thin window shell (`shell.rs`) around views that only
//! read what the engine exposes: a run's [`RunHistory`](condenser_engine::train::RunHistory)
//! (its events folded by the engine), its saved report and its evaluation samples.
//!
//! A run started in the app trains on a background thread and sends its events over a channel
//! (`job.rs`); a run started from the CLI is followed by tailing its `events.jsonl`. Either way
//! it becomes an [`OpenRun`], so every panel draws the same thing from the same state. Each
//! panel is one file in `panels/` with a `show` function that the snapshot tests call alone.

pub mod app;
pub mod frame_stats;
pub mod job;
pub mod panels;
pub mod run;
pub mod shell;
pub mod widgets;

pub use app::{CondenserApp, Tab};
pub use run::OpenRun;
pub use shell::{GuiOptions, launch};
