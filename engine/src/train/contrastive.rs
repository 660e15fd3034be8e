//! CLIP-style contrastive image-caption loss, used to pre-train the shared vision encoder.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::data::{Dataset, Speaker, TextTokenizer};
use crate::model::{Mllm, Visual, causal_bias, padding_bias};
use crate::Result;

/// Caption token ids per record: `<bos> caption <|end|>` (text only, no image).
pub fn caption_ids(data: &Dataset, tok: &TextTokenizer) -> Result<Vec<Vec<u32>>> {
    data.records
        .iter()
        .map(|r| {
            let caption = r.conversations.iter().rev().find(|t| t.from == Speaker::Gpt).map_or("", |t| t.value.as_str());
            let mut ids = vec![tok.special.bos];
            ids.extend(tok.encode(caption)?);
            ids.push(tok.special.end);
            Ok(ids)
        })
        .collect()
}

/// L2-normalises rows of `[B, D]`.
fn normalise(x: Tensor<2>) -> Tensor<2> {
    let n = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-6);
    x / n
}

/// Symmetric InfoNCE over a batch of (image, caption) pairs; returns `[1]`.
pub fn contrastive_loss(model: &Mllm, visual: Visual, captions: &[&Vec<u32>], pad: u32, temperature: f64, device: &Device) -> Tensor<1> {
    let b = captions.len();
    let t = captions.iter().map(|c| c.len()).max().unwrap_or(1);
    let mut ids = vec![pad as i64; b * t];
    let mut mask = vec![0.0f32; b * t];
    let mut pos = vec![0i64; b * t];
    let mut last = Vec::with_capacity(b);
    for (r, c) in captions.iter().enumerate() {
        for (k, &id) in c.iter().enumerate() {
            ids[r * t + k] = id as i64;
            mask[r * t + k] = 1.0;
            pos[r * t + k] = k as i64;
        }
        last.push((r * t + c.len() - 1) as i64);
    }
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, t]), device);
    let pos = Tensor::<2, Int>::from_data(TensorData::new(pos, [b, t]), device);
    let bias = padding_bias(mask) + causal_bias(t, t, device);
    let h = model.llm.hidden(model.llm.embed(ids), pos, bias, None);
    let d = h.dims()[2];
    let last = Tensor::<1, Int>::from_data(TensorData::new(last, [b]), device);
    let text = normalise(h.reshape([b * t, d]).select(0, last));
    let image = normalise(model.visual_tokens(visual).mean_dim(1).reshape([b, d]));
    let logits = image.matmul(text.transpose()).div_scalar(temperature);
    let diag = Tensor::<1, Int>::arange(0..b as i64, device).reshape([b, 1]);
    let rows = log_softmax(logits.clone(), 1).gather(1, diag.clone()).mean();
    let cols = log_softmax(logits.transpose(), 1).gather(1, diag).mean();
    (rows + cols).div_scalar(-2.0)
}
