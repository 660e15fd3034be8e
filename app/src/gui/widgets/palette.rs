//! Colour scales: a perceptually ordered sequential one (shares, probabilities) and a diverging
//! one centred on zero (correlations), so a reader never has to guess which end is high.

use eframe::egui::Color32;

/// Colour scale of a heatmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    /// Dark blue (low) to yellow (high), viridis-like.
    Sequential,
    /// Blue (negative) through white (zero) to red (positive).
    Diverging,
}

const VIRIDIS: [[u8; 3]; 5] = [
    [68, 1, 84],
    [59, 82, 139],
    [33, 145, 140],
    [94, 201, 98],
    [253, 231, 37],
];
const DIVERGING: [[u8; 3]; 3] = [[49, 54, 149], [247, 247, 247], [165, 0, 38]];

impl Palette {
    /// The colour of `t` in `[0, 1]` (clamped).
    pub fn at(self, t: f32) -> Color32 {
        let stops: &[[u8; 3]] = match self {
            Palette::Sequential => &VIRIDIS,
            Palette::Diverging => &DIVERGING,
        };
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let x = t * (stops.len() - 1) as f32;
        let i = (x.floor() as usize).min(stops.len() - 2);
        let f = x - i as f32;
        let mix = |a: u8, b: u8| (a as f32 + (b as f32 - a as f32) * f).round() as u8;
        let (a, b) = (stops[i], stops[i + 1]);
        Color32::from_rgb(mix(a[0], b[0]), mix(a[1], b[1]), mix(a[2], b[2]))
    }

    /// Black or white, whichever reads on `bg`.
    pub fn text_on(bg: Color32) -> Color32 {
        let l = 0.299 * bg.r() as f32 + 0.587 * bg.g() as f32 + 0.114 * bg.b() as f32;
        if l > 140.0 {
            Color32::BLACK
        } else {
            Color32::WHITE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_middle() {
        assert_eq!(Palette::Sequential.at(0.0), Color32::from_rgb(68, 1, 84));
        assert_eq!(Palette::Sequential.at(1.0), Color32::from_rgb(253, 231, 37));
        assert_eq!(Palette::Diverging.at(0.5), Color32::from_rgb(247, 247, 247));
        assert_eq!(Palette::Diverging.at(f32::NAN), Palette::Diverging.at(0.0));
        assert_eq!(Palette::Sequential.at(7.0), Palette::Sequential.at(1.0));
    }
}
