//! A run started from the app: the engine's pipeline on a background thread, its events sent
//! over a channel as they happen, and a stop flag the Stop button raises (the engine then
//! writes a checkpoint and returns, so the run resumes exactly where it stopped).

use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;

use condenser_engine::backend::DeviceInfo;
use condenser_engine::burn::prelude::Device;
use condenser_engine::config::Recipe;
use condenser_engine::train::{Event, Observer, RunOptions, StopFlag, run_recipe};

/// What the training thread sends.
#[derive(Debug)]
pub enum JobMsg {
    Event(Event),
    /// The run returned: `Ok(true)` finished, `Ok(false)` stopped early, `Err` the engine's
    /// error message.
    Done(Result<bool, String>),
}

/// One run training on a background thread.
pub struct Job {
    stop: StopFlag,
    rx: Receiver<JobMsg>,
    thread: Option<JoinHandle<()>>,
    /// Set once the thread has reported how the run ended.
    pub outcome: Option<Result<bool, String>>,
}

struct ChannelObserver {
    tx: Sender<JobMsg>,
    wake: Box<dyn Fn() + Send>,
}

impl Observer for ChannelObserver {
    fn on_event(&mut self, event: &Event) {
        // the app may be gone; the run still finishes and its events are in events.jsonl
        let _ = self.tx.send(JobMsg::Event(event.clone()));
        (self.wake)();
    }
}

impl Job {
    /// Starts `recipe` on `device`. `wake` is called after every message (the app's repaint
    /// request), from the training thread.
    pub fn start(
        recipe: Recipe,
        device: Device,
        info: DeviceInfo,
        mut opts: RunOptions,
        wake: impl Fn() + Send + Clone + 'static,
    ) -> Job {
        let stop = StopFlag::default();
        opts.stop = stop.clone();
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name(format!("run {}", recipe.name))
            .spawn(move || {
                let mut observer = ChannelObserver {
                    tx: tx.clone(),
                    wake: Box::new(wake.clone()),
                };
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_recipe(&recipe, &device, &info, &opts, &mut observer)
                }));
                let done = match result {
                    Ok(Ok(out)) => Ok(out.finished),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(panic) => Err(format!(
                        "the run stopped on an internal error: {}",
                        panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("(no message)")
                    )),
                };
                let _ = tx.send(JobMsg::Done(done));
                wake();
            })
            .expect("spawn a thread");
        Job {
            stop,
            rx,
            thread: Some(thread),
            outcome: None,
        }
    }

    /// Asks the run to stop after its current step (checkpoint written).
    pub fn request_stop(&self) {
        self.stop.request();
    }

    pub fn stopping(&self) -> bool {
        self.stop.requested() && self.outcome.is_none()
    }

    pub fn running(&self) -> bool {
        self.outcome.is_none()
    }

    /// Everything that arrived since the last call.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(JobMsg::Event(e)) => events.push(e),
                Ok(JobMsg::Done(d)) => {
                    self.outcome = Some(d);
                    if let Some(t) = self.thread.take() {
                        let _ = t.join();
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if self.outcome.is_none() {
                        self.outcome = Some(Err("the training thread ended without a word".into()));
                    }
                    break;
                }
            }
        }
        events
    }
}

impl Drop for Job {
    /// Closing the app stops a run it started cleanly rather than killing it mid-write.
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.request();
            let _ = t.join();
        }
    }
}
