//! A real LLM end to end: SmolLM2-135M-Instruct from its GGUF file (Q4_1 / Q8_0, dequantised
//! on import, q/k rows un-permuted), its embedded BPE tokenizer, and greedy text generation with
//! the decoder and KV cache: "The capital of France is" must continue with " Paris".
//! The file is fetched and SHA-256-checked by scripts/fetch-smollm2.sh (scripts/test.sh runs it
//! first); without it this test fails and says so.

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::io::{llm_from_tensors, read_gguf};
use condenser_engine::model::{GenerateOptions, Sampling};
use condenser_tests::repo;

fn gguf_path() -> std::path::PathBuf {
    let path = repo().join(".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-smollm2.sh",
        path.display()
    );
    path
}

#[test]
fn smollm2_says_paris() {
    let path = gguf_path();
    let gguf = read_gguf(&path).unwrap();
    let c = &gguf.config;
    assert_eq!(
        (
            c.layers,
            c.hidden,
            c.heads,
            c.kv_heads,
            c.intermediate,
            c.vocab_size
        ),
        (30, 576, 9, 3, 1536, 49152)
    );
    assert!(c.tie_embeddings);
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let tok = gguf.tokenizer.clone();
    let eos = gguf.eos;
    let llm = llm_from_tensors(&gguf.config.clone(), gguf.tensors, &device).unwrap();
    let prompt = tok.encode("The capital of France is", false).unwrap();
    let ids: Vec<u32> = prompt.get_ids().to_vec();
    assert_eq!(
        ids.len(),
        5,
        "one token per word: {:?}",
        prompt.get_tokens()
    );
    let out = llm.generate_text(
        &ids,
        &GenerateOptions {
            max_new_tokens: 4,
            sampling: Sampling::Greedy,
            stop: eos.into_iter().collect(),
            seed: 0,
        },
    );
    let text = tok.decode(&out, false).unwrap();
    eprintln!("The capital of France is|{text}|");
    assert!(text.starts_with(" Paris"), "continued with {text:?}");
}

/// The real-weights student's import: a tower, SmolLM2 cut to its first 2 layers, and the chat
/// template's special tokens added to its tokenizer with the embedding grown to match.
#[test]
fn smollm2_imports_cut_with_the_chat_tokens() {
    use condenser_engine::data::{CHAT_TOKENS, TextTokenizer};
    use condenser_engine::io::{FeatureSelect, ImportOptions, ImportSource, import_model};
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let source = ImportSource::Parts {
        vision: repo().join("tests/fixtures/hf/siglip"),
        llm: gguf_path(),
    };
    let options = ImportOptions {
        select: FeatureSelect::default(),
        llm_layers: Some(2),
        seed: 0,
        chat_tokens: true,
    };
    let imported = import_model(&source, &options, &device).unwrap();
    let c = &imported.model.config.llm;
    assert_eq!(c.layers, 2);
    let original = read_gguf(&gguf_path()).unwrap().tokenizer;
    let missing = CHAT_TOKENS
        .iter()
        .filter(|t| original.token_to_id(t).is_none())
        .count();
    assert!(missing > 0, "SmolLM2's tokenizer has no <image> of its own");
    assert_eq!(c.vocab_size, 49152 + missing);
    // the template's tokenizer reads it, every id has an embedding, old ids are unchanged
    let tok = imported.tokenizer.as_ref().unwrap();
    let json = tok.to_string(false).unwrap();
    let text = TextTokenizer::from_bytes(json.as_bytes(), std::path::Path::new("import")).unwrap();
    text.check_fits(c.vocab_size).unwrap();
    let phrase = "The capital of France is";
    assert_eq!(
        text.encode(phrase).unwrap(),
        original.encode(phrase, false).unwrap().get_ids()
    );
    // each new row is the mean of the trained rows
    let w = imported.model.llm.embed_tokens.weight.val();
    let mean = w.clone().narrow(0, 0, 49152).mean_dim(0);
    let added = w.narrow(0, 49152, missing);
    let diff: f32 = (added - mean.repeat_dim(0, missing))
        .abs()
        .max()
        .into_scalar();
    assert!(diff < 1e-6, "new rows differ from the mean by {diff}");
}
