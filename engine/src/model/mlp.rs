//! The SwiGLU feed-forward block of Llama/Qwen2 decoders: a dense layer's FFN, and each expert
//! of an MoE layer (sparse upcycling copies the dense one into every expert).

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::silu;

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.down_proj
            .forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
    }
}
