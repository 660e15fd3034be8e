//! Bad input through the real binary: each case must exit non-zero with a message naming the
//! file and the problem, never panic, and never leave a run folder behind.

mod common;

use std::path::Path;

use common::{bin, scratch, smoke_recipe, world};

/// Runs `condenser run` and checks the failure contract; returns stderr.
fn run_fails(dir: &Path, recipe: &Path, extra: &[&str]) -> String {
    let out = bin()
        .args([
            "run",
            recipe.to_str().unwrap(),
            "--backend",
            "cpu",
            "--runs-dir",
        ])
        .arg(dir.join("runs"))
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    assert!(
        !dir.join("runs/smoke").exists(),
        "a run folder was left behind: {err}"
    );
    err
}

#[test]
fn malformed_json_names_file_line_and_column() {
    let dir = scratch("bad-json");
    let data = world(&dir);
    std::fs::write(
        data.join("train.json"),
        "[{\"id\": \"x\", \"conversations\": [}]",
    )
    .unwrap();
    let r = smoke_recipe(&dir, &data, |t| t);
    let err = run_fails(&dir, &r, &[]);
    assert!(err.contains("train.json:1:"), "{err}");
}

#[test]
fn missing_image_is_named() {
    let dir = scratch("missing-image");
    let data = world(&dir);
    std::fs::remove_file(data.join("images/train_00003.png")).unwrap();
    let err = run_fails(&dir, &smoke_recipe(&dir, &data, |t| t), &[]);
    assert!(
        err.contains("train_00003.png") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn undecodable_image_is_named() {
    let dir = scratch("bad-image");
    let data = world(&dir);
    std::fs::write(data.join("images/train_00002.png"), b"not a png at all").unwrap();
    let err = run_fails(&dir, &smoke_recipe(&dir, &data, |t| t), &[]);
    assert!(
        err.contains("train_00002.png") && err.contains("cannot decode"),
        "{err}"
    );
}

#[test]
fn empty_data_file_is_an_error() {
    let dir = scratch("empty-data");
    let data = world(&dir);
    std::fs::write(data.join("train.json"), "[]").unwrap();
    let err = run_fails(&dir, &smoke_recipe(&dir, &data, |t| t), &[]);
    assert!(
        err.contains("train.json:1:1") && err.contains("empty"),
        "{err}"
    );
}

#[test]
fn image_path_leaving_the_data_folder_is_refused() {
    let dir = scratch("escaping-image");
    let data = world(&dir);
    let p = data.join("train.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replacen("\"images/", "\"../images/", 1);
    std::fs::write(&p, text).unwrap();
    let err = run_fails(&dir, &smoke_recipe(&dir, &data, |t| t), &[]);
    assert!(
        err.contains("train.json")
            && err.contains("record 0")
            && err.contains("leaves the data folder"),
        "{err}"
    );
}

#[test]
fn conversation_without_image_placeholder_is_rejected() {
    let dir = scratch("no-placeholder");
    let data = world(&dir);
    let p = data.join("train.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replacen("<image>\\n", "", 1);
    std::fs::write(&p, text).unwrap();
    let err = run_fails(&dir, &smoke_recipe(&dir, &data, |t| t), &[]);
    assert!(
        err.contains("train.json") && err.contains("record 0") && err.contains("<image>"),
        "{err}"
    );
}

#[test]
fn tokenizer_larger_than_model_vocabulary_is_rejected() {
    let dir = scratch("tokenizer-vocab");
    let data = world(&dir);
    let r = smoke_recipe(&dir, &data, |t| {
        t.replace("vocab_size = 64", "vocab_size = 40")
    });
    let err = run_fails(&dir, &r, &[]);
    assert!(
        err.contains("tokenizer.json") && err.contains("vocabulary is 40"),
        "{err}"
    );
}

#[test]
fn unknown_recipe_key_names_key_and_file() {
    let dir = scratch("unknown-key");
    let data = world(&dir);
    let r = smoke_recipe(&dir, &data, |t| {
        t.replacen("lr = 1e-3", "lr = 1e-3\nlearning_rate = 1", 1)
    });
    let err = run_fails(&dir, &r, &[]);
    assert!(
        err.contains("recipe.toml") && err.contains("learning_rate"),
        "{err}"
    );
}

#[test]
fn checkpoint_of_another_shape_is_rejected() {
    let dir = scratch("ckpt-shape");
    let data = world(&dir);
    // a finished run whose vision encoder is wider than the next recipe's
    let wide = smoke_recipe(&dir, &data, |t| {
        t.replace("name = \"smoke\"", "name = \"wide\"")
            .replacen("hidden = 32", "hidden = 48", 1)
    });
    let ok = bin()
        .args([
            "run",
            wide.to_str().unwrap(),
            "--backend",
            "cpu",
            "--no-eval",
            "--runs-dir",
        ])
        .arg(dir.join("runs"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let r = smoke_recipe(&dir, &data, |t| {
        t.replace(
            "[model.vision]",
            "[init]\nvision_from = \"wide\"\n\n[model.vision]",
        )
    });
    let err = run_fails(&dir, &r, &[]);
    assert!(
        err.contains("checkpoints/final") && err.contains("shape"),
        "{err}"
    );
    // and loading a checkpoint into a model of another shape through eval fails cleanly too
    // (first the good one, which also writes every answer as a JSON line)
    let answers = dir.join("answers.jsonl");
    let out = bin()
        .args(["eval", "--backend", "cpu", "--checkpoint"])
        .arg(dir.join("runs/wide/checkpoints/final"))
        .arg("--data")
        .arg(&data)
        .arg("--answers")
        .arg(&answers)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let test: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(data.join("test.json")).unwrap()).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&answers)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), test.len(), "one answer per question");
    for (l, r) in lines.iter().zip(&test) {
        assert_eq!(l["id"], r["id"]);
        assert!(l["answer"].is_string() && l["correct"].is_boolean(), "{l}");
        assert_eq!(l["question_type"], r["question_types"][0], "{l}");
    }
    let cfg = dir.join("runs/wide/checkpoints/final/config.json");
    let text =
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replacen("\"hidden\": 48", "\"hidden\": 40", 1);
    std::fs::write(&cfg, text).unwrap();
    let out = bin()
        .args(["eval", "--backend", "cpu", "--checkpoint"])
        .arg(dir.join("runs/wide/checkpoints/final"))
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("model.bpk") && err.contains("shape mismatch"),
        "{err}"
    );
}

/// An ablation set on a public data set that has not been fetched names the missing folder and
/// the script that fetches it, and trains nothing.
#[test]
fn ablation_on_unfetched_public_data_names_the_fetch_script() {
    let dir = scratch("ablate-unfetched");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = bin()
        .args([
            "ablate",
            "easy-vqa",
            "--seeds",
            "1",
            "--backend",
            "cpu",
            "--root",
        ])
        .arg(&root)
        .arg("--data")
        .arg(dir.join("no-easy-vqa"))
        .arg("--runs-dir")
        .arg(dir.join("runs"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("no-easy-vqa") && err.contains("scripts/fetch-easy-vqa.sh"),
        "{err}"
    );
    assert!(!dir.join("runs").exists(), "nothing may train");
}

/// `condenser import`: a composition writes a whole checkpoint folder and says where each part
/// came from; an existing folder is kept unless forced; a broken source names what is wrong and
/// leaves nothing behind.
#[test]
fn import_writes_a_checkpoint_or_names_the_problem() {
    let dir = scratch("import");
    let hf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf");
    let import = |extra: &[&str], out: &Path| {
        bin()
            .args(["import", "--backend", "cpu"])
            .args(extra)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let vision = hf.join("clip").display().to_string();
    let llm = hf.join("llama").display().to_string();
    let parts = ["--vision", &vision, "--llm", &llm, "--llm-layers", "1"];
    let out = dir.join("ckpt");
    let ok = import(&parts, &out);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        text.contains("fresh, seed 0") && text.contains("clip"),
        "{text}"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["llm"]["layers"], 1);
    assert_eq!(config["vision"]["layers"], 2);
    assert_eq!(config["vision"]["act"], "quick_gelu");
    // CLIP's processing: the shorter side to the input, the centre cut, bicubic; no padding
    assert_eq!(config["vision"]["preprocess"]["resize"], "shortest_edge");
    assert_eq!(config["vision"]["preprocess"]["resample"], "bicubic");
    assert_eq!(config["vision"]["preprocess"]["pad_to_square"], false);
    assert!(out.join("model.bpk").exists() && out.join("import.json").exists());
    // LLaVA's image_aspect_ratio = pad, asked for at import
    let padded = dir.join("padded");
    let pad = import(
        &[&parts[..], &["--image-aspect-ratio", "pad"]].concat(),
        &padded,
    );
    assert!(
        pad.status.success(),
        "{}",
        String::from_utf8_lossy(&pad.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(padded.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["vision"]["preprocess"]["pad_to_square"], true);
    // the folder exists now: refused without --force, replaced with it
    let again = import(&parts, &out);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("--force"), "{err}");
    let forced = import(&[&parts[..], &["--force"]].concat(), &out);
    assert!(forced.status.success());
    // a DINOv2 backbone from its ONNX export, resized to 32 px
    let onnx = hf.join("dinov2/model.onnx").display().to_string();
    let dino_out = dir.join("dino");
    let dino = import(
        &["--vision", &onnx, "--image-size", "32", "--llm", &llm],
        &dino_out,
    );
    let text = String::from_utf8_lossy(&dino.stdout);
    assert!(
        dino.status.success(),
        "{}",
        String::from_utf8_lossy(&dino.stderr)
    );
    assert!(
        text.contains("DINOv2 ONNX") && text.contains("32 px"),
        "{text}"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dino_out.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["vision"]["layer_scale"], true);
    assert_eq!(config["vision"]["image_size"], 32);
    // 31 px is no multiple of the 8 px patches
    let odd = import(
        &["--vision", &onnx, "--image-size", "31", "--llm", &llm],
        &dir.join("odd"),
    );
    let err = String::from_utf8_lossy(&odd.stderr);
    assert!(
        !odd.status.success() && err.contains("patch_size 8"),
        "{err}"
    );
    // a LLaVA folder missing tensors: every missing name listed, no folder written
    let broken = dir.join("broken-llava");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(hf.join("llava/config.json"), broken.join("config.json")).unwrap();
    std::fs::copy(
        hf.join("llama/model-00001-of-00007.safetensors"),
        broken.join("model.safetensors"),
    )
    .unwrap();
    let bad_out = dir.join("never");
    let failed = import(&[broken.to_str().unwrap()], &bad_out);
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success() && !err.contains("panicked"),
        "{err}"
    );
    assert!(
        err.contains("tensors missing") && err.contains("multi_modal_projector.linear_1.weight"),
        "{err}"
    );
    assert!(!bad_out.exists() && !dir.join(".never.tmp").exists());
    // a decoder folder given as a whole model: the model type is named
    let failed = import(&[&llm], &bad_out);
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("\"llama\"") && err.contains("--llm"), "{err}");
}
