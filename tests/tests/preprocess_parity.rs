//! Condenser's image preprocessing against transformers' image processors (CLIP, SigLIP, and
//! DINOv2's BiT processor, PIL backends), on non-square images: shortest-edge resize and centre
//! crop, plain resize, downscaling and upscaling, and LLaVA's padding to a square. The
//! fixtures (`tests/fixtures/preprocess/`) were written once by
//! `scripts/preprocess-fixtures.py`; each case's processor config is read the way
//! `condenser import` reads a tower's `preprocessor_config.json`.

use std::path::Path;

use condenser_engine::config::{Preprocess, VisionConfig};
use condenser_engine::data::image::decode_image;
use condenser_tests::repo;

struct Case {
    config: String,
    image: String,
    size: usize,
    pad_to_square: bool,
    pixels: String,
}

impl Case {
    fn of(v: &serde_json::Value) -> Self {
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        Case {
            config: s("config"),
            image: s("image"),
            size: v["size"].as_u64().unwrap() as usize,
            pad_to_square: v["pad_to_square"].as_bool().unwrap(),
            pixels: s("pixels"),
        }
    }
}

fn vision(size: usize, json: &serde_json::Value, pad: bool) -> VisionConfig {
    let (mut pre, crop) = Preprocess::from_hf(json, size).unwrap();
    assert_eq!(crop, size);
    pre.pad_to_square = pad;
    let triple = |k: &str| serde_json::from_value::<[f32; 3]>(json[k].clone()).unwrap();
    let mut v: VisionConfig = serde_json::from_value(serde_json::json!({
        "image_size": size, "patch_size": 16, "hidden": 8, "layers": 1, "heads": 1,
        "mlp_hidden": 8
    }))
    .unwrap();
    v.mean = triple("image_mean");
    v.std = triple("image_std");
    v.preprocess = pre;
    v
}

#[test]
fn preprocessing_matches_transformers_image_processors() {
    let dir = repo().join("tests/fixtures/preprocess");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases: Vec<Case> = cases.iter().map(Case::of).collect();
    assert_eq!(cases.len(), 10);
    let mut report = Vec::new();
    for c in &cases {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(&c.config)).unwrap()).unwrap();
        let v = vision(c.size, &json, c.pad_to_square);
        let bytes = std::fs::read(dir.join(&c.image)).unwrap();
        let ours = decode_image(&bytes, Path::new(&c.image), &v).unwrap();
        let theirs: Vec<f32> = std::fs::read(dir.join(&c.pixels))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{}", c.pixels);
        // in 8-bit pixel levels: both resample with the a = -0.5 cubic (or the triangle), but
        // PIL rounds to 8 bits between its horizontal and vertical passes and `image` does not
        let n = c.size * c.size;
        let levels: Vec<f32> = ours
            .iter()
            .zip(&theirs)
            .enumerate()
            .map(|(i, (a, b))| (a - b).abs() * v.std[i / n] * 255.0)
            .collect();
        let max = levels.iter().cloned().fold(0.0f32, f32::max);
        let mean = levels.iter().sum::<f32>() / levels.len() as f32;
        report.push(format!("{}: max {max:.2}, mean {mean:.3} levels", c.pixels));
        assert!(
            max <= 1.01 && mean <= 0.15,
            "{} differs from transformers by up to {max:.2} (mean {mean:.3}) pixel levels",
            c.pixels
        );
    }
    println!("{}", report.join("\n"));
}
