//! A user's own data, as the README's "your own data" section walks through it: LLaVA-style
//! JSON in the transformers chat format (`messages`, `role`/`content`, image parts, a system
//! turn, numeric ids, text-only records), JPEG images in a separate image folder, a tokenizer
//! made by `condenser tokenizer`, and recipes written by hand: a teacher and a LLaVA-KD student
//! train and are evaluated with no conversion script, and the report shows only what the data
//! has.

mod common;

use std::path::Path;

use common::{bin, scratch, world};
use condenser_engine::data::llava::load_conversations;
use serde_json::{Value, json};

/// Writes `own/{train,test}.json` and `photos/*.jpg` from a tiny generated world's images and
/// questions, in the chat format, without the world's question types.
fn own_data(dir: &Path) {
    let world = world(dir);
    let (own, photos) = (dir.join("own"), dir.join("photos"));
    std::fs::create_dir_all(&own).unwrap();
    std::fs::create_dir_all(photos.join("val2014")).unwrap();
    for split in ["train", "test"] {
        let records = load_conversations(&world.join(format!("{split}.json")), true).unwrap();
        let mut out = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let png = r.image.as_ref().unwrap();
            let name = Path::new(png).file_stem().unwrap().to_str().unwrap();
            let jpg = format!("val2014/{name}.jpg");
            if !photos.join(&jpg).exists() {
                image::open(world.join(png))
                    .unwrap()
                    .to_rgb8()
                    .save(photos.join(&jpg))
                    .unwrap();
            }
            let mut messages = vec![json!({"role": "system", "content": "Answer briefly."})];
            for (k, (q, a)) in r.exchanges().enumerate() {
                let text = q.value.replace("<image>", "").trim().to_string();
                let content = if k == 0 {
                    json!([{"type": "image"}, {"type": "text", "text": text}])
                } else {
                    json!(text)
                };
                messages.push(json!({"role": "user", "content": content}));
                messages.push(json!({"role": "assistant", "content": a.value}));
            }
            out.push(json!({"id": i, "image": jpg, "messages": messages}));
        }
        if split == "train" {
            // text-only records, as LLaVA's instruction mix has
            for i in 0..4 {
                out.push(json!({"messages": [
                    {"role": "user", "content": "say the colour red"},
                    {"role": "assistant", "content": format!("red {}", ["circle", "square"][i % 2])}
                ]}));
            }
        }
        std::fs::write(
            own.join(format!("{split}.json")),
            serde_json::to_string_pretty(&Value::Array(out)).unwrap(),
        )
        .unwrap();
    }
}

/// A recipe of the README's shape on `own` with images in `photos`.
fn recipe(dir: &Path, name: &str, vocab: usize, body: &str) -> std::path::PathBuf {
    let text = format!(
        r#"name = "{name}"
seed = 3
data = {data:?}
image_folder = {photos:?}
require_image = false

[model.vision]
image_size = 36
patch_size = 12
hidden = 32
layers = 1
heads = 2
mlp_hidden = 64

{body}
"#,
        data = dir.join("own").display().to_string(),
        photos = dir.join("photos").display().to_string(),
        body = body.replace("VOCAB", &vocab.to_string()),
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn run(recipe: &Path, runs: &Path) -> String {
    let out = bin()
        .args([
            "run",
            recipe.to_str().unwrap(),
            "--backend",
            "cpu",
            "--threads",
            "1",
        ])
        .arg("--runs-dir")
        .arg(runs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn own_llava_data_trains_a_teacher_and_a_distilled_student() {
    let dir = scratch("own-data");
    own_data(&dir);

    // the tokenizer, from the data alone
    let out = bin()
        .args(["tokenizer", "--kind", "word", "--data"])
        .arg(dir.join("own"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vocab: usize = said
        .split("vocab_size = ")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no vocab size in {said}"));
    assert!(dir.join("own/tokenizer.json").exists());
    // a second run does not overwrite it
    let again = bin()
        .args(["tokenizer", "--data"])
        .arg(dir.join("own"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let teacher = recipe(
        &dir,
        "own-teacher",
        vocab,
        r#"[model.llm]
vocab_size = VOCAB
hidden = 32
layers = 2
heads = 4
kv_heads = 2
intermediate = 64

[[stage]]
name = "finetune"
data = "instruct"
epochs = 3
batch_size = 8
lr = 2e-3
freeze = { vision = "full", projector = "full", llm = "full" }
"#,
    );
    let student = recipe(
        &dir,
        "own-kd",
        vocab,
        r#"[teacher]
from = "own-teacher"

[init]
vision_from = "own-teacher"

[model.llm]
vocab_size = VOCAB
hidden = 16
layers = 1
heads = 2
kv_heads = 1
intermediate = 32

[[stage]]
name = "sft"
kind = "sft"
data = "instruct"
epochs = 1
batch_size = 8
lr = 2e-3
freeze = { vision = "frozen", projector = "full", llm = "full" }

[[stage]]
name = "dft"
kind = "dft"
data = "instruct"
objective = { kind = "distill", res = 1.0, vis = 1.0, rel = 1.0 }
epochs = 1
batch_size = 8
lr = 2e-3
freeze = { vision = "frozen", projector = "full", llm = "full" }
"#,
    );
    let runs = dir.join("runs");
    let said = run(&teacher, &runs);
    assert!(said.contains("held-out exact match"), "{said}");
    let said = run(&student, &runs);
    assert!(said.contains("held-out exact match"), "{said}");

    // the report knows nothing of the Shapes world's question types or POPE
    let report = std::fs::read_to_string(runs.join("own-kd/report.md")).unwrap();
    assert!(report.contains("| model | overall |\n"), "{report}");
    assert!(
        !report.contains("colour") && !report.contains("POPE"),
        "{report}"
    );
    // and its examples are the data's own questions, system text left out of them
    assert!(report.contains("?"), "{report}");

    // chat finds a data file's image path in the image folder
    let chat = |folder: Option<&Path>| {
        let mut c = bin();
        c.args(["chat", "--backend", "cpu", "--checkpoint"])
            .arg(runs.join("own-kd/checkpoints/final"))
            .args([
                "--image",
                "val2014/test_00000.jpg",
                "--prompt",
                "what shape ?",
            ]);
        if let Some(f) = folder {
            c.arg("--image-folder").arg(f);
        }
        c.output().unwrap()
    };
    let out = chat(Some(&dir.join("photos")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = chat(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
