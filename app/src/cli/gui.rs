//! `condenser gui`: the desktop app (run list, pipeline, losses, experts, relations, samples,
//! compare). Runs started in the window train on a background thread; runs started from the CLI
//! are followed live by tailing their events.jsonl.

use std::path::PathBuf;
use std::time::Duration;

use condenser_app::gui::{GuiOptions, Tab, launch};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Parent folder of run folders.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Open this run at start (a name under --runs-dir, or a run folder).
    #[arg(long)]
    pub open: Option<PathBuf>,
    /// Compare the open run with this one (opens the Compare tab).
    #[arg(long, requires = "open")]
    pub compare: Option<PathBuf>,
    /// Start training this recipe at once (resumes its run if it exists).
    #[arg(long, conflicts_with = "open")]
    pub start: Option<PathBuf>,
    /// The tab shown first (default: pipeline, or compare with --compare).
    #[arg(long, value_enum)]
    pub tab: Option<Tab>,
    /// Show frame times (build and interval) in a debug overlay.
    #[arg(long)]
    pub overlay: bool,
    /// Close after this many seconds and print the frame-time summary (scripts, screenshots).
    #[arg(long)]
    pub exit_after: Option<f64>,
    /// Window size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x800", value_parser = parse_size)]
    pub size: [f32; 2],
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

fn parse_size(s: &str) -> Result<[f32; 2], String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT, e.g. 1280x800"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<f32>()
            .ok()
            .filter(|x| *x >= 200.0 && *x <= 10000.0)
            .ok_or_else(|| format!("{s:?}: each side must be a number of pixels from 200 to 10000"))
    };
    Ok([parse(w)?, parse(h)?])
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if let Some(s) = args.exit_after {
        anyhow::ensure!(
            s.is_finite() && s > 0.0,
            "--exit-after must be a positive number of seconds"
        );
    }
    let device = args.device.device()?;
    launch(GuiOptions {
        runs_dir: args.runs_dir,
        open: args.open,
        compare: args.compare,
        start: args.start,
        tab: args.tab,
        device: Some(device),
        overlay: args.overlay,
        exit_after: args.exit_after.map(Duration::from_secs_f64),
        size: args.size,
    })
}
