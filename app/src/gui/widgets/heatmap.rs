//! A labelled matrix of coloured cells with its value on hover (routing shares, relation
//! matrices). Drawn with the painter: one rectangle per cell, no texture.

use eframe::egui::{self, Align2, Color32, FontId, Rect, Sense, Stroke, Ui, Vec2, pos2, vec2};

use super::palette::Palette;

/// What to draw.
pub struct Heatmap<'a> {
    /// Row-major `rows x cols`.
    pub values: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Values mapped to the two ends of the palette.
    pub range: (f32, f32),
    pub palette: Palette,
    /// Size of the cell area (labels are outside it).
    pub size: Vec2,
    pub row_label: &'a dyn Fn(usize) -> String,
    pub col_label: &'a dyn Fn(usize) -> String,
    /// Print each value in its cell (small matrices).
    pub annotate: bool,
    /// Formats a value for the cell text and the hover text.
    pub format: &'a dyn Fn(f32) -> String,
}

/// Draws the heatmap; returns the hovered cell `(row, col)`.
pub fn heatmap(ui: &mut Ui, h: &Heatmap) -> Option<(usize, usize)> {
    let label_w = 56.0;
    let label_h = 16.0;
    let (outer, response) = ui.allocate_exact_size(h.size + vec2(label_w, label_h), Sense::hover());
    let grid = Rect::from_min_size(outer.min + vec2(label_w, label_h), h.size);
    let painter = ui.painter_at(outer);
    if h.rows == 0 || h.cols == 0 || h.values.len() < h.rows * h.cols {
        return None;
    }
    let cw = grid.width() / h.cols as f32;
    let ch = grid.height() / h.rows as f32;
    let (lo, hi) = h.range;
    let span = (hi - lo).max(1e-12);
    let text_color = ui.visuals().text_color();
    let small = FontId::proportional(11.0);
    for r in 0..h.rows {
        for c in 0..h.cols {
            let v = h.values[r * h.cols + c];
            let cell = Rect::from_min_size(
                pos2(grid.min.x + c as f32 * cw, grid.min.y + r as f32 * ch),
                vec2(cw, ch),
            );
            let color = h.palette.at((v - lo) / span);
            painter.rect_filled(cell, 0.0, color);
            if h.annotate && cw > 30.0 && ch > 14.0 {
                painter.text(
                    cell.center(),
                    Align2::CENTER_CENTER,
                    (h.format)(v),
                    small.clone(),
                    Palette::text_on(color),
                );
            }
        }
    }
    painter.rect_stroke(
        grid,
        0.0,
        Stroke::new(1.0, Color32::from_gray(120)),
        egui::StrokeKind::Outside,
    );
    // labels: every row when they fit, else every k-th
    let every =
        |n: usize, cell: f32, need: f32| ((need / cell).ceil() as usize).max(1).min(n.max(1));
    let rk = every(h.rows, ch, 12.0);
    for r in (0..h.rows).step_by(rk) {
        painter.text(
            pos2(grid.min.x - 4.0, grid.min.y + (r as f32 + 0.5) * ch),
            Align2::RIGHT_CENTER,
            (h.row_label)(r),
            small.clone(),
            text_color,
        );
    }
    let ck = every(h.cols, cw, 48.0);
    for c in (0..h.cols).step_by(ck) {
        painter.text(
            pos2(
                grid.min.x + (c as f32 + 0.5) * cw,
                outer.min.y + label_h / 2.0,
            ),
            Align2::CENTER_CENTER,
            (h.col_label)(c),
            small.clone(),
            text_color,
        );
    }
    let hovered = response.hover_pos().filter(|p| grid.contains(*p)).map(|p| {
        let c = (((p.x - grid.min.x) / cw) as usize).min(h.cols - 1);
        let r = (((p.y - grid.min.y) / ch) as usize).min(h.rows - 1);
        (r, c)
    });
    if let Some((r, c)) = hovered {
        let v = h.values[r * h.cols + c];
        response.on_hover_text(format!(
            "{}, {}: {}",
            (h.row_label)(r),
            (h.col_label)(c),
            (h.format)(v)
        ));
    }
    hovered
}

/// A horizontal colour bar with its two end values.
pub fn legend(
    ui: &mut Ui,
    palette: Palette,
    range: (f32, f32),
    width: f32,
    format: &dyn Fn(f32) -> String,
) {
    ui.horizontal(|ui| {
        ui.label(format(range.0));
        let (rect, _) = ui.allocate_exact_size(vec2(width, 10.0), Sense::hover());
        let steps = 32;
        let w = rect.width() / steps as f32;
        for i in 0..steps {
            let r = Rect::from_min_size(
                pos2(rect.min.x + i as f32 * w, rect.min.y),
                vec2(w + 0.5, rect.height()),
            );
            ui.painter()
                .rect_filled(r, 0.0, palette.at(i as f32 / (steps - 1) as f32));
        }
        ui.label(format(range.1));
    });
}
