//! The Shapes world's tokenizer: a word-level HF `tokenizer.json` (lowercasing normaliser,
//! whitespace/punctuation pre-tokeniser, special tokens for the chat template), loaded
//! through the `tokenizers` crate like any other tokenizer.

use serde_json::{Value, json};

/// Special tokens, in id order. The chat template relies on these names.
pub const SPECIAL_TOKENS: [&str; 7] = [
    "<pad>",
    "<unk>",
    "<bos>",
    "<image>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
];

/// Special tokens then the generator's words.
pub fn words() -> Vec<String> {
    SPECIAL_TOKENS
        .iter()
        .map(|s| s.to_string())
        .chain(super::qa::all_words().into_iter().map(String::from))
        .collect()
}

/// The `tokenizer.json` document.
pub fn tokenizer_json() -> Value {
    tokenizer_json_for(&words())
}

/// A word-level `tokenizer.json` over `words`, which must start with [`SPECIAL_TOKENS`] in
/// order (the chat template relies on their ids). Other LLaVA-format sets with a small closed
/// vocabulary (easy-VQA) use the same layout.
pub fn tokenizer_json_for(words: &[String]) -> Value {
    debug_assert!(words.iter().zip(SPECIAL_TOKENS).all(|(w, s)| w == s));
    let vocab: serde_json::Map<String, Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}
