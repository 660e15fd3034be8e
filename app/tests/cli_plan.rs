//! `condenser run --plan`: the memory plan of a recipe, printed without training, and its
//! refusal of a stage that cannot fit the device (here: the CPU backend's host memory, which a
//! batch of a billion sequences exceeds), with a non-zero exit and no run folder.

use std::path::Path;
use std::process::Command;

use condenser_engine::data::shapes::{WorldConfig, generate};

#[test]
fn plan_prints_every_stage_and_refuses_what_cannot_fit() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plan");
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    generate(
        &data,
        &WorldConfig {
            train_images: 8,
            val_images: 2,
            test_images: 2,
            ..WorldConfig::default()
        },
    )
    .unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/recipes/smoke.toml"),
    )
    .unwrap()
    .replace(
        "data = \"data/smoke\"",
        &format!("data = {:?}", data.display().to_string()),
    );
    let plan = |text: &str, name: &str| {
        let recipe = dir.join(name);
        std::fs::write(&recipe, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_condenser"))
            .args(["run", "--plan", "--backend", "cpu", "--runs-dir"])
            .arg(dir.join("runs"))
            .arg(&recipe)
            .output()
            .unwrap()
    };
    let ok = plan(&text, "smoke.toml");
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for part in [
        "memory plan on flex (cpu)",
        "stage 1 \"vision\"",
        "stage 3 \"finetune\"",
        "the student's attention scores [8, 4, ",
        "every stage fits",
    ] {
        assert!(out.contains(part), "{part:?} missing from:\n{out}");
    }
    let huge = text.replacen("batch_size = 8", "batch_size = 1000000000", 1);
    let bad = plan(&huge, "huge.toml");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    for part in [
        "does not fit the device: stage 1 \"vision\"",
        "estimated peak",
        "of memory available",
        "batch_size",
    ] {
        assert!(err.contains(part), "{part:?} missing from:\n{err}");
    }
    assert!(String::from_utf8_lossy(&bad.stdout).contains("<- does not fit"));
    assert!(
        !dir.join("runs").exists(),
        "--plan never writes a run folder"
    );
}
