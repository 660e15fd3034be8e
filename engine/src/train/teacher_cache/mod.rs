//! The teacher cache: a teacher's outputs over a data set, computed once and kept on disk, so a
//! distillation stage trains without the teacher resident beside the student (LLaVA-MoD's users
//! ran out of memory on 4 x 80 GB with both loaded). At every position a distillation term
//! reads (the responses, or every token, and the visual tokens) it keeps the teacher's top-k
//! log-probabilities and a tail bucket (`distill::sparse` turns them back into a divergence),
//! and per image RDist's two self-correlation matrices. LLaVADI's hidden-state alignment needs
//! the hidden states themselves and is not served from a cache.
//!
//! ```text
//! CACHE/
//!   key.json              what every part here was built from (a resumed build checks it)
//!   parts/<file>-NNNNN.zst  fixed runs of `part_size` examples of one data file
//!   shard-I-of-N.json     a finished shard's manifest (`--shard I/N`)
//!   manifest.json         the complete cache: every part of every file, with its SHA-256
//! ```
//!
//! Parts are numbered the same however the build is sharded, so shards built on different
//! machines are disjoint sets of parts and `merge` only copies them together and checks that
//! they cover every example once ([`merge`]). A part is written whole or not at all, so an
//! interrupted build resumes at the first missing part.

pub mod build;
mod format;
mod merge;
mod reader;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use build::{BuildOptions, BuildProgress, build};
pub use format::{CachedExample, fingerprint};
pub use merge::merge;
pub use reader::CachedTeacher;

use crate::config::MllmConfig;
use crate::{Error, Result};

/// Examples per part file by default: small enough that an interrupted build loses little,
/// large enough that zstd sees repetition.
pub const EXAMPLES_PER_PART: usize = 256;

/// The default `k`: DistillKit and Megatron keep 64 to 128; at 64 the tail bucket of a trained
/// teacher holds well under 1% of the mass.
pub const DEFAULT_TOP_K: usize = 64;

/// Format version in every manifest.
pub const FORMAT: u32 = 1;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const KEY_FILE: &str = "key.json";
pub const PARTS_DIR: &str = "parts";

/// Which token positions hold the teacher's distribution (the visual tokens always do, for
/// L_vis): those L_res reads with `tokens = "response"`, or every token (`tokens = "all"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CachePositions {
    Responses,
    All,
}

/// Everything the cached values depend on besides the data: a stage whose settings differ is
/// refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheKey {
    /// SHA-256 of the teacher checkpoint's weights.
    pub teacher_weights: String,
    /// The teacher's shape and image processing.
    pub teacher: MllmConfig,
    /// SHA-256 of the tokenizer.json the data was tokenised with.
    pub tokenizer: String,
    /// Tokens kept per position (at most the vocabulary compared).
    pub top_k: usize,
    /// Vocabulary columns the top-k was taken over (the teacher's LM head; the stage compares
    /// `min(student, teacher)`, and refuses a cache over more columns than that).
    pub vocab: usize,
    /// The distribution cached is `softmax(z / temperature)`, `z` z-scored first when `zscore`.
    pub temperature: f64,
    pub zscore: bool,
    pub positions: CachePositions,
    /// Tokenisation: the longest sequence kept and whether records without an image were kept.
    pub max_positions: usize,
    pub require_image: bool,
    /// Examples per part file (shards of one cache split the same parts).
    pub part_size: usize,
}

impl CacheKey {
    /// The first field where two keys differ, for error messages; `None` when they are equal.
    pub fn difference(&self, other: &CacheKey) -> Option<String> {
        let (a, b) = (self, other);
        if a == b {
            return None;
        }
        Some(if a.teacher_weights != b.teacher_weights {
            "the teacher's weights differ".into()
        } else if a.teacher != b.teacher {
            "the teacher's shape or image processing differs".into()
        } else if a.tokenizer != b.tokenizer {
            "the tokenizer differs".into()
        } else if a.top_k != b.top_k {
            format!("top-k {} vs {}", a.top_k, b.top_k)
        } else if a.temperature != b.temperature {
            format!("temperature {} vs {}", a.temperature, b.temperature)
        } else if a.zscore != b.zscore {
            format!("z-scoring {} vs {}", a.zscore, b.zscore)
        } else if a.positions != b.positions {
            format!("positions {:?} vs {:?}", a.positions, b.positions)
        } else if a.part_size != b.part_size {
            format!("part size {} vs {}", a.part_size, b.part_size)
        } else if a.max_positions != b.max_positions {
            format!("max positions {} vs {}", a.max_positions, b.max_positions)
        } else {
            format!("require_image {} vs {}", a.require_image, b.require_image)
        })
    }
}

/// One part of one data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartInfo {
    pub index: usize,
    pub first: usize,
    pub count: usize,
    /// Path relative to the cache folder.
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// Token positions held (for bytes per token).
    pub positions: u64,
}

/// One data file of the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedFile {
    /// The file's name in the data folder (`train.json`, `captions.json`).
    pub file: String,
    pub sha256: String,
    pub examples: usize,
    pub parts: Vec<PartInfo>,
}

/// `--shard I/N`: this build makes parts `[I * P / N, (I + 1) * P / N)` of each file's `P`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` (0-based `I < N`).
    pub fn parse(s: &str) -> std::result::Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("--shard {s:?}: expected I/N, e.g. 0/4"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("--shard {s:?}: {i:?} is not a shard index"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("--shard {s:?}: {n:?} is not a shard count"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "--shard {s:?}: the index counts from 0 and must be below the count (0/{count} \
                 to {}/{count})",
                count.max(1) - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// This shard's part indices out of `parts`.
    pub fn parts(self, parts: usize) -> std::ops::Range<usize> {
        self.index * parts / self.count..(self.index + 1) * parts / self.count
    }

    /// The shard manifest's file name.
    pub fn file_name(self) -> String {
        format!("shard-{}-of-{}.json", self.index, self.count)
    }
}

/// A manifest: a shard's (`shard-I-of-N.json`) or the complete cache's (`manifest.json`, shard
/// 0 of 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub key: CacheKey,
    pub shard: Shard,
    pub files: Vec<CachedFile>,
    /// Seconds the teacher spent building these parts (summed over shards after a merge; parts
    /// a resumed build found already made are not counted again).
    pub build_seconds: f64,
}

impl Manifest {
    /// Total bytes of the parts and token positions they hold.
    pub fn size(&self) -> (u64, u64) {
        self.files
            .iter()
            .flat_map(|f| &f.parts)
            .fold((0, 0), |(b, p), part| (b + part.bytes, p + part.positions))
    }

    /// Reads a manifest file.
    pub fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
        if m.format != FORMAT {
            return Err(Error::Invalid(format!(
                "{}: teacher-cache format {} (this build reads {FORMAT}); rebuild the cache",
                path.display(),
                m.format
            )));
        }
        Ok(m)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a manifest serialises");
        crate::cache::write_atomic(path, text.as_bytes()).map_err(|e| Error::io(path, e))
    }
}

/// The complete cache's manifest in `dir`.
pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_FILE)
}

/// SHA-256 of a file, streamed (teacher weights run to gigabytes).
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::cache::hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_parts_without_gaps() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        assert!(Shard::parse("4/4").unwrap_err().contains("below the count"));
        assert!(
            Shard::parse("x/4")
                .unwrap_err()
                .contains("not a shard index")
        );
        assert!(Shard::parse("3").unwrap_err().contains("expected I/N"));
        for parts in [0, 1, 3, 7, 40] {
            for count in 1..6 {
                let mut covered = Vec::new();
                for index in 0..count {
                    covered.extend(Shard { index, count }.parts(parts));
                }
                assert_eq!(covered, (0..parts).collect::<Vec<_>>());
            }
        }
    }
}
