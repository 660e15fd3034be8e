//! `condenser demo`: the main job on the embedded Shapes world. Generates the world (unless
//! already there with the same settings), pre-trains the shared vision encoder, trains the
//! teacher, the baseline student and the LLaVA-KD student (distilled from that teacher),
//! evaluates all three and prints the comparison, which is also written to
//! `<runs>/comparison.md`. Finished runs are reused and interrupted runs resume,
//! so re-running the command continues where it stopped.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use condenser_engine::config::Recipe;
use condenser_engine::data::shapes::{generate, is_generated};
use condenser_engine::eval::{EvalResult, report};
use condenser_engine::train::{RunOptions, run_recipe};
use indicatif::MultiProgress;

use super::progress::Bars;
use super::recipes;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the Shapes world is written.
    #[arg(long, default_value = "data/shapes")]
    pub data: PathBuf,
    /// Parent folder of the run folders.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Start every run over instead of reusing finished ones.
    #[arg(long)]
    pub fresh: bool,
    #[command(flatten)]
    pub world: super::shapes::WorldArgs,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let world = args.world.config();
    if args.fresh || !is_generated(&args.data, &world) {
        let s = generate(&args.data, &world)?;
        eprintln!(
            "generated the Shapes world in {}: {} images, {} test questions",
            s.root.display(),
            s.images,
            s.test_questions
        );
    }
    let (device, info) = args.device.device()?;
    let opts = |eval: bool| RunOptions {
        runs_dir: args.runs_dir.clone(),
        resume: true,
        overwrite: args.fresh,
        eval,
        ..RunOptions::default()
    };
    let load = |source| -> anyhow::Result<Recipe> {
        let mut recipe = recipes::load(source)?;
        recipe.data = args.data.clone();
        Ok(recipe)
    };
    // run_recipe resumes an interrupted run, only re-evaluates a finished one, and refuses a
    // run folder made by a different recipe (then --fresh starts over)
    let vision = load(recipes::VISION)?;
    run_recipe(&vision, &device, &info, &opts(false), &mut Bars::default())?;
    // the baseline student needs only the encoder, so it trains beside the teacher (a CPU
    // backend run of these small models keeps about one core busy); the KD student needs the
    // finished teacher and starts right after its training, while the teacher's evaluation
    // runs beside it (run_recipe on a finished run only evaluates)
    let teacher = load(recipes::TEACHER)?;
    let student = load(recipes::STUDENT)?;
    let kd = load(recipes::KD)?;
    let group = MultiProgress::new();
    let (t, s_out, kd_out) = std::thread::scope(|s| {
        let side = {
            let (device, info, group, student) = (&device, &info, &group, &student);
            let opts = opts(true);
            s.spawn(move || run_recipe(student, device, info, &opts, &mut Bars::in_group(group)))
        };
        let trained = run_recipe(
            &teacher,
            &device,
            &info,
            &opts(false),
            &mut Bars::in_group(&group),
        );
        let (t, kd_out) = match trained {
            Ok(_) => {
                let teacher_eval = {
                    let (device, info, group, teacher) = (&device, &info, &group, &teacher);
                    // evaluate the run just trained: never start it over, even with --fresh
                    let opts = RunOptions {
                        overwrite: false,
                        ..opts(true)
                    };
                    s.spawn(move || {
                        run_recipe(teacher, device, info, &opts, &mut Bars::in_group(group))
                    })
                };
                let kd_out = run_recipe(
                    &kd,
                    &device,
                    &info,
                    &opts(true),
                    &mut Bars::in_group(&group),
                );
                (
                    teacher_eval.join().expect("teacher evaluation thread"),
                    Some(kd_out),
                )
            }
            Err(e) => (Err(e), None),
        };
        (t, side.join().expect("student thread"), kd_out)
    });
    let mut results: Vec<(String, EvalResult)> =
        vec![(teacher.name.clone(), t?.eval.context("teacher evaluated")?)];
    results.push((
        student.name.clone(),
        s_out?.eval.context("student evaluated")?,
    ));
    results.push((
        kd.name.clone(),
        kd_out
            .expect("the KD student runs once the teacher finished")?
            .eval
            .context("KD student evaluated")?,
    ));
    let table: Vec<(&str, &EvalResult)> = results.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let md = format!(
        "# Shapes world: teacher, baseline student, LLaVA-KD student\n\nGenerated by `condenser demo` on {} ({}).\n\n{}",
        info.backend,
        info.name,
        report::comparison(&table)
    );
    condenser_engine::error::write_atomic(args.runs_dir.join("comparison.md"), md.as_bytes())?;
    println!("{md}");
    println!(
        "total time: {:.1} min (comparison: {})",
        started.elapsed().as_secs_f64() / 60.0,
        args.runs_dir.join("comparison.md").display()
    );
    Ok(())
}
