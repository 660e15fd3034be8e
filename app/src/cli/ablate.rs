//! `condenser ablate <set>`: trains every row of an ablation set (assets/ablations/<set>.toml)
//! with several seeds, evaluates each run on the held-out split, and writes the generated table
//! (mean ± std per column, headline against the baseline) to the set's output file plus JSON.
//! Finished runs with the same resolved recipe are reused, so an interrupted ablation continues.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use condenser_engine::config::{Recipe, load_ablation, run_name};
use condenser_engine::data::shapes::{generate, is_generated};
use condenser_engine::eval::EvalResult;
use condenser_engine::eval::ablation::{AblationTable, RowStats};
use condenser_engine::eval::cost::RunCost;
use condenser_engine::eval::provenance::Provenance;
use condenser_engine::run::Runs;
use condenser_engine::train::{PlannedRun, RunOptions, run_plan, run_recipe};

use super::progress::{self, Bars, PlanBars};

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
fn finished(runs: &Runs, recipe: &Recipe) -> Option<EvalResult> {
    runs.run(&recipe.name).finished_eval(&recipe.to_toml())
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
    let runs = Runs::new(&args.runs_dir);

    // every recipe is built and validated before anything trains
    let mut before = Vec::new();
    for p in &set.before {
        let mut r = runs.load_recipe(args.root.join(p))?;
        r.data = data.clone();
        before.push(r);
    }
    let mut planned: Vec<(usize, Recipe)> = Vec::new();
    for (i, row) in set.rows.iter().enumerate() {
        let seeds = if row.seeded { args.seeds } else { 1 };
        for k in 0..seeds {
            let mut r =
                row.recipe_with(&set.name, &args.root, k, &|t, p| runs.parse_recipe(t, p))?;
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
        if !runs.run(&r.name).is_finished() {
            run_recipe(r, &device, &info, &opts(false), &mut Bars::default())?;
        }
    }
    let mut results: Vec<Vec<(String, EvalResult)>> = vec![Vec::new(); set.rows.len()];
    let mut queue = VecDeque::new();
    for (i, r) in planned {
        if let Some(e) = finished(&runs, &r) {
            progress::milestone(&format!(
                "[{}] finished earlier: {:.1}%",
                r.name,
                100.0 * e.accuracy
            ));
            results[i].push((r.name.clone(), e));
        } else if !set.rows[i].seeded {
            let out = run_recipe(&r, &device, &info, &opts(true), &mut Bars::default())?;
            results[i].push((r.name.clone(), out.eval.context("evaluated")?));
        } else {
            queue.push_back((i, r));
        }
    }
    let total = queue.len();
    progress::milestone(&format!("{total} runs to train, {jobs} at a time"));
    // a row that starts from another row's run (`@row:`) waits until that run has finished
    let rows_of: std::collections::HashMap<String, usize> =
        queue.iter().map(|(i, r)| (r.name.clone(), *i)).collect();
    let plan = queue
        .into_iter()
        .map(|(i, r)| {
            let k = seed_index(&r.name);
            PlannedRun {
                id: r.name.clone(),
                after: set.rows[i]
                    .depends_on()
                    .iter()
                    .map(|dep| run_name(&set.name, dep, k))
                    .collect(),
                recipe: r,
                opts: opts(true),
            }
        })
        .collect();
    let outcomes = run_plan(plan, jobs, &device, &info, &PlanBars::new())?;
    for (name, out) in outcomes {
        let e = out.eval.with_context(|| format!("{name} evaluated"))?;
        results[rows_of[&name]].push((name, e));
    }
    for r in &mut results {
        r.sort_by(|a, b| a.0.cmp(&b.0));
    }

    let rows: Vec<RowStats> = set
        .rows
        .iter()
        .zip(&results)
        .map(|(row, res)| {
            let costs = res
                .iter()
                .map(|(name, _)| RunCost::of_events(&runs.run(name).events_file()))
                .collect::<condenser_engine::Result<Vec<_>>>()?;
            Ok(RowStats::new(&row.label, &row.group, res).with_cost(&costs))
        })
        .collect::<anyhow::Result<_>>()?;
    let command = format!("condenser ablate {} --seeds {}", set.name, args.seeds);
    let threads = condenser_engine::backend::cpu_threads();
    let device_line = format!(
        "{} ({}), {threads} CPU threads, {} runs at a time",
        info.backend, info.name, jobs
    );
    // every file the rows were built from: the set (its patches) and the recipes it names
    let set_rel = set_path
        .strip_prefix(&args.root)
        .unwrap_or(&set_path)
        .to_path_buf();
    let mut files = vec![set_rel];
    files.extend(set.before.iter().cloned());
    for row in &set.rows {
        if !files.contains(&row.recipe) {
            files.push(row.recipe.clone());
        }
    }
    let provenance = Provenance::collect(&args.root, &data, &files)?;
    let table = AblationTable::new(
        &set.title,
        &set.description,
        &command,
        &device_line,
        provenance,
        rows,
        &set.method,
        &set.baseline,
        set.teacher.as_deref(),
    );
    let md = table.markdown();
    let out = args.root.join(&set.output);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_string_pretty(&table)?;
    condenser_engine::error::write_atomic(&out, md.as_bytes())?;
    condenser_engine::error::write_atomic(out.with_extension("json"), json.as_bytes())?;
    progress::result(&md);
    progress::result(&format!(
        "wrote {} in {:.1} min",
        out.display(),
        started.elapsed().as_secs_f64() / 60.0
    ));
    Ok(())
}
