//! Shared helpers for the end-to-end tests in `tests/tests/`.

use std::path::{Path, PathBuf};

use condenser_engine::burn::module::{Module, ModuleVisitor, Param};
use condenser_engine::burn::prelude::*;
use condenser_engine::config::{Recipe, load_recipe};
use condenser_engine::data::shapes::{WorldConfig, generate};
use condenser_engine::model::Mllm;

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
    let data = dir.join("data");
    let cfg = WorldConfig {
        train_images: 48,
        val_images: 4,
        test_images: 6,
        ..WorldConfig::default()
    };
    generate(&data, &cfg).expect("world generation");
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
