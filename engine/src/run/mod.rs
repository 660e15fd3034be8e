//! Run folders: the one owner of their layout. Every other part of Condenser (the training
//! loop, recipe resolution, the CLI, the desktop app, the ablation runner) asks a [`Runs`] or a
//! [`RunDir`] for a path instead of joining file names itself, so the layout below is written
//! down once and `--runs-dir` reaches everything.
//!
//! ```text
//! <runs>/                    Runs: the parent folder (`runs/`, or `--runs-dir`)
//!   comparison.md            the main job's table (`condenser demo`)
//!   <name>/                  RunDir: one recipe's run
//!     recipe.toml            the recipe as resolved (every default written out)
//!     tokenizer.json         a copy of the tokenizer, so the folder is self-contained
//!     events.jsonl           the event log, one JSON object per line
//!     report.md report.json  the evaluation report
//!     routing.png            MoE models: the routing heatmap
//!     mined-<stage>.json     preference pairs mined at the start of a `mined` stage
//!     checkpoints/
//!       step-NNNNNN/         every `checkpoint_every` steps (with optimiser state)
//!       stage-<i>-<name>/    at each stage end
//!       final/               the finished model
//!       latest               the name of the newest of them
//! ```
//!
//! What is inside one checkpoint folder is [`checkpoint`]'s.

pub mod checkpoint;
mod listing;

use std::path::{Path, PathBuf};

pub use listing::{
    RunFolder, SampleRow, SavedDevice, SavedParams, SavedReport, list_runs, sample_rows,
};

use crate::config::Recipe;
use crate::{Error, Result};

const RECIPE_FILE: &str = "recipe.toml";
const TOKENIZER_FILE: &str = "tokenizer.json";
const EVENTS_FILE: &str = "events.jsonl";
const REPORT_JSON: &str = "report.json";
const REPORT_MD: &str = "report.md";
const ROUTING_PNG: &str = "routing.png";
const CHECKPOINTS: &str = "checkpoints";
const LATEST: &str = "latest";
const FINAL: &str = "final";

/// The folder that holds run folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runs {
    root: PathBuf,
}

impl Default for Runs {
    /// `runs/` under the working directory, the CLI's default.
    fn default() -> Self {
        Runs::new("runs")
    }
}

impl Runs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The run folder named `name` (it need not exist).
    pub fn run(&self, name: &str) -> RunDir {
        RunDir::new(self.root.join(name))
    }

    /// Resolves a recipe's reference to a model (`[teacher] from`, `[init] vision_from`,
    /// `model_from`, `upcycle_from`): a run name (its final checkpoint) or a checkpoint folder.
    pub fn resolve_checkpoint(&self, spec: &str) -> Result<PathBuf> {
        let as_path = PathBuf::from(spec);
        [self.run(spec).final_checkpoint(), as_path.clone()]
            .into_iter()
            .find(|p| checkpoint::is_checkpoint(p))
            .ok_or_else(|| Error::Checkpoint {
                path: as_path,
                message: format!(
                    "no checkpoint found: expected a finished run `{}` or a checkpoint folder \
                     holding {}",
                    self.root.join(spec).display(),
                    checkpoint::MODEL_FILE
                ),
            })
    }

    /// Parses a recipe, taking the model of an `[init] model_from` checkpoint (a run under this
    /// folder, or a checkpoint folder) when the recipe leaves `[model]` out.
    pub fn parse_recipe(&self, text: &str, path: &Path) -> Result<Recipe> {
        crate::config::parse_recipe_with(text, path, &|spec| {
            let ckpt = self.resolve_checkpoint(spec).map_err(|e| e.to_string())?;
            checkpoint::load_config(&ckpt).map_err(|e| e.to_string())
        })
    }

    /// Loads and validates a recipe file (see [`Runs::parse_recipe`]).
    pub fn load_recipe(&self, path: impl AsRef<Path>) -> Result<Recipe> {
        let path = path.as_ref();
        self.parse_recipe(&crate::error::read_to_string(path)?, path)
    }

    /// `comparison.md`: the main job's table of teacher, baseline and KD student.
    pub fn comparison_file(&self) -> PathBuf {
        self.root.join("comparison.md")
    }

    /// The run folders under the root, newest first.
    pub fn list(&self) -> Result<Vec<RunFolder>> {
        list_runs(&self.root)
    }
}

/// A checkpoint's name inside `checkpoints/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointName {
    /// A periodic checkpoint at this global step (with optimiser state).
    Step(usize),
    /// The end of stage `index` (its recipe name, made file-safe).
    Stage { index: usize, name: String },
    /// The finished model.
    Final,
}

impl std::fmt::Display for CheckpointName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointName::Step(n) => write!(f, "step-{n:06}"),
            CheckpointName::Stage { index, name } => write!(f, "stage-{index}-{}", file_safe(name)),
            CheckpointName::Final => f.write_str(FINAL),
        }
    }
}

/// `s` with every character but ASCII letters, digits, `-` and `_` replaced by `_`.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One run's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunDir { path: path.into() }
    }

    /// The run folder a checkpoint folder lies in (`<run>/checkpoints/<ck>` -> `<run>`), when
    /// it lies in one.
    pub fn of_checkpoint(ckpt: &Path) -> Option<RunDir> {
        let parent = ckpt.parent()?;
        if parent.file_name()? != CHECKPOINTS {
            return None;
        }
        Some(RunDir::new(parent.parent()?))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    pub fn recipe_file(&self) -> PathBuf {
        self.path.join(RECIPE_FILE)
    }

    /// The teacher cache a run builds itself (`[teacher] cache = { top_k }`).
    pub fn teacher_cache_dir(&self) -> PathBuf {
        self.path().join("teacher-cache")
    }

    pub fn tokenizer_file(&self) -> PathBuf {
        self.path.join(TOKENIZER_FILE)
    }

    pub fn events_file(&self) -> PathBuf {
        self.path.join(EVENTS_FILE)
    }

    pub fn report_json(&self) -> PathBuf {
        self.path.join(REPORT_JSON)
    }

    pub fn report_md(&self) -> PathBuf {
        self.path.join(REPORT_MD)
    }

    pub fn routing_png(&self) -> PathBuf {
        self.path.join(ROUTING_PNG)
    }

    /// Where stage `stage`'s mined preference pairs are kept.
    pub fn mined_pairs(&self, stage: usize) -> PathBuf {
        self.path.join(format!("mined-{stage}.json"))
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.path.join(CHECKPOINTS)
    }

    pub fn checkpoint(&self, name: &CheckpointName) -> PathBuf {
        self.checkpoints().join(name.to_string())
    }

    pub fn final_checkpoint(&self) -> PathBuf {
        self.checkpoint(&CheckpointName::Final)
    }

    /// The run finished: its final checkpoint is written.
    pub fn is_finished(&self) -> bool {
        checkpoint::is_checkpoint(&self.final_checkpoint())
    }

    /// The newest checkpoint with a training state, if any (what `--resume` continues from).
    pub fn latest_checkpoint(&self) -> Option<PathBuf> {
        let name = std::fs::read_to_string(self.checkpoints().join(LATEST)).ok()?;
        let p = self.checkpoints().join(name.trim());
        checkpoint::has_state(&p).then_some(p)
    }

    /// Records `name` as the newest checkpoint.
    pub fn set_latest(&self, name: &CheckpointName) -> Result<()> {
        crate::error::write_atomic(self.checkpoints().join(LATEST), name.to_string().as_bytes())
    }

    /// Opens the folder for a run of `recipe_text` and returns the checkpoint to resume from.
    /// An existing folder is resumed when `resume` is set and it was started with the same
    /// recipe, replaced when `overwrite` is set or it holds nothing worth keeping (no
    /// checkpoint, no report), and refused otherwise. Nothing is written before that decision;
    /// then the resolved recipe and a copy of the tokenizer (so `chat` and `eval` find it beside
    /// the checkpoints) are written.
    pub fn begin(
        &self,
        recipe_text: &str,
        tokenizer: &Path,
        resume: bool,
        overwrite: bool,
    ) -> Result<Option<PathBuf>> {
        let mut resume_from = None;
        if self.exists() {
            let latest = self.latest_checkpoint();
            if overwrite || (latest.is_none() && !self.has_report()) {
                std::fs::remove_dir_all(&self.path).map_err(|e| Error::io(&self.path, e))?;
            } else if !resume {
                return Err(Error::Invalid(format!(
                    "{} already exists: resume it, choose another name, or overwrite it",
                    self.path.display()
                )));
            } else if self.saved_recipe().as_deref() != Some(recipe_text) {
                return Err(Error::Invalid(format!(
                    "{} was started with a different recipe ({}): refusing to resume it with \
                     this one",
                    self.path.display(),
                    self.recipe_file().display()
                )));
            } else {
                resume_from = latest;
            }
        }
        let ck = self.checkpoints();
        std::fs::create_dir_all(&ck).map_err(|e| Error::io(&ck, e))?;
        crate::error::write_atomic(self.recipe_file(), recipe_text.as_bytes())?;
        let copy = self.tokenizer_file();
        std::fs::copy(tokenizer, &copy).map_err(|e| Error::io(&copy, e))?;
        Ok(resume_from)
    }

    /// The recipe text the run was started with, if it was.
    pub fn saved_recipe(&self) -> Option<String> {
        std::fs::read_to_string(self.recipe_file()).ok()
    }

    /// Writes `report.json` and `report.md`.
    pub fn write_report(&self, report: &crate::eval::report::RunReportFiles) -> Result<()> {
        crate::error::write_atomic(self.report_md(), report.md.as_bytes())?;
        crate::error::write_atomic(self.report_json(), report.json.as_bytes())
    }

    /// The run holds a report (it finished and was evaluated).
    pub fn has_report(&self) -> bool {
        self.report_json().exists()
    }

    /// Reads `report.json`; `None` when the run has none (yet).
    pub fn load_report(&self) -> Result<Option<SavedReport>> {
        listing::load_report(&self.path)
    }

    /// The evaluation a finished run saved, when its folder was made by exactly
    /// `recipe_text` (the resolved recipe): what lets a runner skip a run done earlier.
    pub fn finished_eval(&self, recipe_text: &str) -> Option<crate::eval::EvalResult> {
        if self.saved_recipe().as_deref() != Some(recipe_text) {
            return None;
        }
        self.load_report().ok().flatten().map(|r| r.eval)
    }
}

/// The tokenizer a checkpoint folder was trained with: its own `tokenizer.json` (an import or a
/// copied checkpoint), else the copy in the run folder it lies in.
pub fn checkpoint_tokenizer(ckpt: &Path) -> Option<PathBuf> {
    let own = ckpt.join(TOKENIZER_FILE);
    let run = RunDir::of_checkpoint(ckpt).map(|r| r.tokenizer_file());
    std::iter::once(own).chain(run).find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_follow_the_layout() {
        assert_eq!(CheckpointName::Step(12).to_string(), "step-000012");
        let stage = CheckpointName::Stage {
            index: 2,
            name: "dft (kd)".into(),
        };
        assert_eq!(stage.to_string(), "stage-2-dft__kd_");
        assert_eq!(CheckpointName::Final.to_string(), "final");
        let run = Runs::new("x").run("r");
        assert_eq!(
            run.checkpoint(&CheckpointName::Step(3)),
            Path::new("x/r/checkpoints/step-000003")
        );
    }

    #[test]
    fn a_checkpoint_knows_its_run_folder() {
        let run = RunDir::of_checkpoint(Path::new("runs/a/checkpoints/final")).unwrap();
        assert_eq!(run.path(), Path::new("runs/a"));
        assert_eq!(run.tokenizer_file(), Path::new("runs/a/tokenizer.json"));
        // a bare checkpoint folder (an import) is not inside a run
        assert!(RunDir::of_checkpoint(Path::new("ckpt/teacher")).is_none());
    }

    /// `[init] model_from` names a run under the runs folder the command was given, not under
    /// `runs/`: a recipe without `[model]` takes that run's model.
    #[test]
    fn model_from_resolves_against_the_given_runs_folder() {
        let root = std::env::temp_dir().join(format!("condenser-runs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/recipes/smoke.toml");
        let model = crate::config::load_recipe(&smoke).unwrap().model;
        let runs = Runs::new(root.join("elsewhere"));
        let ck = runs.run("base").final_checkpoint();
        std::fs::create_dir_all(&ck).unwrap();
        std::fs::write(ck.join(checkpoint::MODEL_FILE), b"").unwrap();
        let config = serde_json::to_string(&model).unwrap();
        std::fs::write(ck.join(checkpoint::CONFIG_FILE), config).unwrap();
        let text = r#"
name = "next"
data = "d"
[init]
model_from = "base"
[[stage]]
name = "sft"
data = "instruct"
batch_size = 4
lr = 1e-3
freeze = { vision = "frozen", projector = "full", llm = "full" }
"#;
        let path = Path::new("next.toml");
        let recipe = runs.parse_recipe(text, path).unwrap();
        assert_eq!(recipe.model, model);
        // the default runs folder holds no such run
        let e = Runs::new(root.join("runs"))
            .parse_recipe(text, path)
            .unwrap_err();
        assert!(e.to_string().contains("model_from"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
