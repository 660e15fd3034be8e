//! A decoder written as a llama.cpp GGUF file (`llama` architecture, which llama.cpp loads with
//! or without q/k/v biases), in f32, f16 or Q8_0, with its byte-level BPE tokenizer and the
//! chat template as GGUF metadata: the inverse of [`super::gguf`], which reads such files back.
//!
//! Norms and biases stay f32 (llama.cpp's converter does the same); Q8_0 needs every matrix's
//! rows to be a multiple of 32 long. A word-level tokenizer has no GGUF form (llama.cpp knows
//! SentencePiece, byte-level BPE, WordPiece and Unigram vocabularies) and is refused by name.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};

use super::export::hf_tensors;
use super::gguf::{gguf_name, permute};
use crate::data::TextTokenizer;
use crate::data::template::CHAT_TEMPLATE_JINJA;
use crate::model::Llm;
use crate::{Error, Result};

/// The weight type of the file's matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufType {
    F32,
    F16,
    /// 8-bit blocks of 32 with an f16 scale: about a quarter of f32's size.
    Q8_0,
}

impl GgufType {
    fn ggml(self) -> GgmlDType {
        match self {
            GgufType::F32 => GgmlDType::F32,
            GgufType::F16 => GgmlDType::F16,
            GgufType::Q8_0 => GgmlDType::Q8_0,
        }
    }

    /// `general.file_type` (llama.cpp's `LLAMA_FTYPE_ALL_F32`, `MOSTLY_F16`, `MOSTLY_Q8_0`).
    fn file_type(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q8_0 => 7,
        }
    }
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.into(),
        message: message.into(),
    }
}

/// GGUF token types (llama.cpp's `llama_token_type`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const UNUSED: i32 = 5;

/// The tokenizer's GGUF metadata: `gpt2` model, tokens in id order (padded with unused tokens to
/// the model's vocabulary, which llama.cpp requires to equal the embedding's rows), token
/// types, merges, the pre-tokenizer's name, special ids and the chat template.
fn tokenizer_metadata(
    tok: &TextTokenizer,
    vocab_size: usize,
    out: &Path,
) -> Result<Vec<(String, Value)>> {
    let json: serde_json::Value = serde_json::from_str(&tok.to_json()?)
        .map_err(|e| bad(&tok.path, format!("tokenizer: {e}")))?;
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(bad(
            out,
            format!(
                "the tokenizer {} is {} and llama.cpp has no such vocabulary; a GGUF export \
                 needs a byte-level BPE tokenizer (`condenser tokenizer --kind bpe`)",
                tok.path.display(),
                model["type"].as_str().unwrap_or("not BPE")
            ),
        ));
    }
    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    let mut types = vec![NORMAL; vocab_size];
    let mut place = |id: u64, text: &str, kind: i32| -> Result<()> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            bad(
                out,
                format!("token {text:?} has id {id}, past the model's {vocab_size}"),
            )
        })?;
        *slot = Some(text.to_string());
        types[id as usize] = kind;
        Ok(())
    };
    for (text, id) in model["vocab"].as_object().into_iter().flatten() {
        place(id.as_u64().unwrap_or(u64::MAX), text, NORMAL)?;
    }
    for t in json["added_tokens"].as_array().into_iter().flatten() {
        let special = t["special"].as_bool().unwrap_or(false);
        let text = t["content"].as_str().unwrap_or_default();
        place(
            t["id"].as_u64().unwrap_or(u64::MAX),
            text,
            if special { CONTROL } else { NORMAL },
        )?;
    }
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Value::String(t.unwrap_or_else(|| {
                types[i] = UNUSED;
                format!("[PAD{i}]")
            }))
        })
        .collect();
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            serde_json::Value::Array(pair) => Value::String(format!(
                "{} {}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            )),
            other => Value::String(other.as_str().unwrap_or_default().to_string()),
        })
        .collect();
    // llama.cpp's name for the split before BPE: GPT-2's regex, or SmolLM2's (digits apart)
    let pre = match json["pre_tokenizer"]["type"].as_str() {
        Some("ByteLevel") => "gpt-2",
        Some("Sequence")
            if json["pre_tokenizer"]["pretokenizers"][0]["type"] == "Digits"
                && json["pre_tokenizer"]["pretokenizers"][1]["type"] == "ByteLevel" =>
        {
            "smollm"
        }
        other => {
            log::warn!(
                "{}: pre-tokenizer {other:?} has no llama.cpp name; written as \"default\"",
                tok.path.display()
            );
            "default"
        }
    };
    let s = tok.special;
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(s.bos)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(s.end)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(s.pad)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Value::String(CHAT_TEMPLATE_JINJA.into()),
        ),
    ])
}

/// Writes `llm` and its tokenizer to `path` as a GGUF file (atomically).
pub fn export_gguf(
    llm: &Llm,
    tok: &TextTokenizer,
    name: &str,
    ty: GgufType,
    path: &Path,
) -> Result<()> {
    let c = &llm.config;
    if c.moe.is_some() {
        return Err(Error::Invalid(
            "an MoE decoder has no llama.cpp llama counterpart: export its dense base".into(),
        ));
    }
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.name".into(), Value::String(name.into())),
        ("general.file_type".into(), Value::U32(ty.file_type())),
        (
            "llama.context_length".into(),
            Value::U32(c.max_positions as u32),
        ),
        ("llama.embedding_length".into(), Value::U32(c.hidden as u32)),
        ("llama.block_count".into(), Value::U32(c.layers as u32)),
        (
            "llama.feed_forward_length".into(),
            Value::U32(c.intermediate as u32),
        ),
        (
            "llama.attention.head_count".into(),
            Value::U32(c.heads as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(c.kv_heads as u32),
        ),
        (
            "llama.rope.dimension_count".into(),
            Value::U32((c.hidden / c.heads) as u32),
        ),
        (
            "llama.rope.freq_base".into(),
            Value::F32(c.rope_theta as f32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(c.rms_eps as f32),
        ),
        ("llama.vocab_size".into(), Value::U32(c.vocab_size as u32)),
    ];
    meta.extend(tokenizer_metadata(tok, c.vocab_size, path)?);

    let mut tensors: BTreeMap<String, QTensor> = BTreeMap::new();
    for (hf, t) in hf_tensors(llm) {
        let name = gguf_name(&hf).ok_or_else(|| bad(path, format!("{hf} has no GGUF name")))?;
        let t = if name.contains(".attn_q.") {
            permute(&t, c.heads, true)
        } else if name.contains(".attn_k.") {
            permute(&t, c.kv_heads, true)
        } else {
            t
        };
        let dtype = if t.shape.len() == 1 {
            GgmlDType::F32
        } else {
            ty.ggml()
        };
        if dtype == GgmlDType::Q8_0 && !t.shape[t.shape.len() - 1].is_multiple_of(32) {
            return Err(bad(
                path,
                format!(
                    "{name} has rows of {} values: Q8_0 needs a multiple of 32 (export f16 or f32)",
                    t.shape[t.shape.len() - 1]
                ),
            ));
        }
        let dense = candle_core::Tensor::from_vec(t.values, t.shape, &candle_core::Device::Cpu)
            .map_err(|e| bad(path, format!("{name}: {e}")))?;
        let q = QTensor::quantize(&dense, dtype).map_err(|e| bad(path, format!("{name}: {e}")))?;
        tensors.insert(name, q);
    }
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tmp = path.with_extension("gguf.partial");
    let write = || -> std::result::Result<(), String> {
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| e.to_string())?);
        candle_core::quantized::gguf_file::write(&mut f, &meta_refs, &tensor_refs)
            .map_err(|e| e.to_string())?;
        use std::io::Write as _;
        f.flush().map_err(|e| e.to_string())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(bad(path, format!("cannot write: {e}")));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use burn::prelude::Device;

    use super::*;
    use crate::config::LlmConfig;
    use crate::data::tokenizer_build::{TokenizerKind, TokenizerSpec, build_tokenizer};
    use crate::io::{llm_from_tensors, read_gguf};
    use crate::rng::Rng;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("condenser-gguf-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn tokenizer(dir: &Path, kind: TokenizerKind) -> TextTokenizer {
        let texts: Vec<String> = [
            "the red circle",
            "a blue square left of the circle",
            "yes",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let spec = TokenizerSpec {
            kind,
            vocab_size: 300,
            min_frequency: 1,
        };
        let built = build_tokenizer(&texts, &spec).unwrap();
        let p = dir.join("tokenizer.json");
        std::fs::write(&p, built.json).unwrap();
        TextTokenizer::load(&p).unwrap()
    }

    fn llm(vocab: usize, device: &Device) -> Llm {
        let config = LlmConfig {
            vocab_size: vocab,
            hidden: 32,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            intermediate: 64,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            tie_embeddings: false,
            qkv_bias: true,
            max_positions: 128,
            moe: None,
        };
        Llm::new(&config, &mut Rng::new(9), device)
    }

    /// The largest difference between two decoders' parameters, by HF name.
    fn max_diff(a: &Llm, b: &Llm) -> f32 {
        let (a, b) = (hf_tensors(a), hf_tensors(b));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        a.iter()
            .flat_map(|(k, t)| {
                assert_eq!(t.shape, b[k].shape, "{k}");
                t.values
                    .iter()
                    .zip(&b[k].values)
                    .map(|(x, y)| (x - y).abs())
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn a_gguf_export_reads_back_as_the_same_decoder_and_tokenizer() {
        let dir = scratch("roundtrip");
        let device = Device::flex();
        let tok = tokenizer(&dir, TokenizerKind::Bpe);
        // the model's vocabulary is larger than the tokenizer's: padded with unused tokens
        let model = llm(tok.vocab_size() + 5, &device);
        for (ty, tolerance) in [
            (GgufType::F32, 0.0),
            (GgufType::F16, 1e-3),
            (GgufType::Q8_0, 2e-2),
        ] {
            let path = dir.join(format!("m-{ty:?}.gguf"));
            export_gguf(&model, &tok, "test", ty, &path).unwrap();
            let g = read_gguf(&path).unwrap();
            // GGUF holds the epsilon as f32
            assert!((g.config.rms_eps - model.config.rms_eps).abs() < 1e-12);
            let config = LlmConfig {
                rms_eps: model.config.rms_eps,
                ..g.config.clone()
            };
            assert_eq!(config, model.config, "{ty:?}");
            let back = llm_from_tensors(&g.config, g.tensors, &device).unwrap();
            let d = max_diff(&model, &back);
            assert!(d <= tolerance, "{ty:?}: parameters differ by {d}");
            for text in ["the red circle", "a blue square?"] {
                assert_eq!(
                    g.tokenizer.encode(text, false).unwrap().get_ids(),
                    tok.encode(text).unwrap(),
                    "{text}"
                );
            }
            assert_eq!(g.eos, Some(tok.special.end));
        }
        // Q8_0 is a quarter of f32 (plus the f32 norms and biases)
        let size = |t: &str| {
            std::fs::metadata(dir.join(format!("m-{t}.gguf")))
                .unwrap()
                .len()
        };
        assert!(
            size("Q8_0") * 3 < size("F32"),
            "{} vs {}",
            size("Q8_0"),
            size("F32")
        );
    }

    #[test]
    fn word_level_tokenizers_and_short_rows_are_refused_by_name() {
        let dir = scratch("refused");
        let device = Device::flex();
        let word = tokenizer(&dir, TokenizerKind::Word);
        let model = llm(word.vocab_size(), &device);
        let err = export_gguf(&model, &word, "t", GgufType::F16, &dir.join("w.gguf"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("WordLevel") && err.contains("--kind bpe"),
            "{err}"
        );
        assert!(!dir.join("w.gguf").exists());
    }
}
