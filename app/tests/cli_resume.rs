//! A real kill: `condenser run` is SIGKILLed after its first checkpoint, resumed with
//! `--resume`, and must end with the same weights as an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use condenser_engine::burn::module::{Module, ModuleVisitor, Param};
use condenser_engine::burn::prelude::*;
use condenser_engine::data::shapes::{WorldConfig, generate};
use condenser_engine::run::checkpoint;

fn weights(dir: &Path) -> Vec<Vec<f32>> {
    struct W(Vec<Vec<f32>>);
    impl ModuleVisitor for W {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.push(
                p.val()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap(),
            );
        }
    }
    let m = checkpoint::load_full(dir, &Device::flex()).unwrap();
    let mut w = W(Vec::new());
    m.visit(&mut w);
    w.0
}

#[test]
fn sigkilled_run_resumes_to_the_same_weights() {
    let dir: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sigkill");
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    generate(
        &data,
        &WorldConfig {
            train_images: 64,
            val_images: 2,
            test_images: 2,
            ..WorldConfig::default()
        },
    )
    .unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/recipes/smoke.toml"),
    )
    .unwrap();
    let text = text
        .replace(
            "data = \"data/smoke\"",
            &format!("data = {:?}", data.display().to_string()),
        )
        .replace("epochs = 0.5", "epochs = 3.0");
    let recipe = dir.join("recipe.toml");
    std::fs::write(&recipe, text).unwrap();
    let run = |runs: &str, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_condenser"));
        c.args([
            "run",
            recipe.to_str().unwrap(),
            "--backend",
            "cpu",
            "--no-eval",
            "--runs-dir",
        ])
        .arg(dir.join(runs))
        .args(extra);
        c
    };
    assert!(run("a", &[]).status().unwrap().success());

    let mut child = run("b", &[]).spawn().unwrap();
    let latest = dir.join("b/smoke/checkpoints/latest");
    let start = Instant::now();
    while !latest.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !dir.join("b/smoke/checkpoints/final").exists(),
        "the run finished before it could be killed"
    );
    let out = run("b", &["--resume"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // with stdout captured (a log), the milestones are written there
    assert!(String::from_utf8_lossy(&out.stdout).contains("resuming from"));

    let (wa, wb) = (
        weights(&dir.join("a/smoke/checkpoints/final")),
        weights(&dir.join("b/smoke/checkpoints/final")),
    );
    assert_eq!(wa.len(), wb.len());
    for (a, b) in wa.iter().zip(&wb) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-6, "resumed weights differ by {d}");
    }
}
