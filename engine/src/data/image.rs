//! Image loading: decode, resize to the encoder's input size, scale to [0, 1] and normalise per
//! channel, laid out channel-major (`[3, H, W]`) as the patch embedding expects.

use std::path::Path;

use image::imageops::FilterType;

use crate::config::{Resample, Resize, VisionConfig};
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

/// Decodes an encoded image (PNG, JPEG or WebP: the formats LLaVA-style sets ship) into normalised
/// `[3, S, S]` floats; `origin` names the bytes in errors.
pub fn decode_image(bytes: &[u8], origin: &Path, cfg: &VisionConfig) -> Result<Vec<f32>> {
    let img = image::load_from_memory(bytes).map_err(|e| Error::Image {
        path: origin.to_path_buf(),
        message: format!("cannot decode image (PNG, JPEG or WebP expected): {e}"),
    })?;
    Ok(normalise(img.to_rgb8(), cfg))
}

/// Brings an RGB image to the encoder's square input as its tower's processor would (pad to
/// square, resize, centre crop: `VisionConfig::preprocess`), then scales to [0, 1] and
/// normalises per channel.
pub fn normalise(img: image::RgbImage, cfg: &VisionConfig) -> Vec<f32> {
    let s = cfg.image_size as u32;
    let pre = &cfg.preprocess;
    let img = if pre.pad_to_square {
        pad_to_square(img, cfg.mean)
    } else {
        img
    };
    let filter = match pre.resample {
        Resample::Bilinear => FilterType::Triangle,
        // PIL's bicubic is the a = -0.5 cubic, Catmull-Rom
        Resample::Bicubic => FilterType::CatmullRom,
    };
    let resize = |img: image::RgbImage, w: u32, h: u32| {
        if img.width() == w && img.height() == h {
            img
        } else {
            image::imageops::resize(&img, w, h, filter)
        }
    };
    let img = match pre.resize {
        Resize::Squash => resize(img, s, s),
        Resize::ShortestEdge => {
            let (w, h) = shortest_edge_size(img.width(), img.height(), pre.edge(cfg.image_size));
            let img = resize(img, w, h);
            // transformers' centre crop: the top-left corner at the floor of half the excess
            let (left, top) = ((w - s) / 2, (h - s) / 2);
            image::imageops::crop_imm(&img, left, top, s, s).to_image()
        }
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

/// The size after resizing the shorter side to `edge`: the longer side scales by the same
/// factor and is truncated, as transformers' `get_resize_output_image_size` does.
fn shortest_edge_size(w: u32, h: u32, edge: usize) -> (u32, u32) {
    let edge = edge as u64;
    let (short, long) = (w.min(h) as u64, w.max(h) as u64);
    let long = (edge * long / short) as u32;
    if w <= h {
        (edge as u32, long)
    } else {
        (long, edge as u32)
    }
}

/// LLaVA's `expand2square`: the image in the middle of a square of the mean colour (each
/// channel `int(mean * 255)`), offset by the floor of half the difference.
fn pad_to_square(img: image::RgbImage, mean: [f32; 3]) -> image::RgbImage {
    let (w, h) = (img.width(), img.height());
    if w == h {
        return img;
    }
    let side = w.max(h);
    let fill = image::Rgb(mean.map(|m| (m * 255.0) as u8));
    let mut square = image::RgbImage::from_pixel(side, side, fill);
    image::imageops::replace(
        &mut square,
        &img,
        i64::from((side - w) / 2),
        i64::from((side - h) / 2),
    );
    square
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb, RgbImage};

    fn vision(size: usize) -> VisionConfig {
        toml::from_str(&format!(
            "image_size = {size}\npatch_size = 4\nhidden = 8\nlayers = 1\nheads = 1\nmlp_hidden = 8\n\
             mean = [0.0, 0.0, 0.0]\nstd = [1.0, 1.0, 1.0]"
        ))
        .unwrap()
    }

    /// A 24 x 16 picture: left half red, right half blue.
    fn picture() -> RgbImage {
        RgbImage::from_fn(24, 16, |x, _| {
            if x < 12 {
                Rgb([220, 20, 20])
            } else {
                Rgb([20, 20, 220])
            }
        })
    }

    fn encoded(format: ImageFormat) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        picture().write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    /// Every format decodes to the same pixels as the PNG, within the lossy formats' error:
    /// the left column red, the right column blue.
    #[test]
    fn jpeg_and_webp_decode_like_png() {
        let cfg = vision(8);
        let png = decode_image(&encoded(ImageFormat::Png), Path::new("a.png"), &cfg).unwrap();
        for (format, name, tol) in [
            (ImageFormat::Jpeg, "a.jpg", 0.08),
            (ImageFormat::WebP, "a.webp", 1e-6),
        ] {
            let got = decode_image(&encoded(format), Path::new(name), &cfg)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.len(), 3 * 8 * 8, "{name}");
            let worst = got
                .iter()
                .zip(&png)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst <= tol, "{name}: differs from the PNG by {worst}");
        }
        // channel-major: red high on the left, blue high on the right
        let n = 8 * 8;
        assert!(png[0] > 0.8 && png[2 * n] < 0.2);
        assert!(png[7] < 0.2 && png[2 * n + 7] > 0.8);
    }

    #[test]
    fn an_undecodable_file_is_named_with_the_formats_expected() {
        let err = decode_image(b"not an image", Path::new("x.gif"), &vision(8))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.gif") && err.contains("PNG, JPEG or WebP"),
            "{err}"
        );
    }
}
