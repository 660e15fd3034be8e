//! LLaVA's `image_folder`: the JSON files in the data folder, the images somewhere else. A run
//! and an evaluation find the images through `--image-folder` (or the recipe's `image_folder`),
//! and without it the first missing image is named.

mod common;

use std::path::{Path, PathBuf};

use common::{bin, scratch, smoke_recipe, world};

/// A tiny world whose `images/` moved to `dir/elsewhere/images`; returns (data, image folder).
fn split_world(dir: &Path) -> (PathBuf, PathBuf) {
    let data = world(dir);
    let folder = dir.join("elsewhere");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::rename(data.join("images"), folder.join("images")).unwrap();
    (data, folder)
}

/// The smoke recipe on `data`, with `image_folder` set when given.
fn recipe(dir: &Path, data: &Path, image_folder: Option<&Path>) -> PathBuf {
    smoke_recipe(dir, data, |t| match image_folder {
        Some(f) => format!("image_folder = {:?}\n{t}", f.display().to_string()),
        None => t,
    })
}

fn run(recipe: &Path, runs: &Path, extra: &[&str]) -> (bool, String) {
    let out = bin()
        .args(["run", recipe.to_str().unwrap(), "--backend", "cpu"])
        .arg("--runs-dir")
        .arg(runs)
        .args(["--stop-after", "2"])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn images_are_found_in_the_image_folder() {
    let dir = scratch("image-folder");
    let (data, folder) = split_world(&dir);

    // without an image folder the images are looked for beside the JSON: named, not a panic
    let (ok, err) = run(&recipe(&dir, &data, None), &dir.join("runs-none"), &[]);
    assert!(!ok, "trained without its images");
    assert!(
        err.contains("not found") && err.contains("images/train_"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // the command-line flag and the recipe key both point the run at them
    let flag = folder.to_str().unwrap();
    let (ok, err) = run(
        &recipe(&dir, &data, None),
        &dir.join("runs-flag"),
        &["--image-folder", flag],
    );
    assert!(ok, "--image-folder: {err}");
    let (ok, err) = run(
        &recipe(&dir, &data, Some(&folder)),
        &dir.join("runs-key"),
        &[],
    );
    assert!(ok, "image_folder in the recipe: {err}");

    // and `eval` reads the test split's images from the same folder
    let ckpt = std::fs::read_dir(dir.join("runs-key/smoke/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("model.bpk").exists())
        .expect("a checkpoint");
    let eval = |extra: &[&str]| {
        bin()
            .args(["eval", "--backend", "cpu", "--checkpoint"])
            .arg(&ckpt)
            .arg("--data")
            .arg(&data)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = eval(&["--image-folder", flag]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = eval(&[]);
    assert!(
        !out.status.success(),
        "eval found images that are not there"
    );
}
