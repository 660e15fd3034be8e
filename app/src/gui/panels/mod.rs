//! One panel per file. Each `show` draws from an [`OpenRun`](super::OpenRun) (and its own
//! view settings) and nothing else, so the snapshot tests can render it alone.

pub mod compare;
pub mod experts;
pub mod losses;
pub mod overlay;
pub mod pipeline;
pub mod relations;
pub mod runs;
pub mod samples;

use eframe::egui::{Color32, RichText, Ui};

/// The warnings of a run (skipped event lines and the like), shown at the top of a panel.
pub fn warnings(ui: &mut Ui, run: &super::OpenRun) {
    if run.warnings.is_empty() {
        return;
    }
    let shown = 4;
    for w in run.warnings.iter().take(shown) {
        ui.label(RichText::new(format!("warning: {w}")).color(Color32::from_rgb(230, 160, 40)));
    }
    if run.warnings.len() > shown {
        ui.label(
            RichText::new(format!(
                "… and {} more warnings",
                run.warnings.len() - shown
            ))
            .color(Color32::from_rgb(230, 160, 40)),
        );
    }
}

/// Formats seconds as `1h02m`, `3m05s` or `12s`.
pub fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Formats a parameter count as `1.2M`.
pub fn count(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::duration(3725.0), "1h02m");
        assert_eq!(super::duration(185.0), "3m05s");
        assert_eq!(super::duration(12.4), "12s");
        assert_eq!(super::count(1_234_567), "1.23M");
        assert_eq!(super::count(950), "950");
    }
}
