//! `condenser ablate <set>`: trains every row of an ablation set (assets/ablations/<set>.toml)
//! with several seeds, evaluates each run on the held-out split, and writes the generated table
//! (mean ± std per column, headline against the baseline) to the set's output file plus JSON.
//! Finished runs with the same resolved recipe are reused, so an interrupted ablation continues.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use condenser_engine::config::{Recipe, load_ablation, load_recipe, run_name};
use condenser_engine::data::shapes::{generate, is_generated};
use condenser_engine::eval::EvalResult;
use condenser_engine::eval::ablation::{Headline, RowStats, columns, markdown};
use condenser_engine::train::{RunOptions, Silent, run_recipe};

use super::progress::Bars;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Ablation set: a name in assets/ablations/ (e.g. `kd`) or a path to a set file.
    pub set: String,
    /// Seeds per seeded row (seed k trains with the recipe's seed + 1000 k).
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// Runs trained at the same time, each on its own thread (default: one per CPU core; a CPU
    /// backend run of these small models keeps about one core busy).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// The data folder, overriding the set's `data` (default: the Shapes world in data/shapes,
    /// generated with the default settings when missing).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Parent folder of the run folders.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Repository root: set files, recipes and the output are resolved from here.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

/// A finished run's evaluation, when its folder was made by exactly this recipe.
fn finished(runs_dir: &Path, recipe: &Recipe) -> Option<EvalResult> {
    let dir = runs_dir.join(&recipe.name);
    let saved = std::fs::read_to_string(dir.join("recipe.toml")).ok()?;
    if saved != recipe.to_toml() {
        return None;
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).ok()?).ok()?;
    serde_json::from_value(report.get("eval")?.clone()).ok()
}

/// The seed index `k` of a seeded row's run name (`<set>-<row>-s<k>`).
fn seed_index(name: &str) -> usize {
    name.rsplit_once("-s")
        .and_then(|(_, k)| k.parse().ok())
        .unwrap_or(0)
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let set_path = if args.set.ends_with(".toml") {
        PathBuf::from(&args.set)
    } else {
        args.root
            .join("assets/ablations")
            .join(format!("{}.toml", args.set))
    };
    let set = load_ablation(&set_path)?;
    anyhow::ensure!(args.seeds >= 1, "--seeds must be at least 1");
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(jobs >= 1, "--jobs must be at least 1");
    let data = match (&args.data, &set.data) {
        (Some(d), _) => d.clone(),
        // (a relative root of "." is left off, so run folders made by `condenser run` with the
        // recipe's own data path count as finished)
        (None, Some(d)) if args.root == Path::new(".") => d.clone(),
        (None, Some(d)) => args.root.join(d),
        (None, None) => PathBuf::from("data/shapes"),
    };
    if set.data.is_none() {
        let world = condenser_engine::data::shapes::WorldConfig::default();
        if !is_generated(&data, &world) {
            generate(&data, &world)?;
        }
    } else if !data.join("train.json").exists() {
        anyhow::bail!(
            "{}: no train.json; the set {:?} trains on a public data set: fetch and convert it \
             first (for easy-VQA: scripts/fetch-easy-vqa.sh)",
            data.display(),
            set.name
        );
    }
    let (device, info) = args.device.device()?;

    // every recipe is built and validated before anything trains
    let mut before = Vec::new();
    for p in &set.before {
        let mut r = load_recipe(args.root.join(p))?;
        r.data = data.clone();
        before.push(r);
    }
    let mut planned: Vec<(usize, Recipe)> = Vec::new();
    for (i, row) in set.rows.iter().enumerate() {
        let seeds = if row.seeded { args.seeds } else { 1 };
        for k in 0..seeds {
            let mut r = row.recipe(&set.name, &args.root, k)?;
            r.data = data.clone();
            planned.push((i, r));
        }
    }
    let opts = |eval: bool| RunOptions {
        runs_dir: args.runs_dir.clone(),
        resume: true,
        eval,
        ..RunOptions::default()
    };
    // prerequisites (vision encoder) and unseeded rows (the teacher) first, one at a time
    for r in &before {
        if !args
            .runs_dir
            .join(&r.name)
            .join("checkpoints/final")
            .exists()
        {
            run_recipe(r, &device, &info, &opts(false), &mut Bars::default())?;
        }
    }
    let mut results: Vec<Vec<(String, EvalResult)>> = vec![Vec::new(); set.rows.len()];
    let mut queue = VecDeque::new();
    for (i, r) in planned {
        if let Some(e) = finished(&args.runs_dir, &r) {
            eprintln!("[{}] finished earlier: {:.1}%", r.name, 100.0 * e.accuracy);
            results[i].push((r.name.clone(), e));
        } else if !set.rows[i].seeded {
            let out = run_recipe(&r, &device, &info, &opts(true), &mut Bars::default())?;
            results[i].push((r.name.clone(), out.eval.context("evaluated")?));
        } else {
            queue.push_back((i, r));
        }
    }
    let total = queue.len();
    eprintln!("{total} runs to train, {} at a time", jobs);
    // a row that starts from another row's run (`@row:`) waits until that run has finished
    let finished_lock: Mutex<HashSet<String>> = Mutex::new(
        results
            .iter()
            .flatten()
            .map(|(name, _)| name.clone())
            .collect(),
    );
    let queue = Mutex::new(queue);
    let done = Mutex::new(Vec::new());
    let failed = std::sync::atomic::AtomicBool::new(false);
    let ready = |r: &Recipe, finished: &HashSet<String>, i: usize| {
        let k = seed_index(&r.name);
        set.rows[i]
            .depends_on()
            .iter()
            .all(|dep| finished.contains(&run_name(&set.name, dep, k)))
    };
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..jobs.min(total.max(1)))
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        if failed.load(std::sync::atomic::Ordering::Relaxed) {
                            return Ok(());
                        }
                        let next = {
                            let mut q = queue.lock().unwrap();
                            if q.is_empty() {
                                return Ok(());
                            }
                            let fin = finished_lock.lock().unwrap();
                            let pos = q.iter().position(|(i, r)| ready(r, &fin, *i));
                            pos.and_then(|p| q.remove(p))
                        };
                        let Some((i, r)) = next else {
                            // everything left waits on runs still training
                            std::thread::sleep(std::time::Duration::from_millis(500));
                            continue;
                        };
                        let t0 = Instant::now();
                        let out = run_recipe(&r, &device, &info, &opts(true), &mut Silent)
                            .with_context(|| format!("run {}", r.name));
                        let out = match out {
                            Ok(o) => o,
                            Err(e) => {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                                return Err(e);
                            }
                        };
                        let e = out.eval.context("evaluated")?;
                        finished_lock.lock().unwrap().insert(r.name.clone());
                        let mut d = done.lock().unwrap();
                        d.push((i, r.name.clone(), e.clone()));
                        eprintln!(
                            "[{}/{total}] {}: {:.1}% in {:.0} s",
                            d.len(),
                            r.name,
                            100.0 * e.accuracy,
                            t0.elapsed().as_secs_f64()
                        );
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker thread")?;
        }
        Ok(())
    })?;
    for (i, name, e) in done.into_inner().unwrap() {
        results[i].push((name, e));
    }
    for r in &mut results {
        r.sort_by(|a, b| a.0.cmp(&b.0));
    }

    let rows: Vec<RowStats> = set
        .rows
        .iter()
        .zip(&results)
        .map(|(row, res)| RowStats::new(&row.label, &row.group, res))
        .collect();
    let headline = Headline::new(&rows, &set.method, &set.baseline, set.teacher.as_deref());
    let command = format!("condenser ablate {} --seeds {}", set.name, args.seeds);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let device_line = format!(
        "{} ({}), {threads} CPU threads, {} runs at a time",
        info.backend, info.name, jobs
    );
    let md = markdown(
        &set.title,
        &set.description,
        &command,
        &device_line,
        &data.display().to_string(),
        &rows,
        &headline,
    );
    let out = args.root.join(&set.output);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::json!({
        "command": command,
        "device": device_line,
        "columns": columns(),
        "rows": rows,
        "headline": headline,
    });
    condenser_engine::error::write_atomic(&out, md.as_bytes())?;
    condenser_engine::error::write_atomic(
        out.with_extension("json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    println!("{md}");
    println!(
        "wrote {} in {:.1} min",
        out.display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}
