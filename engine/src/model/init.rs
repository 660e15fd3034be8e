//! Deterministic initialisation. Weights are drawn on the host from our own seeded generator,
//! so the same seed gives the same model on every backend (wgpu, CPU), which the cross-backend
//! parity test and reproducible runs rely on.

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::rng::Rng;

/// A `[rows, cols]` tensor of N(0, std^2) draws.
pub fn normal_tensor(rng: &mut Rng, shape: [usize; 2], std: f64, device: &Device) -> Tensor<2> {
    let n = shape[0] * shape[1];
    let v: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Standard deviation used for every projection, as in GPT-2/Llama initialisation.
pub const INIT_STD: f64 = 0.02;

/// A linear layer `[d_in] -> [d_out]` with N(0, 0.02) weights and zero bias.
pub fn linear(rng: &mut Rng, d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    let mut l = LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
    l.weight = Param::from_tensor(normal_tensor(rng, [d_in, d_out], INIT_STD, device));
    if bias {
        l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    }
    l
}

/// An embedding table with N(0, 0.02) rows.
pub fn embedding(rng: &mut Rng, n: usize, d: usize, device: &Device) -> Embedding {
    let mut e = EmbeddingConfig::new(n, d).init(device);
    e.weight = Param::from_tensor(normal_tensor(rng, [n, d], INIT_STD, device));
    e
}
