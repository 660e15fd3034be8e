//! Progress drawn from engine events (stage, step, ETA, loss, tokens/s, MFU), in the form the
//! place it goes to can use:
//! - a terminal gets progress bars (on stderr) and a line per milestone;
//! - a log file or pipe gets plain lines: every milestone, and a step line every
//!   `--log-every` seconds (stage, step/steps, loss, tokens/s, ETA), so a long run is never
//!   silent in a log. `condenser demo > log` sends them to stdout, that is, into the log, while
//!   the terminal still shows the bars;
//! - `--log-format json` prints every event instead, one JSON object per line on stdout, with
//!   the run's name, for a program to read; results and tables then go to stderr.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use condenser_engine::train::{Event, Observer, Pace, PlanObserver, PlannedRun, RunOutcome};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// How progress is written: the CLI's global `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Bars on a terminal, plain lines in a log file or pipe.
    #[default]
    Text,
    /// Every run event as one JSON object per line on stdout.
    Json,
}

/// Seconds between step lines in a log, unless `--log-every` says otherwise.
const LOG_EVERY_S: f64 = 30.0;

/// The CLI's logging flags, accepted by every subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// `text`: progress bars on a terminal, progress lines when output goes to a file or pipe;
    /// `json`: every run event (stage start, step, checkpoint, evaluation, ...) as one JSON
    /// object per line on stdout, tagged with its run's name.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds between step lines when progress goes to a file or pipe (text format).
    #[arg(long, global = true, default_value_t = LOG_EVERY_S, value_parser = parse_seconds)]
    pub log_every: f64,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?}: expected a number of seconds, 0 or more")),
    }
}

/// Where plain lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sink {
    Stdout,
    Stderr,
}

/// The process's progress settings: the flags plus what stdout and stderr are.
#[derive(Debug)]
struct Style {
    format: LogFormat,
    every: Duration,
    /// Where plain lines go: stdout when it is a file or pipe (the log a user redirected it
    /// to), else stderr when that is, else nowhere (both are terminals: bars say it all).
    lines: Option<Sink>,
    /// stderr is a terminal: bars and milestones are drawn there.
    screen: bool,
}

static STYLE: OnceLock<Style> = OnceLock::new();

/// Sets the process's progress style; called once, before any run starts.
pub fn configure(args: &LogArgs) {
    let _ = STYLE.set(detect(args));
}

/// The style `args` ask for, given what stdout and stderr are now.
fn detect(args: &LogArgs) -> Style {
    style_for(
        args,
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
    )
}

fn style_for(args: &LogArgs, stdout_tty: bool, stderr_tty: bool) -> Style {
    let lines = if !stdout_tty {
        Some(Sink::Stdout)
    } else if !stderr_tty {
        Some(Sink::Stderr)
    } else {
        None
    };
    Style {
        format: args.log_format,
        every: Duration::from_secs_f64(args.log_every),
        lines,
        screen: stderr_tty,
    }
}

/// The configured style (the flags' defaults if nothing configured it).
fn style() -> &'static Style {
    STYLE.get_or_init(|| {
        detect(&LogArgs {
            log_format: LogFormat::Text,
            log_every: LOG_EVERY_S,
        })
    })
}

fn write_line(sink: Sink, line: &str) {
    // a closed pipe (`| head`) must not stop a training run
    let _ = match sink {
        Sink::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
        Sink::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
    };
}

/// Seconds between progress lines (`--log-every`).
pub fn log_every() -> f64 {
    style().every.as_secs_f64()
}

/// A milestone outside any run (a run reused, a run finished in a plan): drawn on the terminal
/// and written to the log, like a run's own milestones. Nothing in the JSON format.
pub fn milestone(line: &str) {
    say(None, None, line);
}

/// A text-format milestone: on the terminal (above `group`'s bars, or `bar`, when drawn) and in
/// the log. The JSON format's stdout holds events only, so it says nothing there.
fn say(group: Option<&MultiProgress>, bar: Option<&ProgressBar>, line: &str) {
    let s = style();
    if s.format == LogFormat::Json {
        return;
    }
    if s.screen {
        match (group, bar) {
            (Some(g), _) => {
                let _ = g.println(line);
            }
            (None, Some(b)) => b.println(line),
            (None, None) => write_line(Sink::Stderr, line),
        }
    }
    if let Some(sink) = s.lines {
        write_line(sink, line);
    }
}

/// A command's result (a table, a comparison): stdout, except in the JSON format, whose stdout
/// holds only events.
pub fn result(text: &str) {
    match style().format {
        LogFormat::Text => write_line(Sink::Stdout, text),
        LogFormat::Json => write_line(Sink::Stderr, text),
    }
}

/// `h:mm:ss` (or `m:ss` under an hour).
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// One JSON line: the event's own fields plus its run's name (`run_start` has it already).
fn json_line(run: &str, event: &Event) -> Option<String> {
    let mut value = serde_json::to_value(event).ok()?;
    if let Some(fields) = value.as_object_mut() {
        fields
            .entry("run")
            .or_insert_with(|| serde_json::Value::String(run.to_string()));
    }
    serde_json::to_string(&value).ok()
}

/// One run's progress: a bar per stage and a line per milestone. Runs trained side by side
/// share a [`MultiProgress`] so their bars and lines do not overwrite each other.
#[derive(Default)]
pub struct Bars {
    bar: Option<ProgressBar>,
    run: String,
    group: Option<MultiProgress>,
    /// When the last step line was written.
    last_line: Option<Instant>,
    /// The stage's step count, for step lines.
    steps: usize,
    /// The stage's name, for step lines.
    stage: String,
    /// The stage's recent pace, for the ETA of step lines.
    pace: Pace,
}

impl Bars {
    /// Bars drawn in `group`, beside other runs' bars.
    pub fn in_group(group: &MultiProgress) -> Self {
        Bars {
            group: Some(group.clone()),
            ..Bars::default()
        }
    }

    /// A milestone: on the terminal (above the bars) and in the log.
    fn say(&self, line: String) {
        say(self.group.as_ref(), self.bar.as_ref(), &line);
    }

    /// The step line of the text format, when one is due.
    fn step_line(&mut self, e: &Event) -> Option<String> {
        let Event::Step {
            step,
            global_step,
            loss,
            lr,
            tokens_per_s,
            mfu,
            elapsed_s,
            ..
        } = e
        else {
            return None;
        };
        let pace = self.pace.step(*global_step, *elapsed_s);
        let sink_open = style().lines.is_some();
        let due = self.last_line.is_none_or(|t| t.elapsed() >= style().every);
        if !sink_open || !(due || *step == self.steps) {
            return None;
        }
        self.last_line = Some(Instant::now());
        let eta = match pace {
            Some(p) if *step < self.steps => {
                format!(", ETA {}", clock(p * (self.steps - step) as f64))
            }
            _ => String::new(),
        };
        let mfu = mfu.map_or(String::new(), |m| format!(", MFU {:.1}%", 100.0 * m));
        Some(format!(
            "[{}] {} step {step}/{} ({:.0}%): loss {loss:.4}, lr {lr:.2e}, {tokens_per_s:.0} tok/s{mfu}, {} elapsed{eta}",
            self.run,
            self.stage,
            self.steps,
            100.0 * *step as f64 / self.steps.max(1) as f64,
            clock(*elapsed_s),
        ))
    }

    fn text(&mut self, e: &Event) {
        match e {
            Event::RunStart {
                run,
                device,
                resumed_from,
                ..
            } => {
                self.run = run.clone();
                self.pace.clear();
                match resumed_from {
                    Some(p) => self.say(format!("[{run}] resuming from {p} on {device}")),
                    None => self.say(format!("[{run}] starting on {device}")),
                }
            }
            Event::ModelBuilt {
                params,
                vision,
                projector,
                llm,
            } => {
                self.say(format!(
                    "[{}] model: {params} params (vision {vision}, projector {projector}, llm {llm})",
                    self.run
                ));
            }
            Event::StageStart {
                stage,
                name,
                steps,
                trainable,
                examples,
            } => {
                self.steps = *steps;
                self.stage = name.clone();
                self.last_line = None;
                self.pace.clear();
                self.say(format!(
                    "[{}] stage {} {name}: {steps} steps over {examples} examples, {trainable} trainable params",
                    self.run,
                    stage + 1
                ));
                if style().screen {
                    let bar = ProgressBar::new(*steps as u64);
                    let bar = match &self.group {
                        Some(g) => g.add(bar),
                        None => bar,
                    };
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta_precise} {msg}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(format!("[{}] stage {} {name}", self.run, stage + 1));
                    self.bar = Some(bar);
                }
            }
            Event::Step {
                step,
                loss,
                lr,
                tokens_per_s,
                mfu,
                ..
            } => {
                if let Some(line) = self.step_line(e)
                    && let Some(sink) = style().lines
                {
                    write_line(sink, &line);
                }
                if let Some(b) = &self.bar {
                    let mfu = mfu.map_or(String::new(), |m| format!(" MFU {:.1}%", 100.0 * m));
                    b.set_position(*step as u64);
                    b.set_message(format!(
                        "loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s{mfu}"
                    ));
                }
            }
            Event::StageEnd {
                name,
                mean_loss,
                seconds,
                ..
            } => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                self.say(format!(
                    "[{}] stage {name} done in {seconds:.1}s, mean loss {mean_loss:.4}",
                    self.run
                ));
            }
            Event::Eval {
                split,
                accuracy,
                questions,
            } => {
                self.say(format!(
                    "[{}] {split}: {:.1}% exact match over {questions} questions",
                    self.run,
                    100.0 * accuracy
                ));
            }
            Event::RunEnd { seconds } => {
                self.say(format!("[{}] finished in {seconds:.1}s", self.run))
            }
            Event::Checkpoint { .. } | Event::Relation { .. } => {}
            Event::Stopped { global_step } => {
                // said above the bar while it is still drawn, then the bar stays where it stopped
                self.say(format!(
                    "[{}] stopped at global step {global_step}, checkpoint written; --resume continues",
                    self.run
                ));
                if let Some(b) = self.bar.take() {
                    b.abandon();
                }
            }
        }
    }
}

impl Observer for Bars {
    fn on_event(&mut self, e: &Event) {
        match style().format {
            LogFormat::Text => self.text(e),
            LogFormat::Json => {
                if let Event::RunStart { run, .. } = e {
                    self.run = run.clone();
                }
                if let Some(json) = json_line(&self.run, e) {
                    write_line(Sink::Stdout, &json);
                }
            }
        }
    }
}

/// Runs trained side by side (`demo`, `ablate`): each run's bars in one group, so they do not
/// overwrite each other, and a milestone when a run is done.
pub struct PlanBars(MultiProgress);

impl PlanBars {
    pub fn new() -> Self {
        PlanBars(MultiProgress::new())
    }
}

impl PlanObserver for PlanBars {
    fn run_observer(&self, _: &PlannedRun) -> Box<dyn Observer + Send + '_> {
        Box::new(Bars::in_group(&self.0))
    }

    fn finished(
        &self,
        run: &PlannedRun,
        out: &RunOutcome,
        seconds: f64,
        done: usize,
        total: usize,
    ) {
        let accuracy = out
            .eval
            .as_ref()
            .map_or(String::new(), |e| format!(": {:.1}%", 100.0 * e.accuracy));
        let line = format!(
            "[{done}/{total}] {}{accuracy} in {}",
            run.id,
            clock(seconds)
        );
        say(Some(&self.0), None, &line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> LogArgs {
        LogArgs {
            log_format: LogFormat::Text,
            log_every: 30.0,
        }
    }

    #[test]
    fn lines_go_into_a_redirected_stdout() {
        // `condenser demo > log`: bars on the terminal, lines in the log
        let s = style_for(&args(), false, true);
        assert_eq!(s.lines, Some(Sink::Stdout));
        assert!(s.screen);
        // `> log 2>&1`: lines once, no bars
        let s = style_for(&args(), false, false);
        assert_eq!(s.lines, Some(Sink::Stdout));
        assert!(!s.screen);
        // `2> err.log`: lines in that file
        let s = style_for(&args(), true, false);
        assert_eq!(s.lines, Some(Sink::Stderr));
        // a terminal only: bars say it all
        let s = style_for(&args(), true, true);
        assert_eq!(s.lines, None);
    }

    #[test]
    fn clocks_read_as_minutes_or_hours() {
        assert_eq!(clock(0.0), "0:00");
        assert_eq!(clock(61.4), "1:01");
        assert_eq!(clock(3725.0), "1:02:05");
    }

    #[test]
    fn json_lines_carry_the_run_and_the_event_type() {
        let e = Event::Eval {
            split: "test".into(),
            accuracy: 0.5,
            questions: 10,
        };
        let json = json_line("r", &e).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["run"], "r");
        assert_eq!(v["type"], "eval");
        assert_eq!(v["questions"], 10);
        // a run's first event names it itself: once
        let start = Event::RunStart {
            run: "r".into(),
            device: "cpu".into(),
            resumed_from: None,
            peak_flops: None,
        };
        let json = json_line("r", &start).unwrap();
        assert_eq!(json.matches("\"run\"").count(), 1, "{json}");
    }
}
