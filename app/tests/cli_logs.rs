//! What a run writes when its output goes to a file or a program: progress lines with the
//! stage, step/steps, loss, tokens/s and ETA in a redirected stdout (`condenser demo > log`),
//! and with `--log-format json` one JSON event per line and nothing else on stdout.

mod common;

use common::{bin, scratch, smoke_recipe, world};

/// Runs the smoke recipe, its stages 8 steps long, for 6 steps with stdout and stderr captured
/// (neither is a terminal).
fn smoke_run(name: &str, extra: &[&str]) -> (String, String) {
    let (stdout, stderr, _) = smoke_run_in(name, extra);
    (stdout, stderr)
}

/// [`smoke_run`], also returning the run folder.
fn smoke_run_in(name: &str, extra: &[&str]) -> (String, String, std::path::PathBuf) {
    let dir = scratch(name);
    let data = world(&dir);
    let recipe = smoke_recipe(&dir, &data, |t| t.replace("epochs = 0.5", "epochs = 4"));
    let out = bin()
        .args(["run", recipe.to_str().unwrap(), "--backend", "cpu"])
        .arg("--runs-dir")
        .arg(dir.join("runs"))
        .args(["--stop-after", "6"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr, dir.join("runs/smoke"))
}

#[test]
fn a_redirected_stdout_gets_progress_lines() {
    let (stdout, _) = smoke_run("logs-text", &["--log-every", "0"]);
    // milestones and step lines land in the log, not only on a terminal
    assert!(stdout.contains("starting on"), "{stdout}");
    let steps: Vec<&str> = stdout.lines().filter(|l| l.contains(" step ")).collect();
    assert!(
        steps.len() >= 6,
        "one step line per step at --log-every 0:\n{stdout}"
    );
    let mid = steps[2];
    for part in ["step 3/", "loss ", "tok/s", "elapsed", "ETA "] {
        assert!(mid.contains(part), "{part:?} missing from {mid:?}");
    }
    assert!(
        stdout.contains("stopped early"),
        "the result follows: {stdout}"
    );
}

#[test]
fn json_logs_are_one_event_per_line() {
    let (stdout, _) = smoke_run("logs-json", &["--log-format", "json"]);
    let mut types = Vec::new();
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{stdout}"));
        assert_eq!(v["run"], "smoke", "{line}");
        types.push(v["type"].as_str().expect("a type").to_string());
    }
    for t in ["run_start", "stage_start", "step", "stopped"] {
        assert!(types.iter().any(|x| x == t), "no {t} event in {types:?}");
    }
    assert_eq!(
        types.iter().filter(|t| *t == "step").count(),
        6,
        "every step is an event"
    );
}

#[test]
fn a_run_writes_tensorboard_scalars() {
    let (_, _, run) = smoke_run_in("logs-tensorboard", &[]);
    let files: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    // TFRecords: the version event first, then one record per step
    let mut records = 0;
    let mut at = 0;
    while at < bytes.len() {
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        at += 12 + len + 4;
        records += 1;
    }
    assert_eq!(at, bytes.len(), "records end where the file ends");
    assert_eq!(records, 1 + 6, "the version record and the 6 steps");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("brain.Event:2"));
    for tag in [
        "loss/total",
        "train/lr",
        "train/tokens_per_s",
        "loss/region",
    ] {
        assert!(text.contains(tag), "no {tag} scalar");
    }
}
