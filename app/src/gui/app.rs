//! The app's state and layout: the runs list on the left, one tab per view in the middle, the
//! frame-time overlay at the bottom. It owns the open run (and the one compared with it) and
//! carries out what the runs panel asks for; the drawing itself is in `panels/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eframe::egui::{self, RichText, Ui};

use condenser_engine::backend::DeviceInfo;
use condenser_engine::burn::prelude::Device;
use condenser_engine::run::{RunDir, RunFolder, Runs};
use condenser_engine::train::RunOptions;

use super::frame_stats::FrameStats;
use super::job::Job;
use super::panels::{compare, experts, losses, overlay, pipeline, relations, runs, samples};
use super::run::OpenRun;

/// The views of the central area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tab {
    Pipeline,
    Losses,
    Experts,
    Relations,
    Samples,
    Compare,
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Pipeline,
        Tab::Losses,
        Tab::Experts,
        Tab::Relations,
        Tab::Samples,
        Tab::Compare,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Tab::Pipeline => "Pipeline",
            Tab::Losses => "Losses",
            Tab::Experts => "Experts",
            Tab::Relations => "Relations",
            Tab::Samples => "Samples",
            Tab::Compare => "Compare",
        }
    }
}

/// How often the runs folder is listed again.
const LIST_EVERY: Duration = Duration::from_secs(3);

pub struct CondenserApp {
    pub runs_dir: PathBuf,
    pub runs: Vec<RunFolder>,
    pub listing_error: Option<String>,
    pub open: Option<OpenRun>,
    pub open_error: Option<String>,
    pub compare: Option<OpenRun>,
    pub tab: Tab,
    pub runs_view: runs::RunsView,
    pub loss_view: losses::LossView,
    pub expert_view: experts::ExpertView,
    pub relation_view: relations::RelationView,
    pub sample_view: samples::SampleView,
    /// Where runs started here train; `None` when the app may only watch.
    pub device: Option<(Device, DeviceInfo)>,
    pub frames: FrameStats,
    pub show_overlay: bool,
    last_listing: Option<Instant>,
}

impl CondenserApp {
    pub fn new(runs_dir: PathBuf, device: Option<(Device, DeviceInfo)>) -> Self {
        let mut app = CondenserApp {
            runs_dir,
            runs: Vec::new(),
            listing_error: None,
            open: None,
            open_error: None,
            compare: None,
            tab: Tab::Pipeline,
            runs_view: runs::RunsView::default(),
            loss_view: losses::LossView::default(),
            expert_view: experts::ExpertView::default(),
            relation_view: relations::RelationView::default(),
            sample_view: samples::SampleView::default(),
            device,
            frames: FrameStats::default(),
            show_overlay: false,
            last_listing: None,
        };
        app.list();
        app
    }

    /// Lists the run folders again.
    pub fn list(&mut self) {
        self.last_listing = Some(Instant::now());
        match Runs::new(&self.runs_dir).list() {
            Ok(r) => {
                self.runs = r;
                self.listing_error = None;
            }
            Err(e) => {
                self.runs.clear();
                self.listing_error = Some(format!("cannot list runs: {e}"));
            }
        }
    }

    /// A run name under the runs folder, or a path.
    pub fn resolve(&self, run: &Path) -> PathBuf {
        if run.is_dir() || run.components().count() > 1 {
            run.to_path_buf()
        } else {
            Runs::new(&self.runs_dir)
                .run(&run.to_string_lossy())
                .path()
                .to_path_buf()
        }
    }

    pub fn open_run(&mut self, dir: &Path) {
        if self.open.as_ref().is_some_and(|o| o.training_here()) {
            self.open_error = Some("a run is training here: stop it before opening another".into());
            return;
        }
        match OpenRun::open(dir) {
            Ok(r) => {
                self.open = Some(r);
                self.open_error = None;
                self.expert_view = experts::ExpertView::default();
                self.relation_view = relations::RelationView::default();
            }
            Err(e) => self.open_error = Some(e),
        }
    }

    pub fn compare_with(&mut self, dir: &Path) {
        match OpenRun::open(dir) {
            Ok(r) => {
                self.compare = Some(r);
                self.tab = Tab::Compare;
            }
            Err(e) => self.open_error = Some(e),
        }
    }

    /// Starts (or resumes) a recipe on a background thread and opens its run.
    pub fn start(&mut self, recipe_path: &Path, ctx: &egui::Context) {
        let result = (|| -> Result<(), String> {
            if self.open.as_ref().is_some_and(|o| o.training_here()) {
                return Err("a run is already training here".into());
            }
            let (device, info) = self
                .device
                .clone()
                .ok_or("this window was opened to watch only (no device)")?;
            let runs = Runs::new(&self.runs_dir);
            let recipe = runs.load_recipe(recipe_path).map_err(|e| e.to_string())?;
            let dir = runs.run(&recipe.name).path().to_path_buf();
            let opts = RunOptions {
                runs_dir: self.runs_dir.clone(),
                resume: true,
                ..RunOptions::default()
            };
            let ctx = ctx.clone();
            let job = Job::start(recipe, device, info, opts, move || ctx.request_repaint());
            self.open = Some(OpenRun::from_job(&dir, job));
            self.tab = Tab::Pipeline;
            Ok(())
        })();
        self.open_error = result.err();
        self.list();
    }

    /// Draws the whole window.
    pub fn ui(&mut self, ui: &mut Ui) {
        if let Some(o) = &mut self.open {
            o.refresh();
        }
        if let Some(c) = &mut self.compare {
            c.refresh();
        }
        if self.last_listing.is_none_or(|t| t.elapsed() > LIST_EVERY) {
            self.list();
        }
        let ctx = ui.ctx().clone();
        let live = self
            .open
            .as_ref()
            .is_some_and(|o| o.training_here() || o.quiet_for().is_some());
        if self.show_overlay {
            ctx.request_repaint();
        } else if live {
            ctx.request_repaint_after(Duration::from_millis(250));
        }

        egui::Panel::top("tabs").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.label(RichText::new("Condenser").strong());
                ui.separator();
                for t in Tab::ALL {
                    ui.selectable_value(&mut self.tab, t, t.label());
                }
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    ui.checkbox(&mut self.show_overlay, "frame times");
                });
            });
        });
        if self.show_overlay {
            let training = self.open.as_ref().is_some_and(OpenRun::training_here);
            egui::Panel::bottom("overlay").show(ui, |ui| {
                overlay::show(ui, &self.frames, training);
            });
        }
        let action = egui::Panel::left("runs")
            .default_size(300.0)
            .show(ui, |ui| {
                runs::show(
                    ui,
                    &runs::RunsPanel {
                        runs_dir: &self.runs_dir,
                        runs: &self.runs,
                        listing_error: self.listing_error.as_deref(),
                        open: self.open.as_ref(),
                        open_error: self.open_error.as_deref(),
                        compare: self.compare.as_ref().map(|c| c.name.as_str()),
                        busy: self.open.as_ref().is_some_and(OpenRun::training_here),
                    },
                    &mut self.runs_view,
                )
            })
            .inner;
        egui::CentralPanel::default().show(ui, |ui| match &self.open {
            None => {
                ui.heading("No run open");
                ui.label("Open a run folder on the left, or start a recipe.");
            }
            Some(run) => match self.tab {
                Tab::Pipeline => pipeline::show(ui, run),
                Tab::Losses => losses::show(ui, run, &mut self.loss_view),
                Tab::Experts => experts::show(ui, run, &mut self.expert_view),
                Tab::Relations => relations::show(ui, run, &mut self.relation_view),
                Tab::Samples => samples::show(ui, run, &mut self.sample_view),
                Tab::Compare => compare::show(ui, run, self.compare.as_ref()),
            },
        });
        match action {
            None => {}
            Some(runs::RunsAction::Open(p)) => self.open_run(&p),
            Some(runs::RunsAction::Compare(p)) => self.compare_with(&p),
            Some(runs::RunsAction::Refresh) => self.list(),
            Some(runs::RunsAction::Start(p)) => self.start(&p, &ctx),
            Some(runs::RunsAction::Resume(dir)) => {
                self.start(&RunDir::new(dir).recipe_file(), &ctx)
            }
            Some(runs::RunsAction::Stop) => {
                if let Some(job) = self.open.as_ref().and_then(OpenRun::job) {
                    job.request_stop();
                }
            }
        }
    }
}
