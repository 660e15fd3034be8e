//! Several runs with dependencies, a few at a time: the main job (`condenser demo`: vision
//! encoder -> teacher and baseline student -> LLaVA-KD student) and ablations (`condenser
//! ablate`: rows that start from other rows' runs) are plans. A run starts as soon as every run
//! it waits for has finished; the first failure stops new starts, lets the running ones end,
//! and is returned.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::prelude::Device;

use super::events::Observer;
use super::options::{RunOptions, RunOutcome};
use super::pipeline::run_recipe;
use crate::backend::DeviceInfo;
use crate::config::Recipe;
use crate::{Error, Result};

/// One run of a plan.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// Unique in the plan: the run's name, or a name of its own for a second pass over the
    /// same run (e.g. evaluating a run trained earlier in the plan).
    pub id: String,
    pub recipe: Recipe,
    pub opts: RunOptions,
    /// Ids this run waits for. An id that is not in the plan counts as done (a run finished
    /// before the plan was made).
    pub after: Vec<String>,
}

/// What the caller hears of a plan as it runs.
pub trait PlanObserver: Sync {
    /// The observer of one run's events (progress bars, or nothing).
    fn run_observer(&self, run: &PlannedRun) -> Box<dyn Observer + Send + '_>;
    /// A run ended well; `done` of `total` have.
    fn finished(
        &self,
        run: &PlannedRun,
        outcome: &RunOutcome,
        seconds: f64,
        done: usize,
        total: usize,
    ) {
        let _ = (run, outcome, seconds, done, total);
    }
}

/// Runs `plan` with at most `jobs` runs at a time on `device`; returns each run's outcome by id.
pub fn run_plan(
    plan: Vec<PlannedRun>,
    jobs: usize,
    device: &Device,
    info: &DeviceInfo,
    observer: &dyn PlanObserver,
) -> Result<BTreeMap<String, RunOutcome>> {
    let total = plan.len();
    let in_plan: HashSet<String> = plan.iter().map(|r| r.id.clone()).collect();
    if in_plan.len() != total {
        return Err(Error::Invalid("a plan names one run id twice".into()));
    }
    // (a run that waits for itself never becomes ready: the check after the workers names it)
    // the runs not started yet, and how many are training (both under one lock, so a worker
    // that finds nothing ready can tell "wait" from "never")
    let waiting = Mutex::new((plan, 0usize));
    let finished: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let outcomes = Mutex::new(BTreeMap::new());
    let failed = AtomicBool::new(false);
    let ready = |r: &PlannedRun, done: &HashSet<String>| {
        r.after
            .iter()
            .all(|a| !in_plan.contains(a) || done.contains(a))
    };
    // the next run whose dependencies are done; None when nothing is left to start (or what is
    // left can never start: nothing runs that it could wait for)
    let next = || -> Option<Option<PlannedRun>> {
        let mut w = waiting.lock().expect("plan queue");
        let (queue, running) = &mut *w;
        if queue.is_empty() {
            return None;
        }
        let done = finished.lock().expect("finished set");
        match queue.iter().position(|r| ready(r, &done)) {
            Some(p) => {
                *running += 1;
                Some(Some(queue.remove(p)))
            }
            None if *running == 0 => None,
            None => Some(None),
        }
    };
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..jobs.clamp(1, total.max(1)))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let run = match next() {
                            None => return Ok(()),
                            Some(None) => {
                                // everything left waits on runs still training
                                std::thread::sleep(Duration::from_millis(200));
                                continue;
                            }
                            Some(Some(run)) => run,
                        };
                        let t0 = Instant::now();
                        let mut obs = observer.run_observer(&run);
                        let out = run_recipe(&run.recipe, device, info, &run.opts, &mut *obs);
                        drop(obs);
                        let out = match out {
                            Ok(o) => o,
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                waiting.lock().expect("plan queue").1 -= 1;
                                return Err(e);
                            }
                        };
                        finished
                            .lock()
                            .expect("finished set")
                            .insert(run.id.clone());
                        waiting.lock().expect("plan queue").1 -= 1;
                        let mut o = outcomes.lock().expect("outcomes");
                        observer.finished(
                            &run,
                            &out,
                            t0.elapsed().as_secs_f64(),
                            o.len() + 1,
                            total,
                        );
                        o.insert(run.id.clone(), out);
                    }
                })
            })
            .collect();
        let mut first_error = None;
        for w in workers {
            if let Err(e) = w.join().expect("plan worker thread") {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    })?;
    let (left, _) = waiting.into_inner().expect("plan queue");
    if !left.is_empty() {
        return Err(Error::Invalid(format!(
            "{} runs never became ready (a circle of dependencies?): {}",
            left.len(),
            left.iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(outcomes.into_inner().expect("outcomes"))
}
