//! Losses: every logged loss term of the run (CE, response KL `res`, visual KL `vis`, relation
//! `rel`, hidden MSE, MoE aux/z, preference loss and reward margin, ...) over global steps, with
//! smoothing, an optional log scale, stage boundaries marked and the values under the cursor.

use std::collections::BTreeSet;

use eframe::egui::{self, Color32, Ui};
use egui_plot::{Legend, Line, Plot, PlotPoints, Text, VLine};

use crate::gui::OpenRun;
use crate::gui::widgets::smooth::ema;
use condenser_engine::train::history::{LR, Series};

/// The panel's settings.
#[derive(Debug, Clone)]
pub struct LossView {
    /// EMA weight on the past, 0 = raw.
    pub smoothing: f64,
    pub log_scale: bool,
    /// Terms the user switched off.
    pub hidden: BTreeSet<String>,
}

impl Default for LossView {
    fn default() -> Self {
        LossView {
            smoothing: 0.6,
            log_scale: true,
            hidden: BTreeSet::new(),
        }
    }
}

/// What a term is, for the legend's hover.
fn describe(term: &str) -> &'static str {
    match term {
        "loss" => "total weighted loss",
        "ce" => "cross-entropy on response tokens",
        "res" => "response-token divergence to the teacher (LLaVA-KD L_res)",
        "vis" => "visual-token divergence to the teacher (LLaVA-KD L_vis)",
        "rel" => "relation distillation 1 - cos(R_s, R_t) (LLaVA-KD RDist)",
        "hidden" => "hidden-state MSE to the teacher (LLaVADI)",
        "moe_aux" => "MoE load-balancing loss",
        "moe_z" => "router z-loss",
        "pref" => "preference loss (DPO family, teacher as reference)",
        "margin" => "preference reward margin (chosen - rejected)",
        "region" => "region term of the contrastive objective",
        _ => "loss term",
    }
}

/// One colour per term, by its position in the run's term list (the same term keeps its colour
/// across all its segments).
const COLOURS: [Color32; 10] = [
    Color32::from_rgb(230, 230, 230),
    Color32::from_rgb(86, 156, 214),
    Color32::from_rgb(214, 122, 66),
    Color32::from_rgb(110, 200, 110),
    Color32::from_rgb(200, 90, 200),
    Color32::from_rgb(70, 200, 200),
    Color32::from_rgb(230, 200, 70),
    Color32::from_rgb(230, 90, 90),
    Color32::from_rgb(150, 130, 230),
    Color32::from_rgb(160, 160, 110),
];

/// Splits a series where steps are missing (a term absent from a stage), so no line is drawn
/// across a stage that did not log it.
pub fn segments(points: &[[f64; 2]]) -> Vec<&[[f64; 2]]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..points.len() {
        if points[i][0] - points[i - 1][0] > 1.5 {
            out.push(&points[start..i]);
            start = i;
        }
    }
    if start < points.len() {
        out.push(&points[start..]);
    }
    out
}

/// A term's colour index, name and plotted segments.
type Curve<'a> = (usize, &'a str, Vec<Vec<[f64; 2]>>);

/// Terms that can be negative or are not losses: never on a log axis.
fn linear_only(term: &str) -> bool {
    term == "margin"
}

pub fn show(ui: &mut Ui, run: &OpenRun, view: &mut LossView) {
    let h = &run.history;
    ui.heading("Losses");
    super::warnings(ui, run);
    let terms = h.loss_terms();
    if terms.is_empty() {
        ui.label("No step logged yet.");
        return;
    }
    ui.horizontal_wrapped(|ui| {
        ui.add(egui::Slider::new(&mut view.smoothing, 0.0..=0.99).text("smoothing"));
        ui.checkbox(&mut view.log_scale, "log scale");
        ui.separator();
        for t in &terms {
            let mut on = !view.hidden.contains(*t);
            if ui
                .checkbox(&mut on, *t)
                .on_hover_text(describe(t))
                .changed()
            {
                if on {
                    view.hidden.remove(*t);
                } else {
                    view.hidden.insert(t.to_string());
                }
            }
        }
    });
    let log = view.log_scale;
    let boundaries = h.stage_boundaries();
    let plot_h = (ui.available_height() - 150.0).max(200.0);
    // smoothed per segment (never across a stage that did not log the term), then log10
    let transform = |term: &str, s: &Series| -> Vec<Vec<[f64; 2]>> {
        segments(&s.points)
            .into_iter()
            .map(|seg| {
                let pts = ema(seg, view.smoothing);
                if log && !linear_only(term) {
                    pts.into_iter()
                        .filter(|p| p[1] > 0.0)
                        .map(|[x, y]| [x, y.log10()])
                        .collect()
                } else {
                    pts
                }
            })
            .collect()
    };
    let curves: Vec<Curve> = terms
        .iter()
        .enumerate()
        .filter(|(_, t)| !view.hidden.contains(**t))
        .filter_map(|(i, t)| h.series.get(*t).map(|s| (i, *t, transform(t, s))))
        .collect();
    let y_top = curves
        .iter()
        .flat_map(|c| c.2.iter().flatten())
        .map(|p| p[1])
        .fold(f64::NEG_INFINITY, f64::max);
    Plot::new("losses")
        .height(plot_h)
        .legend(Legend::default())
        .x_axis_label("global step")
        .y_axis_label(if log { "loss (log10)" } else { "loss" })
        .y_axis_formatter(move |m, _| {
            if log {
                format!("{:.3}", 10f64.powf(m.value))
            } else {
                format!("{:.3}", m.value)
            }
        })
        .label_formatter(move |hover| match hover {
            egui_plot::HoverPosition::NearDataPoint {
                plot_name,
                position,
                ..
            } => {
                let y = if log && !linear_only(plot_name) {
                    10f64.powf(position.y)
                } else {
                    position.y
                };
                Some(format!("{plot_name}\nstep {:.0}\nvalue {y:.5}", position.x))
            }
            _ => None,
        })
        .show(ui, |plot| {
            for (i, t, segs) in &curves {
                for seg in segs {
                    plot.line(
                        Line::new(*t, PlotPoints::from(seg.clone()))
                            .color(COLOURS[i % COLOURS.len()])
                            .width(1.5),
                    );
                }
            }
            // unnamed items stay out of the legend
            for (x, name) in &boundaries {
                plot.vline(
                    VLine::new("", *x as f64)
                        .color(Color32::from_gray(140))
                        .style(egui_plot::LineStyle::dashed_loose()),
                );
                if y_top.is_finite() {
                    plot.text(
                        Text::new(
                            "",
                            egui_plot::PlotPoint::new(*x as f64, y_top),
                            format!(" {name}"),
                        )
                        .anchor(egui::Align2::LEFT_TOP),
                    );
                }
            }
        });
    if let Some(lr) = h.series.get(LR) {
        Plot::new("lr")
            .height(110.0)
            .x_axis_label("global step")
            .y_axis_label("learning rate")
            .show(ui, |plot| {
                plot.line(Line::new("lr", PlotPoints::from(lr.points.clone())).width(1.0));
                for (x, _) in &boundaries {
                    plot.vline(VLine::new("", *x as f64).color(Color32::from_gray(140)));
                }
            });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_split_at_missing_steps() {
        let pts = [[1.0, 0.0], [2.0, 0.0], [5.0, 0.0], [6.0, 0.0], [9.0, 0.0]];
        let segs = super::segments(&pts);
        assert_eq!(
            segs.iter().map(|s| s.len()).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        assert!(super::segments(&[]).is_empty());
    }
}
