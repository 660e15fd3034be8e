//! LLaVADI's feature alignment: the student's last hidden states are mapped to the teacher's width
//! by a learned 2-layer MLP and pulled towards the teacher's with a mean-squared error over the
//! counted tokens. The projection trains with the student and is dropped after distillation.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::gelu;

use crate::model::init::linear;
use crate::model::masked_mean;
use crate::rng::Rng;

/// `Linear(Ds, Dt) -> GELU -> Linear(Dt, Dt)`.
#[derive(Module, Debug)]
pub struct HiddenProjection {
    fc1: Linear,
    fc2: Linear,
}

impl HiddenProjection {
    /// Seeded on the host like the models, so every backend starts from the same weights.
    pub fn new(student_width: usize, teacher_width: usize, seed: u64, device: &Device) -> Self {
        let mut rng = Rng::new(seed);
        HiddenProjection {
            fc1: linear(&mut rng, student_width, teacher_width, true, device),
            fc2: linear(&mut rng, teacher_width, teacher_width, true, device),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}

/// Mean over counted tokens of the per-token mean squared error between `mapped [B, T, Dt]` and
/// the (detached) teacher hidden states `[B, T, Dt]`; `mask [B, T]`. Returns `[1]`.
pub fn hidden_mse(mapped: Tensor<3>, teacher: Tensor<3>, mask: Tensor<2>) -> Tensor<1> {
    let [b, t, _] = mapped.dims();
    let per_token = (mapped - teacher.detach())
        .powi_scalar(2)
        .mean_dim(2)
        .reshape([b, t]);
    masked_mean(per_token, mask)
}
