//! "Follow newest" plus a slider over a run's logged snapshots: `None` follows the newest, a
//! moved slider pins one. Shared by the views that scrub through steps (experts, relations).

use eframe::egui::{self, Ui};

/// Draws the checkbox and slider over `len` snapshots (at least one) and returns the index to
/// show. `label(i)` names snapshot `i` on the slider.
pub fn scrub(
    ui: &mut Ui,
    selection: &mut Option<usize>,
    len: usize,
    text: &str,
    label: impl Fn(usize) -> String,
) -> usize {
    let last = len - 1;
    let mut idx = selection.unwrap_or(last).min(last);
    let mut follow = selection.is_none();
    ui.checkbox(&mut follow, "follow newest");
    let slider = ui.add_enabled(
        !follow,
        egui::Slider::new(&mut idx, 0..=last)
            .text(text)
            .custom_formatter(|v, _| label((v as usize).min(last))),
    );
    if follow {
        *selection = None;
        idx = last;
    } else if slider.changed() || selection.is_none() {
        *selection = Some(idx);
    }
    idx
}
