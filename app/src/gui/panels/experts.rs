//! Experts: for MoE students, the layer x expert heatmap of token share at one step (scrub
//! through the run's steps), split into visual and text tokens, with dropped tokens and router
//! entropy per layer and a warning for any expert that has (nearly) stopped receiving tokens.

use eframe::egui::{self, Color32, RichText, Ui, vec2};

use crate::gui::OpenRun;
use crate::gui::widgets::heatmap::legend;
use crate::gui::widgets::palette::Palette;
use crate::gui::widgets::scrub::scrub;
use crate::gui::widgets::{Heatmap, heatmap};
use condenser_engine::train::history::{RoutingSnapshot, dead_experts};

/// Which tokens a heatmap counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSplit {
    All,
    Visual,
    Text,
}

/// The panel's settings.
#[derive(Debug, Clone)]
pub struct ExpertView {
    /// Index into the run's routing snapshots; `None` follows the newest.
    pub step: Option<usize>,
    pub split: TokenSplit,
    /// Steps averaged into one heatmap (ending at the chosen one): one step is noisy.
    pub window: usize,
}

impl Default for ExpertView {
    fn default() -> Self {
        ExpertView {
            step: None,
            split: TokenSplit::All,
            window: 10,
        }
    }
}

/// Steps over which a dead expert is judged, and the share of a uniform share below which it
/// counts as dead.
const DEAD_WINDOW: usize = 50;
const DEAD_FRACTION: f64 = 0.1;

/// Share of each expert per layer over `snaps`, row-major `layers x experts`.
pub fn shares(snaps: &[RoutingSnapshot], split: TokenSplit) -> (Vec<f32>, usize, usize) {
    let Some(first) = snaps.first() else {
        return (Vec::new(), 0, 0);
    };
    let layers = first.layers.len();
    let experts = first.layers.first().map_or(0, |l| l.visual.len());
    let mut counts = vec![0usize; layers * experts];
    for s in snaps {
        for (li, l) in s.layers.iter().enumerate().take(layers) {
            for e in 0..experts.min(l.visual.len()) {
                counts[li * experts + e] += match split {
                    TokenSplit::All => l.visual[e] + l.text[e],
                    TokenSplit::Visual => l.visual[e],
                    TokenSplit::Text => l.text[e],
                };
            }
        }
    }
    let mut out = vec![0f32; layers * experts];
    for li in 0..layers {
        let row = &counts[li * experts..(li + 1) * experts];
        let total: usize = row.iter().sum();
        for e in 0..experts {
            out[li * experts + e] = row[e] as f32 / total.max(1) as f32;
        }
    }
    (out, layers, experts)
}

pub fn show(ui: &mut Ui, run: &OpenRun, view: &mut ExpertView) {
    ui.heading("Experts");
    super::warnings(ui, run);
    let routing = &run.history.routing;
    if routing.is_empty() {
        ui.label("This run logged no MoE routing: the student is dense (no expert layers).");
        return;
    }
    let mut idx = 0;
    ui.horizontal(|ui| {
        idx = scrub(ui, &mut view.step, routing.len(), "step", |i| {
            routing[i].global_step.to_string()
        });
        ui.add(egui::Slider::new(&mut view.window, 1..=100).text("steps averaged"));
        ui.separator();
        ui.selectable_value(&mut view.split, TokenSplit::All, "all tokens");
        ui.selectable_value(&mut view.split, TokenSplit::Visual, "visual");
        ui.selectable_value(&mut view.split, TokenSplit::Text, "text");
    });
    let from = (idx + 1).saturating_sub(view.window.max(1));
    let snaps = &routing[from..=idx];
    let at = &routing[idx];
    ui.label(format!(
        "global steps {}–{} (stage {})",
        snaps[0].global_step, at.global_step, at.stage
    ));
    let (values, layers, experts) = shares(snaps, view.split);
    let layer_ids: Vec<usize> = at.layers.iter().map(|l| l.layer).collect();
    let row_label = |r: usize| format!("layer {}", layer_ids.get(r).copied().unwrap_or(r));
    let col_label = |c: usize| format!("E{c}");
    let pct = |v: f32| format!("{:.0}%", 100.0 * v);
    let cell = (360.0 / experts.max(1) as f32).clamp(24.0, 64.0);
    ui.horizontal(|ui| {
        ui.vertical(|ui| {
            heatmap(
                ui,
                &Heatmap {
                    values: &values,
                    rows: layers,
                    cols: experts,
                    range: (0.0, 1.0),
                    palette: Palette::Sequential,
                    size: vec2(cell * experts as f32, 28.0 * layers as f32),
                    row_label: &row_label,
                    col_label: &col_label,
                    annotate: true,
                    format: &pct,
                },
            );
            legend(ui, Palette::Sequential, (0.0, 1.0), 160.0, &pct);
        });
        ui.add_space(16.0);
        egui::Grid::new("layer-stats").striped(true).show(ui, |ui| {
            for head in ["layer", "dropped", "entropy (nats)", "top expert"] {
                ui.label(RichText::new(head).strong());
            }
            ui.end_row();
            for (li, l) in at.layers.iter().enumerate() {
                let dropped: usize = snaps
                    .iter()
                    .filter_map(|s| s.layers.get(li))
                    .map(|l| l.dropped)
                    .sum();
                let row = &values[li * experts..(li + 1) * experts];
                let (top, share) = row
                    .iter()
                    .enumerate()
                    .fold((0, 0.0f32), |b, (e, v)| if *v > b.1 { (e, *v) } else { b });
                ui.label(l.layer.to_string());
                ui.label(dropped.to_string());
                ui.label(format!("{:.3}", l.entropy));
                let text = format!("E{top} {:.0}%", 100.0 * share);
                if share > 0.6 {
                    ui.label(
                        RichText::new(text + " (collapsing)")
                            .color(Color32::from_rgb(230, 120, 40)),
                    );
                } else {
                    ui.label(text);
                }
                ui.end_row();
            }
        });
    });
    let dead = dead_experts(&routing[..=idx], DEAD_WINDOW, DEAD_FRACTION);
    if dead.is_empty() {
        ui.label(format!(
            "No dead expert: every expert took at least {:.0}% of a uniform share over the last {DEAD_WINDOW} steps.",
            100.0 * DEAD_FRACTION
        ));
    } else {
        for (layer, e, share) in dead {
            ui.label(
                RichText::new(format!(
                    "warning: dead expert: layer {layer} E{e} took {:.1}% of the tokens over the last {DEAD_WINDOW} steps",
                    100.0 * share
                ))
                .color(Color32::from_rgb(230, 80, 60)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use condenser_engine::model::moe::LayerRouting;

    #[test]
    fn shares_per_layer_sum_to_one() {
        let snap = |v: Vec<usize>, t: Vec<usize>| RoutingSnapshot {
            global_step: 1,
            stage: 0,
            layers: vec![LayerRouting {
                layer: 1,
                visual: v,
                text: t,
                dropped: 0,
                entropy: 0.5,
            }],
        };
        let snaps = [snap(vec![3, 1], vec![0, 4]), snap(vec![1, 3], vec![0, 0])];
        let (all, l, e) = shares(&snaps, TokenSplit::All);
        assert_eq!((l, e), (1, 2));
        assert_eq!(all, vec![4.0 / 12.0, 8.0 / 12.0]);
        let (vis, ..) = shares(&snaps, TokenSplit::Visual);
        assert_eq!(vis, vec![0.5, 0.5]);
        let (text, ..) = shares(&snaps, TokenSplit::Text);
        assert_eq!(text, vec![0.0, 1.0]);
    }
}
