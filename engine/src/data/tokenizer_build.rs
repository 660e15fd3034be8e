//! Trains an HF `tokenizer.json` on a data set's own text, with the `tokenizers` crate's own
//! trainers, so a user's data needs no borrowed vocabulary. The chat template's special tokens
//! come first (`<pad>` is id 0), so any model sized by the printed vocabulary can use it.
//!
//! Two kinds, as HF tokenizers has them:
//! - **BPE**, byte-level (GPT-2's scheme): every byte is in the alphabet, so no text is ever
//!   unknown and decoding gives the text back exactly. The default.
//! - **Word-level**: lower-cased words and punctuation, one id each, `<unk>` for the rest, as
//!   the Shapes world and easy-VQA use: right for small closed vocabularies, where a word's
//!   one id makes answers a single prediction.

use std::collections::HashSet;
use std::path::Path;

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainerBuilder};
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, Tokenizer};

use super::llava::{Conversation, load_conversations, load_preferences};
use super::tokenizer::{CHAT_TOKENS, TextTokenizer};
use crate::{Error, Result};

/// The tokenizer model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// Byte-level BPE: open vocabulary, lossless.
    Bpe,
    /// Lower-cased words, `<unk>` for words the data never had.
    Word,
}

/// What to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerSpec {
    pub kind: TokenizerKind,
    /// The largest vocabulary, special tokens included (BPE stops earlier when no pair is
    /// left to merge; word-level keeps the most frequent words).
    pub vocab_size: usize,
    /// Pairs (BPE) or words (word-level) seen fewer times are left out.
    pub min_frequency: u64,
}

/// A trained tokenizer.
#[derive(Debug, Clone)]
pub struct BuiltTokenizer {
    /// The `tokenizer.json` text.
    pub json: String,
    /// Ids the tokenizer can produce: the least `[model.llm] vocab_size` that fits it.
    pub vocab_size: usize,
    /// Texts it was trained on.
    pub texts: usize,
}

/// The special tokens, in id order: the chat template's, and `<unk>` for word-level.
fn special_tokens(kind: TokenizerKind) -> Vec<AddedToken> {
    let mut names: Vec<&str> = CHAT_TOKENS.to_vec();
    if kind == TokenizerKind::Word {
        names.insert(1, "<unk>");
    }
    names
        .into_iter()
        .map(|t| AddedToken::from(t, true))
        .collect()
}

/// Trains a tokenizer on `texts`.
pub fn build_tokenizer(texts: &[String], spec: &TokenizerSpec) -> Result<BuiltTokenizer> {
    let fail = |message: String| Error::Tokenizer {
        path: "tokenizer.json".into(),
        message,
    };
    let specials = special_tokens(spec.kind);
    if spec.vocab_size <= specials.len() {
        return Err(fail(format!(
            "a vocabulary of {} leaves no room past the {} special tokens",
            spec.vocab_size,
            specials.len()
        )));
    }
    let (mut tok, mut trainer): (Tokenizer, TrainerWrapper) = match spec.kind {
        TokenizerKind::Bpe => {
            let mut tok = Tokenizer::new(BPE::default());
            let level = ByteLevel::new(false, true, true);
            tok.with_pre_tokenizer(Some(level));
            tok.with_decoder(Some(level));
            let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
            let trainer = BpeTrainerBuilder::new()
                .show_progress(false)
                .vocab_size(spec.vocab_size)
                .min_frequency(spec.min_frequency)
                .initial_alphabet(alphabet)
                .special_tokens(specials)
                .build();
            (tok, trainer.into())
        }
        TokenizerKind::Word => {
            let mut tok = Tokenizer::new(WordLevel::default());
            tok.with_normalizer(Some(Lowercase));
            tok.with_pre_tokenizer(Some(Whitespace {}));
            let trainer = WordLevelTrainerBuilder::default()
                .show_progress(false)
                .vocab_size(spec.vocab_size)
                .min_frequency(spec.min_frequency)
                .special_tokens(specials)
                .build()
                .map_err(|e| fail(e.to_string()))?;
            (tok, trainer.into())
        }
    };
    tok.train(&mut trainer, texts.iter())
        .map_err(|e| fail(format!("training failed: {e}")))?;
    let json = tok
        .to_string(true)
        .map_err(|e| fail(format!("cannot write: {e}")))?;
    // read back as a run will read it: the chat tokens resolve, and at the first ids
    let loaded = TextTokenizer::from_bytes(json.as_bytes(), Path::new("tokenizer.json"))?;
    debug_assert_eq!(loaded.special.pad, 0);
    Ok(BuiltTokenizer {
        vocab_size: loaded.vocab_size(),
        json,
        texts: texts.len(),
    })
}

/// Every text a model would read or write in `records`: each turn, `<image>` left out.
pub fn conversation_texts(records: &[Conversation]) -> impl Iterator<Item = String> + '_ {
    records.iter().flat_map(|r| {
        r.conversations
            .iter()
            .map(|t| t.value.replace("<image>", " ").trim().to_string())
    })
}

/// The text of a data folder's training files: `train.json`, `captions.json` and
/// `prefs.json`, those that exist (not `test.json`: held-out text must not shape the
/// vocabulary). Errors when none exists.
pub fn data_texts(dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
    if !dir.is_dir() {
        return Err(Error::Tokenizer {
            path: dir.to_path_buf(),
            message: "no such folder: --data names the data set's folder".into(),
        });
    }
    let mut texts = Vec::new();
    let mut files = Vec::new();
    for name in ["train.json", "captions.json"] {
        let p = dir.join(name);
        if p.exists() {
            texts.extend(conversation_texts(&load_conversations(&p, false)?));
            files.push(name.to_string());
        }
    }
    let p = dir.join("prefs.json");
    if p.exists() {
        for pair in load_preferences(&p, false)? {
            texts.push(pair.prompt.replace("<image>", " ").trim().to_string());
            texts.push(pair.chosen);
            texts.push(pair.rejected);
        }
        files.push("prefs.json".to_string());
    }
    if files.is_empty() {
        return Err(Error::Tokenizer {
            path: dir.to_path_buf(),
            message: "no train.json, captions.json or prefs.json in this folder: the tokenizer \
                      is trained on a data set's training files"
                .into(),
        });
    }
    Ok((texts, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts() -> Vec<String> {
        [
            "What colour is the circle?",
            "The circle is red.",
            "Is there a blue square? No, there is a red circle.",
            "Describe the image: a red circle left of a green triangle.",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn byte_level_bpe_is_lossless_and_keeps_the_chat_tokens_first() {
        let spec = TokenizerSpec {
            kind: TokenizerKind::Bpe,
            vocab_size: 400,
            min_frequency: 1,
        };
        let built = build_tokenizer(&texts(), &spec).unwrap();
        let tok = TextTokenizer::from_bytes(built.json.as_bytes(), Path::new("t.json")).unwrap();
        assert_eq!(tok.special.pad, 0);
        assert_eq!(tok.special.end as usize, CHAT_TOKENS.len() - 1);
        assert_eq!(built.vocab_size, tok.vocab_size());
        assert!(
            built.vocab_size > 256 + CHAT_TOKENS.len(),
            "merges were learnt"
        );
        assert!(built.vocab_size <= 400);
        // text it never saw, accents and all, comes back exactly
        for text in ["The circle is red.", "Une forme violette, très étrange !"] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(tok.decode(&ids), text);
        }
        // a frequent word (after a space, as the data has it) became one token
        assert_eq!(tok.encode(" circle").unwrap().len(), 1);
    }

    #[test]
    fn word_level_lowercases_and_maps_new_words_to_unk() {
        let spec = TokenizerSpec {
            kind: TokenizerKind::Word,
            vocab_size: 1000,
            min_frequency: 1,
        };
        let built = build_tokenizer(&texts(), &spec).unwrap();
        let tok = TextTokenizer::from_bytes(built.json.as_bytes(), Path::new("t.json")).unwrap();
        let circle = tok.encode("Circle").unwrap();
        assert_eq!(circle, tok.encode("circle").unwrap());
        assert_eq!(circle.len(), 1);
        let unk = tok.encode("octagon").unwrap();
        assert_eq!(unk, vec![1], "<unk> is id 1");
        // the specials, `<unk>` and the data's distinct words and punctuation
        let words: HashSet<String> = texts()
            .iter()
            .flat_map(|t| {
                t.to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(built.vocab_size >= CHAT_TOKENS.len() + 1 + words.len());
    }

    #[test]
    fn a_vocabulary_without_room_is_refused() {
        let spec = TokenizerSpec {
            kind: TokenizerKind::Word,
            vocab_size: 5,
            min_frequency: 1,
        };
        let err = build_tokenizer(&texts(), &spec).unwrap_err().to_string();
        assert!(err.contains("no room"), "{err}");
    }
}
