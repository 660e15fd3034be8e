//! CLIP-style contrastive image-caption loss, used to pre-train the shared vision encoder.

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::{StageSetup, StepInput, StepLoss};
use crate::data::{Dataset, Speaker, TextTokenizer};
use crate::model::{AttnMask, Mllm, Visual};
use crate::{Error, Result};

/// The contrastive objective of a stage: captions (and region phrases) tokenised once.
pub struct Contrastive {
    targets: ContrastiveTargets,
    temperature: f64,
    regions: f64,
    pad: u32,
}

impl Contrastive {
    pub fn prepare(setup: &StageSetup, temperature: f64, regions: f64) -> Result<Self> {
        let targets = ContrastiveTargets::build(
            setup.data,
            setup.tokenizer,
            (regions > 0.0).then(|| setup.recipe.model.vision.num_patches()),
        )?;
        Ok(Contrastive {
            targets,
            temperature,
            regions,
            pad: setup.tokenizer.special.pad,
        })
    }

    pub fn loss(&self, model: &Mllm, input: StepInput) -> StepLoss {
        contrastive_loss(
            model,
            input.visual,
            &self.targets,
            input.idx,
            self.pad,
            self.temperature,
            self.regions,
            input.device,
        )
    }
}

/// Text side of the contrastive objective, tokenised once per stage.
pub struct ContrastiveTargets {
    /// Per record: `<bos> caption <|end|>` (text only, no image).
    captions: Vec<Vec<u32>>,
    /// Distinct region phrases, tokenised the same way (empty without the region term).
    phrases: Vec<Vec<u32>>,
    /// Per record, per patch (row-major), per view: the phrase index (empty without the region
    /// term). Every patch has the same number of views.
    cells: Vec<Vec<Vec<usize>>>,
    /// Views per region phrase (see [`REGION_VIEW_SEPARATOR`]).
    views: usize,
}

/// Separates several descriptions of one region in a `regions` entry, e.g.
/// `"red circle at top left | red | circle | top left"`. Each view is a separate classification
/// of the patch token among the batch's phrases for that view, so the token must carry each
/// attribute on its own (a colour-only key such as "the blue object" can then match it), not only
/// the whole phrase.
pub const REGION_VIEW_SEPARATOR: &str = " | ";

impl ContrastiveTargets {
    /// Tokenises the captions (each record's last assistant turn) and, when `num_patches` is
    /// given, the region phrases, checking that every record has one phrase per patch.
    pub fn build(data: &Dataset, tok: &TextTokenizer, num_patches: Option<usize>) -> Result<Self> {
        let text = |s: &str| -> Result<Vec<u32>> {
            let mut ids = vec![tok.special.bos];
            ids.extend(tok.encode(s)?);
            ids.push(tok.special.end);
            Ok(ids)
        };
        let captions = data
            .records
            .iter()
            .map(|r| {
                let caption = r
                    .conversations
                    .iter()
                    .rev()
                    .find(|t| t.from == Speaker::Gpt)
                    .map_or("", |t| t.value.as_str());
                text(caption)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut phrases = Vec::new();
        let mut cells = Vec::new();
        let mut views = 0;
        if let Some(n) = num_patches {
            let mut index: BTreeMap<(usize, &str), usize> = BTreeMap::new();
            for (i, r) in data.records.iter().enumerate() {
                let bad = |message: String| Error::Record {
                    path: data.path.clone(),
                    index: i,
                    id: r.id.clone(),
                    message,
                };
                let regions = r.regions.as_ref().ok_or_else(|| {
                    bad(
                        "the region-contrastive objective needs a `regions` list on every record"
                            .into(),
                    )
                })?;
                if regions.len() != n {
                    return Err(bad(format!(
                        "has {} region phrases, expected {n} (one per patch of the encoder's grid)",
                        regions.len()
                    )));
                }
                let mut row = Vec::with_capacity(n);
                for (cell, region) in regions.iter().enumerate() {
                    let parts: Vec<&str> = region.split(REGION_VIEW_SEPARATOR).collect();
                    if views == 0 {
                        views = parts.len();
                    }
                    if parts.len() != views {
                        return Err(bad(format!(
                            "region {cell} has {} views (separated by {REGION_VIEW_SEPARATOR:?}), \
                             the first record's regions have {views}",
                            parts.len()
                        )));
                    }
                    let mut ids = Vec::with_capacity(views);
                    for (v, part) in parts.into_iter().enumerate() {
                        // the same words in two views are two classes: key by (view, text)
                        let next = index.len();
                        let k = *index.entry((v, part)).or_insert(next);
                        if k == phrases.len() {
                            phrases.push(text(part)?);
                        }
                        ids.push(k);
                    }
                    row.push(ids);
                }
                cells.push(row);
            }
        }
        Ok(ContrastiveTargets {
            captions,
            phrases,
            cells,
            views,
        })
    }

    /// Distinct region phrases found.
    pub fn num_phrases(&self) -> usize {
        self.phrases.len()
    }
}

/// L2-normalises rows of `[B, D]`.
fn normalise(x: Tensor<2>) -> Tensor<2> {
    let n = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-6);
    x / n
}

/// The text decoder's final hidden state at the last token of each sequence: `[N, D]`.
fn encode_texts(model: &Mllm, seqs: &[&Vec<u32>], pad: u32, device: &Device) -> Tensor<2> {
    let b = seqs.len();
    let t = seqs.iter().map(|c| c.len()).max().unwrap_or(1);
    let mut ids = vec![pad as i64; b * t];
    let mut mask = vec![0.0f32; b * t];
    let mut pos = vec![0i64; b * t];
    let mut last = Vec::with_capacity(b);
    for (r, c) in seqs.iter().enumerate() {
        for (k, &id) in c.iter().enumerate() {
            ids[r * t + k] = id as i64;
            mask[r * t + k] = 1.0;
            pos[r * t + k] = k as i64;
        }
        last.push((r * t + c.len() - 1) as i64);
    }
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, t]), device);
    let pos = Tensor::<2, Int>::from_data(TensorData::new(pos, [b, t]), device);
    let h = model
        .llm
        .hidden(model.llm.embed(ids), pos, AttnMask::causal(mask), None);
    let d = h.dims()[2];
    let last = Tensor::<1, Int>::from_data(TensorData::new(last, [b]), device);
    h.reshape([b * t, d]).select(0, last)
}

/// The contrastive loss of one batch (`[1]`), and its region term alone when there is one.
/// Symmetric InfoNCE over a batch of (image, caption) pairs, plus `region_weight` times the
/// region term when `region_weight > 0` (logged as `region`).
#[allow(clippy::too_many_arguments)]
pub fn contrastive_loss(
    model: &Mllm,
    visual: Visual,
    targets: &ContrastiveTargets,
    batch: &[usize],
    pad: u32,
    temperature: f64,
    region_weight: f64,
    device: &Device,
) -> StepLoss {
    let b = batch.len();
    let caps: Vec<&Vec<u32>> = batch.iter().map(|&i| &targets.captions[i]).collect();
    let text = encode_texts(model, &caps, pad, device);
    let tokens = model.visual_tokens(visual);
    let [_, nv, d] = tokens.dims();
    let has_cls = model.config.vision.emits_cls();
    // CLIP's image embedding is the CLS token; without CLS, the mean of the patch tokens
    let image = if has_cls {
        tokens.clone().narrow(1, 0, 1)
    } else {
        tokens.clone().mean_dim(1)
    }
    .reshape([b, d]);
    let global = info_nce(image, text, temperature);
    if region_weight <= 0.0 || targets.cells.is_empty() {
        return StepLoss::plain(global);
    }
    let first = usize::from(has_cls);
    let np = nv - first;
    let patches = tokens.narrow(1, first, np).reshape([b * np, d]);
    let region = region_nce(model, patches, targets, batch, pad, temperature, device);
    let mut loss = StepLoss::plain(global + region.clone().mul_scalar(region_weight));
    loss.terms
        .insert("region".to_string(), region.into_scalar::<f32>());
    loss
}

/// Cross-entropy of each patch token `[B*N, D]` picking its own phrase among the distinct
/// phrases of the batch (cosine similarity over `temperature`), averaged over the views.
fn region_nce(
    model: &Mllm,
    patches: Tensor<2>,
    targets: &ContrastiveTargets,
    batch: &[usize],
    pad: u32,
    temperature: f64,
    device: &Device,
) -> Tensor<1> {
    let patches = normalise(patches);
    let mut total: Option<Tensor<1>> = None;
    for v in 0..targets.views {
        let mut local: BTreeMap<usize, usize> = BTreeMap::new();
        let mut labels = Vec::new();
        for &i in batch {
            for cell in &targets.cells[i] {
                let next = local.len();
                labels.push(*local.entry(cell[v]).or_insert(next) as i64);
            }
        }
        let mut used: Vec<(usize, usize)> = local.into_iter().collect();
        used.sort_by_key(|&(_, k)| k);
        let seqs: Vec<&Vec<u32>> = used.iter().map(|&(p, _)| &targets.phrases[p]).collect();
        let phrases = encode_texts(model, &seqs, pad, device);
        let n = labels.len();
        let logits = patches
            .clone()
            .matmul(normalise(phrases).transpose())
            .div_scalar(temperature);
        let labels = Tensor::<2, Int>::from_data(TensorData::new(labels, [n, 1]), device);
        let ce = log_softmax(logits, 1).gather(1, labels).mean().neg();
        total = Some(match total {
            None => ce,
            Some(t) => t + ce,
        });
    }
    total
        .expect("at least one view")
        .div_scalar(targets.views as f64)
}

/// Symmetric InfoNCE: row i of `image` and of `text` `[B, D]` are a pair; both are
/// L2-normalised, similarities divided by the temperature, and the cross-entropy of picking the
/// pair is averaged over both directions.
pub fn info_nce(image: Tensor<2>, text: Tensor<2>, temperature: f64) -> Tensor<1> {
    let b = image.dims()[0];
    let device = image.device();
    let logits = normalise(image)
        .matmul(normalise(text).transpose())
        .div_scalar(temperature);
    let diag = Tensor::<1, Int>::arange(0..b as i64, &device).reshape([b, 1]);
    let rows = log_softmax(logits.clone(), 1)
        .gather(1, diag.clone())
        .mean();
    let cols = log_softmax(logits.transpose(), 1).gather(1, diag).mean();
    (rows + cols).div_scalar(-2.0)
}

#[cfg(test)]
#[path = "contrastive_tests.rs"]
mod tests;
