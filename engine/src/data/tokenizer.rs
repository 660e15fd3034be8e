//! HF `tokenizer.json` through the `tokenizers` crate, plus the special tokens the chat template
//! needs. The tokenizer must fit the model: a vocabulary larger than the model's embedding table
//! is an error, never a silent out-of-range lookup.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The special tokens the chat template needs, by name (a tokenizer without them cannot be
/// used; `condenser import --chat-tokens` adds them to a real model's tokenizer).
pub const CHAT_TOKENS: [&str; 6] = [
    "<pad>",
    "<bos>",
    "<image>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
];

/// Ids of the chat template's special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: u32,
    pub bos: u32,
    pub image: u32,
    pub user: u32,
    pub assistant: u32,
    pub end: u32,
}

/// A loaded tokenizer.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pub path: PathBuf,
    pub special: SpecialIds,
    /// SHA-256 of the `tokenizer.json` bytes: part of every cache key that depends on how text
    /// is tokenised (`data::token_cache`).
    pub fingerprint: String,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TextTokenizer({}, vocab {})",
            self.path.display(),
            self.vocab_size()
        )
    }
}

impl TextTokenizer {
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Tokenizer {
                path: path.into(),
                message: "tokenizer file not found".into(),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses the bytes of a `tokenizer.json` (the browser has no files); `origin` names them in
    /// errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let path = origin;
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::Tokenizer {
            path: path.into(),
            message: format!("not a valid HF tokenizer.json: {e}"),
        })?;
        let id = |t: &str| {
            inner.token_to_id(t).ok_or_else(|| Error::Tokenizer {
                path: path.into(),
                message: format!(
                    "the chat template needs the special token {t:?}, which this tokenizer lacks"
                ),
            })
        };
        let [pad, bos, image, user, assistant, end] = CHAT_TOKENS;
        let special = SpecialIds {
            pad: id(pad)?,
            bos: id(bos)?,
            image: id(image)?,
            user: id(user)?,
            assistant: id(assistant)?,
            end: id(end)?,
        };
        Ok(TextTokenizer {
            inner,
            path: path.into(),
            special,
            fingerprint: crate::cache::sha256_hex(bytes),
        })
    }

    /// The text of token `id` (special tokens included), or `""` for an id past the vocabulary.
    pub fn id_to_token(&self, id: u32) -> String {
        self.inner.id_to_token(id).unwrap_or_default()
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            message: format!("cannot serialise: {e}"),
        })
    }

    /// Number of ids the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Errors when the tokenizer can produce ids the model has no embedding for.
    pub fn check_fits(&self, model_vocab: usize) -> Result<()> {
        if self.vocab_size() > model_vocab {
            return Err(Error::Tokenizer {
                path: self.path.clone(),
                message: format!(
                    "tokenizer has {} tokens but the model's vocabulary is {model_vocab}: ids past {} would have no embedding",
                    self.vocab_size(),
                    model_vocab - 1
                ),
            });
        }
        Ok(())
    }

    /// Plain text (no special tokens added) to ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode {text:?}: {e}"),
            })
    }

    /// Ids to text, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    /// Ids at which a generated answer ends: the template's end token and every other special
    /// token of the tokenizer. An imported chat model ends its turns with its own (SmolLM2's
    /// `<|im_end|>`) until training has taught it the template's, and no special token belongs
    /// inside an answer; stopping only at the template's token let such answers run on.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        ids.push(self.special.end);
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_stop_at_every_special_token() {
        let words: Vec<String> = crate::data::shapes::vocab::SPECIAL_TOKENS
            .iter()
            .map(|s| s.to_string())
            .chain(["red".to_string()])
            .collect();
        let mut json = crate::data::shapes::vocab::tokenizer_json_for(&words);
        // an imported chat model's own end-of-turn token, special, past the template's
        let id = words.len() as u64;
        json["model"]["vocab"]["<|im_end|>"] = id.into();
        json["added_tokens"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "id": id, "content": "<|im_end|>", "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            }));
        let bytes = serde_json::to_vec(&json).unwrap();
        let tok = TextTokenizer::from_bytes(&bytes, Path::new("t.json")).unwrap();
        let stop = tok.stop_ids();
        assert!(stop.contains(&tok.special.end), "{stop:?}");
        assert!(stop.contains(&(id as u32)), "{stop:?}");
        let red = tok.encode("red").unwrap()[0];
        assert!(!stop.contains(&red), "{stop:?}");
    }
}
