//! Where Condenser keeps what it can recompute but should not have to: tokenised splits and
//! frozen-tower features. One owner for the cache folder, the content keys and the atomic writes,
//! so every cache agrees on where files go and how a half-written file is avoided.
//!
//! The folder is `$CONDENSER_CACHE`, else `$XDG_CACHE_HOME/condenser`, else
//! `~/.cache/condenser` (the HF convention of a per-user cache); `CONDENSER_CACHE=off` turns
//! caching off. An entry's name is the SHA-256 of everything its content depends on, the code
//! that produced it included, so an entry is never stale: a changed input is another name.
//! Entries are written to a temporary file and renamed into place; a reader that finds a file
//! it cannot parse recomputes and overwrites it.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The cache folder of this process, or `None` when caching is off or no folder can be named
/// (the browser).
pub fn root() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = env("CONDENSER_CACHE") {
        return (dir != "off").then(|| PathBuf::from(dir));
    }
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        return Some(PathBuf::from(xdg).join("condenser"));
    }
    env("HOME").map(|h| PathBuf::from(h).join(".cache").join("condenser"))
}

/// A content key: feed it every input an entry depends on, then name the entry.
#[derive(Clone, Default)]
pub struct Key(Sha256);

impl Key {
    /// A key for entries of one kind (`kind` is hashed first, so kinds never collide).
    pub fn new(kind: &str) -> Self {
        let mut k = Key(Sha256::new());
        k.str(kind);
        k
    }

    /// Adds bytes, length-prefixed so that consecutive fields cannot run into each other.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Adds f32 values as their little-endian bits (weights, normalisation constants).
    pub fn f32s(&mut self, v: &[f32]) -> &mut Self {
        self.0.update((v.len() as u64).to_le_bytes());
        for chunk in v.chunks(4096) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
            self.0.update(&bytes);
        }
        self
    }

    /// The key as 64 hex digits.
    pub fn hex(&self) -> String {
        hex(&self.0.clone().finalize())
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes` as hex: the content hash of a file.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader sees the whole file or none. Creates the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field changes the key, and field boundaries count ("ab","c" is not "a","bc").
    #[test]
    fn keys_depend_on_every_field_and_its_boundaries() {
        let k = |a: &str, b: &str| Key::new("t").str(a).str(b).hex();
        assert_eq!(k("ab", "c"), k("ab", "c"));
        assert_ne!(k("ab", "c"), k("a", "bc"));
        assert_ne!(Key::new("t").hex(), Key::new("u").hex());
        assert_ne!(
            Key::new("t").f32s(&[1.0]).hex(),
            Key::new("t").f32s(&[-1.0]).hex()
        );
        assert_eq!(k("x", "y").len(), 64);
    }

    #[test]
    fn an_atomic_write_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("condenser-cache-{}", std::process::id()));
        let p = dir.join("sub").join("entry.bin");
        write_atomic(&p, b"abc").unwrap();
        write_atomic(&p, b"defg").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"defg");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
