//! Shared helpers for the end-to-end tests in `tests/tests/`.

use std::path::{Path, PathBuf};

use condenser_engine::burn::module::{Module, ModuleVisitor, Param};
use condenser_engine::burn::prelude::*;
use condenser_engine::config::{Recipe, load_recipe};
use condenser_engine::data::shapes::{WorldConfig, generate};
use condenser_engine::model::Mllm;
use condenser_engine::train::{Event, Observer};

/// Records each training step's stage name and named loss terms.
#[derive(Default)]
pub struct StepTerms(pub Vec<(String, std::collections::BTreeMap<String, f32>)>);

impl Observer for StepTerms {
    fn on_event(&mut self, e: &Event) {
        if let Event::Step { name, terms, .. } = e {
            self.0.push((name.clone(), terms.clone()));
        }
    }
}

/// Repository root (the workspace).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A fresh scratch folder under target/.
pub fn scratch(name: &str) -> PathBuf {
    let p = repo().join("target").join("test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("scratch folder");
    p
}

/// A tiny Shapes world in `dir/data`.
pub fn tiny_world(dir: &Path) -> PathBuf {
    world_in(
        dir,
        &WorldConfig {
            train_images: 48,
            val_images: 4,
            test_images: 6,
            ..WorldConfig::default()
        },
    )
}

/// A Shapes world generated with `cfg` in `dir/data`.
pub fn world_in(dir: &Path, cfg: &WorldConfig) -> PathBuf {
    let data = dir.join("data");
    generate(&data, cfg).expect("world generation");
    data
}

/// The smoke recipe pointed at `data`.
pub fn smoke_recipe(data: &Path) -> Recipe {
    let mut r = load_recipe(repo().join("assets/recipes/smoke.toml")).expect("smoke recipe parses");
    r.data = data.to_path_buf();
    r
}

/// Every float parameter of a model, by dotted path, on the host.
pub fn weights(m: &Mllm) -> Vec<(String, Vec<f32>)> {
    struct W(Vec<(String, Vec<f32>)>, Vec<String>);
    impl ModuleVisitor for W {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.1.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.1.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let v = p
                .val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap();
            self.0.push((self.1.join("."), v));
        }
    }
    let mut w = W(Vec::new(), Vec::new());
    m.visit(&mut w);
    w.0
}

/// Asserts two models have the same parameters, by name, within `tol` (max abs difference).
pub fn assert_same_weights(a: &Mllm, b: &Mllm, tol: f32, what: &str) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.len(), wb.len());
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let d = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= tol, "{na}: {what} differ by {d}");
    }
}

/// Trains the smoke recipe (its first `stages` stages, all when `None`) as a teacher in
/// `dir/runs`, without evaluation, and returns the world and the runs folder.
pub fn smoke_teacher(dir: &Path, stages: Option<usize>) -> (PathBuf, PathBuf) {
    use condenser_engine::backend::{BackendChoice, select};
    use condenser_engine::train::{RunOptions, Silent, run_recipe};
    let data = tiny_world(dir);
    let (device, info) = select(BackendChoice::Cpu).expect("CPU device");
    let runs = dir.join("runs");
    let opts = RunOptions {
        runs_dir: runs.clone(),
        eval: false,
        ..RunOptions::default()
    };
    let mut recipe = smoke_recipe(&data);
    if let Some(n) = stages {
        recipe.stages.truncate(n);
    }
    run_recipe(&recipe, &device, &info, &opts, &mut Silent).expect("smoke teacher trains");
    (data, runs)
}

/// Copies a folder tree (a run folder, to resume it elsewhere).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
