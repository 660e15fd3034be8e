//! CLIP-style contrastive image-caption loss, used to pre-train the shared vision encoder.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::Result;
use crate::data::{Dataset, Speaker, TextTokenizer};
use crate::model::{Mllm, Visual, causal_bias, padding_bias};

/// Caption token ids per record: `<bos> caption <|end|>` (text only, no image).
pub fn caption_ids(data: &Dataset, tok: &TextTokenizer) -> Result<Vec<Vec<u32>>> {
    data.records
        .iter()
        .map(|r| {
            let caption = r
                .conversations
                .iter()
                .rev()
                .find(|t| t.from == Speaker::Gpt)
                .map_or("", |t| t.value.as_str());
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
pub fn contrastive_loss(
    model: &Mllm,
    visual: Visual,
    captions: &[&Vec<u32>],
    pad: u32,
    temperature: f64,
    device: &Device,
) -> Tensor<1> {
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
    let text = h.reshape([b * t, d]).select(0, last);
    let tokens = model.visual_tokens(visual);
    // CLIP's image embedding is the CLS token; without CLS, the mean of the patch tokens
    let image = if model.config.vision.drop_cls {
        tokens.mean_dim(1)
    } else {
        tokens.narrow(1, 0, 1)
    }
    .reshape([b, d]);
    info_nce(image, text, temperature)
}

/// Symmetric InfoNCE: row i of `image` and of `text` `[B, D]` are a pair; both are
/// L2-normalised, similarities divided by the temperature, and the cross-entropy of picking the
/// pair is averaged over both directions.
pub fn info_nce(image: Tensor<2>, text: Tensor<2>, temperature: f64) -> Tensor<1> {
    let b = image.dims()[0];
    let device = image.device();
    let logits = normalise(image)
        .matmul(normalise(text).transpose())
        .div_scalar(temperature);
    let diag = Tensor::<1, Int>::arange(0..b as i64, &device).reshape([b, 1]);
    let rows = log_softmax(logits.clone(), 1)
        .gather(1, diag.clone())
        .mean();
    let cols = log_softmax(logits.transpose(), 1).gather(1, diag).mean();
    (rows + cols).div_scalar(-2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_info_nce(a: &[f64], b: &[f64], n: usize, d: usize, t: f64) -> f64 {
        let norm = |v: &[f64]| -> Vec<f64> {
            v.chunks(d)
                .flat_map(|r| {
                    let l = r.iter().map(|x| x * x).sum::<f64>().sqrt();
                    r.iter().map(move |x| x / l)
                })
                .collect()
        };
        let (a, b) = (norm(a), norm(b));
        let s = |i: usize, j: usize| (0..d).map(|k| a[i * d + k] * b[j * d + k]).sum::<f64>() / t;
        let mut loss = 0.0;
        for i in 0..n {
            let row: f64 = (0..n).map(|j| s(i, j).exp()).sum();
            let col: f64 = (0..n).map(|j| s(j, i).exp()).sum();
            loss += -(s(i, i) - row.ln()) - (s(i, i) - col.ln());
        }
        loss / (2.0 * n as f64)
    }

    #[test]
    fn info_nce_matches_direct_formula_and_finite_differences() {
        let device = Device::flex().autodiff();
        let (n, d, t) = (3, 4, 0.5);
        let mut rng = crate::model::Rng::new(9);
        let a: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
        let b: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
        let ta = Tensor::<2>::from_data(
            TensorData::new(a.iter().map(|x| *x as f32).collect::<Vec<_>>(), [n, d]),
            &device,
        )
        .require_grad();
        let tb = Tensor::<2>::from_data(
            TensorData::new(b.iter().map(|x| *x as f32).collect::<Vec<_>>(), [n, d]),
            &device,
        );
        let loss = info_nce(ta.clone(), tb, t);
        let got: f32 = loss.clone().into_scalar();
        let want = host_info_nce(&a, &b, n, d, t);
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        let grads = loss.backward();
        let g: Vec<f32> = ta
            .grad(&grads)
            .unwrap()
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .unwrap();
        for k in 0..n * d {
            let (mut up, mut dn) = (a.clone(), a.clone());
            up[k] += 1e-5;
            dn[k] -= 1e-5;
            let fd = (host_info_nce(&up, &b, n, d, t) - host_info_nce(&dn, &b, n, d, t)) / 2e-5;
            assert!(
                (g[k] as f64 - fd).abs() < 1e-3,
                "grad {k}: {} vs {fd}",
                g[k]
            );
        }
    }
}
