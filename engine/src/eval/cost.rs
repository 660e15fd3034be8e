//! What a run's training cost, from its `events.jsonl`: the wall time of its optimiser steps and
//! the real tokens they processed. Tables at real-model scale report both, because there a
//! method's price (a teacher forward per step, a wider loss) matters as much as its accuracy.
//!
//! Only step events count: set-up, checkpoints and the evaluation are left out, so a run's cost
//! does not depend on how often it saved. A resumed run replays the steps after its last
//! checkpoint; a replayed step's figures replace the first attempt's, so the cost is that of the
//! steps the final model actually went through.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::train::{Event, read_events};

/// Step wall time and tokens of one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunCost {
    /// Sum of the steps' wall times (waiting for their images included).
    pub seconds: f64,
    /// Real (unpadded) tokens of every step's batch, visual tokens included.
    pub tokens: u64,
}

impl RunCost {
    /// The cost recorded in the event log at `path`. Lines that do not parse are skipped, as
    /// the desktop app skips them.
    pub fn of_events(path: &Path) -> Result<RunCost> {
        let (events, _bad) = read_events(path)?;
        Ok(Self::of(&events))
    }

    /// The cost of `events`, the last attempt of each global step counting.
    pub fn of(events: &[Event]) -> RunCost {
        let mut steps: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
        for e in events {
            if let Event::Step {
                global_step,
                step_s,
                tokens,
                ..
            } = e
            {
                steps.insert(*global_step, (*step_s, *tokens));
            }
        }
        RunCost {
            seconds: steps.values().map(|s| s.0).sum(),
            tokens: steps.values().map(|s| s.1 as u64).sum(),
        }
    }

    /// Training throughput; 0 for a run without steps.
    pub fn tokens_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens as f64 / self.seconds
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(global_step: usize, step_s: f64, tokens: usize) -> Event {
        Event::Step {
            stage: 0,
            name: "sft".into(),
            step: global_step,
            steps: 10,
            global_step,
            loss: 1.0,
            terms: Default::default(),
            lr: 1e-3,
            grad_norm: 1.0,
            tokens_per_s: 0.0,
            elapsed_s: 0.0,
            tokens,
            step_s,
            mfu: None,
            routing: Vec::new(),
        }
    }

    #[test]
    fn a_replayed_step_replaces_its_first_attempt() {
        // steps 1..=3, a crash, then a resume from the checkpoint at step 1 replays 2 and 3
        let events = [
            step(1, 1.0, 100),
            step(2, 1.0, 100),
            step(3, 1.0, 100),
            step(2, 2.0, 120),
            step(3, 2.0, 120),
            step(4, 2.0, 120),
        ];
        let c = RunCost::of(&events);
        assert_eq!(c.tokens, 100 + 3 * 120);
        assert!((c.seconds - 7.0).abs() < 1e-12);
        assert!((c.tokens_per_s() - 460.0 / 7.0).abs() < 1e-9);
        assert_eq!(RunCost::of(&[]).tokens_per_s(), 0.0);
    }
}
