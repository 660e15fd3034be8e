//! The bytes of a teacher cache: one part file holds a run of consecutive examples of one data
//! file, zstd-compressed. Everything is little-endian; log-probabilities and relation matrices
//! are f16 (Megatron's choice for top-k log-probs), the tail's log-mass f32.
//!
//! ```text
//! part   := MAGIC u32:first u32:count example*count
//! example:= u32:len u64:fingerprint u32:positions u32:k u32:relation_n
//!           u32*positions            the token positions held, increasing
//!           u32*(positions*k)        top-k token ids, most likely first
//!           f16*(positions*k)        their log-probabilities
//!           f32*positions            the tail bucket's log-mass
//!           f16*(relation_n^2) * 2   RDist's matrices over the visual tokens: logits, hidden
//! ```

use std::path::Path;

use half::f16;

use crate::data::Encoded;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"CNDTCH01";

/// zstd level of the parts: 3 is zstd's default, fast to write and within a few percent of the
/// higher levels on these arrays.
#[cfg_attr(target_family = "wasm", allow(dead_code))]
const ZSTD_LEVEL: i32 = 3;

/// One example's cached teacher outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedExample {
    /// Tokens in the example, and [`fingerprint`] of its encoding: what the reader checks the
    /// stage's own tokenisation against.
    pub len: u32,
    pub fingerprint: u64,
    pub positions: Vec<u32>,
    pub k: usize,
    pub ids: Vec<u32>,
    pub logp: Vec<f16>,
    pub tail: Vec<f32>,
    /// Side of the relation matrices (0: the example has no image).
    pub relation_n: usize,
    pub rel_logits: Vec<f16>,
    pub rel_hidden: Vec<f16>,
}

impl CachedExample {
    /// Where position `p` sits among the held positions.
    pub fn slot(&self, p: u32) -> Option<usize> {
        self.positions.binary_search(&p).ok()
    }
}

/// FNV-1a over an encoded example (ids, which are the response's, where the image sits): equal
/// exactly when the stage tokenised the record as the cache build did.
pub fn fingerprint(e: &Encoded) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (id, a) in e.ids.iter().zip(&e.assistant) {
        eat(&id.to_le_bytes());
        eat(&[*a as u8]);
    }
    eat(&(e.image_start.map_or(u64::MAX, |s| s as u64)).to_le_bytes());
    h
}

/// zstd of `bytes` (native builds; the browser never builds or reads a cache).
#[cfg(not(target_family = "wasm"))]
fn compress(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, ZSTD_LEVEL).expect("zstd into memory")
}

#[cfg(not(target_family = "wasm"))]
fn decompress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::decode_all(bytes)
}

#[cfg(target_family = "wasm")]
fn compress(bytes: &[u8]) -> Vec<u8> {
    bytes.to_vec()
}

#[cfg(target_family = "wasm")]
fn decompress(_: &[u8]) -> std::io::Result<Vec<u8>> {
    Err(std::io::Error::other(
        "teacher caches are not read in the browser",
    ))
}

/// Encodes and compresses one part.
pub fn encode_part(first: usize, examples: &[CachedExample]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(first as u32).to_le_bytes());
    out.extend_from_slice(&(examples.len() as u32).to_le_bytes());
    for e in examples {
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&e.fingerprint.to_le_bytes());
        out.extend_from_slice(&(e.positions.len() as u32).to_le_bytes());
        out.extend_from_slice(&(e.k as u32).to_le_bytes());
        out.extend_from_slice(&(e.relation_n as u32).to_le_bytes());
        for p in &e.positions {
            out.extend_from_slice(&p.to_le_bytes());
        }
        for i in &e.ids {
            out.extend_from_slice(&i.to_le_bytes());
        }
        for x in &e.logp {
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        for x in &e.tail {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for x in e.rel_logits.iter().chain(&e.rel_hidden) {
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
    }
    compress(&out)
}

/// A little-endian reader over a decompressed part that reports the file on a short read.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.at + n > self.bytes.len() {
            return Err(Error::Invalid(format!(
                "{}: teacher-cache part ends early (byte {} of {}): the file is truncated or not \
                 a part; rebuild it with `condenser teacher-cache`",
                self.path.display(),
                self.at,
                self.bytes.len()
            )));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        Ok(self
            .take(4 * n)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
            .collect())
    }
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        Ok(self
            .take(4 * n)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect())
    }
    fn f16s(&mut self, n: usize) -> Result<Vec<f16>> {
        Ok(self
            .take(2 * n)?
            .chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes(c.try_into().expect("2"))))
            .collect())
    }
}

/// Decompresses and decodes a part read from `path`: its first example's index and examples.
pub fn decode_part(path: &Path, compressed: &[u8]) -> Result<(usize, Vec<CachedExample>)> {
    let bytes = decompress(compressed).map_err(|e| {
        Error::Invalid(format!(
            "{}: not a zstd teacher-cache part ({e}); rebuild it with `condenser teacher-cache`",
            path.display()
        ))
    })?;
    let mut c = Cursor {
        bytes: &bytes,
        at: 0,
        path,
    };
    if c.take(MAGIC.len())? != MAGIC {
        return Err(Error::Invalid(format!(
            "{}: not a teacher-cache part of this version (bad magic)",
            path.display()
        )));
    }
    let first = c.u32()? as usize;
    let count = c.u32()? as usize;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = c.u32()?;
        let fingerprint = c.u64()?;
        let n = c.u32()? as usize;
        let k = c.u32()? as usize;
        let relation_n = c.u32()? as usize;
        let positions = c.u32s(n)?;
        let ids = c.u32s(n * k)?;
        let logp = c.f16s(n * k)?;
        let tail = c.f32s(n)?;
        let rel_logits = c.f16s(relation_n * relation_n)?;
        let rel_hidden = c.f16s(relation_n * relation_n)?;
        out.push(CachedExample {
            len,
            fingerprint,
            positions,
            k,
            ids,
            logp,
            tail,
            relation_n,
            rel_logits,
            rel_hidden,
        });
    }
    if c.at != bytes.len() {
        return Err(Error::Invalid(format!(
            "{}: {} bytes after the last example: not a part this version wrote",
            path.display(),
            bytes.len() - c.at
        )));
    }
    Ok((first, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(seed: u32, rel: usize) -> CachedExample {
        let n = 3;
        let k = 2;
        CachedExample {
            len: 10 + seed,
            fingerprint: 0xdead_beef_0000 + seed as u64,
            positions: vec![1, 4, 9],
            k,
            ids: (0..(n * k) as u32).map(|i| i * 7 + seed).collect(),
            logp: (0..n * k)
                .map(|i| f16::from_f32(-0.25 * i as f32))
                .collect(),
            tail: vec![-3.5, -1e4, -0.125],
            relation_n: rel,
            rel_logits: (0..rel * rel)
                .map(|i| f16::from_f32(i as f32 / 8.0))
                .collect(),
            rel_hidden: (0..rel * rel).map(|i| f16::from_f32(-(i as f32))).collect(),
        }
    }

    #[test]
    fn a_part_round_trips_and_a_cut_part_is_refused() {
        let ex = vec![example(1, 2), example(2, 0), example(3, 3)];
        let bytes = encode_part(512, &ex);
        let (first, back) = decode_part(Path::new("p.zst"), &bytes).unwrap();
        assert_eq!(first, 512);
        assert_eq!(back, ex);
        let raw = zstd::decode_all(&bytes[..]).unwrap();
        let cut = zstd::encode_all(&raw[..raw.len() - 3], 1).unwrap();
        let err = decode_part(Path::new("p.zst"), &cut)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ends early"), "{err}");
        let err = decode_part(Path::new("p.zst"), b"plain")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a zstd"), "{err}");
    }

    #[test]
    fn the_fingerprint_sees_ids_roles_and_the_image() {
        let e = Encoded {
            ids: vec![1, 2, 3],
            assistant: vec![false, false, true],
            image_start: Some(1),
        };
        let base = fingerprint(&e);
        let mut other = e.clone();
        other.ids[2] = 4;
        assert_ne!(fingerprint(&other), base);
        let mut other = e.clone();
        other.assistant[1] = true;
        assert_ne!(fingerprint(&other), base);
        let mut other = e.clone();
        other.image_start = None;
        assert_ne!(fingerprint(&other), base);
        assert_eq!(fingerprint(&e.clone()), base);
    }
}
