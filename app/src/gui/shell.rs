//! The window: eframe with the wgpu renderer (the same wgpu 30 burn trains on, so one GPU stack
//! serves both), the app drawn each frame, and an optional timed exit that prints the frame-time
//! summary (used by the screenshot script and to measure responsiveness while a run trains).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use eframe::egui;

use condenser_engine::backend::DeviceInfo;
use condenser_engine::burn::prelude::Device;

use super::app::{CondenserApp, Tab};

/// How `condenser gui` starts.
pub struct GuiOptions {
    pub runs_dir: PathBuf,
    /// A run (name under `runs_dir`, or folder) to open at start.
    pub open: Option<PathBuf>,
    /// A run to compare the open one with.
    pub compare: Option<PathBuf>,
    /// A recipe to start training at once.
    pub start: Option<PathBuf>,
    /// The tab shown first; `None`: Pipeline, or Compare when `compare` is given.
    pub tab: Option<Tab>,
    pub device: Option<(Device, DeviceInfo)>,
    pub overlay: bool,
    /// Close the window after this long and print the frame-time summary.
    pub exit_after: Option<Duration>,
    pub size: [f32; 2],
}

struct Shell {
    app: CondenserApp,
    start: Option<PathBuf>,
    exit_after: Option<Duration>,
    opened: Instant,
    closing: bool,
}

impl eframe::App for Shell {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        if let Some(recipe) = self.start.take() {
            let ctx = ui.ctx().clone();
            self.app.start(&recipe, &ctx);
        }
        let t = self.app.frames.begin();
        self.app.ui(ui);
        self.app.frames.end(t);
        if let Some(limit) = self.exit_after {
            if !self.closing && self.opened.elapsed() >= limit {
                self.closing = true;
                let (build, interval) = self.app.frames.session();
                eprintln!("frame build: {build}");
                eprintln!("frame interval: {interval}");
                if let Some(job) = self.app.open.as_ref().and_then(|o| o.job()) {
                    job.request_stop();
                }
                ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
            } else {
                ui.ctx().request_repaint_after(Duration::from_millis(100));
            }
        }
    }
}

/// Opens the window and returns when it is closed.
pub fn launch(opts: GuiOptions) -> anyhow::Result<()> {
    let mut app = CondenserApp::new(opts.runs_dir, opts.device);
    app.show_overlay = opts.overlay;
    if let Some(r) = &opts.open {
        let dir = app.resolve(r);
        app.open_run(&dir);
    }
    if let Some(c) = &opts.compare {
        let dir = app.resolve(c);
        app.compare_with(&dir);
    }
    if let Some(tab) = opts.tab {
        app.tab = tab;
    }
    let shell = Shell {
        app,
        start: opts.start,
        exit_after: opts.exit_after,
        opened: Instant::now(),
        closing: false,
    };
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Condenser")
            .with_inner_size(opts.size),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native("Condenser", native, Box::new(|_cc| Ok(Box::new(shell))))
        .map_err(|e| anyhow::anyhow!("the window could not be opened: {e}"))
}
