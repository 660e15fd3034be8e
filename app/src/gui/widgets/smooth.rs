//! Curve smoothing for the loss plots: an exponential moving average with the start-up bias
//! removed (as TensorBoard does), so the first points are not dragged towards zero.

/// Smooths `(x, y)` points with weight `alpha` in `[0, 1)` on the past (0 = raw).
pub fn ema(points: &[[f64; 2]], alpha: f64) -> Vec<[f64; 2]> {
    let alpha = alpha.clamp(0.0, 0.999);
    if alpha == 0.0 {
        return points.to_vec();
    }
    let mut acc = 0.0;
    let mut weight = 0.0;
    points
        .iter()
        .map(|&[x, y]| {
            acc = alpha * acc + (1.0 - alpha) * y;
            weight = alpha * weight + (1.0 - alpha);
            [x, acc / weight]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_stays_constant_and_raw_is_identity() {
        let pts: Vec<[f64; 2]> = (0..10).map(|i| [i as f64, 3.0]).collect();
        for p in ema(&pts, 0.9) {
            assert!((p[1] - 3.0).abs() < 1e-12, "debiased: {p:?}");
        }
        assert_eq!(ema(&pts, 0.0), pts);
        // a step is followed with lag
        let step: Vec<[f64; 2]> = (0..4)
            .map(|i| [i as f64, if i < 2 { 0.0 } else { 1.0 }])
            .collect();
        let s = ema(&step, 0.5);
        assert!(s[2][1] > 0.0 && s[2][1] < 1.0);
        assert!(s[3][1] > s[2][1]);
    }
}
