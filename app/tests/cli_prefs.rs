//! `condenser prefs` through the real binary: pairs built from a LLaVA file load as preference
//! data; a malformed input or an object list that matches nothing fails with a clear message
//! and writes nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use condenser_engine::data::llava::load_preferences;
use condenser_engine::data::shapes::{WorldConfig, generate};

fn scratch(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn prefs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_condenser"))
        .arg("prefs")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn builds_pairs_that_load_and_refuses_bad_input() {
    let dir = scratch("cli-prefs");
    let data = dir.join("data");
    generate(
        &data,
        &WorldConfig {
            train_images: 20,
            val_images: 1,
            test_images: 1,
            ..WorldConfig::default()
        },
    )
    .unwrap();
    let out = dir.join("built.json");
    let o = prefs(&[
        data.join("train.json").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pairs = load_preferences(&out, true).unwrap();
    assert!(!pairs.is_empty());
    for p in &pairs {
        assert_ne!(p.chosen, p.rejected);
        assert!(p.prompt.starts_with("<image>\n"));
    }

    // an object list that no answer mentions
    let objects = dir.join("objects.txt");
    std::fs::write(&objects, "zebra\nlighthouse\n").unwrap();
    let none = dir.join("none.json");
    let o = prefs(&[
        data.join("train.json").to_str().unwrap(),
        "-o",
        none.to_str().unwrap(),
        "--objects",
        objects.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no pair could be built"), "{err}");
    assert!(!none.exists());

    // malformed JSON names the file and position
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "[{\"id\": 1,").unwrap();
    let o = prefs(&[bad.to_str().unwrap(), "-o", none.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.json") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!none.exists());
}
