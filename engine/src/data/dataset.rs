//! A loaded split: records tokenised once (never re-tokenised in the training loop) and images
//! decoded once into one host array, shared by the records that point at the same file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::image::load_image;
use super::llava::{Conversation, PreferencePair, load_conversations, load_preferences};
use super::template::{Encoded, encode_conversation};
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
    /// Decoded images, `image_len` floats each.
    pub images: Vec<f32>,
    pub image_len: usize,
    pub image_paths: Vec<PathBuf>,
    /// Preference data: record `2i` is pair i's prompt + chosen answer, `2i + 1` the same prompt
    /// + rejected answer, and a training unit is a pair.
    pub paired: bool,
}

impl Dataset {
    /// Loads `root/file`, resolving image paths against `root` (LLaVA's image folder).
    pub fn load(
        root: &Path,
        file: &str,
        tok: &TextTokenizer,
        vision: &VisionConfig,
        max_len: usize,
        require_image: bool,
    ) -> Result<Self> {
        let path = root.join(file);
        let records = load_conversations(&path, require_image)?;
        Self::from_records(path, records, root, tok, vision, max_len)
    }

    /// Loads a preference file (`image`, `prompt`, `chosen`, `rejected`) as interleaved
    /// chosen / rejected records.
    pub fn load_pairs(
        root: &Path,
        file: &str,
        tok: &TextTokenizer,
        vision: &VisionConfig,
        max_len: usize,
        require_image: bool,
    ) -> Result<Self> {
        let path = root.join(file);
        let pairs = load_preferences(&path, require_image)?;
        Self::from_pairs(path, &pairs, root, tok, vision, max_len)
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
        let image_len = 3 * vision.image_size * vision.image_size;
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut images = Vec::new();
        let mut image_paths = Vec::new();
        let mut encoded = Vec::with_capacity(records.len());
        let mut image_of = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let e = encode_conversation(tok, &r.conversations, nv)?;
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
            encoded.push(e);
            image_of.push(match &r.image {
                None => None,
                Some(name) => Some(match index.get(name) {
                    Some(k) => *k,
                    None => {
                        let file = root.join(name);
                        images.extend(load_image(&file, vision)?);
                        image_paths.push(file);
                        index.insert(name.clone(), image_paths.len() - 1);
                        image_paths.len() - 1
                    }
                }),
            });
        }
        Ok(Dataset {
            path,
            records,
            encoded,
            image_of,
            images,
            image_len,
            image_paths,
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
    /// text-only record): the pixel batch of evaluation and routing passes.
    pub fn pixels(&self, idx: &[usize], size: usize, device: &Device) -> Tensor<4> {
        let mut px = Vec::with_capacity(idx.len() * self.image_len);
        for &i in idx {
            match self.image_of[i] {
                Some(k) => {
                    px.extend_from_slice(&self.images[k * self.image_len..(k + 1) * self.image_len])
                }
                None => px.extend(std::iter::repeat_n(0.0, 3 * size * size)),
            }
        }
        Tensor::<4>::from_data(TensorData::new(px, [idx.len(), 3, size, size]), device)
    }

    pub fn num_images(&self) -> usize {
        self.image_paths.len()
    }
}
