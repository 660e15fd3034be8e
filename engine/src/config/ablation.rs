//! Ablation sets: a list of rows, each a recipe (a shipped recipe file, optionally patched by
//! dotted-path edits) trained with several seeds. `condenser ablate <set>` runs them and writes
//! the generated table. Rows are patches rather than copies so that every variant visibly
//! differs from its base in exactly the keys the ablation is about.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::recipe::{Recipe, parse_recipe};
use crate::{Error, Result};

/// One ablation set file (`assets/ablations/<set>.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblationSet {
    /// Short name: run folders are `<name>-<row>-s<k>`.
    pub name: String,
    /// Title of the generated table.
    pub title: String,
    /// Markdown output, relative to the repository root (a `.json` twin is written beside it).
    pub output: PathBuf,
    /// What the table is for, printed under the title.
    #[serde(default)]
    pub description: String,
    /// Row label of the baseline and of the method, for the headline comparison.
    pub baseline: String,
    pub method: String,
    /// Row label of the teacher, for the share of the gap closed.
    #[serde(default)]
    pub teacher: Option<String>,
    /// Recipes run (without evaluation) before any row, when not finished yet: the shared
    /// vision encoder the rows load.
    #[serde(default)]
    pub before: Vec<PathBuf>,
    /// The data folder every run trains and is evaluated on, relative to the repository root;
    /// absent: the Shapes world (generated when missing).
    #[serde(default)]
    pub data: Option<PathBuf>,
    #[serde(rename = "row")]
    pub rows: Vec<AblationRow>,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblationRow {
    /// Label in the table; also the run-name slug.
    pub label: String,
    /// Which part of the table it belongs to ("reference", "stages", "losses", ...).
    pub group: String,
    /// Recipe file the row starts from (relative to the repository root).
    pub recipe: PathBuf,
    /// Seeded rows are trained once per seed under their own run names; an unseeded row (the
    /// teacher) is the recipe's own run, trained once and shared with the main job.
    #[serde(default = "yes")]
    pub seeded: bool,
    /// Keep only these stages, by name, in this order.
    #[serde(default)]
    pub stages: Option<Vec<String>>,
    /// Dotted-path edits applied to the recipe's TOML before it is parsed, e.g.
    /// `"stage.2.objective.vis" = 0.0` (array elements by index, before `stages` filters; the
    /// index one past the end appends, e.g. a whole extra `"stage.2" = { ... }`).
    /// A string value `"@row:<label>"` becomes the run name of that (earlier, seeded) row at the
    /// same seed, so a row can start from another row's result: `"init.upcycle_from" =
    /// "@row:dense KD"`.
    #[serde(default)]
    pub set: toml::Table,
    /// Dotted paths removed from the recipe's TOML.
    #[serde(default)]
    pub unset: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Prefix of a string that names another row's run.
pub const ROW_REF: &str = "@row:";

/// Every `@row:` label referenced in `v`.
fn row_refs(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) => {
            if let Some(l) = s.strip_prefix(ROW_REF) {
                out.push(l.to_string());
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|x| row_refs(x, out)),
        toml::Value::Table(t) => t.values().for_each(|x| row_refs(x, out)),
        _ => {}
    }
}

/// `v` with every `@row:<label>` replaced by that row's run name at seed index `k`.
fn resolve_refs(v: &toml::Value, set: &str, k: usize) -> toml::Value {
    match v {
        toml::Value::String(s) => match s.strip_prefix(ROW_REF) {
            Some(l) => toml::Value::String(run_name(set, l, k)),
            None => v.clone(),
        },
        toml::Value::Array(a) => {
            toml::Value::Array(a.iter().map(|x| resolve_refs(x, set, k)).collect())
        }
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(key, x)| (key.clone(), resolve_refs(x, set, k)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// The run folder name of a seeded row.
pub fn run_name(set: &str, label: &str, k: usize) -> String {
    format!("{set}-{}-s{k}", slug(label))
}

/// Loads an ablation set.
pub fn load_ablation(path: &Path) -> Result<AblationSet> {
    let text = crate::error::read_to_string(path)?;
    let set: AblationSet = toml::from_str(&text).map_err(|e| Error::Recipe {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    for label in [&set.baseline, &set.method]
        .into_iter()
        .chain(set.teacher.as_ref())
    {
        if !set.rows.iter().any(|r| &r.label == label) {
            return Err(Error::Recipe {
                path: path.to_path_buf(),
                message: format!("no row is labelled {label:?}"),
            });
        }
    }
    for (i, row) in set.rows.iter().enumerate() {
        for dep in row.depends_on() {
            let ok = set.rows[..i]
                .iter()
                .any(|r| r.label == dep && r.seeded && row.seeded);
            if !ok {
                return Err(Error::Recipe {
                    path: path.to_path_buf(),
                    message: format!(
                        "row {:?} refers to {ROW_REF}{dep}: that must be an earlier seeded row, \
                         and the referring row seeded too",
                        row.label
                    ),
                });
            }
        }
    }
    Ok(set)
}

impl AblationRow {
    /// Labels of the rows whose runs this row starts from.
    pub fn depends_on(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.set.values() {
            row_refs(v, &mut out);
        }
        out
    }
}

/// Lower-case, dash-separated form of a label, usable in a folder name.
pub fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Walks `path` (dot-separated keys, numbers index arrays) to the parent of its last key.
fn parent<'a>(
    root: &'a mut toml::Value,
    path: &str,
) -> std::result::Result<(&'a mut toml::Value, String), String> {
    let keys: Vec<&str> = path.split('.').collect();
    let (last, walk) = keys.split_last().ok_or("empty path")?;
    let mut at = root;
    for k in walk {
        at = match at {
            toml::Value::Table(t) => t.get_mut(*k).ok_or(format!("{path}: no key {k:?}"))?,
            toml::Value::Array(a) => {
                let i: usize = k
                    .parse()
                    .map_err(|_| format!("{path}: {k:?} is not an index"))?;
                a.get_mut(i).ok_or(format!("{path}: no element {i}"))?
            }
            _ => return Err(format!("{path}: {k:?} is not a table or array")),
        };
    }
    Ok((at, last.to_string()))
}

impl AblationRow {
    /// The row's recipe for seed index `k`: patched, filtered, renamed `<set>-<row>-s<k>` and
    /// reseeded `seed + 1000 k` (seeded rows), then parsed and validated like any recipe.
    pub fn recipe(&self, set: &str, root: &Path, k: usize) -> Result<Recipe> {
        self.recipe_with(set, root, k, &parse_recipe)
    }

    /// [`AblationRow::recipe`], parsed by `parse` (a runs folder's parser resolves an
    /// `[init] model_from` run for a recipe without `[model]`).
    pub fn recipe_with(
        &self,
        set: &str,
        root: &Path,
        k: usize,
        parse: &dyn Fn(&str, &Path) -> Result<Recipe>,
    ) -> Result<Recipe> {
        let path = root.join(&self.recipe);
        let text = crate::error::read_to_string(&path)?;
        let bad = |message: String| Error::Recipe {
            path: path.clone(),
            message: format!("row {:?}: {message}", self.label),
        };
        let mut value: toml::Value = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        for (key, v) in &self.set {
            let v = &resolve_refs(v, set, k);
            let (p, last) = parent(&mut value, key).map_err(bad)?;
            match p {
                toml::Value::Table(t) => {
                    t.insert(last, v.clone());
                }
                toml::Value::Array(a) => {
                    let i: usize = last.parse().map_err(|_| bad(format!("{key}: bad index")))?;
                    if i == a.len() {
                        // one past the end appends (e.g. an extra stage)
                        a.push(v.clone());
                    } else {
                        *a.get_mut(i)
                            .ok_or_else(|| bad(format!("{key}: no element {i}")))? = v.clone();
                    }
                }
                _ => return Err(bad(format!("{key}: parent is not a table"))),
            }
        }
        for key in &self.unset {
            let (p, last) = parent(&mut value, key).map_err(bad)?;
            let removed = p.as_table_mut().and_then(|t| t.remove(&last));
            if removed.is_none() {
                return Err(bad(format!("unset {key}: no such key")));
            }
        }
        if let Some(keep) = &self.stages {
            let stages = value
                .get_mut("stage")
                .and_then(|s| s.as_array_mut())
                .ok_or_else(|| bad("the recipe has no [[stage]]".into()))?;
            let mut kept = Vec::new();
            for name in keep {
                let s = stages
                    .iter()
                    .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name))
                    .ok_or_else(|| bad(format!("no stage named {name:?}")))?;
                kept.push(s.clone());
            }
            *stages = kept;
        }
        if self.seeded {
            let t = value.as_table_mut().expect("a recipe is a table");
            let seed = t.get("seed").and_then(|s| s.as_integer()).unwrap_or(42);
            t.insert("seed".into(), toml::Value::Integer(seed + 1000 * k as i64));
            t.insert(
                "name".into(),
                toml::Value::String(run_name(set, &self.label, k)),
            );
        }
        let text = toml::to_string(&value).map_err(|e| bad(e.to_string()))?;
        parse(&text, &path).map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_patch_filter_and_reseed() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut set = toml::Table::new();
        set.insert("stage.2.objective.vis".into(), toml::Value::Float(0.0));
        let row = AblationRow {
            label: "res only (no vis)".into(),
            group: "losses".into(),
            recipe: "assets/recipes/shapes-kd.toml".into(),
            seeded: true,
            stages: Some(vec!["dpt".into(), "dft".into()]),
            set,
            unset: vec![],
        };
        let r = row.recipe("kd", root, 2).unwrap();
        assert_eq!(r.name, "kd-res-only-no-vis-s2");
        assert_eq!(r.seed, 31 + 2000);
        assert_eq!(r.stages.len(), 2);
        match &r.stages[1].objective {
            crate::config::Objective::Distill(d) => assert_eq!(d.vis, 0.0),
            o => panic!("{o:?}"),
        }
        let mut bad = row.clone();
        bad.set
            .insert("stage.9.epochs".into(), toml::Value::Float(1.0));
        let err = bad.recipe("kd", root, 0).unwrap_err().to_string();
        assert!(err.contains("no element 9"), "{err}");
    }
}
