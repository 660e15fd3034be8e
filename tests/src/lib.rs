//! Shared helpers for the end-to-end tests in `tests/tests/`.

use std::path::{Path, PathBuf};

use condenser_engine::config::{Recipe, load_recipe};
use condenser_engine::data::shapes::{WorldConfig, generate};

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
