//! Image loading: decode, resize to the encoder's input size, scale to [0, 1] and normalise per
//! channel, laid out channel-major (`[3, H, W]`) as the patch embedding expects.

use std::path::Path;

use image::imageops::FilterType;

use crate::config::VisionConfig;
use crate::{Error, Result};

/// Loads one image as normalised `[3, S, S]` floats.
pub fn load_image(path: &Path, cfg: &VisionConfig) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        message: match e.kind() {
            std::io::ErrorKind::NotFound => "image file not found".into(),
            _ => format!("cannot read image: {e}"),
        },
    })?;
    decode_image(&bytes, path, cfg)
}

/// Decodes an encoded image (PNG, or JPEG where the build enables it) into normalised
/// `[3, S, S]` floats; `origin` names the bytes in errors.
pub fn decode_image(bytes: &[u8], origin: &Path, cfg: &VisionConfig) -> Result<Vec<f32>> {
    let img = image::load_from_memory(bytes).map_err(|e| Error::Image {
        path: origin.to_path_buf(),
        message: format!("cannot decode image (PNG or JPEG expected): {e}"),
    })?;
    Ok(normalise(img.to_rgb8(), cfg))
}

/// Resizes (bilinear) and normalises an RGB image.
pub fn normalise(img: image::RgbImage, cfg: &VisionConfig) -> Vec<f32> {
    let s = cfg.image_size as u32;
    let img = if img.width() == s && img.height() == s {
        img
    } else {
        image::imageops::resize(&img, s, s, FilterType::Triangle)
    };
    let n = (s * s) as usize;
    let mut out = vec![0.0f32; 3 * n];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * n + i] = (p.0[c] as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    out
}
