//! A DINOv2 backbone from an ONNX graph exported from transformers' `Dinov2Model` (alone or
//! inside a larger model, e.g. under `backbone.`), turned into what a HF DINOv2 folder holds: a
//! config and tensors by HF names. The TorchScript exporter keeps the names of parameters that
//! are used as they are (biases, norms, layer scales, the CLS token), but the linear weights
//! become anonymous `onnx::MatMul_N` initializers (transposed for the `MatMul`) and the position
//! embeddings are split into anonymous CLS and patch parts. Those are recovered by walking the
//! graph: a weight is named by the scope of the `MatMul` node that consumes it
//! (`/backbone/encoder/layer.3/mlp/fc1/MatMul` -> `encoder.layer.3.mlp.fc1.weight`), the
//! position parts by the embedding nodes that consume them. What the graph does not store as a
//! tensor (head count, LayerNorm epsilon, activation) is read from its constants and ops.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;

use super::onnx::OnnxGraph;
use super::params::layer_index;
use super::safetensors::{HostTensor, TensorFolder};
use crate::{Error, Result};

/// transformers 5 spells DINOv2's attention projections `q_proj`..`o_proj`; checkpoints and
/// older exports say `attention.query`..`output.dense`. Names are normalised to the latter.
fn legacy_name(path: &str) -> String {
    [
        ("attention.q_proj", "attention.attention.query"),
        ("attention.k_proj", "attention.attention.key"),
        ("attention.v_proj", "attention.attention.value"),
        ("attention.o_proj", "attention.output.dense"),
    ]
    .iter()
    .fold(path.to_string(), |p, (new, old)| p.replace(new, old))
}

/// A DINOv2 config (HF keys) and its tensors (HF names) from the ONNX file at `path`.
pub(crate) fn dinov2_from_onnx(path: &Path) -> Result<(serde_json::Value, TensorFolder)> {
    let graph = OnnxGraph::read(path)?;
    let refuse = |message: String| Error::Checkpoint {
        path: path.into(),
        message,
    };
    // where the backbone sits: `backbone.` in the saliency model of docs/ASSETS.md, "" when alone
    let prefix = graph
        .initializers
        .keys()
        .find_map(|k| k.strip_suffix("embeddings.cls_token"))
        .ok_or_else(|| {
            refuse(
                "no `embeddings.cls_token` initializer: not a DINOv2 backbone exported from \
                 transformers (the only ONNX graphs this importer reads)"
                    .into(),
            )
        })?
        .to_string();
    let scope = format!("/{}", prefix.replace('.', "/"));
    let mut folder = TensorFolder {
        dir: path.into(),
        ..TensorFolder::default()
    };
    let mut put = |name: String, t: HostTensor| {
        folder.tensors.insert(name, (t, path.into()));
    };
    for (name, t) in &graph.initializers {
        if let Some(rest) = name.strip_prefix(&prefix)
            && !name.starts_with("onnx::")
        {
            put(legacy_name(rest), t.clone());
        }
    }
    // linear weights, named by the MatMul that consumes them
    let mut unnamed = Vec::new();
    for node in graph.nodes.iter().filter(|n| n.op_type == "MatMul") {
        let Some(w) = node.inputs.get(1).and_then(|i| graph.initializers.get(i)) else {
            continue;
        };
        let module = node
            .name
            .strip_prefix(&scope)
            .and_then(|s| s.strip_suffix("/MatMul"))
            .filter(|s| s.starts_with("encoder/"));
        match module {
            Some(m) if w.shape.len() == 2 => put(
                format!("{}.weight", legacy_name(&m.replace('/', "."))),
                w.transposed(),
            ),
            _ => unnamed.push(node.name.clone()),
        }
    }
    if !unnamed.is_empty() {
        return Err(refuse(format!(
            "MatMul nodes with a weight outside the backbone's encoder scope `{scope}encoder/`: {}",
            unnamed.join(", ")
        )));
    }
    // the position embeddings: a [1, 1, C] CLS part and a [1, N, C] patch part, both
    // anonymous, consumed by the embedding nodes
    let embeddings = format!("{scope}embeddings/");
    let (mut cls_pos, mut patch_pos) = (None, None);
    for node in graph
        .nodes
        .iter()
        .filter(|n| n.name.starts_with(&embeddings))
    {
        for input in &node.inputs {
            let Some(t) = graph.initializers.get(input) else {
                continue;
            };
            if !input.starts_with("onnx::") || t.shape.len() != 3 {
                continue;
            }
            match t.shape[1] {
                1 => cls_pos = Some(t.clone()),
                _ => patch_pos = Some(t.clone()),
            }
        }
    }
    let (Some(cls_pos), Some(patch_pos)) = (cls_pos, patch_pos) else {
        return Err(refuse(format!(
            "no anonymous [1, 1, C] and [1, N, C] position initializers under `{embeddings}`"
        )));
    };
    let c = cls_pos.shape[2];
    let n = patch_pos.shape[1];
    let mut values = cls_pos.values;
    values.extend(patch_pos.values);
    put(
        "embeddings.position_embeddings".into(),
        HostTensor {
            shape: vec![1, 1 + n, c],
            values,
        },
    );

    let layers: BTreeSet<usize> = folder
        .tensors
        .keys()
        .filter_map(|k| layer_index(k, "encoder.layer."))
        .collect();
    let layer0 = format!("{scope}encoder/layer.0/");
    // heads: the query is reshaped to [B, T, heads (or -1), head_dim]
    let head_dim = graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "Reshape" && n.name.starts_with(&layer0))
        .filter(|n| {
            n.inputs
                .first()
                .is_some_and(|i| i.contains("/query/") || i.contains("/q_proj/"))
        })
        .find_map(|n| {
            let concat = graph.producer(n.inputs.get(1)?)?;
            let last = graph.constant(concat.inputs.last()?)?;
            last.values.first().map(|&v| v as usize)
        })
        .filter(|&d| d > 0 && c.is_multiple_of(d))
        .ok_or_else(|| {
            refuse(format!(
                "cannot read the head size: no reshape of the query projection to \
                 [.., heads, head_dim] under `{layer0}`"
            ))
        })?;
    // LayerNorm epsilon: the scalar constant added to the variance in layer 0's first norm
    let eps = graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "Add" && n.name.starts_with(&format!("{layer0}norm1/")))
        .find_map(|n| {
            let from_mean = graph.producer(&n.inputs[0])?.op_type == "ReduceMean";
            let e = graph.constant(n.inputs.get(1)?)?;
            (from_mean && e.values.len() == 1).then(|| e.values[0])
        })
        // the graph stores it in f32: 1e-6 reads back as 9.99999997e-7, so the shortest
        // decimal that gives the same f32 is kept (what the exporter was given)
        .map(|e| format!("{e}").parse::<f64>().unwrap_or(f64::from(e)))
        .ok_or_else(|| {
            refuse(format!(
                "cannot read the LayerNorm epsilon under `{layer0}norm1/`"
            ))
        })?;
    let mlp_ops: BTreeSet<&str> = graph
        .nodes
        .iter()
        .filter(|n| n.name.starts_with(&format!("{layer0}mlp/")))
        .map(|n| n.op_type.as_str())
        .collect();
    let act = if mlp_ops.contains("Erf") {
        "gelu"
    } else if mlp_ops.contains("Tanh") {
        "gelu_pytorch_tanh"
    } else {
        return Err(refuse(format!(
            "the MLP under `{layer0}mlp/` is neither an erf nor a tanh GELU (ops: {mlp_ops:?})"
        )));
    };
    let patch = folder
        .tensors
        .get("embeddings.patch_embeddings.projection.weight")
        .map(|(t, _)| t.shape.clone())
        .filter(|s| s.len() == 4)
        .ok_or_else(|| refuse("no [C, 3, p, p] patch projection weight".into()))?;
    let fc1 = folder
        .tensors
        .get("encoder.layer.0.mlp.fc1.weight")
        .map(|(t, _)| t.shape[0])
        .ok_or_else(|| refuse("no layer-0 MLP weight".into()))?;
    let side = (n as f64).sqrt().round() as usize;
    let config = json!({
        "model_type": "dinov2",
        "hidden_size": c,
        "num_hidden_layers": layers.len(),
        "num_attention_heads": c / head_dim,
        "intermediate_size": fc1,
        "patch_size": patch[2],
        "image_size": side * patch[2],
        "num_channels": patch[1],
        "layer_norm_eps": eps,
        "hidden_act": act,
    });
    Ok((config, folder))
}
