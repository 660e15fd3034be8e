//! Merging shards: each `--shard I/N` build leaves `shard-I-of-N.json` and its parts; merging
//! checks that the shards were built alike over the same data and together make every part of
//! every file once, copies the parts into one folder and writes its `manifest.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{CachedFile, FORMAT, KEY_FILE, MANIFEST_FILE, Manifest, Shard};
use crate::{Error, Result};

/// Merges the shard manifests found in `inputs` (folders) into the cache folder `out`; an input
/// may be `out` itself (shards built into one shared folder).
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<Manifest> {
    let mut shards: Vec<(PathBuf, Manifest)> = Vec::new();
    for dir in inputs {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut found = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("shard-") && name.ends_with(".json") {
                shards.push((dir.clone(), Manifest::read(&e.path())?));
                found += 1;
            }
        }
        if found == 0 {
            return Err(Error::Invalid(format!(
                "{}: no shard manifest (shard-I-of-N.json): was its `condenser teacher-cache \
                 --shard I/N` build finished?",
                dir.display()
            )));
        }
    }
    shards.sort_by_key(|(_, m)| m.shard.index);
    let (_, first) = &shards[0];
    let count = first.shard.count;
    for (dir, m) in &shards {
        if let Some(diff) = first.key.difference(&m.key) {
            return Err(Error::Invalid(format!(
                "{}: shard {} was built otherwise than shard {} ({diff})",
                dir.display(),
                m.shard.index,
                first.shard.index
            )));
        }
        if m.shard.count != count {
            return Err(Error::Invalid(format!(
                "{}: a shard of {} where the others are of {count}",
                dir.display(),
                m.shard.count
            )));
        }
    }
    let indices: Vec<usize> = shards.iter().map(|(_, m)| m.shard.index).collect();
    let mut want: Vec<usize> = (0..count).collect();
    if indices != want {
        want.retain(|i| !indices.contains(i));
        let twice: Vec<usize> = indices
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        return Err(Error::Invalid(format!(
            "the shards given are not 0..{count} once each (missing: {want:?}, twice: {twice:?})"
        )));
    }
    let mut files: BTreeMap<String, CachedFile> = BTreeMap::new();
    for (dir, m) in &shards {
        for f in &m.files {
            let entry = files.entry(f.file.clone()).or_insert_with(|| CachedFile {
                parts: Vec::new(),
                ..f.clone()
            });
            if entry.sha256 != f.sha256 || entry.examples != f.examples {
                return Err(Error::Invalid(format!(
                    "{}: shard {} was built over another {} than shard {} (its SHA-256 or \
                     length differs)",
                    dir.display(),
                    m.shard.index,
                    f.file,
                    first.shard.index
                )));
            }
            for part in &f.parts {
                let from = dir.join(&part.file);
                let to = out.join(&part.file);
                if std::fs::canonicalize(&from).ok() != std::fs::canonicalize(&to).ok() {
                    let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
                    if crate::cache::sha256_hex(&bytes) != part.sha256 {
                        return Err(Error::Invalid(format!(
                            "{}: its SHA-256 differs from its shard manifest's",
                            from.display()
                        )));
                    }
                    crate::cache::write_atomic(&to, &bytes).map_err(|e| Error::io(&to, e))?;
                }
                entry.parts.push(part.clone());
            }
        }
    }
    for f in files.values_mut() {
        f.parts.sort_by_key(|p| p.index);
        let mut next = 0;
        for p in &f.parts {
            if p.first != next {
                return Err(Error::Invalid(format!(
                    "{}: the shards leave examples {next}..{} uncached",
                    f.file, p.first
                )));
            }
            next = p.first + p.count;
        }
        if next != f.examples {
            return Err(Error::Invalid(format!(
                "{}: the shards leave examples {next}..{} uncached",
                f.file, f.examples
            )));
        }
    }
    let manifest = Manifest {
        format: FORMAT,
        key: first.key.clone(),
        shard: Shard::WHOLE,
        files: files.into_values().collect(),
        build_seconds: shards.iter().map(|(_, m)| m.build_seconds).sum(),
    };
    let key = serde_json::to_string_pretty(&manifest.key).expect("a key serialises");
    let kpath = out.join(KEY_FILE);
    crate::cache::write_atomic(&kpath, key.as_bytes()).map_err(|e| Error::io(&kpath, e))?;
    manifest.write(&out.join(MANIFEST_FILE))?;
    Ok(manifest)
}
