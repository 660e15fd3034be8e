//! A split's image table: the files its records point at, decoded on demand instead of held in
//! memory. A LLaVA-sized split (hundreds of thousands of COCO images) decodes to far more floats
//! than a machine holds, so nothing here keeps pixels: a batch's images are decoded when the
//! batch is built (on the prefetch thread of `train::prefetch` during training), used, and
//! dropped. Loading checks that every file exists and has a readable header, so a missing or
//! broken image is still reported before a run folder is touched.

use std::path::{Path, PathBuf};

#[cfg(not(target_family = "wasm"))]
use rayon::prelude::*;

use super::image::load_image;
use crate::config::VisionConfig;
use crate::{Error, Result};

/// The distinct image files of a split, in first-use order, and how to turn one into the
/// encoder's normalised `[3, S, S]` input.
#[derive(Debug, Clone)]
pub struct ImageTable {
    paths: Vec<PathBuf>,
    vision: VisionConfig,
}

impl ImageTable {
    pub fn new(vision: &VisionConfig) -> Self {
        ImageTable {
            paths: Vec::new(),
            vision: vision.clone(),
        }
    }

    /// Adds a file (after checking it) and returns its index.
    pub fn push(&mut self, path: PathBuf) -> Result<usize> {
        check_header(&path)?;
        self.paths.push(path);
        Ok(self.paths.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Floats per decoded image (`3 * S * S`).
    pub fn image_len(&self) -> usize {
        3 * self.vision.image_size * self.vision.image_size
    }

    pub fn image_size(&self) -> usize {
        self.vision.image_size
    }

    /// Image `k`, decoded and normalised.
    pub fn decode(&self, k: usize) -> Result<Vec<f32>> {
        load_image(&self.paths[k], &self.vision)
    }

    /// The images `ks` (zeros where a record has none) as one `[ks.len(), 3, S, S]` buffer,
    /// decoded on the rayon pool (in order in the browser).
    pub fn decode_batch(&self, ks: &[Option<usize>]) -> Result<Vec<f32>> {
        #[cfg(not(target_family = "wasm"))]
        {
            let rows: Vec<Vec<f32>> = ks
                .par_iter()
                .map(|k| self.decode_or_zeros(k))
                .collect::<Result<_>>()?;
            Ok(rows.concat())
        }
        #[cfg(target_family = "wasm")]
        self.decode_batch_serial(ks)
    }

    /// [`Self::decode_batch`] on the calling thread only (the prefetch thread: the rayon pool
    /// belongs to the step's matmuls).
    pub fn decode_batch_serial(&self, ks: &[Option<usize>]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(ks.len() * self.image_len());
        for k in ks {
            out.extend(self.decode_or_zeros(k)?);
        }
        Ok(out)
    }

    /// Image `k`, or zeros for a record without one.
    fn decode_or_zeros(&self, k: &Option<usize>) -> Result<Vec<f32>> {
        match k {
            Some(k) => self.decode(*k),
            None => Ok(vec![0.0; self.image_len()]),
        }
    }
}

/// Reads only the image header: the file exists, is an image format the build decodes, and
/// says its size. Decoding the pixels waits until a batch needs them.
fn check_header(path: &Path) -> Result<()> {
    let err = |message: String| Error::Image {
        path: path.to_path_buf(),
        message,
    };
    let reader = image::ImageReader::open(path).map_err(|e| {
        err(match e.kind() {
            std::io::ErrorKind::NotFound => "image file not found".into(),
            _ => format!("cannot read image: {e}"),
        })
    })?;
    let reader = reader
        .with_guessed_format()
        .map_err(|e| err(format!("cannot read image: {e}")))?;
    reader.into_dimensions().map_err(|e| {
        err(format!(
            "cannot decode image (PNG, JPEG or WebP expected): {e}"
        ))
    })?;
    Ok(())
}
