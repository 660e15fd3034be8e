//! Tests of the browser bundle: weights round-trip at each precision, and a bundle folder is
//! written all or nothing.

use super::*;
use crate::model::tests::tiny_config as tiny;

#[test]
fn f32_round_trip_is_exact_and_f16_rounds_each_weight() {
    let device = Device::flex();
    let model = Mllm::new(&tiny(), 3, &device);
    let back = rounded(&model, &Precision::f32()).unwrap();
    let a = host_params(&model);
    assert_eq!(a, host_params(&back));
    assert!(a.len() > 10);

    let h = host_params(&rounded(&model, &Precision::f16()).unwrap());
    for (name, t) in &a {
        let ht = &h[name];
        assert_eq!(t.shape, ht.shape);
        for (x, y) in t.values.iter().zip(&ht.values) {
            assert_eq!(half::f16::from_f32(*x).to_f32(), *y, "{name}");
            assert!((x - y).abs() <= x.abs() * 1e-3 + 1e-7, "{name}: {x} vs {y}");
        }
    }
    let f16 = encode_weights(&model, &Precision::f16()).unwrap().len();
    let f32 = encode_weights(&model, &Precision::f32()).unwrap().len();
    assert!(f16 * 10 < f32 * 6, "f16 {f16} bytes vs f32 {f32}");

    // mixed: only the vision encoder's weights are rounded
    let vision_only = Precision::only(&[Part::Vision]);
    assert_eq!(vision_only.label(), "f16 vision, f32 projector+llm");
    let m = host_params(&rounded(&model, &vision_only).unwrap());
    for (name, t) in &a {
        let want = if name.starts_with("vision.") {
            &h[name].values
        } else {
            &t.values
        };
        assert_eq!(&m[name].values, want, "{name}");
    }
    let size = encode_weights(&model, &vision_only).unwrap().len();
    assert!(f16 < size && size < f32);
}

#[test]
fn weights_of_another_model_are_refused_by_name() {
    let device = Device::flex();
    let model = Mllm::new(&tiny(), 3, &device);
    let bytes = encode_weights(&model, &Precision::f16()).unwrap();
    let mut other = tiny();
    other.llm.intermediate += 8;
    let err = decode_weights(&other, &bytes, Path::new("w.safetensors"), &device)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("w.safetensors: "), "{err}");
    assert!(err.contains("mlp") && err.contains("model needs"), "{err}");
    let err = decode_weights(&tiny(), b"not safetensors", Path::new("w"), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a safetensors file"), "{err}");
}

#[test]
fn a_folder_that_is_not_a_bundle_is_never_replaced() {
    let device = Device::flex();
    let model = Mllm::new(&tiny(), 3, &device);
    let dir = std::env::temp_dir().join(format!("condenser-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("events.jsonl"), "{}\n").unwrap();
    let manifest = || Manifest {
        format: FORMAT.into(),
        version: VERSION,
        precision: Precision::f32(),
        reason: "test".into(),
        params: 0,
        weights_bytes: 0,
        source: "test".into(),
        check: None,
    };
    let err = write_bundle(&dir, &model, b"{}", manifest())
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a bundle"), "{err}");
    assert!(dir.join("events.jsonl").is_file());
    // an earlier bundle is replaced whole
    std::fs::remove_file(dir.join("events.jsonl")).unwrap();
    write_bundle(&dir, &model, b"{}", manifest()).unwrap();
    std::fs::write(dir.join("stale.txt"), "x").unwrap();
    write_bundle(&dir, &model, b"{}", manifest()).unwrap();
    assert!(dir.join(MANIFEST_FILE).is_file() && !dir.join("stale.txt").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn manifest_of_another_format_is_refused() {
    let text = r#"{"format":"other","version":1}"#;
    let err = Manifest::parse(text, Path::new("bundle.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a condenser-bundle"), "{err}");
}
