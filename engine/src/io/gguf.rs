//! Llama-architecture GGUF files (llama.cpp's format; e.g. SmolLM2-135M-Instruct): metadata to
//! [`LlmConfig`], tensors dequantised to f32 by candle's reader (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K,
//! Q6_K, F16, F32) and renamed to their HF names, so the same loader as for safetensors folders
//! fills the decoder. The embedded BPE vocabulary and merges become a `tokenizers` tokenizer.
//!
//! One layout differs from HF: llama.cpp's converter permutes the rows of `attn_q` / `attn_k`
//! so RoPE can rotate interleaved pairs; HF (and this decoder) rotates halves. The permutation
//! is undone per head on import.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use super::safetensors::{HostTensor, TensorFolder};
use crate::config::LlmConfig;
use crate::{Error, Result};

/// A GGUF file read into host tensors under HF names, its decoder config and its tokenizer.
pub struct GgufLlm {
    pub config: LlmConfig,
    pub tensors: TensorFolder,
    pub tokenizer: tokenizers::Tokenizer,
    /// End-of-sequence id named by the file, if any.
    pub eos: Option<u32>,
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.into(),
        message: message.into(),
    }
}

/// GGUF's names for the decoder's whole-model tensors and HF's, in pairs.
const FIXED_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// GGUF's names for a block's modules and HF's (under `model.layers.N.`), in pairs.
const BLOCK_NAMES: [(&str, &str); 9] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// GGUF tensor name -> HF name (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`).
fn hf_name(gguf: &str) -> Option<String> {
    if let Some((_, hf)) = FIXED_NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some(hf.to_string());
    }
    let (layer, module, kind) = block_parts(gguf.strip_prefix("blk.")?)?;
    let (_, ours) = BLOCK_NAMES.iter().find(|(g, _)| *g == module)?;
    Some(format!("model.layers.{layer}.{ours}.{kind}"))
}

/// HF name -> GGUF tensor name: the inverse of [`hf_name`], for the export.
pub(crate) fn gguf_name(hf: &str) -> Option<String> {
    if let Some((gguf, _)) = FIXED_NAMES.iter().find(|(_, h)| *h == hf) {
        return Some(gguf.to_string());
    }
    let (layer, module, kind) = block_parts(hf.strip_prefix("model.layers.")?)?;
    let (theirs, _) = BLOCK_NAMES.iter().find(|(_, h)| *h == module)?;
    Some(format!("blk.{layer}.{theirs}.{kind}"))
}

/// `N.module.kind` -> (N, module, kind).
fn block_parts(rest: &str) -> Option<(usize, &str, &str)> {
    let (layer, part) = rest.split_once('.')?;
    let (module, kind) = part.rsplit_once('.')?;
    Some((layer.parse().ok()?, module, kind))
}

/// llama.cpp's q/k row permutation, as its converter applies it (`to_gguf`), or undone
/// (`!to_gguf`): within each head, GGUF row `2i + j` holds HF row `i + j * d / 2` (for a
/// `[out, in]` matrix or an `[out]` bias), so RoPE can rotate interleaved pairs where HF (and
/// this decoder) rotates halves.
pub(crate) fn permute(t: &HostTensor, heads: usize, to_gguf: bool) -> HostTensor {
    let out = t.shape[0];
    let cols: usize = t.shape[1..].iter().product::<usize>().max(1);
    let d = out / heads;
    let half = d / 2;
    let mut values = vec![0f32; t.values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let (gguf, hf) = (h * d + 2 * i + j, h * d + i + j * half);
                let (dst, src) = if to_gguf { (gguf, hf) } else { (hf, gguf) };
                values[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&t.values[src * cols..(src + 1) * cols]);
            }
        }
    }
    HostTensor {
        shape: t.shape.clone(),
        values,
    }
}

fn meta<'a>(c: &'a Content, key: &str, path: &Path) -> Result<&'a Value> {
    c.metadata
        .get(key)
        .ok_or_else(|| bad(path, format!("metadata key {key} missing")))
}

fn meta_u(c: &Content, key: &str, path: &Path) -> Result<usize> {
    let v = meta(c, key, path)?;
    v.to_u32()
        .map(|x| x as usize)
        .or_else(|_| v.to_u64().map(|x| x as usize))
        .map_err(|e| bad(path, format!("{key}: {e}")))
}

fn meta_f(c: &Content, key: &str, path: &Path) -> Result<f64> {
    meta(c, key, path)?
        .to_f32()
        .map(|x| x as f64)
        .map_err(|e| bad(path, format!("{key}: {e}")))
}

fn strings(c: &Content, key: &str, path: &Path) -> Result<Vec<String>> {
    meta(c, key, path)?
        .to_vec()
        .map_err(|e| bad(path, format!("{key}: {e}")))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| bad(path, format!("{key}: {e}")))
        })
        .collect()
}

/// Reads a llama-architecture GGUF file.
pub fn read_gguf(path: &Path) -> Result<GgufLlm> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let content = Content::read(&mut f).map_err(|e| bad(path, format!("not a GGUF file: {e}")))?;
    let arch = meta(&content, "general.architecture", path)?
        .to_string()
        .map_err(|e| bad(path, e.to_string()))?
        .clone();
    if arch != "llama" {
        return Err(bad(
            path,
            format!("general.architecture {arch:?}: only \"llama\" GGUF files are supported"),
        ));
    }
    let tokens = strings(&content, "tokenizer.ggml.tokens", path)?;
    let heads = meta_u(&content, "llama.attention.head_count", path)?;
    let kv_heads = meta_u(&content, "llama.attention.head_count_kv", path).unwrap_or(heads);
    let config = LlmConfig {
        vocab_size: tokens.len(),
        hidden: meta_u(&content, "llama.embedding_length", path)?,
        layers: meta_u(&content, "llama.block_count", path)?,
        heads,
        kv_heads,
        intermediate: meta_u(&content, "llama.feed_forward_length", path)?,
        rope_theta: meta_f(&content, "llama.rope.freq_base", path).unwrap_or(10000.0),
        rms_eps: meta_f(&content, "llama.attention.layer_norm_rms_epsilon", path)?,
        tie_embeddings: !content.tensor_infos.contains_key("output.weight"),
        qkv_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        max_positions: meta_u(&content, "llama.context_length", path)?,
        moe: None,
    };
    let mut tensors = BTreeMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let Some(hf) = hf_name(name) else {
            log::warn!(
                "{}: tensor {name} is not used by the decoder",
                path.display()
            );
            continue;
        };
        let q = content
            .tensor(&mut f, name, &candle_core::Device::Cpu)
            .map_err(|e| bad(path, format!("{name}: {e}")))?;
        let t = q
            .dequantize(&candle_core::Device::Cpu)
            .map_err(|e| bad(path, format!("{name}: cannot dequantise ({e})")))?;
        let shape = t.dims().to_vec();
        let values = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| bad(path, format!("{name}: {e}")))?;
        let mut host = HostTensor { shape, values };
        if name.starts_with("blk.") && name.contains(".attn_q.") {
            host = permute(&host, heads, false);
        } else if name.starts_with("blk.") && name.contains(".attn_k.") {
            host = permute(&host, kv_heads, false);
        }
        tensors.insert(hf, (host, path.to_path_buf()));
    }
    let (tokenizer, eos) = tokenizer(&content, tokens, path)?;
    Ok(GgufLlm {
        config,
        tensors: TensorFolder {
            dir: path.to_path_buf(),
            tensors,
        },
        tokenizer,
        eos,
    })
}

/// The byte-level BPE tokenizer of a `gpt2`-model GGUF vocabulary.
fn tokenizer(
    c: &Content,
    tokens: Vec<String>,
    path: &Path,
) -> Result<(tokenizers::Tokenizer, Option<u32>)> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    let model = meta(c, "tokenizer.ggml.model", path)?
        .to_string()
        .map_err(|e| bad(path, e.to_string()))?;
    if model != "gpt2" {
        return Err(bad(
            path,
            format!("tokenizer.ggml.model {model:?}: only byte-level BPE (\"gpt2\") is supported"),
        ));
    }
    let merges = strings(c, "tokenizer.ggml.merges", path)?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|m| m.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| bad(path, format!("tokenizer: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    // SmolLM2's own tokenizer.json: digits one by one, then byte-level without a prefix space
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.with_decoder(Some(ByteLevel::default()));
    // Control tokens (a chat model's `<|im_start|>`, `<|im_end|>`, `<|endoftext|>`) are special,
    // as in the model's own tokenizer.json: the text splits around them, decoding skips them and
    // an answer stops at them (`TextTokenizer::stop_ids`). Without this an imported chat model's
    // end of turn read as plain text and every answer ran on past it.
    let control = control_tokens(c, &tokens, path)?;
    tok.add_special_tokens(&control);
    let eos = c
        .metadata
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok());
    Ok((tok, eos))
}

/// GGUF's `tokenizer.ggml.token_type` value for a control token (llama.cpp's
/// `LLAMA_TOKEN_TYPE_CONTROL`).
const CONTROL: i32 = 3;

/// The tokens `tokenizer.ggml.token_type` marks as control, as special added tokens at their own
/// ids. A file without the key has none.
fn control_tokens(
    c: &Content,
    tokens: &[String],
    path: &Path,
) -> Result<Vec<tokenizers::AddedToken>> {
    let key = "tokenizer.ggml.token_type";
    let Some(types) = c.metadata.get(key) else {
        return Ok(Vec::new());
    };
    let types = types
        .to_vec()
        .map_err(|e| bad(path, format!("{key}: {e}")))?;
    if types.len() != tokens.len() {
        return Err(bad(
            path,
            format!(
                "{key} has {} entries but tokenizer.ggml.tokens {}",
                types.len(),
                tokens.len()
            ),
        ));
    }
    let mut control = Vec::new();
    for (token, t) in tokens.iter().zip(types) {
        let t = t.to_i32().map_err(|e| bad(path, format!("{key}: {e}")))?;
        if t == CONTROL {
            control.push(tokenizers::AddedToken::from(token.clone(), true));
        }
    }
    Ok(control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hf() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(hf_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
        for gguf in [
            "token_embd.weight",
            "blk.3.attn_q.bias",
            "blk.0.ffn_norm.weight",
        ] {
            assert_eq!(gguf_name(&hf_name(gguf).unwrap()).as_deref(), Some(gguf));
        }
    }

    #[test]
    fn permute_is_llama_cpp_permutation_and_its_inverse() {
        // llama.cpp: w.reshape(heads, 2, d/2, cols).swapaxes(1, 2).reshape(out, cols)
        let (heads, d, cols) = (2, 4, 3);
        let hf: Vec<f32> = (0..heads * d * cols).map(|x| x as f32).collect();
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..heads {
            for two in 0..2 {
                for i in 0..d / 2 {
                    let src = h * d + two * (d / 2) + i;
                    let dst = h * d + i * 2 + two;
                    gguf[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        let t = HostTensor {
            shape: vec![heads * d, cols],
            values: gguf.clone(),
        };
        assert_eq!(permute(&t, heads, false).values, hf);
        let back = HostTensor {
            shape: vec![heads * d, cols],
            values: hf,
        };
        assert_eq!(permute(&back, heads, true).values, gguf);
    }

    /// A byte-level vocabulary in GGUF's metadata: single characters, one merge, and a chat
    /// model's end-of-turn token marked control (type 3) beside normal ones (type 1).
    fn chat_vocab() -> Content {
        let tokens = ["<|im_end|>", "r", "e", "d", "re", "Ġ"];
        let types = [CONTROL, 1, 1, 1, 1, 1];
        let strs =
            |xs: &[&str]| Value::Array(xs.iter().map(|t| Value::String(t.to_string())).collect());
        let metadata = [
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.tokens", strs(&tokens)),
            ("tokenizer.ggml.merges", strs(&["r e"])),
            (
                "tokenizer.ggml.token_type",
                Value::Array(types.iter().map(|t| Value::I32(*t)).collect()),
            ),
        ];
        Content {
            magic: candle_core::quantized::gguf_file::VersionedMagic::GgufV3,
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            tensor_infos: Default::default(),
            tensor_data_offset: 0,
        }
    }

    #[test]
    fn control_tokens_are_special() {
        let c = chat_vocab();
        let tokens = strings(&c, "tokenizer.ggml.tokens", Path::new("m.gguf")).unwrap();
        let (tok, _) = tokenizer(&c, tokens, Path::new("m.gguf")).unwrap();
        // the end of turn is one token, not its characters, and decoding skips it
        let ids = tok
            .encode("red<|im_end|>", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids, vec![4, 3, 0]);
        assert_eq!(tok.decode(&ids, true).unwrap(), "red");
        let special: Vec<u32> = tok
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(special, vec![0]);
    }

    #[test]
    fn a_token_type_list_of_the_wrong_length_is_named() {
        let mut c = chat_vocab();
        c.metadata.insert(
            "tokenizer.ggml.token_type".into(),
            Value::Array(vec![Value::I32(1)]),
        );
        let tokens = strings(&c, "tokenizer.ggml.tokens", Path::new("m.gguf")).unwrap();
        let e = tokenizer(&c, tokens, Path::new("m.gguf"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.gguf") && e.contains("token_type has 1 entries"),
            "{e}"
        );
    }
}
