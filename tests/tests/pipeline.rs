//! End-to-end pipeline checks on the smoke recipe: run folder contents, exact resume, and
//! cross-backend agreement (wgpu on lavapipe vs burn's CPU backend).

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::train::{Event, Observer, RunOptions, Silent, run_recipe};
use condenser_tests::{assert_same_weights, scratch, smoke_recipe, tiny_world};

#[test]
fn smoke_run_writes_a_complete_run_folder() {
    let dir = scratch("smoke-run");
    let data = tiny_world(&dir);
    let recipe = smoke_recipe(&data);
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let opts = RunOptions {
        runs_dir: dir.join("runs"),
        ..RunOptions::default()
    };
    let out = run_recipe(&recipe, &device, &info, &opts, &mut Silent).unwrap();
    assert!(out.finished);
    let run = dir.join("runs/smoke");
    for f in [
        "recipe.toml",
        "events.jsonl",
        "report.md",
        "report.json",
        "tokenizer.json",
        "checkpoints/final/model.bpk",
        "checkpoints/final/config.json",
    ] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    // the saved recipe is the resolved one and parses back to the same recipe
    let saved = condenser_engine::config::load_recipe(run.join("recipe.toml")).unwrap();
    assert_eq!(saved, recipe);
    let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    assert!(
        events
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
    assert!(events.contains("\"type\":\"run_end\""));
    // evaluating the finished run again (as `demo` does while the KD student reads this run
    // as its teacher) leaves its final checkpoint untouched: the same file, not a new one
    use std::os::unix::fs::MetadataExt;
    let model = run.join("checkpoints/final/model.bpk");
    let before = std::fs::metadata(&model).unwrap().ino();
    let again = RunOptions {
        resume: true,
        ..opts.clone()
    };
    let out2 = run_recipe(&recipe, &device, &info, &again, &mut Silent).unwrap();
    assert!(out2.finished && out2.eval.is_some());
    assert_eq!(std::fs::metadata(&model).unwrap().ino(), before);
    assert_eq!(
        out.eval.unwrap().questions,
        std::fs::read_to_string(data.join("test.json"))
            .unwrap()
            .matches("\"id\"")
            .count()
    );
}

#[test]
fn killed_and_resumed_run_ends_with_the_same_weights() {
    let dir = scratch("resume");
    let data = tiny_world(&dir);
    let recipe = smoke_recipe(&data);
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let straight = RunOptions {
        runs_dir: dir.join("a"),
        eval: false,
        ..RunOptions::default()
    };
    let a = run_recipe(&recipe, &device, &info, &straight, &mut Silent).unwrap();
    // stop mid-stage (step 5 is inside the second stage: 3 + 3 + 3 steps) and resume
    let runs_b = dir.join("b");
    let first = RunOptions {
        runs_dir: runs_b.clone(),
        eval: false,
        stop_after_steps: Some(5),
        ..RunOptions::default()
    };
    let b1 = run_recipe(&recipe, &device, &info, &first, &mut Silent).unwrap();
    assert!(!b1.finished);
    assert!(
        condenser_engine::run::Runs::new(&runs_b)
            .run("smoke")
            .latest_checkpoint()
            .is_some()
    );
    drop(b1);
    let second = RunOptions {
        runs_dir: runs_b,
        eval: false,
        ..RunOptions::default()
    };
    let b2 = run_recipe(&recipe, &device, &info, &second, &mut Silent).unwrap();
    assert!(b2.finished);
    assert_same_weights(
        a.model.as_ref().unwrap(),
        b2.model.as_ref().unwrap(),
        1e-6,
        "resumed weights",
    );
}

struct Losses(Vec<f32>);
impl Observer for Losses {
    fn on_event(&mut self, e: &Event) {
        if let Event::Step { loss, .. } = e {
            self.0.push(*loss);
        }
    }
}

/// The first steps of the smoke recipe give the same losses on wgpu and on the CPU backend.
/// Tolerance: 2e-3 relative, the float32 reduction-order noise of a few optimiser steps.
/// There must be a wgpu adapter (CI installs lavapipe): this test fails rather than skip.
#[test]
fn wgpu_and_cpu_agree_on_the_first_losses() {
    let dir = scratch("parity");
    let data = tiny_world(&dir);
    let mut recipe = smoke_recipe(&data);
    recipe.stages.truncate(1);
    let run = |choice, sub: &str| {
        let (device, info) = select(choice).expect("device");
        if choice == BackendChoice::Wgpu {
            assert_eq!(info.backend, "wgpu");
        }
        let opts = RunOptions {
            runs_dir: dir.join(sub),
            eval: false,
            ..RunOptions::default()
        };
        let mut l = Losses(Vec::new());
        run_recipe(&recipe, &device, &info, &opts, &mut l).unwrap();
        l.0
    };
    let cpu = run(BackendChoice::Cpu, "cpu");
    let gpu = run(BackendChoice::Wgpu, "wgpu");
    assert_eq!(cpu.len(), gpu.len());
    assert!(cpu.len() >= 3);
    eprintln!("losses cpu {cpu:?}\nlosses wgpu {gpu:?}");
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        let rel = (c - g).abs() / c.abs().max(1e-6);
        assert!(
            rel < 2e-3,
            "step {}: cpu {c} vs wgpu {g} (rel {rel})",
            i + 1
        );
    }
}

/// The issue-5 A/B switch end to end: the same smoke stages on wgpu with Condenser's kernels
/// (flash attention in the vision encoder and the decoder) and with the plain burn-ops
/// reference give the same losses at every step, within float32 reduction-order noise.
#[test]
fn kernels_on_and_off_give_the_same_losses() {
    use condenser_engine::config::KernelPolicy;
    let dir = scratch("kernels-ab");
    let data = tiny_world(&dir);
    let mut recipe = smoke_recipe(&data);
    recipe.stages.truncate(2);
    let (device, info) = select(BackendChoice::Wgpu).expect("a wgpu adapter");
    let run = |policy: KernelPolicy, sub: &str| {
        let mut r = recipe.clone();
        r.kernels = policy;
        let opts = RunOptions {
            runs_dir: dir.join(sub),
            eval: false,
            ..RunOptions::default()
        };
        let mut l = Losses(Vec::new());
        run_recipe(&r, &device, &info, &opts, &mut l).unwrap();
        l.0
    };
    let on = run(KernelPolicy::Auto, "auto");
    let off = run(KernelPolicy::Reference, "reference");
    assert_eq!(on.len(), off.len());
    assert!(on.len() >= 6, "{on:?}");
    eprintln!("losses kernels {on:?}\nlosses reference {off:?}");
    for (i, (a, b)) in on.iter().zip(&off).enumerate() {
        let rel = (a - b).abs() / b.abs().max(1e-6);
        assert!(
            rel < 1e-3,
            "step {}: kernels {a} vs reference {b} (rel {rel})",
            i + 1
        );
    }
}

/// A stage whose activations cannot fit one buffer of the adapter (lavapipe: 128 MiB) is
/// refused by the memory plan before training: the error names the stage, the tensor, its
/// size, the adapter's limit and what to change, and no run folder is created.
#[test]
fn a_stage_too_large_for_the_adapter_is_refused_before_training() {
    let dir = scratch("too-large");
    let data = tiny_world(&dir);
    let mut recipe = smoke_recipe(&data);
    recipe.stages[0].batch_size = 1 << 20;
    let (device, info) =
        select(BackendChoice::Wgpu).expect("a wgpu adapter (scripts/setup.sh installs lavapipe)");
    let opts = RunOptions {
        runs_dir: dir.join("runs"),
        ..RunOptions::default()
    };
    let err = match run_recipe(&recipe, &device, &info, &opts, &mut Silent) {
        Ok(_) => panic!("a stage of a million sequences must be refused"),
        Err(e) => e.to_string(),
    };
    for part in [
        "does not fit the device",
        &format!("stage 1 {:?}", recipe.stages[0].name),
        "activations [",
        "MiB) exceeds the largest buffer",
        "batch_size",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert!(
        !dir.join("runs").join(&recipe.name).exists(),
        "a refused run must not leave a run folder"
    );
}
