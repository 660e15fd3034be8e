//! One opened run: where its events come from (a tailed `events.jsonl` or a job's channel),
//! the engine's [`RunHistory`] folded from them, its report and samples once it has them, and
//! the warnings met while reading it. Panels only read this.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use condenser_engine::run::{RunDir, SampleRow, SavedReport, sample_rows};
use condenser_engine::train::{Event, EventTail, RunHistory, RunStatus};

use super::job::Job;

/// How often a tailed file is looked at.
const TAIL_EVERY: Duration = Duration::from_millis(250);
/// An unfinished last line this old is a truncated one (the engine writes a line in one go).
const PARTIAL_LINE_STALE: Duration = Duration::from_secs(5);

/// Where a run's events come from.
pub enum Feed {
    /// A run started elsewhere (or finished): its `events.jsonl`.
    Tail(EventTail),
    /// A run this app started.
    Job(Job),
    /// Fixed events (tests and previews).
    Fixed,
}

pub struct OpenRun {
    pub name: String,
    pub dir: PathBuf,
    pub history: RunHistory,
    pub report: Option<SavedReport>,
    pub samples: Vec<SampleRow>,
    /// The stage names of the run's saved recipe, so stages that have not started yet show too.
    pub planned_stages: Vec<String>,
    /// Problems met while reading the run (skipped event lines, an unreadable report), shown
    /// in the UI; none of them stops the run from opening.
    pub warnings: Vec<String>,
    pub feed: Feed,
    last_poll: Option<Instant>,
    /// When the last event arrived (for "no event for N s" on runs followed from disk).
    pub last_event: Option<Instant>,
    report_checked: bool,
    partial_since: Option<Instant>,
}

impl OpenRun {
    fn new(dir: &Path, feed: Feed) -> OpenRun {
        OpenRun {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string()),
            dir: dir.to_path_buf(),
            history: RunHistory::default(),
            report: None,
            samples: Vec::new(),
            planned_stages: condenser_engine::config::load_recipe(RunDir::new(dir).recipe_file())
                .map(|r| r.stages.iter().map(|s| s.name.clone()).collect())
                .unwrap_or_default(),
            warnings: Vec::new(),
            feed,
            last_poll: None,
            last_event: None,
            report_checked: false,
            partial_since: None,
        }
    }

    /// Opens a run folder and reads what it holds so far. A folder that is missing or holds no
    /// run is an error message for the UI.
    pub fn open(dir: &Path) -> Result<OpenRun, String> {
        if !dir.is_dir() {
            return Err(format!("{}: no such run folder", dir.display()));
        }
        let run_dir = RunDir::new(dir);
        let events = run_dir.events_file();
        if !events.exists() && !run_dir.recipe_file().exists() {
            return Err(format!(
                "{}: not a run folder (no events.jsonl or recipe.toml)",
                dir.display()
            ));
        }
        let mut run = OpenRun::new(dir, Feed::Tail(EventTail::new(events)));
        run.refresh();
        if run.history.status != RunStatus::Running {
            run.finish_tail();
        }
        Ok(run)
    }

    /// A run this app is training.
    pub fn from_job(dir: &Path, job: Job) -> OpenRun {
        OpenRun::new(dir, Feed::Job(job))
    }

    /// A run shown from given events (previews and tests); the report and samples are read
    /// from `dir` if it holds them.
    pub fn from_events(dir: &Path, events: &[Event]) -> OpenRun {
        let mut run = OpenRun::new(dir, Feed::Fixed);
        for e in events {
            run.history.apply(e);
        }
        run.load_report();
        run
    }

    pub fn job(&self) -> Option<&Job> {
        match &self.feed {
            Feed::Job(j) => Some(j),
            _ => None,
        }
    }

    /// True while this app trains the run.
    pub fn training_here(&self) -> bool {
        self.job().is_some_and(Job::running)
    }

    /// Takes in whatever arrived; true when something changed.
    pub fn refresh(&mut self) -> bool {
        let now = Instant::now();
        // an unfinished line left alone too long: read as truncated once the feed is released
        let mut stale_line = false;
        let events = match &mut self.feed {
            Feed::Fixed => return false,
            Feed::Job(job) => {
                let had = job.outcome.is_some();
                let ev = job.drain();
                if !had && let Some(Err(e)) = &job.outcome {
                    self.warnings.push(format!("the run failed: {e}"));
                }
                ev
            }
            Feed::Tail(tail) => {
                if self.last_poll.is_some_and(|t| now - t < TAIL_EVERY) {
                    return false;
                }
                self.last_poll = Some(now);
                match tail.poll() {
                    Ok(p) => {
                        if p.reset {
                            self.history = RunHistory::default();
                            self.report = None;
                            self.samples.clear();
                            self.report_checked = false;
                            self.warnings
                                .push("events.jsonl was replaced: reading it again".into());
                        }
                        for b in p.bad {
                            self.warnings.push(format!("events.jsonl {b}: skipped"));
                        }
                        if !tail.has_pending() || !p.events.is_empty() {
                            self.partial_since = None;
                        } else if self.partial_since.get_or_insert(now).elapsed()
                            >= PARTIAL_LINE_STALE
                        {
                            self.partial_since = None;
                            stale_line = true;
                        }
                        p.events
                    }
                    Err(e) => {
                        self.warnings.push(e.to_string());
                        // do not repeat the same error every poll
                        self.feed = Feed::Fixed;
                        Vec::new()
                    }
                }
            }
        };
        let changed = !events.is_empty();
        if changed {
            self.last_event = Some(now);
        }
        for e in &events {
            self.history.apply(e);
        }
        if stale_line {
            self.finish_tail();
        }
        let ended = matches!(
            self.history.status,
            RunStatus::Finished | RunStatus::Stopped
        );
        if ended && !self.report_checked {
            self.load_report();
        }
        changed
    }

    /// The run's writer is gone: an unfinished last line is reported, or used if complete.
    fn finish_tail(&mut self) {
        if let Feed::Tail(tail) = &mut self.feed {
            match tail.finish() {
                Ok(Some(e)) => self.history.apply(&e),
                Ok(None) => {}
                Err(b) => self
                    .warnings
                    .push(format!("events.jsonl {b}: skipped (truncated?)")),
            }
        }
        if !self.report_checked {
            self.load_report();
        }
    }

    fn load_report(&mut self) {
        self.report_checked = true;
        match RunDir::new(&self.dir).load_report() {
            Ok(r) => self.report = r,
            Err(e) => self.warnings.push(format!("report: {e}")),
        }
        if let Some(report) = &self.report {
            match sample_rows(&self.dir, report) {
                Ok(s) => self.samples = s,
                Err(e) => self.warnings.push(format!("samples: {e}")),
            }
        }
    }

    /// Seconds since the last event, for runs followed from disk that seem to be running.
    pub fn quiet_for(&self) -> Option<f64> {
        match self.feed {
            Feed::Tail(_) if self.history.status == RunStatus::Running => {
                self.last_event.map(|t| t.elapsed().as_secs_f64())
            }
            _ => None,
        }
    }
}
