//! The one data flow of the design, as a short driver: recipe -> inputs checked -> run folder
//! opened (fresh or resumed) -> student built -> each stage (`stage.rs`: data -> objective ->
//! optimiser step -> events, checkpoints) -> final checkpoint -> evaluation -> report. A memory
//! plan (`memory_plan.rs`) refuses a stage that cannot fit the device before anything starts.
//!
//! Every input (recipe, tokenizer, data, images, initial checkpoints) is checked before the run
//! folder is touched, so bad input never leaves a folder that could pass for a result.

use burn::prelude::*;

use super::events::{Event, Observer};
use super::inputs::{Init, Inputs};
use super::options::{RunOptions, RunOutcome};
use super::record::Recorder;
use super::stage::{Flow, RunContext, run_stage};
use crate::Result;
use crate::backend::DeviceInfo;
use crate::backend::kernels::Kernels;
use crate::config::Recipe;
use crate::data::Dataset;
use crate::eval::{self, EvalResult};
use crate::model::Mllm;
use crate::run::RunDir;

/// Runs (or resumes) a recipe.
pub fn run_recipe(
    recipe: &Recipe,
    device: &Device,
    info: &DeviceInfo,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<RunOutcome> {
    let runs = opts.runs();
    let t0 = std::time::Instant::now();
    let inputs = Inputs::load(recipe, &runs)?;
    log::info!(
        "inputs: {} records, {} image files checked, in {:.1} s",
        inputs.data.values().map(|d| d.len()).sum::<usize>(),
        inputs.data.values().map(|d| d.num_images()).sum::<usize>(),
        t0.elapsed().as_secs_f64()
    );
    // the one decision of where the fused kernels run, for the student and the teacher alike
    let kernels = Kernels::resolve(recipe.kernels, device);
    // refuse, before anything is loaded onto the device or written, a stage that cannot fit
    let plan = super::memory_plan::plan_inputs(recipe, &runs, &inputs, kernels, device, info)?;
    plan.check()?;
    let t0 = std::time::Instant::now();
    let mut init = Init::resolve(recipe, &runs, &inputs, kernels, device)?;
    log::info!(
        "starting checkpoints resolved in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let run = runs.run(&recipe.name);
    let resumed_from = run.begin(
        &recipe.to_toml(),
        &inputs.tokenizer.path,
        opts.resume,
        opts.overwrite,
    )?;
    let mut rec = Recorder::open(&run, observer)?;
    let peak_flops = crate::backend::peak::matmul_peak_flops(device, info);
    rec.emit(Event::RunStart {
        run: recipe.name.clone(),
        device: format!("{} ({})", info.backend, info.name),
        resumed_from: resumed_from.as_ref().map(|p| p.display().to_string()),
        peak_flops: Some(peak_flops),
    })?;
    // a cache the run builds itself: the teacher runs over the data once, then leaves memory
    init.build_teacher_cache(recipe, &inputs, &run.teacher_cache_dir(), device)?;
    let ad = device.clone().autodiff();
    let t0 = std::time::Instant::now();
    let (mut model, mut state) =
        init.student(recipe, &inputs, resumed_from.as_deref(), &mut rec, &ad)?;
    log::info!("student built in {:.1} s", t0.elapsed().as_secs_f64());
    model.set_kernels(kernels);

    let workers = (opts.data_parallel > 1)
        .then(|| super::data_parallel::Workers::on(&ad, opts.data_parallel));
    let ctx = RunContext {
        recipe,
        opts,
        inputs: &inputs,
        teacher: init.teacher.as_ref(),
        teacher_cache: init.teacher_cache.as_ref(),
        workers: workers.as_ref(),
        kernels,
        device: &ad,
        resumed_from: resumed_from.as_deref(),
        peak_flops,
    };
    let first_stage = state.stage + usize::from(state.stage_done);
    for si in first_stage..recipe.stages.len() {
        let (trained, flow) = run_stage(&ctx, &mut rec, si, model, &mut state)?;
        model = trained;
        if let Flow::Stopped = flow {
            return Ok(RunOutcome::stopped(run.path().to_path_buf(), model));
        }
    }
    // a finished run that is only evaluated again keeps its final checkpoint as it is: writing
    // it anew would replace the folder under a run reading it as its teacher right now
    let existing_final = run.checkpoint(&crate::run::CheckpointName::Final);
    let final_ck = if first_stage == recipe.stages.len()
        && existing_final
            .join(crate::run::checkpoint::MODEL_FILE)
            .exists()
    {
        existing_final
    } else {
        rec.save_final(&model, &state)?
    };
    let eval = if opts.eval && recipe.data.join("test.json").exists() {
        Some(evaluate(
            recipe, info, &inputs, &model, &run, opts, &mut rec,
        )?)
    } else {
        None
    };
    rec.emit(Event::RunEnd {
        seconds: rec.elapsed_s(),
    })?;
    Ok(RunOutcome {
        run_dir: run.path().to_path_buf(),
        finished: true,
        final_checkpoint: Some(final_ck),
        eval,
        model: Some(model),
    })
}

/// Evaluates the finished model on the data's `test.json` and writes the run's report (and
/// the routing heatmap of an MoE model).
fn evaluate(
    recipe: &Recipe,
    info: &DeviceInfo,
    inputs: &Inputs,
    model: &Mllm,
    run: &RunDir,
    opts: &RunOptions,
    rec: &mut Recorder,
) -> Result<EvalResult> {
    let test = Dataset::load(
        &recipe.data,
        "test.json",
        &recipe.image_root(),
        &inputs.tokenizer,
        &recipe.model.vision,
        recipe.model.llm.max_positions,
        recipe.require_image,
    )?;
    let inference = model.valid();
    let mut result = eval::evaluate(&inference, &inputs.tokenizer, &test, 64, opts.eval_limit)?;
    result.routing =
        eval::routing::routing_profile(&inference, &inputs.tokenizer, &test, 64, opts.eval_limit)?;
    if !result.routing.is_empty() {
        eval::routing::write_heatmap(&result.routing, &run.routing_png())?;
    }
    rec.emit(Event::Eval {
        split: "test".into(),
        accuracy: result.accuracy,
        questions: result.questions,
    })?;
    run.write_report(&eval::report::run_report(
        recipe,
        info,
        &model.param_counts(),
        &result,
    ))?;
    Ok(result)
}
