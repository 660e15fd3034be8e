//! What made a generated table: the commit, the content hash of the data it was trained and
//! scored on, and the hash of every recipe file. Stored in the table's JSON and printed under its
//! title, so a reader can tell which code, world and recipes a figure comes from, and a test can
//! tell when a committed table no longer matches the recipes in `assets/` (`tests/results.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the repository root, with `-dirty` when tracked files differ
    /// from it; `unknown` outside a git checkout.
    pub commit: String,
    /// The data folder, as given.
    pub data: String,
    /// SHA-256 over every file of the data folder (see [`hash_folder`]).
    pub data_sha256: String,
    /// SHA-256 of each recipe or set file, by path relative to the repository root.
    pub recipes: BTreeMap<String, String>,
}

impl Provenance {
    /// Collects the provenance of a table made from `data` with the files `recipes` (paths
    /// relative to `root`).
    pub fn collect(root: &Path, data: &Path, recipes: &[PathBuf]) -> Result<Provenance> {
        let mut hashes = BTreeMap::new();
        for r in recipes {
            hashes.insert(slashed(r), file_sha256(&root.join(r))?);
        }
        Ok(Provenance {
            commit: commit(root),
            data: slashed(data),
            data_sha256: hash_folder(data)?,
            recipes: hashes,
        })
    }

    /// The recipe files whose content differs from the recorded hash today (or that are gone),
    /// as `path: why` lines.
    pub fn stale_recipes(&self, root: &Path) -> Vec<String> {
        self.recipes
            .iter()
            .filter_map(|(path, want)| match file_sha256(&root.join(path)) {
                Ok(got) if &got == want => None,
                Ok(got) => Some(format!(
                    "{path}: sha256 {got}, the table was made from {want}"
                )),
                Err(e) => Some(format!("{path}: {e}")),
            })
            .collect()
    }

    /// One markdown paragraph naming the commit, the data and the recipes.
    pub fn markdown(&self) -> String {
        let recipes: Vec<String> = self
            .recipes
            .iter()
            .map(|(p, h)| format!("`{p}` ({})", &h[..12.min(h.len())]))
            .collect();
        format!(
            "Made at commit `{}` from data `{}` (sha256 {}) with {}.",
            self.commit,
            self.data,
            &self.data_sha256[..16.min(self.data_sha256.len())],
            recipes.join(", ")
        )
    }
}

fn slashed(p: &Path) -> String {
    p.to_string_lossy().replace('\\', "/")
}

/// SHA-256 of one file's bytes, hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(crate::cache::sha256_hex(&bytes))
}

/// SHA-256 over a folder's files: each file's path relative to the folder, its length and its
/// bytes, in sorted path order, so renaming, editing, adding or removing any file changes it.
/// Hidden entries (names starting with `.`) are skipped: they are caches and staging folders,
/// not data.
pub fn hash_folder(root: &Path) -> Result<String> {
    let mut files = Vec::new();
    collect_files(root, root, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for rel in &files {
        let bytes = std::fs::read(root.join(rel)).map_err(|e| Error::io(root.join(rel), e))?;
        h.update(rel.as_bytes());
        h.update([0u8]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(crate::cache::hex(&h.finalize()))
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(slashed(rel));
        }
    }
    Ok(())
}

/// The checked-out commit of `root`, `-dirty` when tracked files were changed.
fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(head) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(s) if s.is_empty() => head,
            _ => format!("{head}-dirty"),
        },
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_hash_sees_every_change_and_skips_hidden_entries() {
        let dir = std::env::temp_dir().join(format!("condenser-prov-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("images")).unwrap();
        std::fs::write(dir.join("train.json"), "[]").unwrap();
        std::fs::write(dir.join("images/a.png"), [1u8, 2, 3]).unwrap();
        let base = hash_folder(&dir).unwrap();
        // hidden entries are not data
        std::fs::create_dir_all(dir.join(".staging")).unwrap();
        std::fs::write(dir.join(".staging/x"), "x").unwrap();
        assert_eq!(hash_folder(&dir).unwrap(), base);
        // an edit, a rename and an extra file each change the hash
        std::fs::write(dir.join("images/a.png"), [1u8, 2, 4]).unwrap();
        let edited = hash_folder(&dir).unwrap();
        assert_ne!(edited, base);
        std::fs::rename(dir.join("images/a.png"), dir.join("images/b.png")).unwrap();
        let renamed = hash_folder(&dir).unwrap();
        assert_ne!(renamed, edited);
        std::fs::write(dir.join("extra"), "").unwrap();
        assert_ne!(hash_folder(&dir).unwrap(), renamed);
        // a changed recipe is reported by name
        std::fs::write(dir.join("r.toml"), "a = 1").unwrap();
        let p = Provenance::collect(&dir, &dir, &[PathBuf::from("r.toml")]).unwrap();
        assert!(p.stale_recipes(&dir).is_empty());
        std::fs::write(dir.join("r.toml"), "a = 2").unwrap();
        let stale = p.stale_recipes(&dir);
        assert!(
            stale.len() == 1 && stale[0].starts_with("r.toml: sha256"),
            "{stale:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
