//! Llama and Qwen2 decoders from a Hugging Face folder: `config.json` mapped onto
//! [`LlmConfig`], every parameter taken by its HF name (`model.layers.3.self_attn.q_proj.weight`,
//! ...). Our modules already carry HF's names and layouts (rotate-half RoPE, RMSNorm, SwiGLU,
//! GQA); only two conventions differ: burn's `Linear` stores `[in, out]` where PyTorch stores
//! `[out, in]` (transposed on import), and burn's RMSNorm scale is `gamma` where HF says `weight`.
//!
//! Anything the decoder cannot represent (another architecture, RoPE scaling, a non-SiLU
//! activation, biases on the MLP) is refused with the config key that says so; missing tensors
//! are listed all at once, as are shape mismatches.

use burn::prelude::*;
use serde::Deserialize;

use super::params::{Layout, LoadReport, layer_index, load_named};
use super::safetensors::TensorFolder;
use crate::config::LlmConfig;
use crate::model::Llm;
use crate::rng::Rng;
use crate::{Error, Result};

/// The keys of a HF `config.json` the decoder reads.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    /// transformers < 5 writes the RoPE base here ...
    #[serde(default)]
    rope_theta: Option<f64>,
    /// ... and transformers 5 here, with the RoPE type.
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    use_sliding_window: Option<bool>,
    rms_norm_eps: f64,
    #[serde(default)]
    tie_word_embeddings: bool,
    max_position_embeddings: usize,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: Option<bool>,
    #[serde(default)]
    head_dim: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct RopeParameters {
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_type: Option<String>,
}

/// transformers' default RoPE base when a config names none.
const DEFAULT_ROPE_THETA: f64 = 10000.0;

/// The decoder architectures this importer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    Llama,
    Qwen2,
}

/// Reads `dir/config.json` as a decoder config.
pub fn hf_llm_config(dir: &std::path::Path) -> Result<LlmConfig> {
    let path = dir.join("config.json");
    let text = crate::error::read_to_string(&path)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
    llm_config_from_json(value, &path, "")
}

/// A decoder config from a HF config object (`config.json`, or a LLaVA config's `text_config`,
/// then `key` = `"text_config."` so errors name the key as written).
pub(crate) fn llm_config_from_json(
    value: serde_json::Value,
    path: &std::path::Path,
    key: &str,
) -> Result<LlmConfig> {
    let within = match key {
        "" => String::new(),
        k => format!("{}: ", k.trim_end_matches('.')),
    };
    let c: HfConfig = serde_json::from_value(value).map_err(|e| Error::Checkpoint {
        path: path.into(),
        message: format!("{within}{e}"),
    })?;
    let refuse = |message: String| Error::Checkpoint {
        path: path.into(),
        message: format!("{key}{message}"),
    };
    let arch = match c.model_type.as_str() {
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        other => {
            return Err(refuse(format!(
                "model_type {other:?} is not a decoder this importer knows (llama, qwen2)"
            )));
        }
    };
    if let Some(act) = &c.hidden_act
        && act != "silu"
    {
        return Err(refuse(format!(
            "hidden_act {act:?}: only \"silu\" (SwiGLU) is supported"
        )));
    }
    if c.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(refuse(
            "rope_scaling is set: scaled RoPE is not supported".into(),
        ));
    }
    if let Some(t) = c
        .rope_parameters
        .as_ref()
        .and_then(|r| r.rope_type.as_deref())
        && t != "default"
    {
        return Err(refuse(format!(
            "rope_parameters.rope_type {t:?}: only the default (unscaled) RoPE is supported"
        )));
    }
    if c.use_sliding_window == Some(true) {
        return Err(refuse(
            "use_sliding_window = true: sliding-window attention is not supported".into(),
        ));
    }
    let rope_theta = c
        .rope_parameters
        .as_ref()
        .and_then(|r| r.rope_theta)
        .or(c.rope_theta)
        .unwrap_or(DEFAULT_ROPE_THETA);
    if c.mlp_bias == Some(true) {
        return Err(refuse(
            "mlp_bias = true: the SwiGLU block has no biases here".into(),
        ));
    }
    if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(refuse(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            c.hidden_size, c.num_attention_heads
        )));
    }
    if let Some(hd) = c.head_dim
        && hd != c.hidden_size / c.num_attention_heads
    {
        return Err(refuse(format!(
            "head_dim {hd} differs from hidden_size / num_attention_heads = {}",
            c.hidden_size / c.num_attention_heads
        )));
    }
    if arch == Arch::Llama && c.attention_bias == Some(true) {
        // Llama's attention_bias also puts a bias on o_proj, which this decoder does not have
        return Err(refuse(
            "attention_bias = true on a llama model (biases on q/k/v/o): not supported; \
             Qwen2's q/k/v biases are"
                .into(),
        ));
    }
    let qkv_bias = arch == Arch::Qwen2;
    Ok(LlmConfig {
        vocab_size: c.vocab_size,
        hidden: c.hidden_size,
        layers: c.num_hidden_layers,
        heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
        intermediate: c.intermediate_size,
        rope_theta,
        rms_eps: c.rms_norm_eps,
        tie_embeddings: c.tie_word_embeddings,
        qkv_bias,
        max_positions: c.max_position_embeddings,
        moe: None,
    })
}

/// Where a decoder's tensors sit in a checkpoint: `model.` and `lm_head.weight` for a
/// `*ForCausalLM`; other prefixes when the decoder is part of a LLaVA composition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LlmNames {
    /// Prefix of the body (`model.` -> `model.layers.0...`).
    pub body: &'static str,
    /// Name of the untied output head.
    pub head: &'static str,
}

impl LlmNames {
    /// A plain `LlamaForCausalLM` / `Qwen2ForCausalLM`.
    pub const CAUSAL_LM: LlmNames = LlmNames {
        body: "model.",
        head: "lm_head.weight",
    };

    /// Our parameter path (`layers.0.self_attn.q_proj.weight`) to the checkpoint's name and
    /// layout.
    pub(crate) fn name(self, path: &str) -> (String, Layout) {
        if path == "lm_head" {
            return (self.head.into(), Layout::Transposed);
        }
        let renamed = path.strip_suffix(".gamma").map(|p| format!("{p}.weight"));
        let name = format!("{}{}", self.body, renamed.as_deref().unwrap_or(path));
        let layout = if path.ends_with("_proj.weight") {
            Layout::Transposed
        } else {
            Layout::Same
        };
        (name, layout)
    }
}

/// Our parameter path to the HF name of a `*ForCausalLM`, and whether the tensor is stored
/// transposed there (the export's direction).
pub(crate) fn hf_name(path: &str) -> (String, bool) {
    let (name, layout) = LlmNames::CAUSAL_LM.name(path);
    (name, layout == Layout::Transposed)
}

/// Loads a Llama/Qwen2 decoder from a HF folder (config.json + safetensors) onto `device`.
pub fn load_hf_llm(dir: &std::path::Path, device: &Device) -> Result<Llm> {
    let config = hf_llm_config(dir)?;
    let folder = TensorFolder::read(dir)?;
    llm_from_tensors(&config, folder, device)
}

/// Builds the decoder of `config` from tensors under their HF names (a safetensors folder, or
/// a GGUF file renamed by [`super::gguf`]).
pub fn llm_from_tensors(
    config: &LlmConfig,
    mut folder: TensorFolder,
    device: &Device,
) -> Result<Llm> {
    let mut report = LoadReport::default();
    let llm = load_llm_named(
        config,
        &mut folder,
        LlmNames::CAUSAL_LM,
        device,
        &mut report,
    );
    report.into_result(&folder.dir)?;
    warn_unused(&folder, &|k| {
        is_expected_extra(k, config, LlmNames::CAUSAL_LM)
    });
    Ok(llm)
}

/// The decoder of `config` filled from `folder` under `names`; problems go to `report`.
pub(crate) fn load_llm_named(
    config: &LlmConfig,
    folder: &mut TensorFolder,
    names: LlmNames,
    device: &Device,
    report: &mut LoadReport,
) -> Llm {
    let llm = Llm::new(config, &mut Rng::new(0), device);
    load_named(llm, folder, &|p| names.name(p), device, report)
}

/// Tensors a decoder checkpoint may hold that the model rightly does not use: RoPE buffers
/// (recomputed here), the head of a tied checkpoint, and the layers past a cut (a student
/// initialised from a decoder's first layers).
pub(crate) fn is_expected_extra(name: &str, config: &LlmConfig, names: LlmNames) -> bool {
    let past_cut =
        layer_index(name, &format!("{}layers.", names.body)).is_some_and(|i| i >= config.layers);
    past_cut
        || name.ends_with("rotary_emb.inv_freq")
        || (config.tie_embeddings && name == names.head)
}

/// Logs the tensors left in `folder` after loading, leaving out the expected ones.
pub(crate) fn warn_unused(folder: &TensorFolder, expected: &dyn Fn(&str) -> bool) {
    let unused: Vec<&String> = folder.tensors.keys().filter(|k| !expected(k)).collect();
    if !unused.is_empty() {
        log::warn!(
            "{}: {} tensors not used by the model: {}",
            folder.dir.display(),
            unused.len(),
            unused
                .iter()
                .take(10)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_map_to_hf() {
        use super::hf_name;
        assert_eq!(
            hf_name("layers.3.self_attn.q_proj.weight"),
            ("model.layers.3.self_attn.q_proj.weight".into(), true)
        );
        assert_eq!(
            hf_name("layers.3.self_attn.q_proj.bias"),
            ("model.layers.3.self_attn.q_proj.bias".into(), false)
        );
        assert_eq!(
            hf_name("layers.0.input_layernorm.gamma"),
            ("model.layers.0.input_layernorm.weight".into(), false)
        );
        assert_eq!(hf_name("norm.gamma"), ("model.norm.weight".into(), false));
        assert_eq!(
            hf_name("embed_tokens.weight"),
            ("model.embed_tokens.weight".into(), false)
        );
        assert_eq!(hf_name("lm_head"), ("lm_head.weight".into(), true));
    }
}
