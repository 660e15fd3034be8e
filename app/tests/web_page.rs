//! The browser demo end to end: a trained tiny student is exported with `condenser export --web`,
//! asked a fixed question about a fixed test image by `condenser chat`, and by the page in
//! headless Chromium (web/tests/browser.mjs, playwright-core). The page's answer on the CPU
//! fallback must equal the CLI's; WebGPU is attempted too and what it did is printed.
//!
//! Needs web/pkg (scripts/web-build.sh), Node with web/node_modules and /usr/bin/chromium
//! (scripts/setup.sh): missing pieces fail the test with what to run, never skip it.

use std::path::Path;
use std::process::Command;

use condenser_tests::{repo, scratch, smoke_teacher};

fn condenser(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(args)
        .output()
        .expect("condenser runs");
    assert!(
        out.status.success(),
        "condenser {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn condenser_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(args)
        .output()
        .expect("condenser runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "condenser {args:?} should fail");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn require(path: &Path, what: &str) {
    assert!(path.exists(), "{} is missing: {what}", path.display());
}

#[test]
fn page_answers_like_the_cli() {
    let root = repo();
    require(
        &root.join("web/pkg/condenser_web_bg.wasm"),
        "run scripts/web-build.sh",
    );
    require(
        &root.join("web/node_modules/playwright-core"),
        "run scripts/web-build.sh (installs playwright-core)",
    );
    require(Path::new("/usr/bin/chromium"), "run scripts/setup.sh");

    let dir = scratch("web-page");
    let (data, runs) = smoke_teacher(&dir, None);
    let ckpt = runs.join("smoke/checkpoints/final");
    let ck = ckpt.to_str().unwrap();
    let bundle = dir.join("bundle");
    let (b, d) = (bundle.to_str().unwrap(), data.to_str().unwrap());

    // bad input: named, and no bundle folder left behind
    let err = condenser_fails(&["export", "--web", d, "-o", b, "--backend", "cpu"]);
    assert!(err.contains("needs a Condenser checkpoint folder"), "{err}");
    let missing = dir.join("no-such-data");
    let m = missing.to_str().unwrap();
    let err = condenser_fails(&[
        "export",
        "--web",
        ck,
        "-o",
        b,
        "--data",
        m,
        "--backend",
        "cpu",
    ]);
    assert!(
        err.contains("test.json") && err.contains("--dtype"),
        "{err}"
    );
    assert!(!bundle.exists());

    let out = condenser(&[
        "export",
        "--web",
        ck,
        "-o",
        bundle.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    assert!(out.contains("wrote"), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    let check = &manifest["check"];
    assert!(check["questions"].as_u64().unwrap() > 0, "{manifest}");
    // the precision is the first trial's that changed no answer (f32 when none did)
    let trials = check["trials"].as_array().expect("trials");
    assert_eq!(trials[0]["precision"]["f16"].as_array().unwrap().len(), 3);
    let want = trials
        .iter()
        .find(|t| t["differing"].as_u64() == Some(0))
        .map_or(serde_json::json!({ "f16": [] }), |t| t["precision"].clone());
    assert_eq!(manifest["precision"], want, "{manifest}");

    let image = data.join("images/test_00001.png");
    let question = "what colour is the circle ?";
    let expected = condenser(&[
        "chat",
        "--checkpoint",
        ck,
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        question,
        "--max-tokens",
        "48",
        "--backend",
        "cpu",
    ]);
    let expected = expected.trim_end_matches('\n');
    assert!(!expected.is_empty(), "the CLI gave an empty answer");

    let report = dir.join("browser.json");
    let status = Command::new("node")
        .current_dir(&root)
        .args([
            "web/tests/browser.mjs",
            "--bundle",
            bundle.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "--question",
            question,
            "--expect",
            expected,
            "--require",
            "cpu",
            "--try",
            "webgpu",
            "--json",
            report.to_str().unwrap(),
        ])
        .status()
        .expect("node runs (scripts/setup.sh installs it)");
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(
        status.success(),
        "the page's CPU answer differs from the CLI's ({expected:?}) or it failed:\n{text}"
    );
    let r: serde_json::Value = serde_json::from_str(&text).expect("browser report");
    let cpu = &r["results"][0];
    assert_eq!(cpu["backend"], "cpu");
    assert_eq!(cpu["ran"], "cpu");
    assert_eq!(cpu["answer"].as_str(), Some(expected));
    assert!(cpu["loadMs"].as_f64().unwrap() > 0.0);
    assert!(cpu["tokens"].as_u64().unwrap() >= 1);
}
