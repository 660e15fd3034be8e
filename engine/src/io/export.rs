//! A decoder written back as a Hugging Face folder: `config.json` (`LlamaForCausalLM`, or
//! `Qwen2ForCausalLM` when the q/k/v projections have biases) and `model.safetensors` with HF
//! tensor names and PyTorch layouts, so `from_pretrained` loads it. The inverse of
//! [`super::hf_llm`]; MoE decoders have no such counterpart and are refused.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::Dtype;

use super::hf_llm::hf_name;
use super::params::host_params;
use super::safetensors::HostTensor;
use crate::model::Llm;
use crate::{Error, Result};

/// Every parameter of `llm` under its HF name, linear weights transposed back to PyTorch's
/// `[out, in]` layout.
pub(crate) fn hf_tensors(llm: &Llm) -> BTreeMap<String, HostTensor> {
    host_params(llm)
        .into_iter()
        .map(|(path, t)| {
            let (name, transposed) = hf_name(&path);
            (name, if transposed { t.transposed() } else { t })
        })
        .collect()
}

/// Writes `llm` to `dir` as a HF folder (created if needed; existing files of the same names
/// are replaced atomically).
pub fn export_hf_llm(llm: &Llm, dir: &Path) -> Result<()> {
    let c = &llm.config;
    if c.moe.is_some() {
        return Err(Error::Invalid(
            "an MoE decoder has no Hugging Face Llama/Qwen2 counterpart: export its dense base"
                .into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_safetensors(dir, hf_tensors(llm))?;
    let config = hf_llm_config_json(c);
    let text = serde_json::to_string_pretty(&config).expect("serialisable");
    crate::error::write_atomic(dir.join("config.json"), text.as_bytes())
}

/// The transformers config of a decoder: `LlamaForCausalLM`, or `Qwen2ForCausalLM` when the
/// q/k/v projections have biases (also the `text_config` of a LLaVA export).
pub(crate) fn hf_llm_config_json(c: &crate::config::LlmConfig) -> serde_json::Value {
    let (arch, model_type) = if c.qkv_bias {
        ("Qwen2ForCausalLM", "qwen2")
    } else {
        ("LlamaForCausalLM", "llama")
    };
    serde_json::json!({
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden,
        "intermediate_size": c.intermediate,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads,
        "max_position_embeddings": c.max_positions,
        "rms_norm_eps": c.rms_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": false,
        "torch_dtype": "float32",
    })
}

/// Writes f32 `tensors` as `dir/model.safetensors` (atomically), PyTorch's metadata format.
pub(crate) fn write_safetensors(dir: &Path, tensors: BTreeMap<String, HostTensor>) -> Result<()> {
    let tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let bytes = t.values.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name, (Dtype::F32, t.shape, bytes))
        })
        .collect();
    let st = super::safetensors::serialize(&tensors, "pt").map_err(|e| Error::Checkpoint {
        path: dir.into(),
        message: format!("cannot serialise: {e}"),
    })?;
    crate::error::write_atomic(dir.join("model.safetensors"), &st)
}
