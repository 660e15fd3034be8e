//! A real vision tower end to end: the DINOv2-S/14 backbone from the ONNX file of docs/ASSETS.md
//! (weights named by walking the graph), imported for 224 px (its 37 x 37 position grid
//! resized to 16 x 16), must give what onnxruntime computes inside that file at the outputs of
//! its last two blocks (tests/fixtures/dinov2-s, written by scripts/dinov2-reference.py). The
//! file is fetched and SHA-256-checked by scripts/fetch-dinov2.sh (scripts/test.sh runs it
//! first); without it this test fails and says so.

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::burn::prelude::*;
use condenser_engine::io::{FeatureSelect, load_hf_vision};
use condenser_tests::repo;

fn onnx_path() -> std::path::PathBuf {
    let path = repo().join(".cache/dinov2/vit_s_focus.onnx");
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-dinov2.sh",
        path.display()
    );
    path
}

/// The fixed input of the reference: ((7x + 13y + 29c) mod 256) / 128 - 1, exact in f32.
fn pixels(device: &Device) -> Tensor<4> {
    let mut v = Vec::with_capacity(3 * 224 * 224);
    for c in 0..3 {
        for y in 0..224 {
            for x in 0..224 {
                v.push(((7 * x + 13 * y + 29 * c) % 256) as f32 / 128.0 - 1.0);
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [1, 3, 224, 224]), device)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(floats).collect(),
        n => vec![n.as_f64().unwrap() as f32],
    }
}

fn max_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn dinov2_s_from_onnx_matches_onnxruntime() {
    let path = onnx_path();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/dinov2-s/expected.json")).unwrap(),
    )
    .unwrap();
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let px = pixels(&device);
    for (layer, key) in [(-2, "hidden_states[-2]"), (-1, "hidden_states[-1]")] {
        let select = FeatureSelect {
            layer,
            drop_first: Some(false),
            image_size: Some(224),
        };
        let tower = load_hf_vision(&path, select, &device).unwrap();
        let c = &tower.config;
        assert_eq!(
            (c.hidden, c.heads, c.mlp_hidden, c.patch_size, c.layers),
            (384, 6, 1536, 14, (12 + 1 + layer) as usize)
        );
        assert_eq!(c.num_positions(), 257);
        assert_eq!(c.mean, [0.485, 0.456, 0.406]);
        let h = tower.forward(px.clone()); // [1, 257, 384]
        let first = h
            .clone()
            .narrow(1, 0, 6)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let means = h.mean_dim(1).into_data().to_vec::<f32>().unwrap();
        let want = &expected[key];
        let scale = floats(&want["first_tokens"])
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()));
        let (d_first, d_means) = (
            max_diff(&first, &floats(&want["first_tokens"])),
            max_diff(&means, &floats(&want["channel_means"])),
        );
        eprintln!(
            "{key}: max |diff| first tokens {d_first:.2e}, means {d_means:.2e} (max |value| {scale:.1})"
        );
        // the activations reach tens: a relative 1e-4
        assert!(
            d_first < 1e-4 * scale.max(1.0),
            "{key}: first tokens off by {d_first}"
        );
        assert!(
            d_means < 1e-4 * scale.max(1.0),
            "{key}: channel means off by {d_means}"
        );
    }
}
