//! A stage's optimiser settings: AdamW (the model's, and LLaVADI's projection's) and the
//! learning-rate schedule, linear warmup then cosine decay to `min_ratio * peak` (all papers).

use burn::optim::{AdamWConfig, ModuleOptimizer};

use crate::config::StageSpec;

/// A stage's AdamW.
pub fn adamw(spec: &StageSpec) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_weight_decay(spec.weight_decay as f32)
        .with_epsilon(1e-8)
        .init()
}

/// Learning rate at `step` (0-based) of a stage of `total` steps.
pub fn lr_at(step: usize, total: usize, peak: f64, warmup_frac: f64, min_ratio: f64) -> f64 {
    let total = total.max(1);
    let warmup = ((warmup_frac * total as f64).ceil() as usize).min(total);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let floor = peak * min_ratio;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        // 100 steps, 10% warmup: ramps to the peak at step 9, then decays
        assert!((lr_at(0, 100, 1.0, 0.1, 0.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 1.0, 0.1, 0.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 100, 1.0, 0.1, 0.0) - 1.0).abs() < 1e-12);
        let mid = lr_at(55, 100, 1.0, 0.1, 0.0);
        assert!((mid - 0.5).abs() < 1e-9, "{mid}");
        assert!(lr_at(99, 100, 1.0, 0.1, 0.1) >= 0.1);
        assert!(lr_at(99, 100, 1.0, 0.1, 0.0) < 0.01);
    }
}
