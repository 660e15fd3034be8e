//! A loaded split: records tokenised once (never re-tokenised in the training loop, and cached
//! on disk by `token_cache`) and the table of image files they point at, shared by the records
//! that name the same file. Images are decoded when a batch needs them (`images.rs`), so memory
//! does not grow with the number of images.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;

use super::images::ImageTable;
use super::llava::{Conversation, PreferencePair, load_conversations, load_preferences};
use super::template::Encoded;
use super::tokenizer::TextTokenizer;
use crate::config::VisionConfig;
use crate::{Error, Result};

/// Tokenised records plus their decoded images.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    pub records: Vec<Conversation>,
    pub encoded: Vec<Encoded>,
    /// Index into the image table per record (`None` for text-only records).
    pub image_of: Vec<Option<usize>>,
    /// The image files, decoded on demand.
    pub images: Arc<ImageTable>,
    /// Preference data: record `2i` is pair i's prompt + chosen answer, `2i + 1` the same prompt
    /// + rejected answer, and a training unit is a pair.
    pub paired: bool,
}

impl Dataset {
    /// Loads `root/file`, resolving image paths against `images` (LLaVA's image folder: the
    /// data folder itself unless the recipe or the command names another).
    pub fn load(
        root: &Path,
        file: &str,
        images: &Path,
        tok: &TextTokenizer,
        vision: &VisionConfig,
        max_len: usize,
        require_image: bool,
    ) -> Result<Self> {
        let path = root.join(file);
        let records = load_conversations(&path, require_image)?;
        Self::from_records(path, records, images, tok, vision, max_len)
    }

    /// Loads a preference file (`image`, `prompt`, `chosen`, `rejected`) as interleaved
    /// chosen / rejected records.
    pub fn load_pairs(
        root: &Path,
        file: &str,
        images: &Path,
        tok: &TextTokenizer,
        vision: &VisionConfig,
        max_len: usize,
        require_image: bool,
    ) -> Result<Self> {
        let path = root.join(file);
        let pairs = load_preferences(&path, require_image)?;
        Self::from_pairs(path, &pairs, images, tok, vision, max_len)
    }

    /// Pairs already in memory (mined ones) as interleaved chosen / rejected records; `path` is
    /// where they were saved, for error messages.
    pub fn from_pairs(
        path: PathBuf,
        pairs: &[PreferencePair],
        root: &Path,
        tok: &TextTokenizer,
        vision: &VisionConfig,
        max_len: usize,
    ) -> Result<Self> {
        let records = pairs
            .iter()
            .flat_map(|p| [p.as_conversation(true), p.as_conversation(false)])
            .collect();
        let mut ds = Self::from_records(path, records, root, tok, vision, max_len)?;
        ds.paired = true;
        Ok(ds)
    }

    /// Training units: records, or pairs of records for preference data.
    pub fn units(&self) -> usize {
        if self.paired {
            self.len() / 2
        } else {
            self.len()
        }
    }

    /// The records of a batch of units: the units themselves, or for preference data every
    /// pair's chosen record, then every pair's rejected record.
    pub fn unit_records(&self, units: &[usize]) -> Vec<usize> {
        if self.paired {
            let chosen = units.iter().map(|u| 2 * u);
            let rejected = units.iter().map(|u| 2 * u + 1);
            chosen.chain(rejected).collect()
        } else {
            units.to_vec()
        }
    }

    /// Tokenises records and loads their images.
    pub fn from_records(
        path: PathBuf,
        records: Vec<Conversation>,
        root: &Path,
        tok: &TextTokenizer,
        vision: &VisionConfig,
        max_len: usize,
    ) -> Result<Self> {
        let nv = vision.num_visual_tokens();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut images = ImageTable::new(vision);
        let encoded = super::token_cache::encode_all(&path, &records, tok, nv)?;
        let mut image_of = Vec::with_capacity(records.len());
        for (i, (r, e)) in records.iter().zip(&encoded).enumerate() {
            if e.ids.len() > max_len {
                return Err(Error::Record {
                    path: path.clone(),
                    index: i,
                    id: r.id.clone(),
                    message: format!(
                        "{} tokens after image expansion, longer than the model's {max_len} positions",
                        e.ids.len()
                    ),
                });
            }
            image_of.push(match &r.image {
                None => None,
                Some(name) => Some(match index.get(name) {
                    Some(k) => *k,
                    None => {
                        let k = images.push(root.join(name))?;
                        index.insert(name.clone(), k);
                        k
                    }
                }),
            });
        }
        Ok(Dataset {
            path,
            records,
            encoded,
            image_of,
            images: Arc::new(images),
            paired: false,
        })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
    /// The images of records `idx` as one `[idx.len(), 3, size, size]` tensor (zeros for a
    /// text-only record), decoded now: the pixel batch of evaluation and routing passes.
    pub fn pixels(&self, idx: &[usize], device: &Device) -> Result<Tensor<4>> {
        let s = self.images.image_size();
        let px = self.images.decode_batch(&self.images_of(idx))?;
        Ok(Tensor::<4>::from_data(
            TensorData::new(px, [idx.len(), 3, s, s]),
            device,
        ))
    }

    /// The image index of each record in `idx`.
    pub fn images_of(&self, idx: &[usize]) -> Vec<Option<usize>> {
        idx.iter().map(|&i| self.image_of[i]).collect()
    }

    pub fn num_images(&self) -> usize {
        self.images.len()
    }
}
