//! Deterministic initialisation. Weights are drawn on the host from our own seeded generator,
//! so the same seed gives the same model on every backend (wgpu, CPU), which the cross-backend
//! parity test and reproducible runs rely on.

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;

/// SplitMix64: tiny, fast, and stable across versions (unlike library RNGs whose streams may
/// change between releases).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// Derives an independent stream for a named purpose.
    pub fn fork(&self, salt: u64) -> Self {
        let mut r = Rng(self.0 ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

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
