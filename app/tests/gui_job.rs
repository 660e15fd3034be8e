//! The app's own training path, end to end on the CPU: a recipe started as a [`Job`] trains on a
//! background thread and streams its events; the Stop request ends it after the current step
//! with a checkpoint; starting it again resumes from there and finishes; the run folder read
//! back from disk tells the same story as the channel did.

use std::time::{Duration, Instant};

use condenser_app::gui::OpenRun;
use condenser_app::gui::job::Job;
use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::train::{Event, RunOptions, RunStatus};

fn wait(job: &mut Job, mut until: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        for e in job.drain() {
            let hit = until(&e);
            seen.push(e);
            if hit {
                return seen;
            }
        }
        if job.outcome.is_some() {
            return seen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the job never got there"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_run_started_here_stops_cleanly_and_resumes_to_the_end() {
    let dir = condenser_tests::scratch("gui-job");
    let data = condenser_tests::tiny_world(&dir);
    let recipe = condenser_tests::smoke_recipe(&data);
    let runs = dir.join("runs");
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let opts = RunOptions {
        runs_dir: runs.clone(),
        resume: true,
        eval: false,
        ..RunOptions::default()
    };

    // first session: stop as soon as the second stage has taken a step
    let mut job = Job::start(
        recipe.clone(),
        device.clone(),
        info.clone(),
        opts.clone(),
        || {},
    );
    let first = wait(&mut job, |e| matches!(e, Event::Step { stage: 1, .. }));
    job.request_stop();
    let rest = wait(&mut job, |_| false);
    assert_eq!(job.outcome, Some(Ok(false)), "stopped, not finished");
    assert!(
        matches!(rest.last(), Some(Event::Stopped { .. })),
        "the last event says it stopped: {:?}",
        rest.last()
    );
    let stopped_at = first
        .iter()
        .chain(&rest)
        .filter_map(|e| match e {
            Event::Step { global_step, .. } => Some(*global_step),
            _ => None,
        })
        .max()
        .unwrap();
    let run_dir = runs.join(&recipe.name);
    let on_disk = OpenRun::open(&run_dir).unwrap();
    assert_eq!(on_disk.history.status, RunStatus::Stopped);
    assert_eq!(on_disk.history.global_step, stopped_at);
    assert!(on_disk.warnings.is_empty(), "{:?}", on_disk.warnings);

    // second session: resumes from the checkpoint and runs to the end
    let mut job = Job::start(recipe.clone(), device, info, opts, || {});
    let events = wait(&mut job, |_| false);
    assert_eq!(job.outcome, Some(Ok(true)), "finished");
    match &events[0] {
        Event::RunStart { resumed_from, .. } => assert!(resumed_from.is_some(), "resumed"),
        e => panic!("first event {e:?}"),
    }
    let first_step = events.iter().find_map(|e| match e {
        Event::Step { global_step, .. } => Some(*global_step),
        _ => None,
    });
    assert_eq!(first_step, Some(stopped_at + 1), "continues after the stop");
    let done = OpenRun::open(&run_dir).unwrap();
    assert_eq!(done.history.status, RunStatus::Finished);
    assert_eq!(done.history.resumed_from.len(), 1);
    assert!(done.history.stages.iter().all(|s| s.finished()));
    std::fs::remove_dir_all(&dir).unwrap();
}
