//! CLIP-style contrastive image-caption loss, used to pre-train the shared vision encoder.

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::data::{Dataset, Speaker, TextTokenizer};
use crate::model::{AttnMask, Mllm, Visual};
use crate::{Error, Result};

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
pub struct ContrastiveLoss {
    pub total: Tensor<1>,
    pub region: Option<Tensor<1>>,
}

/// Symmetric InfoNCE over a batch of (image, caption) pairs, plus `region_weight` times the
/// region term when `region_weight > 0`.
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
) -> ContrastiveLoss {
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
        return ContrastiveLoss {
            total: global,
            region: None,
        };
    }
    let first = usize::from(has_cls);
    let np = nv - first;
    let patches = tokens.narrow(1, first, np).reshape([b * np, d]);
    let region = region_nce(model, patches, targets, batch, pad, temperature, device);
    ContrastiveLoss {
        total: global + region.clone().mul_scalar(region_weight),
        region: Some(region),
    }
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
mod tests {
    use super::*;

    fn host_info_nce(a: &[f64], b: &[f64], n: usize, d: usize, t: f64) -> f64 {
        let norm = |v: &[f64]| -> Vec<f64> {
            v.chunks(d)
                .flat_map(|r| {
                    let l = r.iter().map(|x| x * x).sum::<f64>().sqrt();
                    r.iter().map(move |x| x / l)
                })
                .collect()
        };
        let (a, b) = (norm(a), norm(b));
        let s = |i: usize, j: usize| (0..d).map(|k| a[i * d + k] * b[j * d + k]).sum::<f64>() / t;
        let mut loss = 0.0;
        for i in 0..n {
            let row: f64 = (0..n).map(|j| s(i, j).exp()).sum();
            let col: f64 = (0..n).map(|j| s(j, i).exp()).sum();
            loss += -(s(i, i) - row.ln()) - (s(i, i) - col.ln());
        }
        loss / (2.0 * n as f64)
    }

    #[test]
    fn info_nce_matches_direct_formula_and_finite_differences() {
        let device = Device::flex().autodiff();
        let (n, d, t) = (3, 4, 0.5);
        let mut rng = crate::model::Rng::new(9);
        let a: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
        let b: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
        let ta = Tensor::<2>::from_data(
            TensorData::new(a.iter().map(|x| *x as f32).collect::<Vec<_>>(), [n, d]),
            &device,
        )
        .require_grad();
        let tb = Tensor::<2>::from_data(
            TensorData::new(b.iter().map(|x| *x as f32).collect::<Vec<_>>(), [n, d]),
            &device,
        );
        let loss = info_nce(ta.clone(), tb, t);
        let got: f32 = loss.clone().into_scalar();
        let want = host_info_nce(&a, &b, n, d, t);
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        let grads = loss.backward();
        let g: Vec<f32> = ta
            .grad(&grads)
            .unwrap()
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .unwrap();
        for k in 0..n * d {
            let (mut up, mut dn) = (a.clone(), a.clone());
            up[k] += 1e-5;
            dn[k] -= 1e-5;
            let fd = (host_info_nce(&up, &b, n, d, t) - host_info_nce(&dn, &b, n, d, t)) / 2e-5;
            assert!(
                (g[k] as f64 - fd).abs() < 1e-3,
                "grad {k}: {} vs {fd}",
                g[k]
            );
        }
    }

    fn shapes_tokenizer(dir: &std::path::Path) -> TextTokenizer {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("tokenizer.json");
        let doc = crate::data::shapes::tokenizer_json();
        std::fs::write(&path, serde_json::to_string(&doc).unwrap()).unwrap();
        TextTokenizer::load(&path).unwrap()
    }

    fn records(regions: &[Option<Vec<&str>>]) -> Dataset {
        let records = regions
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let c = crate::data::Conversation::single(
                    format!("r{i}"),
                    "x.png",
                    "<image>\ndescribe the image .".into(),
                    "a red circle at top left .".into(),
                    None,
                );
                match r {
                    Some(r) => c.with_regions(r.iter().map(|s| s.to_string()).collect()),
                    None => c,
                }
            })
            .collect();
        Dataset {
            path: "captions.json".into(),
            records,
            encoded: Vec::new(),
            image_of: Vec::new(),
            images: Vec::new(),
            image_len: 0,
            image_paths: Vec::new(),
            paired: false,
        }
    }

    #[test]
    fn region_targets_reject_missing_or_misaligned_phrases() {
        let tok = shapes_tokenizer(&std::env::temp_dir().join("condenser-region-targets"));
        let good = records(&[
            Some(vec!["red circle", "nothing", "nothing", "blue square"]),
            Some(vec!["nothing", "blue square", "green diamond", "nothing"]),
        ]);
        let t = ContrastiveTargets::build(&good, &tok, Some(4)).unwrap();
        assert_eq!(t.num_phrases(), 4);
        let one = |v: &[usize]| v.iter().map(|k| vec![*k]).collect::<Vec<_>>();
        assert_eq!(t.cells, vec![one(&[0, 1, 1, 2]), one(&[1, 2, 3, 1])]);
        // several views per region: classes are per view, so "nothing" in view 0 and view 1
        // are two phrases
        let views = records(&[Some(vec![
            "red circle | red",
            "nothing | nothing",
            "blue square | blue",
            "nothing | nothing",
        ])]);
        let t = ContrastiveTargets::build(&views, &tok, Some(4)).unwrap();
        assert_eq!(t.views, 2);
        assert_eq!(t.num_phrases(), 6);
        assert_eq!(t.cells[0][1], vec![2, 3]);
        let ragged = records(&[Some(vec![
            "red circle | red",
            "nothing",
            "nothing",
            "nothing",
        ])]);
        let err = ContrastiveTargets::build(&ragged, &tok, Some(4))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("region 1 has 1 views"), "{err}");
        // without the region term, phrases are neither needed nor read
        let t = ContrastiveTargets::build(&records(&[None]), &tok, None).unwrap();
        assert_eq!(t.num_phrases(), 0);

        let err = ContrastiveTargets::build(&good, &tok, Some(9))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("captions.json") && err.contains("expected 9"),
            "{err}"
        );
        let err = ContrastiveTargets::build(&records(&[None]), &tok, Some(4))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("record 0") && err.contains("regions"), "{err}");
    }

    #[test]
    fn region_term_is_patch_cross_entropy_over_the_batch_phrases() {
        let device = Device::flex().autodiff();
        let tok = shapes_tokenizer(&std::env::temp_dir().join("condenser-region-loss"));
        let mut config = crate::model::tests::tiny_config();
        config.llm.vocab_size = tok.vocab_size();
        let model = Mllm::new(&config, 3, &device);
        let data = records(&[
            Some(vec!["red circle", "nothing", "nothing", "blue square"]),
            Some(vec!["nothing", "cyan triangle", "nothing", "nothing"]),
            Some(vec!["nothing", "blue square", "green diamond", "nothing"]),
        ]);
        let targets = ContrastiveTargets::build(&data, &tok, Some(4)).unwrap();
        let s = config.vision.image_size;
        let mut rng = crate::model::Rng::new(4);
        // records 2 and 0: "cyan triangle" (record 1 only) must not be a candidate
        let batch = [2usize, 0];
        let px: Vec<f32> = (0..batch.len() * 3 * s * s)
            .map(|_| rng.normal() as f32)
            .collect();
        let px = Tensor::<4>::from_data(TensorData::new(px, [batch.len(), 3, s, s]), &device);
        let temperature = 0.5;
        let out = contrastive_loss(
            &model,
            Visual::Pixels(px.clone()),
            &targets,
            &batch,
            tok.special.pad,
            temperature,
            1.0,
            &device,
        );
        let got: f32 = out.region.unwrap().into_scalar();

        // independent: host cross-entropy over the phrases present in the batch
        let host = |t: Tensor<2>| -> Vec<Vec<f64>> {
            let d = t.dims()[1];
            let v: Vec<f32> = t.into_data().convert::<f32>().try_to_vec().unwrap();
            v.chunks(d)
                .map(|r| {
                    let n = r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                    r.iter().map(|x| *x as f64 / n).collect()
                })
                .collect()
        };
        let tokens = model.visual_tokens(Visual::Pixels(px));
        let [b, np, d] = tokens.dims();
        let patches = host(tokens.reshape([b * np, d]));
        // phrase ids in order of first appearance: red circle, nothing, blue square, cyan
        // triangle, green diamond
        let present = [0usize, 1, 2, 4];
        let seqs: Vec<&Vec<u32>> = present.iter().map(|&p| &targets.phrases[p]).collect();
        let phrases = host(encode_texts(&model, &seqs, tok.special.pad, &device));
        assert_eq!(targets.phrases[3], tok_ids(&tok, "cyan triangle"));
        let mut want = 0.0;
        let mut n = 0.0;
        for (bi, &rec) in batch.iter().enumerate() {
            for k in 0..np {
                let p = &patches[bi * np + k];
                let logits: Vec<f64> = phrases
                    .iter()
                    .map(|q| p.iter().zip(q).map(|(a, b)| a * b).sum::<f64>() / temperature)
                    .collect();
                let lse = logits.iter().map(|x| x.exp()).sum::<f64>().ln();
                let label = present
                    .iter()
                    .position(|&x| x == targets.cells[rec][k][0])
                    .unwrap();
                want += lse - logits[label];
                n += 1.0;
            }
        }
        want /= n;
        assert!((got as f64 - want).abs() < 1e-4, "{got} vs {want}");
    }

    fn tok_ids(tok: &TextTokenizer, s: &str) -> Vec<u32> {
        let mut ids = vec![tok.special.bos];
        ids.extend(tok.encode(s).unwrap());
        ids.push(tok.special.end);
        ids
    }
}
