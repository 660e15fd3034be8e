//! The debug overlay: frame build time and frame interval, so anyone can see that the app stays
//! responsive while a run trains on another thread.

use eframe::egui::{Color32, RichText, Ui};

use crate::gui::frame_stats::FrameStats;

pub fn show(ui: &mut Ui, stats: &FrameStats, training: bool) {
    let b = stats.build();
    let i = stats.interval();
    let color = if i.p95 > 50.0 {
        Color32::from_rgb(230, 120, 40)
    } else {
        Color32::LIGHT_GREEN
    };
    ui.horizontal(|ui| {
        ui.label(RichText::new("frame").monospace());
        ui.label(
            RichText::new(format!(
                "build {:.2} ms (p95 {:.2}) · interval p95 {:.1} ms · {} frames",
                b.mean, b.p95, i.p95, i.frames
            ))
            .monospace()
            .color(color),
        );
        if training {
            ui.label(RichText::new("· training on a background thread").monospace());
        }
    });
}
