//! Parity with Hugging Face transformers: tiny random Llama (untied head, sharded files) and
//! Qwen2 (tied head, q/k/v biases) decoders written by `scripts/hf-fixtures.py`, loaded here by
//! their HF tensor names, must give transformers' final hidden states and logits for the same
//! token ids within 1e-4.

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::burn::prelude::*;
use condenser_engine::io::load_hf_llm;
use condenser_engine::model::AttnMask;
use condenser_tests::repo;

/// Max |a - b| over two nested-list JSON values flattened against our output.
fn flatten(v: &serde_json::Value, out: &mut Vec<f32>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        serde_json::Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
        other => panic!("unexpected {other}"),
    }
}

fn check(name: &str) {
    let dir = repo().join("tests/fixtures/hf").join(name);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let llm = load_hf_llm(&dir, &device).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ids: Vec<Vec<i64>> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
    let (b, t) = (ids.len(), ids[0].len());
    let flat: Vec<i64> = ids.concat();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, t]), &device);
    let pos = Tensor::<1, Int>::arange(0..t as i64, &device)
        .reshape([1, t])
        .repeat_dim(0, b);
    let hidden = llm.hidden(
        llm.embed(ids),
        pos,
        AttnMask::causal(Tensor::ones([1, t], &device)),
        None,
    );
    let logits = llm.logits(hidden.clone());
    for (key, ours) in [("last_hidden_state", hidden), ("logits", logits)] {
        let mut want = Vec::new();
        flatten(&expected[key], &mut want);
        let got = ours
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(got.len(), want.len(), "{name} {key}: sizes");
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max);
        eprintln!("{name} {key}: max |diff| {diff:.2e} (max |value| {scale:.2})");
        assert!(diff < 1e-4, "{name} {key}: max |diff| {diff} >= 1e-4");
    }
}

#[test]
fn llama_matches_transformers() {
    check("llama");
}

#[test]
fn qwen2_matches_transformers() {
    check("qwen2");
}

#[test]
fn unknown_architectures_and_missing_tensors_are_clear_errors() {
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let scratch = condenser_tests::scratch("hf-errors");
    let src = repo().join("tests/fixtures/hf/qwen2");
    // another architecture
    let config = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(
        scratch.join("config.json"),
        config.replace("\"qwen2\"", "\"gpt2\""),
    )
    .unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        scratch.join("model.safetensors"),
    )
    .unwrap();
    let e = load_hf_llm(&scratch, &device).unwrap_err().to_string();
    assert!(e.contains("gpt2") && e.contains("llama, qwen2"), "{e}");
    // a llama config over qwen2 tensors: no biases expected, so the biases are unused (warned),
    // but an untied head is expected and missing
    std::fs::write(
        scratch.join("config.json"),
        config.replace("\"qwen2\"", "\"llama\"").replace(
            "\"tie_word_embeddings\": true",
            "\"tie_word_embeddings\": false",
        ),
    )
    .unwrap();
    let e = load_hf_llm(&scratch, &device).unwrap_err().to_string();
    assert!(e.contains("1 tensors missing: lm_head.weight"), "{e}");
    // a wider model than the file
    std::fs::write(
        scratch.join("config.json"),
        config.replace("\"intermediate_size\": 64", "\"intermediate_size\": 80"),
    )
    .unwrap();
    let e = load_hf_llm(&scratch, &device).unwrap_err().to_string();
    assert!(
        e.contains("shape mismatches") && e.contains("gate_proj"),
        "{e}"
    );
}

#[test]
fn export_then_import_gives_the_same_model() {
    use condenser_engine::io::export_hf_llm;
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    for name in ["llama", "qwen2"] {
        let src = repo().join("tests/fixtures/hf").join(name);
        let llm = load_hf_llm(&src, &device).unwrap();
        let out = condenser_tests::scratch(&format!("hf-export-{name}"));
        export_hf_llm(&llm, &out).unwrap();
        // same tensor names as transformers wrote (tied heads stay unstored)
        let names = |dir: &std::path::Path| {
            condenser_engine::io::TensorFolder::read(dir)
                .unwrap()
                .tensors
                .into_iter()
                .map(|(k, (t, _))| (k, t))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let (a, b) = (names(&src), names(&out));
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(a, b, "{name}: every tensor byte for byte");
        // and the config reads back to the same decoder config
        assert_eq!(
            condenser_engine::io::hf_llm_config(&out).unwrap(),
            llm.config,
            "{name}"
        );
    }
}
