//! Data parallelism over whole runs: the smoke teacher trained with its language-model stages
//! split over two workers follows the one-worker run step for step (the contrastive stage runs
//! on one worker in both), and a two-worker run killed mid-stage resumes to exactly the weights
//! of an uninterrupted one: checkpoints and resume are those of a one-device run.

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::train::{RunOptions, Silent, data_parallel, run_recipe};
use condenser_tests::{StepTerms, assert_same_weights, scratch, smoke_recipe, tiny_world};

#[derive(Default)]
struct Losses(Vec<(String, f32)>);

impl condenser_engine::train::Observer for Losses {
    fn on_event(&mut self, e: &condenser_engine::train::Event) {
        if let condenser_engine::train::Event::Step { name, loss, .. } = e {
            self.0.push((name.clone(), *loss));
        }
    }
}

#[test]
fn two_workers_train_like_one_and_resume_exactly() {
    let dir = scratch("data-parallel");
    let data = tiny_world(&dir);
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let recipe = smoke_recipe(&data);
    let opts = |runs: &str, n: usize, stop: Option<usize>| RunOptions {
        runs_dir: dir.join(runs),
        eval: false,
        data_parallel: n,
        stop_after_steps: stop,
        ..RunOptions::default()
    };
    let mut one = Losses::default();
    let a = run_recipe(&recipe, &device, &info, &opts("one", 1, None), &mut one).unwrap();
    assert_eq!(data_parallel::split_steps(), 0, "one worker never splits");
    let mut two = Losses::default();
    let b = run_recipe(&recipe, &device, &info, &opts("two", 2, None), &mut two).unwrap();
    assert_eq!(one.0.len(), two.0.len());
    let mut split_steps = 0;
    for ((stage, x), (_, y)) in one.0.iter().zip(&two.0) {
        if stage != "vision" {
            split_steps += 1;
        }
        assert!(
            (x - y).abs() <= 1e-3 * x.abs().max(1.0),
            "{stage}: one worker {x}, two workers {y}"
        );
    }
    assert!(
        split_steps >= 4,
        "the smoke recipe has language-model steps"
    );
    assert_eq!(
        data_parallel::split_steps(),
        split_steps as u64,
        "every language-model step (and no contrastive step) ran split"
    );
    assert_same_weights(
        a.model.as_ref().unwrap(),
        b.model.as_ref().unwrap(),
        1e-3,
        "weights after one and two workers",
    );

    // killed inside the last stage, resumed: the same weights as the uninterrupted run
    let total = two.0.len();
    let first = run_recipe(
        &recipe,
        &device,
        &info,
        &opts("resumed", 2, Some(total - 2)),
        &mut Silent,
    )
    .unwrap();
    assert!(!first.finished);
    let second = run_recipe(
        &recipe,
        &device,
        &info,
        &opts("resumed", 2, None),
        &mut StepTerms::default(),
    )
    .unwrap();
    assert!(second.finished);
    assert_same_weights(
        b.model.as_ref().unwrap(),
        second.model.as_ref().unwrap(),
        0.0,
        "two-worker weights, uninterrupted vs resumed",
    );
}
