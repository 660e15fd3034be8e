//! Reading a complete teacher cache for a distillation stage: every part checked against its
//! SHA-256 and decoded once, the whole checked against the stage (teacher, tokenizer, image
//! processing, divergence settings and each record's tokens), then served a batch at a time as
//! sparse rows and relation matrices on the device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::format::{CachedExample, decode_part, fingerprint};
use super::{CacheKey, CachePositions, Manifest, manifest_path};
use crate::config::{DistillSpec, KdTokens, MllmConfig, RelationFeatures};
use crate::data::{Dataset, TextTokenizer};
use crate::distill::sparse::SparseRows;
use crate::{Error, Result};

/// A complete teacher cache, in memory.
pub struct CachedTeacher {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Each data file's examples, in record order.
    files: BTreeMap<String, Vec<CachedExample>>,
}

impl CachedTeacher {
    /// Opens the cache in `dir`: its `manifest.json` and every part it lists.
    pub fn open(dir: &Path) -> Result<CachedTeacher> {
        let mpath = manifest_path(dir);
        if !mpath.exists() {
            let shards = std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with("shard-"))
                        .count()
                })
                .unwrap_or(0);
            return Err(Error::Invalid(format!(
                "{}: no teacher cache here (no manifest.json){}",
                dir.display(),
                if shards > 0 {
                    format!(
                        "; it holds {shards} shard manifest(s): complete the cache with \
                         `condenser teacher-cache merge -o {} {}`",
                        dir.display(),
                        dir.display()
                    )
                } else {
                    "; build one with `condenser teacher-cache TEACHER --data DIR -o CACHE`".into()
                }
            )));
        }
        let manifest = Manifest::read(&mpath)?;
        let mut files = BTreeMap::new();
        for f in &manifest.files {
            let mut examples = Vec::with_capacity(f.examples);
            for part in &f.parts {
                let path = dir.join(&part.file);
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                if crate::cache::sha256_hex(&bytes) != part.sha256 {
                    return Err(Error::Invalid(format!(
                        "{}: its SHA-256 is not the one manifest.json records: the part was \
                         changed or cut short after the build; rebuild it",
                        path.display()
                    )));
                }
                let (first, part_examples) = decode_part(&path, &bytes)?;
                if first != examples.len() || part_examples.len() != part.count {
                    return Err(Error::Invalid(format!(
                        "{}: parts of {} are not consecutive (part {} starts at {first}, \
                         expected {})",
                        mpath.display(),
                        f.file,
                        part.index,
                        examples.len()
                    )));
                }
                examples.extend(part_examples);
            }
            if examples.len() != f.examples {
                return Err(Error::Invalid(format!(
                    "{}: {} holds {} of its {} examples: the cache is incomplete",
                    mpath.display(),
                    f.file,
                    examples.len(),
                    f.examples
                )));
            }
            files.insert(f.file.clone(), examples);
        }
        Ok(CachedTeacher {
            dir: dir.to_path_buf(),
            manifest,
            files,
        })
    }

    pub fn key(&self) -> &CacheKey {
        &self.manifest.key
    }

    fn refuse(&self, message: String) -> Error {
        Error::Invalid(format!("teacher cache {}: {message}", self.dir.display()))
    }

    /// Checks that the cache serves a distillation stage of `student` on `file` of the data
    /// (loaded as `data`) with `spec`; `weights` is the SHA-256 of the recipe's live teacher,
    /// when it names one.
    pub fn check_stage(
        &self,
        student: &MllmConfig,
        tokenizer: &TextTokenizer,
        spec: &DistillSpec,
        file: &str,
        data: &Dataset,
        weights: Option<&str>,
    ) -> Result<()> {
        let key = self.key();
        if let Some(w) = weights
            && w != key.teacher_weights
        {
            return Err(self.refuse(
                "it was built from other teacher weights than the recipe's [teacher] from".into(),
            ));
        }
        if key.tokenizer != tokenizer.fingerprint {
            return Err(self.refuse(format!(
                "it was built with another tokenizer than the student's ({}): distillation \
                 compares distributions over the same token ids",
                tokenizer.path.display()
            )));
        }
        let (tv, sv) = (&key.teacher.vision, &student.vision);
        if tv.num_visual_tokens() != sv.num_visual_tokens()
            || tv.image_size != sv.image_size
            || tv.mean != sv.mean
            || tv.std != sv.std
            || tv.preprocess != sv.preprocess
        {
            return Err(self.refuse(
                "its teacher sees images otherwise than the student (visual tokens, image size \
                 or image processing differ): teacher and student must share the vision encoder"
                    .into(),
            ));
        }
        if key.vocab > student.llm.vocab_size {
            return Err(self.refuse(format!(
                "its distributions span the teacher's {} vocabulary rows and the student has {}: \
                 build the cache from a teacher whose head is no larger than the student's",
                key.vocab, student.llm.vocab_size
            )));
        }
        let d = &spec.divergence;
        if key.temperature != d.temperature || key.zscore != d.zscore {
            return Err(self.refuse(format!(
                "it holds the teacher's distribution at temperature {} (z-scored: {}) and the \
                 stage divides by {} (z-scored: {}); build it with --temperature {}{}",
                key.temperature,
                key.zscore,
                d.temperature,
                d.zscore,
                d.temperature,
                if d.zscore { " --zscore" } else { "" }
            )));
        }
        if spec.tokens == KdTokens::All && spec.res > 0.0 && key.positions != CachePositions::All {
            return Err(self.refuse(
                "the stage distils every token (tokens = \"all\") and the cache holds the \
                 responses only; build it with --positions all"
                    .into(),
            ));
        }
        if spec.hidden > 0.0 {
            return Err(self.refuse(
                "the stage aligns hidden states (hidden > 0), which a cache does not hold: \
                 use a live [teacher] from for LLaVADI's hidden term"
                    .into(),
            ));
        }
        let Some(examples) = self.files.get(file) else {
            return Err(self.refuse(format!(
                "it has no entry for {file} (it holds {}); build it with --files {file}",
                self.files.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        if examples.len() != data.len() {
            return Err(self.refuse(format!(
                "it holds {} examples of {file} and the stage's data has {}: the data file \
                 changed, or require_image differs (the cache's: {})",
                examples.len(),
                data.len(),
                key.require_image
            )));
        }
        for (i, (cached, enc)) in examples.iter().zip(&data.encoded).enumerate() {
            if cached.len as usize != enc.ids.len() || cached.fingerprint != fingerprint(enc) {
                return Err(Error::Record {
                    path: data.path.clone(),
                    index: i,
                    id: data.records[i].id.clone(),
                    message: format!(
                        "the teacher cache {} tokenised this record otherwise ({} tokens, the \
                         stage {}): the data, the chat template or max_positions changed since \
                         the cache was built",
                        self.dir.display(),
                        cached.len,
                        enc.ids.len()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The teacher's sparse rows at the flat positions `at` (into `[idx.len(), t]`, right
    /// padding) of records `idx` of `file`, on `device`. The stage was checked first, so every
    /// position a term reads is held.
    pub fn rows(
        &self,
        file: &str,
        idx: &[usize],
        t: usize,
        at: &[i64],
        device: &Device,
    ) -> SparseRows {
        let examples = &self.files[file];
        let k = self.key().top_k;
        let n = at.len();
        let (mut ids, mut logp, mut tail) = (
            Vec::with_capacity(n * k),
            Vec::with_capacity(n * k),
            Vec::with_capacity(n),
        );
        for &flat in at {
            let (r, p) = (flat as usize / t, flat as usize % t);
            let e = &examples[idx[r]];
            let s = e.slot(p as u32).unwrap_or_else(|| {
                panic!(
                    "teacher cache: position {p} of record {} is not held (the stage check \
                     guarantees it is)",
                    idx[r]
                )
            });
            ids.extend(e.ids[s * k..(s + 1) * k].iter().map(|&i| i as i64));
            logp.extend(e.logp[s * k..(s + 1) * k].iter().map(|x| x.to_f32()));
            tail.push(e.tail[s]);
        }
        SparseRows {
            ids: Tensor::from_data(TensorData::new(ids, [n, k]), device),
            logp: Tensor::from_data(TensorData::new(logp, [n, k]), device),
            tail: Tensor::from_data(TensorData::new(tail, [n]), device),
        }
    }

    /// RDist's teacher matrices `[B, N, N]` of records `idx`, or `None` when one has no image.
    pub fn relations(
        &self,
        file: &str,
        idx: &[usize],
        features: RelationFeatures,
        device: &Device,
    ) -> Option<Tensor<3>> {
        let examples = &self.files[file];
        let n = examples[*idx.first()?].relation_n;
        let mut out = Vec::with_capacity(idx.len() * n * n);
        for &i in idx {
            let e = &examples[i];
            if e.relation_n == 0 || e.relation_n != n {
                return None;
            }
            let m = match features {
                RelationFeatures::Logits => &e.rel_logits,
                RelationFeatures::Hidden => &e.rel_hidden,
            };
            out.extend(m.iter().map(|x| x.to_f32()));
        }
        Some(Tensor::from_data(
            TensorData::new(out, [idx.len(), n, n]),
            device,
        ))
    }

    /// A line for the log: what the cache holds.
    pub fn describe(&self) -> String {
        let (bytes, positions) = self.manifest.size();
        format!(
            "teacher cache {}: top-{} at {} positions of {} examples, {:.1} MiB ({:.0} bytes per \
             position)",
            self.dir.display(),
            self.key().top_k,
            positions,
            self.files.values().map(|f| f.len()).sum::<usize>(),
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 / positions.max(1) as f64
        )
    }
}
