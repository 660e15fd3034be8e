//! Helpers of the CLI tests that drive the real binary on a tiny generated world.

use std::path::{Path, PathBuf};
use std::process::Command;

use condenser_engine::data::shapes::{WorldConfig, generate};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_condenser"));
    c.env("RUST_LOG", "warn");
    c
}

/// An empty folder in the target's scratch space for integration tests.
pub fn scratch(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A 16-image Shapes world in `dir/data`.
pub fn world(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    generate(
        &data,
        &WorldConfig {
            train_images: 16,
            val_images: 2,
            test_images: 2,
            ..WorldConfig::default()
        },
    )
    .unwrap();
    data
}

/// `dir/recipe.toml`: the smoke recipe pointed at `data`, then passed through `edit`.
#[allow(dead_code)] // not every test binary uses every helper
pub fn smoke_recipe(dir: &Path, data: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/recipes/smoke.toml"),
    )
    .unwrap();
    let text = text.replace(
        "data = \"data/smoke\"",
        &format!("data = {:?}", data.display().to_string()),
    );
    let p = dir.join("recipe.toml");
    std::fs::write(&p, edit(text)).unwrap();
    p
}
