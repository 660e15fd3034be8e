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

/// `--from-answers` mines pairs from `condenser eval --answers` lines: every wrong existence
/// answer, balanced with right ones; relation questions are left out; a malformed line is named
/// by its number and an answer file without a mistake writes nothing.
#[test]
fn mines_pairs_from_answers_and_refuses_bad_lines() {
    let dir = scratch("cli-prefs-mined");
    let line = |id: &str, qtype: &str, expected: &str, answer: &str| {
        serde_json::json!({
            "id": id, "question": format!("is there a {id} ?"), "expected": expected,
            "answer": answer, "correct": expected == answer, "image": format!("images/{id}.png"),
            "question_type": qtype,
        })
        .to_string()
    };
    let lines = [
        line("a", "exist-adversarial", "no", "yes"),
        line("b", "exist-popular", "no", "yes"),
        line("c", "exist-random", "yes", "yes"),
        line("d", "exist-random", "yes", "yes"),
        line("e", "relation", "yes", "no"),
        line("f", "colour", "red", "blue"),
    ];
    let answers = dir.join("answers.jsonl");
    std::fs::write(&answers, lines.join("\n")).unwrap();
    let out = dir.join("mined.json");
    let o = prefs(&[
        "--from-answers",
        answers.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pairs = load_preferences(&out, true).unwrap();
    let mut ids: Vec<&str> = pairs.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a-mined", "b-mined", "c-mined", "d-mined"]);
    for p in &pairs {
        let expected = if p.id.starts_with(['a', 'b']) {
            "no"
        } else {
            "yes"
        };
        assert_eq!(p.chosen, expected);
        assert_ne!(p.rejected, p.chosen);
        assert!(p.prompt.starts_with("<image>\nis there a "));
    }

    // a malformed line is reported with its number, and nothing is written
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{{\"id\": 3}}\n", lines[0])).unwrap();
    let none = dir.join("none.json");
    let o = prefs(&[
        "--from-answers",
        bad.to_str().unwrap(),
        "-o",
        none.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.jsonl:2"), "{err}");
    assert!(!none.exists());

    // no mistake to mine
    let right = dir.join("right.jsonl");
    std::fs::write(&right, [lines[2].clone(), lines[3].clone()].join("\n")).unwrap();
    let o = prefs(&[
        "--from-answers",
        right.to_str().unwrap(),
        "-o",
        none.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no pair could be mined"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!none.exists());
}
