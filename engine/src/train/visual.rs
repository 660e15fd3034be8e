//! A stage's visual input. With a frozen encoder its features never change during the stage,
//! so they are computed once (without autodiff) and looked up per batch; a trained encoder sees
//! the pixels every step.

use burn::prelude::*;

use crate::data::Dataset;
use crate::model::{Mllm, Visual};

/// Every image of `data` as one `[N, 3, S, S]` tensor (a zero image when there are none).
fn all_images(data: &Dataset, s: usize, device: &Device) -> Tensor<4> {
    if data.num_images() == 0 {
        Tensor::<4>::zeros([1, 3, s, s], device)
    } else {
        let n = data.num_images();
        Tensor::<4>::from_data(TensorData::new(data.images.clone(), [n, 3, s, s]), device)
    }
}

/// A frozen encoder's features of `images`, in chunks of 256 images.
fn encode_all(vision: &crate::model::VisionEncoder, images: Tensor<4>) -> Tensor<3> {
    let n = images.dims()[0];
    let chunks: Vec<Tensor<3>> = (0..n)
        .step_by(256)
        .map(|start| vision.forward(images.clone().narrow(0, start, 256.min(n - start))))
        .collect();
    Tensor::cat(chunks, 0)
}

/// Where a stage's visual input comes from. With a frozen encoder its features never change, so
/// they are computed once per stage (without autodiff) and looked up per batch; otherwise the
/// pixels go through the encoder every step.
pub enum VisualSource {
    Features(Tensor<3>),
    Pixels(Tensor<4>),
}

impl VisualSource {
    pub fn new(model: &Mllm, data: &Dataset, frozen: bool, device: &Device) -> Self {
        let images = all_images(data, model.config.vision.image_size, device);
        if !frozen {
            return VisualSource::Pixels(images);
        }
        let features = encode_all(&model.vision.valid(), images.inner());
        VisualSource::Features(features.autodiff())
    }

    /// Features of a frozen encoder living on an inner (non-autodiff) device: the teacher's.
    pub fn frozen(vision: &crate::model::VisionEncoder, data: &Dataset, inner: &Device) -> Self {
        let images = all_images(data, vision.config.image_size, inner);
        VisualSource::Features(encode_all(vision, images))
    }

    pub fn for_batch(&self, data: &Dataset, idx: &[usize], device: &Device) -> Visual {
        let rows: Vec<i64> = idx
            .iter()
            .map(|&i| data.image_of[i].unwrap_or(0) as i64)
            .collect();
        let sel = Tensor::<1, Int>::from_data(TensorData::new(rows, [idx.len()]), device);
        match self {
            VisualSource::Features(f) => Visual::Features(f.clone().select(0, sel)),
            VisualSource::Pixels(p) => Visual::Pixels(p.clone().select(0, sel)),
        }
    }
}
