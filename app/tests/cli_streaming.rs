//! Streaming data: a run's peak memory does not grow with the number of images. Two data sets
//! of the same records but 100 and 4,000 distinct 224 x 224 images (the larger decodes to
//! 2.4 GB of floats) run the same two steps through `condenser bench step` on the CPU backend;
//! the larger may take only a little more memory than the smaller (its records and the image
//! table), and far less than its decoded images.

use std::path::Path;
use std::process::Command;

use condenser_engine::data::shapes::{WorldConfig, generate};

const SIZE: u32 = 224;

/// A data folder with `n` records, each with an image of its own, and the Shapes tokenizer.
fn data_set(dir: &Path, n: usize) -> std::path::PathBuf {
    let world = dir.join("world");
    if !world.exists() {
        generate(
            &world,
            &WorldConfig {
                train_images: 4,
                val_images: 1,
                test_images: 1,
                ..WorldConfig::default()
            },
        )
        .unwrap();
    }
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(world.join("train.json")).unwrap()).unwrap();
    let conversations = records[0]["conversations"].clone();
    let data = dir.join(format!("data-{n}"));
    std::fs::create_dir_all(data.join("img")).unwrap();
    std::fs::copy(world.join("tokenizer.json"), data.join("tokenizer.json")).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("img/{i}.png");
        let colour = [(i % 251) as u8, (i / 251 % 251) as u8, 7];
        image::RgbImage::from_pixel(SIZE, SIZE, image::Rgb(colour))
            .save(data.join(&name))
            .unwrap();
        out.push(serde_json::json!({
            "id": format!("r{i}"),
            "image": name,
            "conversations": conversations,
        }));
    }
    std::fs::write(
        data.join("train.json"),
        serde_json::to_string(&out).unwrap(),
    )
    .unwrap();
    data
}

const RECIPE: &str = r#"
name = "streaming"
seed = 3
data = "DATA"
tokenizer = "DATA/tokenizer.json"

[model.vision]
image_size = 224
patch_size = 32
hidden = 32
layers = 1
heads = 2
mlp_hidden = 64

[model.llm]
vocab_size = 64
hidden = 32
layers = 1
heads = 4
kv_heads = 2
intermediate = 64

[[stage]]
name = "sft"
data = "instruct"
epochs = 1.0
batch_size = 4
lr = 1e-3
freeze = { vision = "frozen", projector = "full", llm = "full" }
"#;

/// Peak resident MiB of two steps on `data`.
fn peak_mib(dir: &Path, data: &Path) -> f64 {
    let recipe = dir.join("recipe.toml");
    let d = data.display().to_string();
    std::fs::write(&recipe, RECIPE.replace("DATA", &d)).unwrap();
    let json = dir.join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(["bench", "step", "--backend", "cpu", "--threads", "1"])
        .args([
            "--steps",
            "2",
            "--warmup",
            "0",
            "--feature-cache",
            "--runs-dir",
        ])
        .arg(dir.join("runs"))
        .arg("--json")
        .arg(&json)
        .arg(&recipe)
        .env("CONDENSER_CACHE", dir.join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(b["timed_steps"], 2);
    b["peak_host_mib"].as_f64().unwrap()
}

#[test]
fn peak_memory_does_not_grow_with_the_number_of_images() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("streaming");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let small = peak_mib(&dir, &data_set(&dir, 100));
    let many = 4000;
    let large = peak_mib(&dir, &data_set(&dir, many));
    let decoded_mib = (many * 3 * (SIZE * SIZE) as usize * 4) as f64 / (1 << 20) as f64;
    eprintln!(
        "peak RSS: {small:.0} MiB with 100 images, {large:.0} MiB with {many} \
         (decoded: {decoded_mib:.0} MiB)"
    );
    assert!(
        large < small + 64.0,
        "peak {large:.0} MiB with {many} images against {small:.0} MiB with 100"
    );
    assert!(
        large < decoded_mib / 4.0,
        "peak {large:.0} MiB; the decoded images alone are {decoded_mib:.0} MiB"
    );
}
