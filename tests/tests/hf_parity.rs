//! Parity with Hugging Face transformers, on tiny random checkpoints written by
//! `scripts/hf-fixtures.py` and loaded here by their HF tensor names: Llama (untied head,
//! sharded files) and Qwen2 (tied head, q/k/v biases) decoders must give transformers' final
//! hidden states and logits; CLIP and SigLIP towers every hidden state; a LLaVA (CLIP + Llama)
//! and a TinyLLaVA-named (SigLIP + Qwen2) composition the logits of a prompt with an image.
//! All within 1e-4.

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::burn::prelude::*;
use condenser_engine::io::{FeatureSelect, load_hf_llm, load_hf_mllm, load_hf_vision};
use condenser_engine::model::{AttnMask, Mllm, MllmBatch, Visual};
use condenser_tests::repo;

/// Every number of a nested-list JSON value, in order.
fn flatten(v: &serde_json::Value, out: &mut Vec<f32>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        serde_json::Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
        other => panic!("unexpected {other}"),
    }
}

fn numbers(v: &serde_json::Value) -> Vec<f32> {
    let mut out = Vec::new();
    flatten(v, &mut out);
    out
}

fn fixture(name: &str) -> (std::path::PathBuf, serde_json::Value) {
    let dir = repo().join("tests/fixtures/hf").join(name);
    let expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    (dir, expected)
}

/// Asserts `ours` equals `want` (same count) within 1e-4.
fn assert_close<const D: usize>(what: &str, ours: Tensor<D>, want: &[f32]) {
    let got = ours
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(got.len(), want.len(), "{what}: sizes");
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max);
    eprintln!("{what}: max |diff| {diff:.2e} (max |value| {scale:.2})");
    assert!(diff < 1e-4, "{what}: max |diff| {diff} >= 1e-4");
}

fn ids_of(expected: &serde_json::Value) -> Vec<Vec<i64>> {
    serde_json::from_value(expected["input_ids"].clone()).unwrap()
}

fn pixels_of(expected: &serde_json::Value, device: &Device) -> Tensor<4> {
    let px = numbers(&expected["pixel_values"]);
    let side = ((px.len() / 6) as f64).sqrt() as usize;
    Tensor::from_data(TensorData::new(px, [2, 3, side, side]), device)
}

fn check(name: &str) {
    let (dir, expected) = fixture(name);
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let llm = load_hf_llm(&dir, &device).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ids = ids_of(&expected);
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
    assert_close(
        &format!("{name} last_hidden_state"),
        hidden,
        &numbers(&expected["last_hidden_state"]),
    );
    assert_close(
        &format!("{name} logits"),
        logits,
        &numbers(&expected["logits"]),
    );
}

/// A tower cut at every hidden state gives transformers' `hidden_states[k]` (CLS kept).
fn check_tower(name: &str) {
    let (dir, expected) = fixture(name);
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let px = pixels_of(&expected, &device);
    let states = expected["hidden_states"].as_array().unwrap();
    for (k, want) in states.iter().enumerate() {
        for layer in [k as i64, k as i64 - states.len() as i64] {
            let select = FeatureSelect {
                layer,
                drop_first: Some(false),
                image_size: None,
            };
            let tower =
                load_hf_vision(&dir, select, &device).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(tower.config.layers, k);
            assert_close(
                &format!("{name} hidden_states[{layer}]"),
                tower.forward(px.clone()),
                &numbers(want),
            );
        }
    }
}

/// A LLaVA-style folder gives transformers' logits for a prompt whose image tokens were
/// expanded in place (as transformers' processor does).
fn check_mllm(name: &str) {
    let (dir, _) = fixture(name);
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let model = load_hf_mllm(&dir, &device)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .model;
    check_mllm_model(name, &model, &device);
}

/// `model` gives the logits transformers computed for fixture `name`.
fn check_mllm_model(name: &str, model: &Mllm, device: &Device) {
    let (_, expected) = fixture(name);
    let device = device.clone();
    let ids = ids_of(&expected);
    let image = expected["image_token_id"].as_i64().unwrap();
    let (b, t) = (ids.len(), ids[0].len());
    let nv = model.config.vision.num_visual_tokens();
    // each position's embedding row: its token's, or the next visual token of its image
    let mut gather = Vec::new();
    for (row, seq) in ids.iter().enumerate() {
        let mut j = 0;
        for (pos, &id) in seq.iter().enumerate() {
            if id == image {
                gather.push((b * t + row * nv + j) as i64);
                j += 1;
            } else {
                gather.push((row * t + pos) as i64);
            }
        }
        assert_eq!(j, nv, "{name}: the prompt holds one image's tokens");
    }
    let is_visual: Vec<bool> = ids.concat().iter().map(|&i| i == image).collect();
    let batch = MllmBatch {
        input_ids: Tensor::from_data(TensorData::new(ids.concat(), [b, t]), &device),
        gather: Tensor::from_data(TensorData::new(gather, [b * t]), &device),
        positions: Tensor::<1, Int>::arange(0..t as i64, &device)
            .reshape([1, t])
            .repeat_dim(0, b),
        attention_mask: Tensor::ones([b, t], &device),
        targets: Tensor::zeros([b, t], &device),
        loss_mask: Tensor::zeros([b, t], &device),
        visual: Visual::Pixels(pixels_of(&expected, &device)),
        real: vec![true; b * t],
        is_visual,
    };
    let hidden = model.hidden(&batch);
    assert_close(
        &format!("{name} last_hidden_state"),
        hidden.clone(),
        &numbers(&expected["last_hidden_state"]),
    );
    assert_close(
        &format!("{name} logits"),
        model.llm.logits(hidden),
        &numbers(&expected["logits"]),
    );
}

#[test]
fn clip_tower_matches_transformers() {
    check_tower("clip");
}

#[test]
fn siglip_tower_matches_transformers() {
    check_tower("siglip");
}

/// DINOv2 read from its HF folder and from its ONNX export (weights named by walking the
/// graph) gives every hidden state transformers computes, at 32 px where the checkpoint's
/// positions are for 40 px (so the bicubic resize of the positions is checked too).
#[test]
fn dinov2_folder_and_onnx_export_match_transformers() {
    let (dir, expected) = fixture("dinov2");
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let px = pixels_of(&expected, &device);
    let states = expected["hidden_states"].as_array().unwrap();
    for source in [dir.clone(), dir.join("model.onnx")] {
        for (k, want) in states.iter().enumerate() {
            let select = FeatureSelect {
                layer: k as i64,
                drop_first: Some(false),
                image_size: Some(32),
            };
            let tower = load_hf_vision(&source, select, &device)
                .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
            let c = &tower.config;
            assert_eq!((c.layers, c.image_size, c.heads), (k, 32, 4));
            assert!(c.layer_scale && c.class_token && c.patch_bias && !c.pre_norm);
            assert_close(
                &format!("dinov2 {} hidden_states[{k}]", source.display()),
                tower.forward(px.clone()),
                &numbers(want),
            );
        }
    }
    // without a size, the tower keeps the one it was trained at
    let tower = load_hf_vision(&dir.join("model.onnx"), FeatureSelect::default(), &device).unwrap();
    assert_eq!(tower.config.image_size, 40);
    assert_eq!(tower.config.layers, 2);
    assert!(tower.config.drop_cls);
}

#[test]
fn llava_matches_transformers() {
    check_mllm("llava");
}

#[test]
fn tinyllava_names_load_and_match_transformers() {
    check_mllm("tinyllava");
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

#[test]
fn imported_checkpoints_reload_with_the_same_numbers() {
    use condenser_engine::io::{ImportOptions, ImportSource, import_model, write_imported};
    use condenser_engine::run::checkpoint;
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let options = ImportOptions {
        select: FeatureSelect::default(),
        llm_layers: None,
        seed: 7,
        chat_tokens: false,
    };
    // a whole LLaVA folder -> checkpoint folder -> the same logits as transformers
    let out = condenser_tests::scratch("hf-import").join("llava");
    let source = ImportSource::Whole(repo().join("tests/fixtures/hf/llava"));
    write_imported(&import_model(&source, &options, &device).unwrap(), &out).unwrap();
    for file in [
        checkpoint::MODEL_FILE,
        checkpoint::CONFIG_FILE,
        "import.json",
    ] {
        assert!(out.join(file).exists(), "{file}");
    }
    check_mllm_model(
        "llava",
        &checkpoint::load_full(&out, &device).unwrap(),
        &device,
    );
    // parts: the SigLIP tower at its penultimate layer, Qwen2's first layer, a fresh projector
    let parts = ImportSource::Parts {
        vision: repo().join("tests/fixtures/hf/siglip"),
        llm: repo().join("tests/fixtures/hf/qwen2"),
    };
    let cut = ImportOptions {
        llm_layers: Some(1),
        ..options
    };
    let a = import_model(&parts, &cut, &device).unwrap().model;
    assert_eq!(a.config.vision.layers, 2, "hidden state -2 of 3 blocks");
    assert!(!a.config.vision.class_token && !a.config.vision.drop_cls);
    assert_eq!(a.config.vision.num_visual_tokens(), 16);
    assert_eq!(a.config.llm.layers, 1);
    // the kept layer is the decoder's first, as stored
    let full = load_hf_llm(&repo().join("tests/fixtures/hf/qwen2"), &device).unwrap();
    let w = |m: &condenser_engine::model::Llm| {
        m.layers[0]
            .self_attn
            .q_proj
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(w(&a.llm), w(&full));
    // the projector is seeded: the same seed gives the same weights, another seed others
    let b = import_model(&parts, &cut, &device).unwrap().model;
    let c = import_model(&parts, &ImportOptions { seed: 8, ..cut }, &device)
        .unwrap()
        .model;
    let proj = |m: &Mllm| {
        m.projector
            .linear_1
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(proj(&a), proj(&b));
    assert_ne!(proj(&a), proj(&c));
    // a cut deeper than the decoder is refused with the layer count
    let deep = ImportOptions {
        llm_layers: Some(5),
        ..options
    };
    let e = import_model(&parts, &deep, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("has 2 layers"), "{e}");
}

/// The LLaVA fixture (CLIP + Llama, written by transformers) imported, then exported as a
/// transformers LLaVA folder: every tensor the model uses sits under transformers' own name,
/// shape and bytes (the final norm transformers' tower has but LLaVA's features never pass is
/// written as an identity), the config says what transformers needs to rebuild the model, and
/// the folder imports back to a model that gives transformers' logits. `scripts/hf-llava-check.sh`
/// runs the same folder in transformers itself.
#[test]
fn llava_export_is_transformers_layout_and_reimports_to_the_same_logits() {
    use condenser_engine::io::{TensorFolder, export_hf_llava};
    let (dir, expected) = fixture("llava");
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let model = load_hf_mllm(&dir, &device).unwrap().model;
    let out = condenser_tests::scratch("hf-llava-export");
    let image = expected["image_token_id"].as_u64().unwrap() as u32;
    let tower = export_hf_llava(&model, image, None, &out).unwrap();
    assert_eq!(format!("{tower:?}"), "Clip");

    let read = |d: &std::path::Path| TensorFolder::read(d).unwrap().tensors;
    let (theirs, ours) = (read(&dir), read(&out));
    // the import cut the 3-block tower after block 2 (vision_feature_layer -2): the export
    // holds blocks 0 and 1 and reads the last of them (-1)
    for (name, (t, _)) in &ours {
        if name.starts_with("vision_tower.post_layernorm.") {
            continue;
        }
        let (want, _) = theirs
            .get(name)
            .unwrap_or_else(|| panic!("{name}: transformers has no such tensor"));
        assert_eq!(t.shape, want.shape, "{name}");
        assert_eq!(t.values, want.values, "{name}: byte for byte");
    }
    let kept = |n: &&String| !n.starts_with("vision_tower.encoder.layers.2.");
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().filter(kept).collect::<Vec<_>>(),
        "the same names, less the cut block"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let source: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vision_feature_layer"], -1);
    assert_eq!(config["vision_config"]["num_hidden_layers"], 2);
    for key in [
        "model_type",
        "image_token_index",
        "vision_feature_select_strategy",
        "projector_hidden_act",
    ] {
        assert_eq!(config[key], source[key], "{key}");
    }
    for key in [
        "model_type",
        "hidden_size",
        "intermediate_size",
        "patch_size",
        "image_size",
        "hidden_act",
    ] {
        assert_eq!(
            config["vision_config"][key], source["vision_config"][key],
            "vision {key}"
        );
    }
    // and back: the exported folder is a LLaVA folder the importer reads to the same numbers
    let back = load_hf_mllm(&out, &device).unwrap().model;
    check_mllm_model("llava", &back, &device);
}

/// A SigLIP tower (the TinyLLaVA fixture: SigLIP + Qwen2, TinyLLaVA Factory's names) exported
/// as a transformers LLaVA folder reads back to transformers' logits, and its vision config is
/// SigLIP's without the pooling head LLaVA never uses.
#[test]
fn siglip_llava_export_reimports_to_the_same_logits() {
    use condenser_engine::io::export_hf_llava;
    let (dir, expected) = fixture("tinyllava");
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let model = load_hf_mllm(&dir, &device).unwrap().model;
    let out = condenser_tests::scratch("hf-llava-export-siglip");
    let image = expected["image_token_id"].as_u64().unwrap() as u32;
    let tower = export_hf_llava(&model, image, None, &out).unwrap();
    assert_eq!(format!("{tower:?}"), "Siglip");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vision_config"]["model_type"], "siglip_vision_model");
    assert_eq!(config["vision_config"]["vision_use_head"], false);
    assert_eq!(config["text_config"]["model_type"], "qwen2");
    let back = load_hf_mllm(&out, &device).unwrap().model;
    check_mllm_model("tinyllava", &back, &device);
}

/// Condenser's own encoders end in a LayerNorm that transformers' LLaVA cannot express: the
/// export says so instead of writing a folder that computes something else.
#[test]
fn own_encoders_are_refused_by_the_llava_export() {
    use condenser_engine::io::llava_tower;
    let (dir, _) = fixture("llava");
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let mut config = load_hf_mllm(&dir, &device).unwrap().model.config.vision;
    assert!(llava_tower(&config).is_ok());
    config.post_norm = true;
    let e = llava_tower(&config).unwrap_err();
    assert!(e.contains("post_norm"), "{e}");
}
