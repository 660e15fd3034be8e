//! A real LLM end to end: SmolLM2-135M-Instruct from its GGUF file (Q4_1 / Q8_0, dequantised
//! on import, q/k rows un-permuted), its embedded BPE tokenizer, and greedy text generation with
//! the decoder and KV cache: "The capital of France is" must continue with " Paris".
//! The file is fetched and SHA-256-checked by scripts/fetch-smollm2.sh (scripts/test.sh runs it
//! first); without it this test fails and says so.

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::io::{llm_from_tensors, read_gguf};
use condenser_engine::model::{GenerateOptions, Sampling};
use condenser_tests::repo;

#[test]
fn smollm2_says_paris() {
    let path = repo().join(".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-smollm2.sh",
        path.display()
    );
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
