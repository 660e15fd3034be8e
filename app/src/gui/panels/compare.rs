//! Compare: two runs' reports side by side, every metric with its delta (B - A).

use eframe::egui::{self, Color32, RichText, Ui};

use condenser_engine::run::SavedReport;

use super::count;
use crate::gui::OpenRun;

/// One row of the comparison: a label and each run's value (percent points or a count).
struct Row {
    label: String,
    a: Option<f64>,
    b: Option<f64>,
    /// Higher is better (accuracy) or lower is better (POPE yes-ratio on absent objects).
    higher_is_better: Option<bool>,
    percent: bool,
}

fn rows(a: &SavedReport, b: &SavedReport) -> Vec<Row> {
    let pct = |label: String, x: Option<f64>, y: Option<f64>, better: Option<bool>| Row {
        label,
        a: x.map(|v| 100.0 * v),
        b: y.map(|v| 100.0 * v),
        higher_is_better: better,
        percent: true,
    };
    let mut out = vec![pct(
        "overall exact match".into(),
        Some(a.eval.accuracy),
        Some(b.eval.accuracy),
        Some(true),
    )];
    let types: std::collections::BTreeSet<&String> =
        a.eval.by_type.keys().chain(b.eval.by_type.keys()).collect();
    for t in types {
        out.push(pct(
            t.clone(),
            a.eval.by_type.get(t).map(|s| s.accuracy),
            b.eval.by_type.get(t).map(|s| s.accuracy),
            Some(true),
        ));
    }
    let splits: std::collections::BTreeSet<&String> =
        a.eval.pope.keys().chain(b.eval.pope.keys()).collect();
    for s in splits {
        let (pa, pb) = (a.eval.pope.get(s), b.eval.pope.get(s));
        out.push(pct(
            format!("POPE {s} F1"),
            pa.map(|p| p.f1),
            pb.map(|p| p.f1),
            Some(true),
        ));
        out.push(pct(
            format!("POPE {s} yes on absent"),
            pa.map(|p| p.absent_yes),
            pb.map(|p| p.absent_yes),
            Some(false),
        ));
    }
    out.push(Row {
        label: "parameters".into(),
        a: Some(a.params.total() as f64),
        b: Some(b.params.total() as f64),
        higher_is_better: None,
        percent: false,
    });
    out
}

pub fn show(ui: &mut Ui, a: &OpenRun, b: Option<&OpenRun>) {
    ui.heading("Compare");
    let Some(b) = b else {
        ui.label("Pick a second run in the list (\"compare\") to see both reports side by side.");
        return;
    };
    let (Some(ra), Some(rb)) = (&a.report, &b.report) else {
        ui.label(format!(
            "Both runs need a report (finished and evaluated): {} {}, {} {}.",
            a.name,
            if a.report.is_some() {
                "has one"
            } else {
                "has none"
            },
            b.name,
            if b.report.is_some() {
                "has one"
            } else {
                "has none"
            },
        ));
        return;
    };
    egui::Grid::new("compare")
        .striped(true)
        .num_columns(4)
        .show(ui, |ui| {
            ui.label(RichText::new("metric").strong());
            ui.label(RichText::new(format!("A: {}", a.name)).strong());
            ui.label(RichText::new(format!("B: {}", b.name)).strong());
            ui.label(RichText::new("B - A").strong());
            ui.end_row();
            ui.label("device");
            ui.label(&ra.device.name);
            ui.label(&rb.device.name);
            ui.label("");
            ui.end_row();
            for r in rows(ra, rb) {
                let fmt = |v: Option<f64>| match v {
                    None => "—".to_string(),
                    Some(v) if r.percent => format!("{v:.1}%"),
                    Some(v) => count(v as usize),
                };
                ui.label(&r.label);
                ui.label(fmt(r.a));
                ui.label(fmt(r.b));
                match (r.a, r.b) {
                    (Some(x), Some(y)) => {
                        let d = y - x;
                        let text = if r.percent {
                            format!("{d:+.1} pt")
                        } else {
                            format!("{:+}", y as i64 - x as i64)
                        };
                        let color = match r.higher_is_better {
                            _ if d.abs() < 1e-9 => ui.visuals().text_color(),
                            Some(true) if d > 0.0 => Color32::from_rgb(110, 200, 110),
                            Some(false) if d < 0.0 => Color32::from_rgb(110, 200, 110),
                            Some(_) => Color32::from_rgb(230, 90, 70),
                            None => ui.visuals().text_color(),
                        };
                        ui.label(RichText::new(text).color(color));
                    }
                    _ => {
                        ui.label("—");
                    }
                }
                ui.end_row();
            }
        });
}
