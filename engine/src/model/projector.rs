//! mlp2x_gelu projector (LLaVA-1.5): maps visual features to the LLM's width.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::gelu;

use super::init::linear;
use crate::rng::Rng;

#[derive(Module, Debug)]
pub struct Projector {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

impl Projector {
    pub fn new(vision_hidden: usize, llm_hidden: usize, rng: &mut Rng, device: &Device) -> Self {
        Projector {
            linear_1: linear(rng, vision_hidden, llm_hidden, true, device),
            linear_2: linear(rng, llm_hidden, llm_hidden, true, device),
        }
    }

    /// `[B, N, C] -> [B, N, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.linear_2.forward(gelu(self.linear_1.forward(x)))
    }
}
