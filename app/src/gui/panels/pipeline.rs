//! Pipeline: the stages as a timeline (one block per stage, its width its share of the steps),
//! then a row per stage with progress, step, ETA, tokens/s and its mean loss once done.

use eframe::egui::{self, Align2, Color32, FontId, RichText, Sense, Stroke, Ui, pos2, vec2};

use condenser_engine::train::RunStatus;

use super::{count, duration};
use crate::gui::OpenRun;

pub fn show(ui: &mut Ui, run: &OpenRun) {
    let h = &run.history;
    ui.heading(format!("Run {}", run.name));
    super::warnings(ui, run);
    ui.horizontal_wrapped(|ui| {
        let (status, color) = match h.status {
            RunStatus::NotStarted => ("not started", Color32::GRAY),
            RunStatus::Running if run.training_here() => ("training here", Color32::LIGHT_GREEN),
            RunStatus::Running => ("running", Color32::LIGHT_GREEN),
            RunStatus::Stopped => ("stopped (resumable)", Color32::from_rgb(230, 160, 40)),
            RunStatus::Finished => ("finished", Color32::LIGHT_BLUE),
        };
        ui.label(RichText::new(status).strong().color(color));
        if let Some(job) = run.job()
            && job.stopping()
        {
            ui.label("— stopping after this step…");
        }
        if let Some(q) = run.quiet_for()
            && q > super::runs::STALE_WRITER_S
        {
            ui.label(format!("(no event for {}; killed?)", duration(q)));
        }
        ui.separator();
        ui.label(format!(
            "device: {}",
            if h.device.is_empty() {
                "—"
            } else {
                &h.device
            }
        ));
        ui.separator();
        ui.label(format!("global step {}", h.global_step));
        ui.separator();
        ui.label(format!(
            "elapsed {}",
            duration(h.seconds.unwrap_or(h.elapsed_s))
        ));
        if let Some([total, vision, projector, llm]) = h.params {
            ui.separator();
            ui.label(format!(
                "{} params (vision {}, projector {}, llm {})",
                count(total),
                count(vision),
                count(projector),
                count(llm)
            ));
        }
        if !h.resumed_from.is_empty() {
            ui.separator();
            ui.label(format!("resumed {}×", h.resumed_from.len()));
        }
    });
    ui.add_space(8.0);
    if h.stages.is_empty() {
        ui.label("No stage has started yet.");
        return;
    }
    timeline(ui, run);
    ui.add_space(8.0);
    egui::Grid::new("stages")
        .striped(true)
        .num_columns(8)
        .show(ui, |ui| {
            for head in [
                "stage",
                "progress",
                "step",
                "ETA",
                "tokens/s",
                "examples",
                "mean loss",
                "time",
            ] {
                ui.label(RichText::new(head).strong());
            }
            ui.end_row();
            for s in &h.stages {
                ui.label(format!("{} {}", s.index, s.name));
                let current = h.current_stage == Some(s.index) && !s.finished();
                let bar = egui::ProgressBar::new(s.fraction())
                    .desired_width(220.0)
                    .text(format!("{:.0}%", 100.0 * s.fraction()));
                ui.add(if current {
                    bar.animate(run.training_here())
                } else {
                    bar
                });
                ui.label(format!("{}/{}", s.done, s.steps));
                // an ETA only while something is training
                let eta = s.eta_s().filter(|_| h.status == RunStatus::Running);
                ui.label(eta.map_or("—".into(), duration));
                ui.label(if s.tokens_per_s > 0.0 {
                    format!("{:.0}", s.tokens_per_s)
                } else {
                    "—".into()
                });
                ui.label(s.examples.to_string());
                ui.label(s.mean_loss.map_or("—".into(), |l| format!("{l:.4}")));
                ui.label(s.seconds.map_or("—".into(), duration));
                ui.end_row();
            }
            for (i, name) in pending(run) {
                ui.label(format!("{i} {name}"));
                ui.label(RichText::new("not started").weak());
                for _ in 0..6 {
                    ui.label("—");
                }
                ui.end_row();
            }
        });
    if let Some((split, acc, n)) = &h.eval {
        ui.add_space(8.0);
        ui.label(
            RichText::new(format!(
                "Evaluation on {split}: {:.1}% exact match over {n} questions",
                100.0 * acc
            ))
            .strong(),
        );
    }
    if let Some((step, path)) = h.checkpoints.last() {
        ui.label(format!("newest checkpoint: {path} (global step {step})"));
    }
}

/// Stages of the saved recipe that have not started: `(index, name)`.
fn pending(run: &OpenRun) -> impl Iterator<Item = (usize, &str)> {
    run.planned_stages
        .iter()
        .enumerate()
        .skip(run.history.stages.len())
        .map(|(i, n)| (i, n.as_str()))
}

/// Stages as blocks on one line: done part filled, the current one outlined; stages not yet
/// started (their step counts unknown until they begin) as outlines of the mean known width.
fn timeline(ui: &mut Ui, run: &OpenRun) {
    let h = &run.history;
    let known: usize = h.stages.iter().map(|s| s.steps.max(1)).sum();
    let mean = known / h.stages.len().max(1);
    let total = known + mean * pending(run).count();
    let width = ui.available_width().min(900.0);
    let (rect, _) = ui.allocate_exact_size(vec2(width, 34.0), Sense::hover());
    let painter = ui.painter_at(rect);
    let mut x = rect.min.x;
    for s in &h.stages {
        let w = width * s.steps.max(1) as f32 / total as f32;
        let block = egui::Rect::from_min_size(pos2(x, rect.min.y), vec2(w - 2.0, rect.height()));
        painter.rect_filled(block, 3.0, Color32::from_gray(60));
        let done = egui::Rect::from_min_size(
            block.min,
            vec2(block.width() * s.fraction(), block.height()),
        );
        let fill = if s.finished() {
            Color32::from_rgb(70, 130, 180)
        } else {
            Color32::from_rgb(90, 170, 90)
        };
        painter.rect_filled(done, 3.0, fill);
        if h.current_stage == Some(s.index) && !s.finished() {
            painter.rect_stroke(
                block,
                3.0,
                Stroke::new(2.0, Color32::WHITE),
                egui::StrokeKind::Inside,
            );
        }
        painter.text(
            block.center(),
            Align2::CENTER_CENTER,
            &s.name,
            FontId::proportional(13.0),
            Color32::WHITE,
        );
        x += w;
    }
    for (_, name) in pending(run) {
        let w = width * mean as f32 / total.max(1) as f32;
        let block = egui::Rect::from_min_size(pos2(x, rect.min.y), vec2(w - 2.0, rect.height()));
        painter.rect_stroke(
            block,
            3.0,
            Stroke::new(1.0, Color32::from_gray(110)),
            egui::StrokeKind::Inside,
        );
        painter.text(
            block.center(),
            Align2::CENTER_CENTER,
            name,
            FontId::proportional(13.0),
            Color32::from_gray(150),
        );
        x += w;
    }
}
