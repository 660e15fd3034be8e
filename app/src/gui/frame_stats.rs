//! Frame timing for the debug overlay: how long building each frame's UI took (the app's own
//! cost) and the interval between frames (what the user feels), over a sliding window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Frames kept for the statistics.
const WINDOW: usize = 240;

#[derive(Debug, Default)]
pub struct FrameStats {
    build_ms: VecDeque<f32>,
    interval_ms: VecDeque<f32>,
    last_start: Option<Instant>,
    /// Over the whole session, for the summary printed at exit.
    all_build_ms: Vec<f32>,
    all_interval_ms: Vec<f32>,
}

/// Summary of a set of frame times, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameSummary {
    pub frames: usize,
    pub mean: f32,
    pub p95: f32,
    pub max: f32,
}

impl FrameSummary {
    fn of(values: impl Iterator<Item = f32>) -> FrameSummary {
        let mut v: Vec<f32> = values.collect();
        if v.is_empty() {
            return FrameSummary {
                frames: 0,
                mean: 0.0,
                p95: 0.0,
                max: 0.0,
            };
        }
        v.sort_by(f32::total_cmp);
        let p95 = v[((v.len() as f32 * 0.95).ceil() as usize).clamp(1, v.len()) - 1];
        FrameSummary {
            frames: v.len(),
            mean: v.iter().sum::<f32>() / v.len() as f32,
            p95,
            max: *v.last().expect("not empty"),
        }
    }
}

impl std::fmt::Display for FrameSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} frames, mean {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            self.frames, self.mean, self.p95, self.max
        )
    }
}

impl FrameStats {
    /// Marks the start of a frame; returns the instant to hand to [`Self::end`].
    pub fn begin(&mut self) -> Instant {
        let now = Instant::now();
        if let Some(prev) = self.last_start.replace(now) {
            let ms = ms(now - prev);
            push(&mut self.interval_ms, ms);
            self.all_interval_ms.push(ms);
        }
        now
    }

    pub fn end(&mut self, started: Instant) {
        let ms = ms(started.elapsed());
        push(&mut self.build_ms, ms);
        self.all_build_ms.push(ms);
    }

    /// UI build time over the recent window.
    pub fn build(&self) -> FrameSummary {
        FrameSummary::of(self.build_ms.iter().copied())
    }

    /// Interval between frames over the recent window.
    pub fn interval(&self) -> FrameSummary {
        FrameSummary::of(self.interval_ms.iter().copied())
    }

    /// `(build, interval)` over the whole session.
    pub fn session(&self) -> (FrameSummary, FrameSummary) {
        (
            FrameSummary::of(self.all_build_ms.iter().copied()),
            FrameSummary::of(self.all_interval_ms.iter().copied()),
        )
    }
}

fn ms(d: Duration) -> f32 {
    d.as_secs_f32() * 1000.0
}

fn push(q: &mut VecDeque<f32>, v: f32) {
    if q.len() == WINDOW {
        q.pop_front();
    }
    q.push_back(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles() {
        let s = FrameSummary::of((1..=100).map(|i| i as f32));
        assert_eq!(s.frames, 100);
        assert_eq!(s.p95, 95.0);
        assert_eq!(s.max, 100.0);
        assert!((s.mean - 50.5).abs() < 1e-4);
        assert_eq!(FrameSummary::of(std::iter::empty()).frames, 0);
    }
}
