//! Relations: the teacher's and the student's visual-token self-correlation matrices (LLaVA-KD's
//! RDist) side by side at one logged step, scrubbable, with the relation loss at that step.
//! Relation distillation works when the student's matrix comes to look like the teacher's.

use eframe::egui::{RichText, Ui, vec2};

use crate::gui::OpenRun;
use crate::gui::widgets::heatmap::legend;
use crate::gui::widgets::palette::Palette;
use crate::gui::widgets::scrub::scrub;
use crate::gui::widgets::{Heatmap, heatmap};

#[derive(Debug, Clone, Default)]
pub struct RelationView {
    /// Index into the run's relation snapshots; `None` follows the newest.
    pub index: Option<usize>,
}

pub fn show(ui: &mut Ui, run: &OpenRun, view: &mut RelationView) {
    ui.heading("Relations (RDist)");
    super::warnings(ui, run);
    let rel = &run.history.relations;
    if rel.is_empty() {
        ui.label(
            "No relation matrices logged: this run has no distillation stage with a relation \
             term (`rel` > 0).",
        );
        return;
    }
    let mut idx = 0;
    ui.horizontal(|ui| {
        idx = scrub(ui, &mut view.index, rel.len(), "snapshot", |i| {
            format!("step {}", rel[i].global_step)
        });
    });
    let snap = &rel[idx];
    let loss = run
        .history
        .series
        .get("rel")
        .and_then(|s| s.points.iter().find(|p| p[0] as usize == snap.global_step))
        .map(|p| p[1]);
    ui.label(format!(
        "global step {}, stage {}: {} visual tokens of the batch's first example{}",
        snap.global_step,
        snap.stage,
        snap.n,
        loss.map_or(String::new(), |l| format!("; relation loss (batch) {l:.4}"))
    ));
    let side = (ui.available_width() / 2.0 - 90.0).clamp(120.0, 360.0);
    let tok = |i: usize| format!("v{i}");
    let fmt = |v: f32| format!("{v:.2}");
    ui.horizontal(|ui| {
        for (title, values) in [("teacher", &snap.teacher), ("student", &snap.student)] {
            ui.vertical(|ui| {
                ui.label(RichText::new(title).strong());
                heatmap(
                    ui,
                    &Heatmap {
                        values,
                        rows: snap.n,
                        cols: snap.n,
                        range: (-1.0, 1.0),
                        palette: Palette::Diverging,
                        size: vec2(side, side),
                        row_label: &tok,
                        col_label: &tok,
                        annotate: snap.n <= 8,
                        format: &fmt,
                    },
                );
            });
            ui.add_space(12.0);
        }
    });
    legend(ui, Palette::Diverging, (-1.0, 1.0), 160.0, &fmt);
}
