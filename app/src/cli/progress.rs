//! Progress bars drawn from engine events (stage, step, ETA, loss, tokens/s).

use condenser_engine::train::{Event, Observer};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// One run's progress: a bar per stage and a line per milestone. Runs trained side by side
/// share a [`MultiProgress`] so their bars and lines do not overwrite each other.
#[derive(Default)]
pub struct Bars {
    bar: Option<ProgressBar>,
    run: String,
    group: Option<MultiProgress>,
}

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
            Some(g) => {
                let _ = g.println(line);
            }
            None => eprintln!("{line}"),
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
                ..
            } => {
                if let Some(b) = &self.bar {
                    b.set_position(*step as u64);
                    b.set_message(format!(
                        "loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"
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
