//! The page's glue on the native CPU backend: a bundle's bytes give the same model, and
//! `Session::ask` streams exactly the ids that `condenser chat`'s path (question_batch +
//! Mllm::generate) produces, f32 and f16 bundles alike.

use std::path::Path;

use condenser_engine::burn::prelude::Device;
use condenser_engine::config::MllmConfig;
use condenser_engine::data::image::decode_image;
use condenser_engine::data::shapes::tokenizer_json;
use condenser_engine::data::{TextTokenizer, question_batch};
use condenser_engine::io::bundle::{self, Part, Precision};
use condenser_engine::model::{GenerateOptions, Mllm, Sampling};
use condenser_web::Session;
use condenser_web::session::shapes_png;

fn config() -> MllmConfig {
    serde_json::from_value(serde_json::json!({
        "vision": { "image_size": 36, "patch_size": 12, "hidden": 32, "layers": 1, "heads": 2,
                    "mlp_hidden": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                    "drop_cls": false, "layer_norm_eps": 1e-5 },
        "projector": "mlp2x_gelu",
        "llm": { "vocab_size": 64, "hidden": 32, "layers": 2, "heads": 2, "kv_heads": 1,
                 "intermediate": 64, "max_positions": 128 }
    }))
    .expect("config")
}

/// A model seed whose untrained greedy answer runs several tokens before a stop token.
const SEED: u64 = 12;

#[test]
fn session_streams_the_cli_answer() {
    let device = Device::flex();
    let cfg = config();
    let model = Mllm::new(&cfg, SEED, &device);
    let tok_json = serde_json::to_vec(&tokenizer_json()).unwrap();
    let tok = TextTokenizer::from_bytes(&tok_json, Path::new("tokenizer.json")).unwrap();
    let (png, caption) = shapes_png(5, 36);
    assert!(!caption.is_empty());
    let question = "how many objects are there ?";

    for precision in [
        Precision::f32(),
        Precision::f16(),
        Precision::only(&[Part::Vision]),
    ] {
        // the CLI's path on the weights the page will hold
        let reference = bundle::rounded(&model, &precision).unwrap();
        let pixels = decode_image(&png, Path::new("scene"), &cfg.vision).unwrap();
        let batch = question_batch(&tok, &cfg.vision, pixels, question, &device).unwrap();
        let opts = GenerateOptions {
            max_new_tokens: 12,
            sampling: Sampling::Greedy,
            stop: tok.stop_ids(),
            seed: 0,
        };
        let want = reference.generate(&batch, &opts).remove(0);
        assert!(
            want.len() > 2,
            "{precision:?}: an answer this short compares little: {want:?}"
        );

        let weights = bundle::encode_weights(&model, &precision).unwrap();
        let config_bytes = serde_json::to_vec(&cfg).unwrap();
        let session =
            Session::from_bundle(None, &config_bytes, &weights, &tok_json, device.clone()).unwrap();
        let mut streamed = Vec::new();
        let answer = pollster::block_on(session.ask(&png, question, 12, |text, n| {
            streamed.push((text.to_string(), n));
            std::future::ready(())
        }))
        .unwrap();
        assert_eq!(answer.ids, want, "{precision:?}");
        assert_eq!(answer.text, tok.decode(&want));
        assert_eq!(streamed.len(), want.len());
        if let Some((last, n)) = streamed.last() {
            assert_eq!((last.as_str(), *n), (answer.text.as_str(), want.len()));
        }
    }
}

#[test]
fn bad_inputs_are_named() {
    let device = Device::flex();
    let cfg = config();
    let model = Mllm::new(&cfg, 1, &device);
    let weights = bundle::encode_weights(&model, &Precision::f16()).unwrap();
    let tok_json = serde_json::to_vec(&tokenizer_json()).unwrap();
    let config_bytes = serde_json::to_vec(&cfg).unwrap();
    let err = |r: condenser_engine::Result<Session>| r.err().expect("an error").to_string();
    let e = err(Session::from_bundle(
        None,
        b"{",
        &weights,
        &tok_json,
        device.clone(),
    ));
    assert!(e.starts_with("config.json"), "{e}");
    let e = err(Session::from_bundle(
        None,
        &config_bytes,
        &weights,
        b"[]",
        device.clone(),
    ));
    assert!(e.starts_with("tokenizer.json"), "{e}");
    let e = err(Session::from_bundle(
        None,
        &config_bytes,
        b"xx",
        &tok_json,
        device.clone(),
    ));
    assert!(e.starts_with("weights.safetensors"), "{e}");
    let session =
        Session::from_bundle(None, &config_bytes, &weights, &tok_json, device.clone()).unwrap();
    let e = pollster::block_on(
        session.ask(b"not an image", "what ?", 4, |_, _| std::future::ready(())),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cannot decode image"), "{e}");
    let e = pollster::block_on(
        session.ask(&shapes_png(1, 36).0, "  ", 4, |_, _| std::future::ready(())),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("question is empty"), "{e}");
}
