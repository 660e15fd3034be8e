//! A stage's visual input, per batch. A trained encoder sees the batch's pixels every step. A
//! frozen encoder's features never change during a stage, so they are computed when a batch
//! first needs them and kept in a cache of bounded size (`RunOptions::feature_cache_bytes`):
//! nothing is computed before the first step, and memory does not grow with the number of
//! images. Within the bound, a many-epoch stage encodes each image once, as before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::prelude::*;

use crate::Result;
use crate::data::Dataset;
use crate::model::{Mllm, VisionEncoder, Visual};

/// One batch's images, decoded: the image index of each record (`None` for text-only records)
/// and their normalised pixels, `[records, 3, S, S]` (zeros for text-only records).
pub struct PixelBatch {
    pub images: Vec<Option<usize>>,
    pub pixels: Vec<f32>,
    pub size: usize,
}

impl PixelBatch {
    /// Decodes the images of records `idx` of `data` now.
    pub fn decode(data: &Dataset, idx: &[usize]) -> Result<Self> {
        let images = data.images_of(idx);
        let pixels = data.images.decode_batch(&images)?;
        Ok(PixelBatch {
            images,
            pixels,
            size: data.images.image_size(),
        })
    }

    /// Records `rows` of the batch, as their own batch (a data-parallel worker's shard).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> PixelBatch {
        let len = self.image_len();
        PixelBatch {
            images: self.images[rows.clone()].to_vec(),
            pixels: self.pixels[rows.start * len..rows.end * len].to_vec(),
            size: self.size,
        }
    }

    fn image_len(&self) -> usize {
        3 * self.size * self.size
    }

    /// The rows `rows` as a `[rows.len(), 3, S, S]` tensor.
    fn tensor(&self, rows: &[usize], device: &Device) -> Tensor<4> {
        let len = self.image_len();
        let mut px = Vec::with_capacity(rows.len() * len);
        for &r in rows {
            px.extend_from_slice(&self.pixels[r * len..(r + 1) * len]);
        }
        let s = self.size;
        Tensor::<4>::from_data(TensorData::new(px, [rows.len(), 3, s, s]), device)
    }
}

/// Where a stage's visual input comes from.
pub enum VisualSource {
    /// A frozen encoder: features, computed on demand and cached.
    Frozen(FrozenFeatures),
    /// A trained encoder: the pixels go through it every step.
    Pixels,
}

impl VisualSource {
    /// The student's visual input: its own encoder, frozen or trained.
    pub fn new(model: &Mllm, frozen: bool, cache_bytes: usize) -> Self {
        if frozen {
            VisualSource::Frozen(FrozenFeatures::new(model.vision.valid(), cache_bytes))
        } else {
            VisualSource::Pixels
        }
    }

    /// Features of a frozen encoder living on an inner (non-autodiff) device: the teacher's.
    pub fn frozen(vision: &VisionEncoder, cache_bytes: usize) -> Self {
        VisualSource::Frozen(FrozenFeatures::new(vision.clone(), cache_bytes))
    }

    /// The visual input of a decoded batch, on `device` (autodiff or inner).
    pub fn for_pixels(&self, px: &PixelBatch, device: &Device) -> Visual {
        let all: Vec<usize> = (0..px.images.len()).collect();
        match self {
            VisualSource::Pixels => Visual::Pixels(px.tensor(&all, device)),
            VisualSource::Frozen(f) => Visual::Features(f.features(px, device)),
        }
    }

    /// Images that went through the encoder since the last call (for the step's FLOPs): every
    /// image of `px` for a trained encoder, the cache misses for a frozen one.
    pub fn take_encoded(&self, px: &PixelBatch) -> usize {
        match self {
            VisualSource::Pixels => px.images.iter().flatten().count(),
            VisualSource::Frozen(f) => f.encoded.swap(0, Ordering::Relaxed),
        }
    }

    /// The visual input of records `idx` of `data`, decoding their images now (passes over a
    /// whole split that run outside the training loop: teacher outputs, reference log-probs).
    pub fn for_records(&self, data: &Dataset, idx: &[usize], device: &Device) -> Result<Visual> {
        Ok(self.for_pixels(&PixelBatch::decode(data, idx)?, device))
    }
}

/// A frozen encoder and the features it has computed, up to a byte budget.
pub struct FrozenFeatures {
    vision: VisionEncoder,
    cache: Mutex<FeatureCache>,
    /// Images encoded since `take_encoded` last read it.
    encoded: AtomicUsize,
}

/// Features `[Nv, C]` per image index on the encoder's device. Filled until the budget is
/// reached, then left as it is: for epoch-ordered access that keeps more hits than evicting.
struct FeatureCache {
    rows: HashMap<usize, Tensor<2>>,
    bytes: usize,
    budget: usize,
}

impl FrozenFeatures {
    fn new(vision: VisionEncoder, budget: usize) -> Self {
        FrozenFeatures {
            vision,
            cache: Mutex::new(FeatureCache {
                rows: HashMap::new(),
                bytes: 0,
                budget,
            }),
            encoded: AtomicUsize::new(0),
        }
    }

    /// `[records, Nv, C]` features of the batch on `device`: cached rows, the rest encoded
    /// now in one pass, zeros for text-only records (their visual slots are masked out).
    fn features(&self, px: &PixelBatch, device: &Device) -> Tensor<3> {
        let mut cache = self.cache.lock().expect("feature cache");
        // the batch's images that are not cached yet, each once, with a row that holds it
        let mut missing: Vec<(usize, usize)> = Vec::new();
        for (r, k) in px.images.iter().enumerate() {
            if let Some(k) = *k
                && !cache.rows.contains_key(&k)
                && !missing.iter().any(|(m, _)| *m == k)
            {
                missing.push((k, r));
            }
        }
        let mut fresh: HashMap<usize, Tensor<2>> = HashMap::new();
        if !missing.is_empty() {
            let vdev = self.vision.devices()[0].clone();
            let rows: Vec<usize> = missing.iter().map(|(_, r)| *r).collect();
            let f = self.vision.forward(px.tensor(&rows, &vdev));
            self.encoded.fetch_add(rows.len(), Ordering::Relaxed);
            for (i, (k, _)) in missing.iter().enumerate() {
                let row: Tensor<2> = f.clone().narrow(0, i, 1).squeeze_dim(0);
                let bytes = row.shape().num_elements() * 4;
                if cache.bytes + bytes <= cache.budget {
                    cache.bytes += bytes;
                    cache.rows.insert(*k, row.clone());
                }
                fresh.insert(*k, row);
            }
        }
        let cfg = &self.vision.config;
        let (nv, c) = (cfg.num_visual_tokens(), cfg.hidden);
        let rows: Vec<Tensor<2>> = px
            .images
            .iter()
            .map(|k| match k {
                Some(k) => fresh
                    .get(k)
                    .or_else(|| cache.rows.get(k))
                    .expect("every image of the batch is encoded above")
                    .clone(),
                None => Tensor::<2>::zeros([nv, c], &self.vision.devices()[0]),
            })
            .collect();
        let out = Tensor::stack::<3>(rows, 0);
        if device.is_autodiff() {
            out.autodiff()
        } else {
            out
        }
    }
}
