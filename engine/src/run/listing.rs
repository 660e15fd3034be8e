//! Run folders as the faces see them: which runs exist under a `runs/` folder, each one's saved
//! report, and its evaluation samples beside the teacher's answers to the same questions.
//! Every path comes from [`RunDir`].

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use super::{RunDir, Runs};
use crate::config::{Recipe, load_recipe};
use crate::eval::EvalResult;
use crate::{Error, Result};

/// One folder under `runs/` that holds a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFolder {
    pub name: String,
    pub path: PathBuf,
    /// The run wrote `report.json` (it finished and was evaluated).
    pub has_report: bool,
    /// A checkpoint to resume from exists.
    pub resumable: bool,
    /// Last change of `events.jsonl` (or of the folder).
    pub modified: SystemTime,
}

/// The run folders under `runs_dir`, newest first. A folder is a run when it holds a
/// `recipe.toml` or an `events.jsonl`.
pub fn list_runs(runs_dir: &Path) -> Result<Vec<RunFolder>> {
    let entries = std::fs::read_dir(runs_dir).map_err(|e| Error::io(runs_dir, e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let run = RunDir::new(&path);
        let events = run.events_file();
        if !path.is_dir() || !(events.exists() || run.recipe_file().exists()) {
            continue;
        }
        let modified = std::fs::metadata(&events)
            .or_else(|_| std::fs::metadata(&path))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        out.push(RunFolder {
            name: entry.file_name().to_string_lossy().into_owned(),
            has_report: run.has_report(),
            resumable: run.latest_checkpoint().is_some(),
            path,
            modified,
        });
    }
    out.sort_by(|a, b| b.modified.cmp(&a.modified).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// The device as a report names it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SavedDevice {
    pub backend: String,
    pub name: String,
}

/// Parameter counts as a report holds them.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct SavedParams {
    pub vision: usize,
    pub projector: usize,
    pub llm: usize,
}

impl SavedParams {
    pub fn total(&self) -> usize {
        self.vision + self.projector + self.llm
    }
}

/// A run's `report.json`, read back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SavedReport {
    pub run: String,
    pub device: SavedDevice,
    pub params: SavedParams,
    pub eval: EvalResult,
}

/// Reads `report.json` of a run folder; `None` when the run has none (yet).
pub(super) fn load_report(run_dir: &Path) -> Result<Option<SavedReport>> {
    let path = RunDir::new(run_dir).report_json();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Json {
            path,
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
}

/// One evaluated question with both models' answers.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    pub id: String,
    pub question: String,
    pub expected: String,
    pub student: String,
    pub student_correct: bool,
    /// The teacher's answer to the same record and question, when its run has a report.
    pub teacher: Option<String>,
    /// The image file, when it can be found.
    pub image: Option<PathBuf>,
}

/// The run folder of the recipe's teacher (`[teacher] from`: a run name or a checkpoint folder
/// `runs/<name>/checkpoints/<ck>`), when the recipe has one.
fn teacher_run(recipe: &Recipe, run_dir: &Path) -> Option<RunDir> {
    let from = recipe.teacher.as_ref()?.from.as_ref()?;
    let named = Runs::new(run_dir.parent()?).run(from);
    if named.has_report() {
        return Some(named);
    }
    // a checkpoint folder inside its run
    RunDir::of_checkpoint(Path::new(from)).filter(RunDir::has_report)
}

/// The evaluation samples of a run's `report` beside the teacher's answers. Images are looked
/// up under the recipe's data folder, then under the run folder (a copied run keeps working
/// when its images travel with it).
pub fn sample_rows(run_dir: &Path, report: &SavedReport) -> Result<Vec<SampleRow>> {
    let recipe = load_recipe(RunDir::new(run_dir).recipe_file()).ok();
    let teacher = match recipe.as_ref().and_then(|r| teacher_run(r, run_dir)) {
        Some(t) => t.load_report()?,
        None => None,
    };
    let data_dir = recipe.map(|r| r.data);
    Ok(report
        .eval
        .samples
        .iter()
        .map(|s| {
            let teacher_answer = teacher.as_ref().and_then(|t| {
                t.eval
                    .samples
                    .iter()
                    .find(|ts| ts.id == s.id && ts.question == s.question)
                    .map(|ts| ts.answer.clone())
            });
            let image = s.image.as_ref().and_then(|name| {
                let mut candidates = Vec::new();
                if let Some(d) = &data_dir {
                    candidates.push(d.join(name));
                }
                candidates.push(run_dir.join(name));
                candidates.into_iter().find(|p| p.is_file())
            });
            SampleRow {
                id: s.id.clone(),
                question: s.question.clone(),
                expected: s.expected.clone(),
                student: s.answer.clone(),
                student_correct: s.correct,
                teacher: teacher_answer,
                image,
            }
        })
        .collect())
}
