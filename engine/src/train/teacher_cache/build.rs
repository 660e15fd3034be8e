//! Building a teacher cache: the teacher runs once over each data file, without a graph, and
//! each fixed run of examples becomes one part file ([`super::format`]). A shard builds its own
//! share of the parts; a part already on disk is kept, so an interrupted build resumes where it
//! stopped.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use half::f16;

use super::format::{CachedExample, decode_part, encode_part, fingerprint};
use super::{
    CacheKey, CachePositions, CachedFile, FORMAT, KEY_FILE, MANIFEST_FILE, Manifest, PARTS_DIR,
    PartInfo, Shard, sha256_file,
};
use crate::backend::kernels::Kernels;
use crate::config::KernelPolicy;
use crate::data::{Dataset, Padding, TextTokenizer, host_batch};
use crate::distill::sparse::top_k_row;
use crate::distill::{linear_self_correlation, self_correlation, zscore};
use crate::model::{Mllm, head_chunk_rows};
use crate::run::checkpoint;
use crate::train::objective::relation_cols;
use crate::train::visual::VisualSource;
use crate::{Error, Result};

/// What `condenser teacher-cache` was asked for.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The teacher checkpoint folder (a tokenizer.json beside it or in its run).
    pub teacher: PathBuf,
    /// The data folder and the files of it to cache (`train.json`, `captions.json`).
    pub data: PathBuf,
    pub files: Vec<String>,
    /// Where the records' images are (the data folder when `None`).
    pub image_folder: Option<PathBuf>,
    pub out: PathBuf,
    pub top_k: usize,
    pub temperature: f64,
    pub zscore: bool,
    pub positions: CachePositions,
    pub shard: Shard,
    /// Examples per teacher forward pass.
    pub batch_size: usize,
    /// Longest tokenised record (the teacher's `max_positions` when `None`).
    pub max_positions: Option<usize>,
    pub require_image: bool,
    /// Examples per part file ([`super::EXAMPLES_PER_PART`] by default).
    pub part_size: usize,
}

/// Where a build stands, reported after every batch.
#[derive(Debug, Clone)]
pub struct BuildProgress {
    pub file: String,
    /// Examples of this shard done (made now or found on disk) and in all.
    pub done: usize,
    pub total: usize,
    /// Examples found already cached by an earlier, interrupted build.
    pub resumed: usize,
    pub elapsed_s: f64,
}

/// Loads the teacher and the data as `opts` says and builds the cache (or this shard of it).
pub fn build(
    opts: &BuildOptions,
    device: &Device,
    progress: &mut dyn FnMut(&BuildProgress),
) -> Result<Manifest> {
    let config = checkpoint::load_config(&opts.teacher)?;
    let tok_path =
        crate::run::checkpoint_tokenizer(&opts.teacher).ok_or_else(|| Error::Checkpoint {
            path: opts.teacher.clone(),
            message: "no tokenizer.json beside the teacher checkpoint or in its run folder: the \
                      cache must know how its data was tokenised"
                .into(),
        })?;
    let tokenizer = TextTokenizer::load(&tok_path)?;
    let max_positions = opts.max_positions.unwrap_or(config.llm.max_positions);
    let images = opts
        .image_folder
        .clone()
        .unwrap_or_else(|| opts.data.clone());
    let mut data = Vec::new();
    for file in &opts.files {
        let ds = Dataset::load(
            &opts.data,
            file,
            &images,
            &tokenizer,
            &config.vision,
            max_positions,
            opts.require_image,
        )?;
        data.push((file.clone(), ds));
    }
    let mut model = checkpoint::load_full(&opts.teacher, device)?;
    model.set_kernels(Kernels::resolve(KernelPolicy::Auto, device));
    let weights = sha256_file(&opts.teacher.join(checkpoint::MODEL_FILE))?;
    let settings = Settings {
        top_k: opts.top_k,
        temperature: opts.temperature,
        zscore: opts.zscore,
        positions: opts.positions,
        max_positions,
        require_image: opts.require_image,
        part_size: opts.part_size,
    };
    let files: Vec<(&str, &Dataset)> = data.iter().map(|(f, d)| (f.as_str(), d)).collect();
    build_from(
        &model,
        &weights,
        &tokenizer,
        &files,
        &settings,
        &opts.out,
        opts.shard,
        opts.batch_size,
        device,
        progress,
    )
}

/// The cached distribution's settings (the parts of [`CacheKey`] a build chooses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub top_k: usize,
    pub temperature: f64,
    pub zscore: bool,
    pub positions: CachePositions,
    pub max_positions: usize,
    pub require_image: bool,
    pub part_size: usize,
}

/// Builds shard `shard` of the cache of `teacher` (loaded on the inner device `device`, with
/// weights hashing to `weights`) over `files` (data file name and its loaded records) into
/// `out`, resuming from the parts already there.
#[allow(clippy::too_many_arguments)]
pub fn build_from(
    teacher: &Mllm,
    weights: &str,
    tokenizer: &TextTokenizer,
    files: &[(&str, &Dataset)],
    settings: &Settings,
    out: &Path,
    shard: Shard,
    batch_size: usize,
    device: &Device,
    progress: &mut dyn FnMut(&BuildProgress),
) -> Result<Manifest> {
    if settings.part_size == 0 {
        return Err(Error::Invalid(
            "the part size must be at least 1 example".into(),
        ));
    }
    if settings.top_k == 0 {
        return Err(Error::Invalid("--top-k must be at least 1".into()));
    }
    if settings.temperature.is_nan() || settings.temperature <= 0.0 {
        return Err(Error::Invalid(format!(
            "the temperature must be positive, not {}",
            settings.temperature
        )));
    }
    let vocab = teacher.config.llm.vocab_size;
    let key = CacheKey {
        teacher_weights: weights.to_string(),
        teacher: teacher.config.clone(),
        tokenizer: tokenizer.fingerprint.clone(),
        top_k: settings.top_k.min(vocab),
        vocab,
        temperature: settings.temperature,
        zscore: settings.zscore,
        positions: settings.positions,
        max_positions: settings.max_positions,
        require_image: settings.require_image,
        part_size: settings.part_size,
    };
    claim_folder(out, &key)?;
    let head = teacher.llm.head_weight();
    // the teacher's frozen tower, with no feature cache: a build passes over the data once
    let vision = VisualSource::frozen(&teacher.vision, 0);
    let started = Instant::now();
    let mut computing = 0.0f64;
    let total: usize = files
        .iter()
        .map(|(_, d)| {
            let parts = d.len().div_ceil(key.part_size);
            shard
                .parts(parts)
                .map(|p| part_range(p, key.part_size, d.len()).len())
                .sum::<usize>()
        })
        .sum();
    let (mut done, mut resumed) = (0, 0);
    let mut out_files = Vec::new();
    for (name, data) in files {
        let parts = data.len().div_ceil(key.part_size);
        let mut infos = Vec::new();
        for p in shard.parts(parts) {
            let range = part_range(p, key.part_size, data.len());
            let rel = format!("{PARTS_DIR}/{name}-{p:05}.zst");
            let path = out.join(&rel);
            let (bytes, examples) = if path.exists() {
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                let (first, examples) = decode_part(&path, &bytes)?;
                if first != range.start || examples.len() != range.len() {
                    return Err(Error::Invalid(format!(
                        "{}: holds examples {first}..{} where part {p} is {}..{}: the data file \
                         changed since the build began; build into a new folder",
                        path.display(),
                        first + examples.len(),
                        range.start,
                        range.end
                    )));
                }
                resumed += range.len();
                done += range.len();
                (bytes, examples)
            } else {
                let t0 = Instant::now();
                let mut examples = Vec::with_capacity(range.len());
                let starts: Vec<usize> = range.clone().step_by(batch_size.max(1)).collect();
                for s in starts {
                    let idx: Vec<usize> = (s..(s + batch_size.max(1)).min(range.end)).collect();
                    examples.extend(teacher_outputs(
                        teacher, &head, &vision, data, &idx, tokenizer, &key, device,
                    )?);
                    done += idx.len();
                    progress(&BuildProgress {
                        file: name.to_string(),
                        done,
                        total,
                        resumed,
                        elapsed_s: started.elapsed().as_secs_f64(),
                    });
                }
                let bytes = encode_part(range.start, &examples);
                crate::cache::write_atomic(&path, &bytes).map_err(|e| Error::io(&path, e))?;
                computing += t0.elapsed().as_secs_f64();
                (bytes, examples)
            };
            let positions = examples.iter().map(|e| e.positions.len() as u64).sum();
            infos.push(PartInfo {
                index: p,
                first: range.start,
                count: range.len(),
                file: rel,
                bytes: bytes.len() as u64,
                sha256: crate::cache::sha256_hex(&bytes),
                positions,
            });
        }
        out_files.push(CachedFile {
            file: name.to_string(),
            sha256: sha256_file(&data.path)?,
            examples: data.len(),
            parts: infos,
        });
    }
    out_files.sort_by(|a, b| a.file.cmp(&b.file));
    progress(&BuildProgress {
        file: String::new(),
        done,
        total,
        resumed,
        elapsed_s: started.elapsed().as_secs_f64(),
    });
    let manifest = Manifest {
        format: FORMAT,
        key,
        shard,
        files: out_files,
        build_seconds: computing,
    };
    let name = if shard == Shard::WHOLE {
        MANIFEST_FILE.to_string()
    } else {
        shard.file_name()
    };
    manifest.write(&out.join(name))?;
    Ok(manifest)
}

/// Examples of part `p` (of `size` examples) of a file of `n`.
fn part_range(p: usize, size: usize, n: usize) -> Range<usize> {
    p * size..((p + 1) * size).min(n)
}

/// Records the build's key in `out`, or checks it against the one an earlier build left there.
fn claim_folder(out: &Path, key: &CacheKey) -> Result<()> {
    let path = out.join(KEY_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let theirs: CacheKey = serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
        if let Some(diff) = theirs.difference(key) {
            return Err(Error::Invalid(format!(
                "{} holds a teacher cache built with other settings ({diff}): resume only with \
                 the same teacher, tokenizer and options, or build into another folder",
                out.display()
            )));
        }
        return Ok(());
    }
    let text = serde_json::to_string_pretty(key).expect("a key serialises");
    crate::cache::write_atomic(&path, text.as_bytes()).map_err(|e| Error::io(&path, e))
}

/// The teacher's cached outputs for records `idx` of `data`, batched as a training stage
/// batches them (right padding, so each row is what the row would be alone).
#[allow(clippy::too_many_arguments)]
fn teacher_outputs(
    teacher: &Mllm,
    head: &Tensor<2>,
    vision: &VisualSource,
    data: &Dataset,
    idx: &[usize],
    tokenizer: &TextTokenizer,
    key: &CacheKey,
    device: &Device,
) -> Result<Vec<CachedExample>> {
    let nv = teacher.config.vision.num_visual_tokens();
    let examples: Vec<_> = idx.iter().map(|&i| &data.encoded[i]).collect();
    let hb = host_batch(&examples, nv, tokenizer.special.pad, Padding::Right);
    let visual = vision.for_records(data, idx, device)?;
    let h = teacher.hidden(&hb.to_device(visual, device));
    let [b, t, d] = h.dims();
    let vis = hb.visual_mask();
    let mut positions: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut flat = Vec::new();
    for (r, pos) in positions.iter_mut().enumerate() {
        for col in 0..t {
            let at = r * t + col;
            if hb.attention_mask[at] == 0.0 {
                continue;
            }
            let keep = vis[at] > 0.0
                || match key.positions {
                    CachePositions::Responses => hb.loss_mask[at] > 0.0,
                    CachePositions::All => true,
                };
            if keep {
                pos.push(col as u32);
                flat.push(at as i64);
            }
        }
    }
    let flat_h = h.clone().reshape([b * t, d]);
    let n = flat.len();
    let rows = flat_h.clone().select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(flat, [n]), device),
    );
    let k = key.top_k;
    let (mut ids, mut logp, mut tail) = (Vec::new(), Vec::new(), Vec::new());
    let chunk = head_chunk_rows(key.vocab);
    for start in (0..n).step_by(chunk.max(1)) {
        let len = chunk.min(n - start);
        let z = rows.clone().narrow(0, start, len).matmul(head.clone());
        let z = if key.zscore { zscore(z) } else { z } / key.temperature;
        let host: Vec<f32> = z
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32");
        for row in host.chunks_exact(key.vocab) {
            let (i, l, tl) = top_k_row(row, k);
            ids.extend(i);
            logp.extend(l.into_iter().map(f16::from_f32));
            tail.push(tl);
        }
    }
    // RDist's matrices, for the records with an image
    let with_image: Vec<usize> = (0..b)
        .filter(|&r| examples[r].image_start.is_some())
        .collect();
    let mut relations = vec![(Vec::new(), Vec::new()); b];
    if !with_image.is_empty() {
        let m = with_image.len();
        let mut index = Vec::with_capacity(m * nv);
        for &r in &with_image {
            let start = examples[r].image_start.expect("an image");
            index.extend((0..nv).map(|j| (r * t + start + j) as i64));
        }
        let yt = flat_h
            .select(
                0,
                Tensor::<1, Int>::from_data(TensorData::new(index, [m * nv]), device),
            )
            .reshape([m, nv, d]);
        let halves = |x: Tensor<3>| -> Vec<f16> {
            x.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32")
                .into_iter()
                .map(f16::from_f32)
                .collect()
        };
        let rl = halves(linear_self_correlation(
            yt.clone(),
            head.clone(),
            relation_cols(m * nv),
        ));
        let rh = halves(self_correlation(yt));
        for (j, &r) in with_image.iter().enumerate() {
            let span = j * nv * nv..(j + 1) * nv * nv;
            relations[r] = (rl[span.clone()].to_vec(), rh[span].to_vec());
        }
    }
    let mut out = Vec::with_capacity(b);
    let mut at = 0;
    for (r, (pos, (rel_logits, rel_hidden))) in positions.into_iter().zip(relations).enumerate() {
        let np = pos.len();
        out.push(CachedExample {
            len: examples[r].ids.len() as u32,
            fingerprint: fingerprint(examples[r]),
            positions: pos,
            k,
            ids: ids[at * k..(at + np) * k].to_vec(),
            logp: logp[at * k..(at + np) * k].to_vec(),
            tail: tail[at..at + np].to_vec(),
            relation_n: if rel_logits.is_empty() { 0 } else { nv },
            rel_logits,
            rel_hidden,
        });
        at += np;
    }
    Ok(out)
}
