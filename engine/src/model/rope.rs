//! Rotary position embedding in the "rotate half" layout used by Llama and Qwen2 in HF
//! transformers (pairs are `(i, i + d/2)`, not interleaved), so imported weights line up.

use burn::prelude::*;

/// Precomputed cos/sin tables `[max_positions, head_dim]`.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    pub fn new(head_dim: usize, max_positions: usize, theta: f64, device: &Device) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_positions * head_dim);
        let mut sin = Vec::with_capacity(max_positions * head_dim);
        for p in 0..max_positions {
            for i in 0..head_dim {
                let inv = theta.powf(-2.0 * (i % half) as f64 / head_dim as f64);
                let a = p as f64 * inv;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        let shape = [max_positions, head_dim];
        Rope {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Rotates `x [B, H, T, d]` by per-row positions `pos [B, T]`.
    pub fn apply(&self, x: Tensor<4>, pos: Tensor<2, Int>) -> Tensor<4> {
        let [b, _, t, d] = x.dims();
        let flat = pos.reshape([b * t]);
        let cos = self
            .cos
            .clone()
            .select(0, flat.clone())
            .reshape([b, 1, t, d]);
        let sin = self.sin.clone().select(0, flat).reshape([b, 1, t, d]);
        let x1 = x.clone().narrow(3, 0, d / 2);
        let x2 = x.clone().narrow(3, d / 2, d / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }
}
