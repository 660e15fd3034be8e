//! Progress bars drawn from engine events (stage, step, ETA, loss, tokens/s, MFU). When stderr
//! is not a terminal (a log file, CI), bars are not drawn: milestones are printed as lines, and
//! a step line every [`LOG_EVERY`], so a long run is never silent in a log.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use condenser_engine::train::{Event, Observer};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// One run's progress: a bar per stage and a line per milestone. Runs trained side by side
/// share a [`MultiProgress`] so their bars and lines do not overwrite each other.
#[derive(Default)]
pub struct Bars {
    bar: Option<ProgressBar>,
    run: String,
    group: Option<MultiProgress>,
    /// When the last step line went to a non-terminal stderr.
    last_line: Option<Instant>,
    /// The stage's step count, for step lines.
    steps: usize,
    /// The stage's name, for step lines.
    stage: String,
}

/// How often a step line is printed when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(30);

impl Bars {
    /// Bars drawn in `group`, beside other runs' bars.
    pub fn in_group(group: &MultiProgress) -> Self {
        Bars {
            group: Some(group.clone()),
            ..Bars::default()
        }
    }

    fn say(&self, line: String) {
        match &self.group {
            // indicatif draws nothing, lines included, where stderr is not a terminal
            Some(g) if std::io::stderr().is_terminal() => {
                let _ = g.println(line);
            }
            _ => eprintln!("{line}"),
        }
    }
}

impl Observer for Bars {
    fn on_event(&mut self, e: &Event) {
        match e {
            Event::RunStart {
                run,
                device,
                resumed_from,
                ..
            } => {
                self.run = run.clone();
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
                self.steps = *steps;
                self.stage = name.clone();
                self.last_line = None;
                self.say(format!(
                    "[{}] stage {} {name}: {steps} steps over {examples} examples, {trainable} trainable params",
                    self.run,
                    stage + 1
                ));
                self.bar = Some(bar);
            }
            Event::Step {
                step,
                loss,
                lr,
                tokens_per_s,
                mfu,
                elapsed_s,
                ..
            } => {
                let mfu = mfu.map_or(String::new(), |m| format!(" MFU {:.1}%", 100.0 * m));
                let message = format!("loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s{mfu}");
                if !std::io::stderr().is_terminal() {
                    let due = self.last_line.is_none_or(|t| t.elapsed() >= LOG_EVERY);
                    if due || *step == self.steps {
                        self.last_line = Some(Instant::now());
                        self.say(format!(
                            "[{}] {} step {step}/{} at {elapsed_s:.0}s: {message}",
                            self.run, self.stage, self.steps
                        ));
                    }
                }
                if let Some(b) = &self.bar {
                    b.set_position(*step as u64);
                    b.set_message(message);
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
                if let Some(b) = self.bar.take() {
                    b.abandon();
                }
                self.say(format!(
                    "[{}] stopped at global step {global_step}, checkpoint written; --resume continues",
                    self.run
                ));
            }
        }
    }
}
