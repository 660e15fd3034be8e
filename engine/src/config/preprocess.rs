//! How an image becomes the encoder's square input: the part of a tower's image processor
//! that is not the per-channel normalisation (`VisionConfig::mean`/`std`). An imported tower is
//! fed the way it was trained, so `condenser import` reads the tower's
//! `preprocessor_config.json` into this; LLaVA's `image_aspect_ratio = "pad"` is
//! `pad_to_square`. The default (squash to the square, bilinear) is what Condenser's own
//! encoders train with.

use serde::{Deserialize, Serialize};

/// Resizing and cropping ahead of normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// How the image reaches the square input.
    #[serde(default)]
    pub resize: Resize,
    /// The shorter side after resizing, for `resize = "shortest_edge"` (CLIP: 224 before a
    /// 224 crop; DINOv2: 256 before a 224 crop). Default: the input size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortest_edge: Option<usize>,
    #[serde(default)]
    pub resample: Resample,
    /// First paste the image onto a square of the mean colour (LLaVA-1.5's
    /// `image_aspect_ratio = "pad"`), so nothing is cut and nothing is squashed.
    #[serde(default)]
    pub pad_to_square: bool,
}

/// How the image reaches the square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Resize both sides to the input size, whatever the aspect ratio (SigLIP's processor).
    #[default]
    Squash,
    /// Resize the shorter side to `shortest_edge` keeping the aspect ratio, then cut the
    /// centre square (CLIP's and DINOv2's processors).
    ShortestEdge,
}

/// The resampling filter (PIL's names, which transformers' processors use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    #[default]
    Bilinear,
    Bicubic,
}

impl Preprocess {
    /// Whether nothing was changed from the default (left out of saved recipes, so older run
    /// folders still match their recipes).
    pub fn is_default(&self) -> bool {
        *self == Preprocess::default()
    }

    /// The shorter side after resizing, for an input of `image_size`.
    pub fn edge(&self, image_size: usize) -> usize {
        self.shortest_edge.unwrap_or(image_size)
    }

    pub fn validate(&self, image_size: usize) -> Result<(), String> {
        if self.resize == Resize::ShortestEdge && self.edge(image_size) < image_size {
            return Err(format!(
                "vision.preprocess.shortest_edge {} is smaller than the {image_size} px input: \
                 the centre crop would not fit",
                self.edge(image_size)
            ));
        }
        if self.resize == Resize::Squash && self.shortest_edge.is_some() {
            return Err(
                "vision.preprocess.shortest_edge is only read with resize = \"shortest_edge\""
                    .into(),
            );
        }
        Ok(())
    }

    /// Reads a transformers image processor's `preprocessor_config.json` (CLIP, SigLIP,
    /// DINOv2/BiT): resize mode and size, centre crop, resampling filter. The crop size the
    /// processor names is its tower's input size; when the encoder is imported at another size
    /// (`--image-size`), the shorter side scales with it. Returns the crop size too.
    pub fn from_hf(json: &serde_json::Value, image_size: usize) -> Result<(Self, usize), String> {
        let get = |k: &str| json.get(k).filter(|v| !v.is_null());
        let flag = |k: &str, default: bool| get(k).and_then(|v| v.as_bool()).unwrap_or(default);
        let size_field = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64());
        let resample = match get("resample").and_then(|v| v.as_u64()) {
            None | Some(3) => Resample::Bicubic,
            Some(2) => Resample::Bilinear,
            Some(r) => {
                return Err(format!(
                    "resample {r} (PIL's {}) is not supported: bilinear (2) and bicubic (3) are",
                    [
                        "nearest", "lanczos", "bilinear", "bicubic", "box", "hamming"
                    ]
                    .get(r as usize)
                    .unwrap_or(&"unknown")
                ));
            }
        };
        let crop = if flag("do_center_crop", false) {
            let c = get("crop_size").ok_or("do_center_crop without a crop_size")?;
            let side = c
                .as_u64()
                .or_else(|| size_field(c, "height"))
                .ok_or("crop_size without a height")?;
            if let (Some(h), Some(w)) = (size_field(c, "height"), size_field(c, "width"))
                && h != w
            {
                return Err(format!("a {h} x {w} crop is not square"));
            }
            Some(side as usize)
        } else {
            None
        };
        let size = get("size");
        let shortest = size.and_then(|s| s.as_u64().or_else(|| size_field(s, "shortest_edge")));
        let scale = |x: usize, of: usize| (x * image_size + of / 2) / of;
        let pre = match (flag("do_resize", true), shortest, crop) {
            // without a crop, a shortest-edge resize leaves a non-square image: the encoder
            // takes a square, so it is cut at the shorter side
            (true, Some(edge), crop) => Preprocess {
                resize: Resize::ShortestEdge,
                shortest_edge: Some(scale(edge as usize, crop.unwrap_or(edge as usize))),
                resample,
                pad_to_square: false,
            },
            (true, None, _) => Preprocess {
                resample,
                ..Preprocess::default()
            },
            (false, _, _) => return Err("do_resize = false: the images must already fit".into()),
        };
        Ok((pre, crop.unwrap_or(image_size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hf_processors_map_to_their_resize_modes() {
        // CLIP ViT-L/14-336: shortest edge 336, centre crop 336, bicubic
        let clip = json!({"do_resize": true, "size": {"shortest_edge": 336}, "do_center_crop": true,
                          "crop_size": {"height": 336, "width": 336}, "resample": 3});
        let (p, crop) = Preprocess::from_hf(&clip, 336).unwrap();
        assert_eq!(
            (p.resize, p.shortest_edge, p.resample, crop),
            (Resize::ShortestEdge, Some(336), Resample::Bicubic, 336)
        );
        // DINOv2 at half size: 256 -> 224 becomes 128 -> 112
        let dino = json!({"size": {"shortest_edge": 256}, "do_center_crop": true,
                          "crop_size": {"height": 224, "width": 224}, "resample": 3});
        let (p, _) = Preprocess::from_hf(&dino, 112).unwrap();
        assert_eq!(p.shortest_edge, Some(128));
        // SigLIP: a plain resize to the square
        let siglip =
            json!({"do_resize": true, "size": {"height": 384, "width": 384}, "resample": 2});
        let (p, _) = Preprocess::from_hf(&siglip, 384).unwrap();
        assert_eq!((p.resize, p.resample), (Resize::Squash, Resample::Bilinear));
        let lanczos = json!({"resample": 1});
        assert!(
            Preprocess::from_hf(&lanczos, 224)
                .unwrap_err()
                .contains("lanczos")
        );
    }
}
