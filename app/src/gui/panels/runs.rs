//! Runs: the run folders under the runs directory (newest first), open one, pick a second one
//! to compare, start a recipe, stop the run training here (checkpoint, then exit cleanly), and
//! resume a stopped run.

use std::path::{Path, PathBuf};

use eframe::egui::{self, Color32, RichText, Ui};

use condenser_engine::run::RunFolder;

use condenser_engine::train::RunStatus;

use crate::gui::OpenRun;

/// Seconds without an event after which a run followed from disk counts as killed.
pub const STALE_WRITER_S: f64 = 60.0;

/// What the user asked for; the app carries it out.
#[derive(Debug, Clone, PartialEq)]
pub enum RunsAction {
    Open(PathBuf),
    Compare(PathBuf),
    Refresh,
    /// Start this recipe (resuming its run folder if it exists).
    Start(PathBuf),
    /// Resume the run folder from its newest checkpoint, with its saved recipe.
    Resume(PathBuf),
    Stop,
}

/// The panel's settings.
#[derive(Debug, Clone, Default)]
pub struct RunsView {
    /// The recipe path typed in.
    pub recipe: String,
}

/// Everything the panel shows.
pub struct RunsPanel<'a> {
    pub runs_dir: &'a Path,
    pub runs: &'a [RunFolder],
    pub listing_error: Option<&'a str>,
    pub open: Option<&'a OpenRun>,
    pub open_error: Option<&'a str>,
    pub compare: Option<&'a str>,
    /// A run is training in this app (one at a time).
    pub busy: bool,
}

pub fn show(ui: &mut Ui, p: &RunsPanel, view: &mut RunsView) -> Option<RunsAction> {
    let mut action = None;
    ui.horizontal(|ui| {
        ui.heading("Runs");
        if ui
            .small_button("refresh")
            .on_hover_text("list the run folders again")
            .clicked()
        {
            action = Some(RunsAction::Refresh);
        }
    });
    ui.label(RichText::new(p.runs_dir.display().to_string()).small());
    if let Some(e) = p.open_error {
        ui.label(RichText::new(e).color(Color32::from_rgb(230, 90, 70)));
    }
    if let Some(e) = p.listing_error {
        ui.label(RichText::new(e).color(Color32::from_rgb(230, 90, 70)));
    }
    ui.separator();
    ui.label(RichText::new("Start a recipe").strong());
    ui.horizontal(|ui| {
        ui.add(
            egui::TextEdit::singleline(&mut view.recipe)
                .hint_text("assets/recipes/smoke.toml")
                .desired_width(170.0),
        );
        let ok = !p.busy && !view.recipe.trim().is_empty();
        if ui
            .add_enabled(ok, egui::Button::new("start"))
            .on_hover_text("train it here; an existing run of the recipe is resumed")
            .clicked()
        {
            action = Some(RunsAction::Start(PathBuf::from(view.recipe.trim())));
        }
    });
    if let Some(run) = p.open
        && let Some(job) = run.job()
        && job.running()
    {
        let label = if job.stopping() {
            "stopping…"
        } else {
            "stop"
        };
        if ui
            .add_enabled(!job.stopping(), egui::Button::new(label))
            .on_hover_text("checkpoint after the current step and stop; resume later")
            .clicked()
        {
            action = Some(RunsAction::Stop);
        }
    }
    ui.separator();
    egui::ScrollArea::vertical().show(ui, |ui| {
        if p.runs.is_empty() && p.listing_error.is_none() {
            ui.label("No run folders yet.");
        }
        for r in p.runs {
            let is_open = p.open.is_some_and(|o| o.dir == r.path);
            let is_compare = p.compare == Some(r.name.as_str());
            ui.horizontal(|ui| {
                let mark = if r.has_report {
                    "evaluated"
                } else if r.resumable {
                    "resumable"
                } else {
                    ""
                };
                if ui
                    .selectable_label(is_open, r.name.as_str())
                    .on_hover_text(r.path.display().to_string())
                    .clicked()
                {
                    action = Some(RunsAction::Open(r.path.clone()));
                }
                if !is_open
                    && ui
                        .selectable_label(is_compare, "vs")
                        .on_hover_text("compare with the open run")
                        .clicked()
                {
                    action = Some(RunsAction::Compare(r.path.clone()));
                }
                if !mark.is_empty() {
                    ui.label(RichText::new(mark).small().weak());
                }
                // never beside a live writer: only a stopped run, or one whose writer went
                // quiet (killed) long ago
                let idle = p.open.is_some_and(|o| {
                    o.history.status == RunStatus::Stopped
                        || o.quiet_for().is_some_and(|q| q > STALE_WRITER_S)
                });
                if is_open
                    && idle
                    && r.resumable
                    && !r.has_report
                    && !p.busy
                    && ui.small_button("resume").clicked()
                {
                    action = Some(RunsAction::Resume(r.path.clone()));
                }
            });
        }
    });
    action
}
