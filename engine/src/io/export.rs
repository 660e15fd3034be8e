//! A decoder written back as a Hugging Face folder: `config.json` (`LlamaForCausalLM`, or
//! `Qwen2ForCausalLM` when the q/k/v projections have biases) and `model.safetensors` with HF
//! tensor names and PyTorch layouts, so `from_pretrained` loads it. The inverse of
//! [`super::hf_llm`]; MoE decoders have no such counterpart and are refused.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::hf_llm::{ParamPath, hf_name};
use crate::model::Llm;
use crate::{Error, Result};

/// Collects every parameter under its HF name, transposed back to PyTorch's layout.
struct Collect {
    path: ParamPath,
    out: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let (name, transposed) = hf_name(&self.path.current());
        let mut t = p.val();
        if transposed {
            t = t.transpose();
        }
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 data");
        self.out.insert(name, (shape, values));
    }
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
    let mut v = Collect {
        path: ParamPath::default(),
        out: BTreeMap::new(),
    };
    llm.visit(&mut v);
    let bytes: BTreeMap<String, (Vec<usize>, Vec<u8>)> = v
        .out
        .into_iter()
        .map(|(k, (shape, vals))| {
            let b: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
            (k, (shape, b))
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(k, (shape, b))| {
            let view = TensorView::new(Dtype::F32, shape.clone(), b).expect("consistent sizes");
            (k.clone(), view)
        })
        .collect();
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let st = safetensors::serialize(views, metadata).map_err(|e| Error::Checkpoint {
        path: dir.into(),
        message: format!("cannot serialise: {e}"),
    })?;
    crate::error::write_atomic(dir.join("model.safetensors"), &st)?;
    let (arch, model_type) = if c.qkv_bias {
        ("Qwen2ForCausalLM", "qwen2")
    } else {
        ("LlamaForCausalLM", "llama")
    };
    let config = serde_json::json!({
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
    });
    let text = serde_json::to_string_pretty(&config).expect("serialisable");
    crate::error::write_atomic(dir.join("config.json"), text.as_bytes())
}
