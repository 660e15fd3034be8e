//! The tokenised form of a split, kept in the cache folder (`crate::cache`) so that a resumed or
//! repeated run, or another recipe over the same data and tokenizer, does not tokenise again.
//!
//! The key covers the records' text (so it holds whether records come from a file, from pairs or
//! from mined questions), the tokenizer file's hash, the number of visual tokens, and the source
//! of the chat template and tokenizer wrapper, so a change to how text becomes ids is a new key.

use std::path::Path;

use super::llava::{Conversation, Speaker};
use super::template::{Encoded, encode_conversation};
use super::tokenizer::TextTokenizer;
use crate::cache::{Key, root, write_atomic};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"CNDTOK01";

/// The code whose behaviour an entry depends on.
const CODE: [&str; 2] = [include_str!("template.rs"), include_str!("tokenizer.rs")];

/// Every record of `records` tokenised, from the cache when it has them. `path` names the split
/// in errors. A cache that cannot be written is only logged: tokenising again is always right.
pub fn encode_all(
    path: &Path,
    records: &[Conversation],
    tok: &TextTokenizer,
    num_visual: usize,
) -> Result<Vec<Encoded>> {
    let entry = root().map(|r| {
        r.join("tokens")
            .join(format!("{}.bin", key(records, tok, num_visual)))
    });
    if let Some(entry) = &entry
        && let Ok(bytes) = std::fs::read(entry)
        && let Some(encoded) = decode(&bytes, records.len())
    {
        log::debug!(
            "tokens of {} from the cache {}",
            path.display(),
            entry.display()
        );
        return Ok(encoded);
    }
    let encoded = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            encode_conversation(tok, &r.conversations, num_visual).map_err(|e| Error::Record {
                path: path.to_path_buf(),
                index: i,
                id: r.id.clone(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(entry) = &entry
        && let Err(e) = write_atomic(entry, &encode(&encoded))
    {
        log::warn!("cannot write the token cache {}: {e}", entry.display());
    }
    Ok(encoded)
}

/// The entry name of `records` tokenised by `tok`.
fn key(records: &[Conversation], tok: &TextTokenizer, num_visual: usize) -> String {
    let mut k = Key::new("tokens");
    for code in CODE {
        k.str(code);
    }
    k.str(&tok.fingerprint)
        .u64(num_visual as u64)
        .u64(records.len() as u64);
    for r in records {
        k.u64(r.conversations.len() as u64);
        for t in &r.conversations {
            let speaker = match t.from {
                Speaker::Human => 0,
                Speaker::Gpt => 1,
                Speaker::System => 2,
            };
            k.u64(speaker).str(&t.value);
        }
    }
    k.hex()
}

/// `MAGIC`, the record count, then per record: length, ids, assistant flags, image start + 1
/// (0 for none), all little-endian u32.
fn encode(encoded: &[Encoded]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let u32s = |v: u32, out: &mut Vec<u8>| out.extend(v.to_le_bytes());
    u32s(encoded.len() as u32, &mut out);
    for e in encoded {
        u32s(e.ids.len() as u32, &mut out);
        for &id in &e.ids {
            u32s(id, &mut out);
        }
        out.extend(e.assistant.iter().map(|&a| a as u8));
        u32s(e.image_start.map_or(0, |s| s as u32 + 1), &mut out);
    }
    out
}

/// The inverse of [`encode`], or `None` for a file that is not a whole entry of `n` records.
fn decode(bytes: &[u8], n: usize) -> Option<Vec<Encoded>> {
    let mut r = Reader(bytes.strip_prefix(MAGIC.as_slice())?);
    if r.u32()? as usize != n {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u32()? as usize;
        let ids = (0..len).map(|_| r.u32()).collect::<Option<Vec<u32>>>()?;
        let assistant = r.take(len)?.iter().map(|&f| f != 0).collect();
        let image_start = r.u32()?.checked_sub(1).map(|s| s as usize);
        out.push(Encoded {
            ids,
            assistant,
            image_start,
        });
    }
    r.0.is_empty().then_some(out)
}

/// A cursor over an entry's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Encoded> {
        vec![
            Encoded {
                ids: vec![1, 2, 70000],
                assistant: vec![false, true, true],
                image_start: Some(1),
            },
            Encoded {
                ids: vec![],
                assistant: vec![],
                image_start: None,
            },
            Encoded {
                ids: vec![5],
                assistant: vec![false],
                image_start: Some(0),
            },
        ]
    }

    #[test]
    fn entries_round_trip_and_damaged_ones_are_refused() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes, 3), Some(sample()));
        // another record count, a truncated file, trailing bytes, another format
        assert_eq!(decode(&bytes, 2), None);
        assert_eq!(decode(&bytes[..bytes.len() - 1], 3), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer, 3), None);
        let mut other = bytes.clone();
        other[7] = b'2';
        assert_eq!(decode(&other, 3), None);
    }
}
