//! A run's history folded from its events: stage progress, every logged series (total loss,
//! each loss term, lr, gradient norm, tokens/s), MoE routing per step, relation matrices,
//! checkpoints and the evaluation. The desktop app draws from this and nothing else, whether
//! the events come over a channel from a run it started or from a tailed `events.jsonl`.
//!
//! A resumed run replays the steps after its last checkpoint; their new values replace the old
//! ones (the series are cut back to before the first replayed step), so the history shows what
//! the checkpointed model really went through.

use std::collections::BTreeMap;

use super::Event;
use super::tail::BadLine;
use crate::model::moe::LayerRouting;

/// Where a run stands, as far as its events tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// No `run_start` yet.
    NotStarted,
    Running,
    /// Asked to stop; resumable from its newest checkpoint.
    Stopped,
    Finished,
}

/// One stage as its events describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageProgress {
    pub index: usize,
    pub name: String,
    pub steps: usize,
    /// Steps done (the last logged step of this stage).
    pub done: usize,
    pub trainable: usize,
    pub examples: usize,
    /// Global step at which the stage began (its boundary on the loss plots).
    pub first_global_step: usize,
    pub mean_loss: Option<f32>,
    pub seconds: Option<f64>,
    pub tokens_per_s: f64,
    /// Seconds per step over the stage's recent steps (for the ETA).
    pub seconds_per_step: Option<f64>,
}

impl StageProgress {
    pub fn finished(&self) -> bool {
        self.seconds.is_some()
    }

    pub fn fraction(&self) -> f32 {
        if self.finished() {
            1.0
        } else {
            self.done as f32 / self.steps.max(1) as f32
        }
    }

    /// Seconds left in this stage at the recent pace.
    pub fn eta_s(&self) -> Option<f64> {
        if self.finished() {
            return None;
        }
        self.seconds_per_step
            .map(|s| s * self.steps.saturating_sub(self.done) as f64)
    }
}

/// One logged value per global step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// `(global_step, value)`, increasing steps.
    pub points: Vec<[f64; 2]>,
}

impl Series {
    fn push(&mut self, step: usize, value: f64) {
        let x = step as f64;
        let keep = self.points.partition_point(|p| p[0] < x);
        self.points.truncate(keep);
        self.points.push([x, value]);
    }
}

/// The routing of every MoE layer in one step.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingSnapshot {
    pub global_step: usize,
    pub stage: usize,
    pub layers: Vec<LayerRouting>,
}

/// Teacher and student visual-token self-correlation at one step.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationSnapshot {
    pub global_step: usize,
    pub stage: usize,
    pub n: usize,
    pub teacher: Vec<f32>,
    pub student: Vec<f32>,
}

/// Series names besides the loss terms.
pub const TOTAL_LOSS: &str = "loss";
pub const LR: &str = "lr";
pub const GRAD_NORM: &str = "grad_norm";
pub const TOKENS_PER_S: &str = "tokens_per_s";

/// Everything a face shows about one run.
#[derive(Debug, Clone)]
pub struct RunHistory {
    pub run: String,
    pub device: String,
    pub status: RunStatus,
    /// Checkpoints the run was resumed from, in order.
    pub resumed_from: Vec<String>,
    /// `(total, vision, projector, llm)` parameters.
    pub params: Option<[usize; 4]>,
    pub stages: Vec<StageProgress>,
    /// Stage index currently running (the last started).
    pub current_stage: Option<usize>,
    pub global_step: usize,
    pub elapsed_s: f64,
    /// By name: `loss` (total), each loss term (`ce`, `res`, `vis`, `rel`, `hidden`, `moe_aux`,
    /// `pref`, `margin`, ...), `lr`, `grad_norm`, `tokens_per_s`.
    pub series: BTreeMap<String, Series>,
    pub routing: Vec<RoutingSnapshot>,
    pub relations: Vec<RelationSnapshot>,
    pub checkpoints: Vec<(usize, String)>,
    /// `(split, accuracy, questions)`.
    pub eval: Option<(String, f64, usize)>,
    pub seconds: Option<f64>,
    /// Lines of `events.jsonl` that were skipped.
    pub bad_lines: Vec<BadLine>,
    /// The pace of the recent steps of this session and stage.
    recent: Pace,
}

impl Default for RunHistory {
    fn default() -> Self {
        RunHistory {
            run: String::new(),
            device: String::new(),
            status: RunStatus::NotStarted,
            resumed_from: Vec::new(),
            params: None,
            stages: Vec::new(),
            current_stage: None,
            global_step: 0,
            elapsed_s: 0.0,
            series: BTreeMap::new(),
            routing: Vec::new(),
            relations: Vec::new(),
            checkpoints: Vec::new(),
            eval: None,
            seconds: None,
            bad_lines: Vec::new(),
            recent: Default::default(),
        }
    }
}

/// Steps the ETA averages over.
const PACE_WINDOW: usize = 20;

/// Seconds per step over the last [`PACE_WINDOW`] steps: the ETA's pace. A window rather than
/// the stage's mean, so the first slow steps (warm-up, caches filling) stop counting.
/// Cleared when a stage or a session starts, since `elapsed_s` restarts with each session.
#[derive(Debug, Clone, Default)]
pub struct Pace {
    /// `(global_step, elapsed_s)` of the recent steps.
    recent: std::collections::VecDeque<(usize, f64)>,
}

impl Pace {
    /// Adds one step; returns the pace once two steps with time between them are known.
    pub fn step(&mut self, global_step: usize, elapsed_s: f64) -> Option<f64> {
        if self.recent.len() == PACE_WINDOW + 1 {
            self.recent.pop_front();
        }
        self.recent.push_back((global_step, elapsed_s));
        match (self.recent.front(), self.recent.back()) {
            (Some(a), Some(b)) if b.0 > a.0 && b.1 > a.1 => Some((b.1 - a.1) / (b.0 - a.0) as f64),
            _ => None,
        }
    }

    pub fn clear(&mut self) {
        self.recent.clear();
    }
}

impl RunHistory {
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut h = RunHistory::default();
        for e in events {
            h.apply(e);
        }
        h
    }

    /// Folds one event in.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::RunStart {
                run,
                device,
                resumed_from,
                ..
            } => {
                self.run = run.clone();
                self.device = device.clone();
                self.status = RunStatus::Running;
                // elapsed time restarts with every session
                self.recent.clear();
                if let Some(r) = resumed_from {
                    self.resumed_from.push(r.clone());
                }
            }
            Event::ModelBuilt {
                params,
                vision,
                projector,
                llm,
            } => self.params = Some([*params, *vision, *projector, *llm]),
            Event::StageStart {
                stage,
                name,
                steps,
                trainable,
                examples,
            } => {
                let first = self.global_step;
                let s = self.stage_mut(*stage);
                s.name = name.clone();
                s.steps = *steps;
                s.trainable = *trainable;
                s.examples = *examples;
                if s.done == 0 {
                    s.first_global_step = first;
                }
                self.current_stage = Some(*stage);
                // the first step of a stage includes its set-up (teacher caching): no pace
                self.recent.clear();
            }
            Event::Step { .. } => self.apply_step(event),
            Event::Relation {
                stage,
                global_step,
                n,
                teacher,
                student,
                ..
            } => {
                let keep = self
                    .relations
                    .partition_point(|r| r.global_step < *global_step);
                self.relations.truncate(keep);
                self.relations.push(RelationSnapshot {
                    global_step: *global_step,
                    stage: *stage,
                    n: *n,
                    teacher: teacher.clone(),
                    student: student.clone(),
                });
            }
            Event::Checkpoint { path, global_step } => {
                self.checkpoints.push((*global_step, path.clone()))
            }
            Event::Stopped { global_step } => {
                self.status = RunStatus::Stopped;
                self.global_step = *global_step;
            }
            Event::StageEnd {
                stage,
                name,
                mean_loss,
                seconds,
            } => {
                let s = self.stage_mut(*stage);
                s.name = name.clone();
                s.done = s.steps;
                s.mean_loss = Some(*mean_loss);
                s.seconds = Some(*seconds);
            }
            Event::Eval {
                split,
                accuracy,
                questions,
            } => self.eval = Some((split.clone(), *accuracy, *questions)),
            Event::RunEnd { seconds } => {
                self.status = RunStatus::Finished;
                self.seconds = Some(*seconds);
            }
        }
    }

    /// Folds in one step: its stage's progress and pace, every logged series, the routing.
    fn apply_step(&mut self, event: &Event) {
        let Event::Step {
            stage,
            name,
            step,
            steps,
            global_step,
            loss,
            terms,
            lr,
            grad_norm,
            tokens_per_s,
            elapsed_s,
            routing,
            ..
        } = event
        else {
            return;
        };
        let pace = self.recent.step(*global_step, *elapsed_s);
        let s = self.stage_mut(*stage);
        if s.name.is_empty() {
            s.name = name.clone();
            s.steps = *steps;
            s.first_global_step = global_step - step;
        }
        s.done = *step;
        s.tokens_per_s = *tokens_per_s;
        if pace.is_some() {
            s.seconds_per_step = pace;
        }
        self.current_stage = Some(*stage);
        self.global_step = *global_step;
        self.elapsed_s = *elapsed_s;
        let g = *global_step;
        self.push(TOTAL_LOSS, g, *loss as f64);
        for (k, v) in terms {
            self.push(k, g, *v as f64);
        }
        self.push(LR, g, *lr);
        self.push(GRAD_NORM, g, *grad_norm as f64);
        self.push(TOKENS_PER_S, g, *tokens_per_s);
        if !routing.is_empty() {
            let keep = self.routing.partition_point(|r| r.global_step < g);
            self.routing.truncate(keep);
            self.routing.push(RoutingSnapshot {
                global_step: g,
                stage: *stage,
                layers: routing.clone(),
            });
        }
    }

    fn stage_mut(&mut self, index: usize) -> &mut StageProgress {
        while self.stages.len() <= index {
            let i = self.stages.len();
            self.stages.push(StageProgress {
                index: i,
                name: String::new(),
                steps: 0,
                done: 0,
                trainable: 0,
                examples: 0,
                first_global_step: self.global_step,
                mean_loss: None,
                seconds: None,
                tokens_per_s: 0.0,
                seconds_per_step: None,
            });
        }
        &mut self.stages[index]
    }

    fn push(&mut self, name: &str, step: usize, value: f64) {
        self.series
            .entry(name.to_string())
            .or_default()
            .push(step, value);
    }

    /// The loss terms logged (every series but lr, gradient norm and tokens/s), total first.
    pub fn loss_terms(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .series
            .keys()
            .map(String::as_str)
            .filter(|k| ![TOTAL_LOSS, LR, GRAD_NORM, TOKENS_PER_S].contains(k))
            .collect();
        names.sort();
        if self.series.contains_key(TOTAL_LOSS) {
            names.insert(0, TOTAL_LOSS);
        }
        names
    }

    /// Global steps where stages begin (after the first): the boundaries on the plots.
    pub fn stage_boundaries(&self) -> Vec<(usize, &str)> {
        self.stages
            .iter()
            .skip(1)
            .filter(|s| !s.name.is_empty())
            .map(|s| (s.first_global_step, s.name.as_str()))
            .collect()
    }
}

/// Experts whose share of a layer's kept assignments is below `threshold` of a uniform share
/// over `window` recent steps: `(layer, expert, share)`. A dead expert receives no gradient and
/// never recovers on its own (LLaVA-MoD's load-balancing loss exists to prevent this).
pub fn dead_experts(
    routing: &[RoutingSnapshot],
    window: usize,
    threshold: f64,
) -> Vec<(usize, usize, f64)> {
    let recent = &routing[routing.len().saturating_sub(window)..];
    let Some(last) = recent.last() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (li, layer) in last.layers.iter().enumerate() {
        let e = layer.visual.len();
        let mut counts = vec![0usize; e];
        for snap in recent {
            if let Some(l) = snap.layers.get(li) {
                for (k, c) in counts.iter_mut().enumerate() {
                    *c +=
                        l.visual.get(k).copied().unwrap_or(0) + l.text.get(k).copied().unwrap_or(0);
                }
            }
        }
        let total: usize = counts.iter().sum();
        if total == 0 {
            continue;
        }
        for (k, c) in counts.iter().enumerate() {
            let share = *c as f64 / total as f64;
            if share < threshold / e as f64 {
                out.push((layer.layer, k, share));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(stage: usize, step: usize, global: usize, loss: f32, elapsed: f64) -> Event {
        Event::Step {
            stage,
            name: format!("s{stage}"),
            step,
            steps: 4,
            global_step: global,
            loss,
            terms: [("ce".to_string(), loss / 2.0)].into(),
            lr: 1e-3,
            grad_norm: 1.0,
            tokens_per_s: 100.0,
            elapsed_s: elapsed,
            tokens: 100,
            step_s: 1.0,
            mfu: None,
            routing: vec![LayerRouting {
                layer: 1,
                visual: vec![5, 0],
                text: vec![5, 0],
                dropped: 0,
                entropy: 0.1,
            }],
        }
    }

    #[test]
    fn folds_progress_replays_resumed_steps_and_reports_pace() {
        let start = |resumed: Option<&str>| Event::RunStart {
            run: "r".into(),
            device: "cpu".into(),
            resumed_from: resumed.map(String::from),
            peak_flops: None,
        };
        let stage = Event::StageStart {
            stage: 0,
            name: "s0".into(),
            steps: 4,
            trainable: 10,
            examples: 32,
        };
        let mut events = vec![
            start(None),
            stage.clone(),
            step(0, 1, 1, 4.0, 1.0),
            step(0, 2, 2, 3.0, 3.0),
            step(0, 3, 3, 2.5, 5.0),
        ];
        // killed after step 3 with a checkpoint at step 2; resumed
        events.extend([
            start(Some("ck-2")),
            stage,
            step(0, 3, 3, 2.0, 2.0),
            Event::Stopped { global_step: 3 },
        ]);
        let h = RunHistory::from_events(&events);
        assert_eq!(h.status, RunStatus::Stopped);
        assert_eq!(h.resumed_from, vec!["ck-2".to_string()]);
        let loss = &h.series[TOTAL_LOSS].points;
        assert_eq!(loss, &vec![[1.0, 4.0], [2.0, 3.0], [3.0, 2.0]]);
        assert_eq!(h.series["ce"].points[2], [3.0, 1.0]);
        assert_eq!(h.loss_terms(), vec!["loss", "ce"]);
        let s = &h.stages[0];
        assert_eq!((s.done, s.steps, s.first_global_step), (3, 4, 0));
        // paced over the first session's steps 1 -> 3 (2 s each); the resumed session's single
        // step gives no pace of its own (its elapsed time restarted)
        assert_eq!(s.seconds_per_step, Some(2.0));
        assert_eq!(s.eta_s(), Some(2.0));
        assert_eq!(h.routing.len(), 3);
        let dead = dead_experts(&h.routing, 10, 0.25);
        assert_eq!(dead, vec![(1, 1, 0.0)]);
    }
}
