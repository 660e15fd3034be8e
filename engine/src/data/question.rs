//! One question about one image, as a prompt batch ready for generation: the path every face
//! shares (`condenser chat`, the browser page), so they feed the model the same ids and pixels.

use burn::prelude::*;

use super::template::encode_prompt;
use super::{Padding, TextTokenizer, Turn, host_batch};
use crate::Result;
use crate::config::VisionConfig;
use crate::model::{MllmBatch, Visual};

/// The user's text as the chat template's human turn: an `<image>` placeholder is put in front
/// unless the text already places one.
pub fn with_image_placeholder(question: &str) -> String {
    if question.contains("<image>") {
        question.to_string()
    } else {
        format!("<image>\n{question}")
    }
}

/// Builds the batch of one question: `pixels` are the normalised `[3, S, S]` image
/// ([`super::image::normalise`]).
pub fn question_batch(
    tok: &TextTokenizer,
    vision: &VisionConfig,
    pixels: Vec<f32>,
    question: &str,
    device: &Device,
) -> Result<MllmBatch> {
    let nv = vision.num_visual_tokens();
    let enc = encode_prompt(tok, &[Turn::human(with_image_placeholder(question))], nv)?;
    let hb = host_batch(&[&enc], nv, tok.special.pad, Padding::Left);
    let s = vision.image_size;
    let images = Tensor::<4>::from_data(TensorData::new(pixels, [1, 3, s, s]), device);
    Ok(hb.to_device(Visual::Pixels(images), device))
}
