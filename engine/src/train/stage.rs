//! One stage of a recipe: its data and freeze policy, its objective prepared once, then the
//! steps (batch -> loss -> optimiser step -> events), a checkpoint every `checkpoint_every`
//! steps and one at the stage end. A stage resumed mid-way continues at the step its
//! checkpoint saved, with the same data order, optimiser state and LLaVADI projection.

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;

use super::data_parallel;
use super::events::Event;
use super::objective::{StageObjective, StageSetup, StepInput};
use super::options::RunOptions;
use super::order::Order;
use super::prefetch::Prefetch;
use super::record::Recorder;
use super::teacher::Teacher;
use super::update::Update;
use super::visual::{PixelBatch, VisualSource};
use super::{freeze, inputs::Inputs};
use crate::backend::kernels::Kernels;
use crate::config::{DataKind, DataOrder, Recipe, StageSpec};
use crate::data::{Dataset, HostBatch, Padding, host_batch};
use crate::model::Mllm;
use crate::run::CheckpointName;
use crate::run::checkpoint::TrainState;
use crate::{Error, Result};

/// What every stage of a run reads.
pub struct RunContext<'a> {
    pub recipe: &'a Recipe,
    pub opts: &'a RunOptions,
    pub inputs: &'a Inputs,
    pub teacher: Option<&'a Teacher>,
    /// The teacher cache distillation stages read, when the recipe has one.
    pub teacher_cache: Option<&'a super::teacher_cache::CachedTeacher>,
    /// Data-parallel workers (`RunOptions::data_parallel` > 1): splittable stages split each
    /// batch over them.
    pub workers: Option<&'a super::data_parallel::Workers>,
    /// Where the fused kernels run, resolved once for the run.
    pub kernels: Kernels,
    /// The autodiff device the student trains on.
    pub device: &'a Device,
    /// The checkpoint this attempt resumed from, if any.
    pub resumed_from: Option<&'a Path>,
    /// The device's measured matmul peak (FLOP/s), for each step's MFU.
    pub peak_flops: f64,
}

/// How a stage ended.
pub enum Flow {
    /// Finished; the next stage may start.
    Finished,
    /// Stopped on request, with a checkpoint written to resume from.
    Stopped,
}

/// Runs stage `si` (from the step `state` says when it was under way) and returns the model.
pub fn run_stage(
    ctx: &RunContext,
    rec: &mut Recorder,
    si: usize,
    model: Mllm,
    state: &mut TrainState,
) -> Result<(Mllm, Flow)> {
    let spec = &ctx.recipe.stages[si];
    let start_step = if si == state.stage && !state.stage_done {
        state.step
    } else {
        0
    };
    if spec.data == DataKind::Mined {
        let mined = super::mine::stage_pairs(
            &model.valid(),
            &ctx.inputs.data[&spec.data],
            &ctx.inputs.tokenizer,
            ctx.recipe,
            rec.run(),
            si,
        )?;
        train_on(ctx, rec, si, &mined, start_step, model, state)
    } else {
        train_on(
            ctx,
            rec,
            si,
            &ctx.inputs.data[&spec.data],
            start_step,
            model,
            state,
        )
    }
}

/// The stage's steps on `data`.
fn train_on(
    ctx: &RunContext,
    rec: &mut Recorder,
    si: usize,
    data: &Dataset,
    start_step: usize,
    model: Mllm,
    state: &mut TrainState,
) -> Result<(Mllm, Flow)> {
    let spec = &ctx.recipe.stages[si];
    let mut model = freeze::apply(model, &spec.freeze);
    let steps = ((spec.epochs * data.units() as f64) / spec.batch_size as f64)
        .ceil()
        .max(1.0) as usize;
    rec.emit(Event::StageStart {
        stage: si,
        name: spec.name.clone(),
        steps,
        trainable: freeze::trainable_count(&model),
        examples: data.units(),
    })?;
    // a mid-stage start continues the optimiser (and projection) state of its checkpoint
    let resume = if start_step > 0 {
        Some(ctx.resumed_from.ok_or_else(|| {
            Error::Invalid("a stage under way can only continue from a checkpoint".into())
        })?)
    } else {
        None
    };
    let mut update = Update::new(spec, steps, resume)?;
    let visual = VisualSource::new(
        &model,
        !spec.freeze.vision.trains(),
        ctx.opts.feature_cache_bytes,
    );
    let mut objective = StageObjective::prepare(&StageSetup {
        recipe: ctx.recipe,
        spec,
        stage: si,
        data,
        tokenizer: &ctx.inputs.tokenizer,
        teacher: ctx.teacher,
        teacher_cache: ctx.teacher_cache,
        model: &model,
        resume,
        kernels: ctx.kernels,
        device: ctx.device,
        feature_cache_bytes: ctx.opts.feature_cache_bytes,
    })?;
    if let Some(w) = ctx.workers.filter(|w| w.len() > 1) {
        if data_parallel::splittable(&objective, &model) {
            log::info!(
                "stage {:?}: each batch split over {} workers",
                spec.name,
                w.len()
            );
        } else {
            log::info!(
                "stage {:?}: on one worker (data parallelism splits language-model stages of \
                 dense models only; this objective is not a sum over the batch's examples)",
                spec.name
            );
        }
    }
    // the stage's batches, known up front, so their images are decoded ahead of the steps
    let batches = stage_batches(ctx.recipe.seed, si, spec, data, start_step..steps);
    let mut prefetch = Prefetch::start(
        data.images.clone(),
        batches.iter().map(|idx| data.images_of(idx)).collect(),
    );
    let stage_start = Instant::now();
    let mut loss_sum = 0.0f64;
    for step in start_step..steps {
        let at = StepAt {
            si,
            spec,
            data,
            step,
            steps,
        };
        let started = Instant::now();
        let batch = Batch {
            idx: &batches[step - start_step],
            pixels: prefetch.next()?,
            started,
        };
        let (m, loss) = one_step(
            ctx,
            rec,
            &at,
            &visual,
            batch,
            &mut update,
            &mut objective,
            model,
            state,
        )?;
        model = m;
        loss_sum += loss as f64;
        let stop_now = ctx.opts.stop_due(state.global_step);
        let periodic = spec.checkpoint_every > 0 && (step + 1) % spec.checkpoint_every == 0;
        if (periodic || stop_now) && step + 1 < steps {
            let name = CheckpointName::Step(state.global_step);
            rec.checkpoint(name, &model, Some(update.optim()), objective.aux(), state)?;
        }
        if stop_now && step + 1 < steps {
            rec.emit(Event::Stopped {
                global_step: state.global_step,
            })?;
            return Ok((model, Flow::Stopped));
        }
    }
    state.stage_done = true;
    let name = CheckpointName::Stage {
        index: si,
        name: spec.name.clone(),
    };
    rec.checkpoint(name, &model, None, None, state)?;
    rec.emit(Event::StageEnd {
        stage: si,
        name: spec.name.clone(),
        mean_loss: (loss_sum / steps.saturating_sub(start_step).max(1) as f64) as f32,
        seconds: stage_start.elapsed().as_secs_f64(),
    })?;
    if ctx.opts.stop_due(state.global_step) && si + 1 < ctx.recipe.stages.len() {
        rec.emit(Event::Stopped {
            global_step: state.global_step,
        })?;
        return Ok((model, Flow::Stopped));
    }
    Ok((model, Flow::Finished))
}

/// Where a step stands in its stage.
struct StepAt<'s> {
    si: usize,
    spec: &'s StageSpec,
    data: &'s Dataset,
    /// 0-based within the stage.
    step: usize,
    steps: usize,
}

/// A step's records and their decoded images.
struct Batch<'s> {
    idx: &'s [usize],
    pixels: PixelBatch,
    /// When the step began waiting for its images (tokens/s counts the wait).
    started: Instant,
}

/// A step's loss must be a number; a NaN or infinity stops the run before the update.
fn check_finite(loss: f32, spec: &crate::config::StageSpec, step: usize) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "stage {:?} step {step}: loss is {loss}; lower the learning rate",
            spec.name
        )))
    }
}

/// One optimiser step: the batch, its loss, the update, and the step's events. Returns the
/// updated model and the loss.
#[allow(clippy::too_many_arguments)]
fn one_step(
    ctx: &RunContext,
    rec: &mut Recorder,
    at: &StepAt,
    visual: &VisualSource,
    batch: Batch,
    update: &mut Update,
    objective: &mut StageObjective,
    model: Mllm,
    state: &mut TrainState,
) -> Result<(Mllm, f32)> {
    let StepAt {
        si,
        spec,
        data,
        step,
        steps,
    } = *at;
    let t0 = batch.started;
    let idx = batch.idx;
    let examples: Vec<_> = idx.iter().map(|&i| &data.encoded[i]).collect();
    let hb = host_batch(
        &examples,
        ctx.recipe.model.vision.num_visual_tokens(),
        ctx.inputs.tokenizer.special.pad,
        Padding::Right,
    );
    let workers = ctx
        .workers
        .filter(|w| w.len() > 1 && data_parallel::splittable(objective, &model));
    let ((terms, routing, relation), model, stepped, loss) = if let Some(workers) = workers {
        // the batch split over the workers, their gradients summed on the main device
        let (loss, grads) = on_device(
            (si, &spec.name, step),
            "the data-parallel forward and backward passes",
            || {
                data_parallel::loss_and_grads(
                    &model,
                    workers,
                    data,
                    idx,
                    &batch.pixels,
                    visual,
                    ctx.inputs.tokenizer.special.pad,
                )
            },
        )?;
        check_finite(loss, spec, step)?;
        let (model, stepped) = on_device((si, &spec.name, step), "the optimiser update", || {
            update.step_grads(model, grads, step)
        })?;
        ((Default::default(), Vec::new(), None), model, stepped, loss)
    } else {
        let (out, loss) = on_device((si, &spec.name, step), "the forward pass and loss", || {
            let out = objective.loss(
                &model,
                StepInput {
                    hb: &hb,
                    idx,
                    visual: visual.for_pixels(&batch.pixels, ctx.device),
                    pixels: &batch.pixels,
                    want_relation: step == 0
                        || (step + 1) % super::RELATION_EVERY == 0
                        || step + 1 == steps,
                    device: ctx.device,
                },
            );
            let loss: f32 = out.total.clone().into_scalar::<f32>();
            (out, loss)
        })?;
        check_finite(loss, spec, step)?;
        let total = out.total.clone();
        let (model, stepped) = on_device(
            (si, &spec.name, step),
            "the backward pass and optimiser update",
            || update.step(model, total, objective, step),
        )?;
        ((out.terms, out.routing, out.relation), model, stepped, loss)
    };
    *state = TrainState {
        stage: si,
        step: step + 1,
        global_step: state.global_step + 1,
        stage_done: false,
    };
    let step_s = t0.elapsed().as_secs_f64().max(1e-9);
    let flops = super::flops::step_flops(
        &ctx.recipe.model,
        &spec.freeze,
        &hb,
        visual.take_encoded(&batch.pixels),
    );
    rec.emit(Event::Step {
        stage: si,
        name: spec.name.clone(),
        step: step + 1,
        steps,
        global_step: state.global_step,
        loss,
        terms,
        lr: stepped.lr,
        grad_norm: stepped.grad_norm,
        tokens_per_s: tokens(&hb) as f64 / step_s,
        elapsed_s: rec.elapsed_s(),
        tokens: tokens(&hb),
        step_s,
        mfu: (ctx.peak_flops > 0.0).then(|| flops / step_s / ctx.peak_flops),
        routing,
    })?;
    if let Some(r) = relation {
        rec.emit(Event::Relation {
            stage: si,
            name: spec.name.clone(),
            global_step: state.global_step,
            n: r.n,
            teacher: r.teacher,
            student: r.student,
        })?;
    }
    Ok((model, loss))
}

/// Runs one part of a step, turning a failure of the device (burn and CubeCL report an
/// allocation the device refuses, a lost device or a kernel error by panicking) into an error
/// that names the stage, the step and the operation. Nothing is written on the way out, so the
/// run folder keeps its last checkpoint and `--resume` continues from it.
fn on_device<T>(
    (si, name, step): (usize, &str, usize),
    operation: &str,
    f: impl FnOnce() -> T,
) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        // CubeCL appends a backtrace to its errors: the first line says what failed
        let first = message.lines().next().unwrap_or(message).trim();
        Error::StepFailed {
            stage: si + 1,
            name: name.to_string(),
            step: step + 1,
            operation: operation.to_string(),
            message: format!(
                "{first}. The run folder keeps its last checkpoint: lower the stage's batch_size \
                 (see `condenser run --plan`) and continue with --resume"
            ),
        }
    })
}

/// The records of each step in `steps` of stage `si`: a pure function of the seed and the stage,
/// so a resumed stage sees the batches it would have seen, and a benchmark can replay them.
pub(crate) fn stage_batches(
    seed: u64,
    si: usize,
    spec: &StageSpec,
    data: &Dataset,
    steps: std::ops::Range<usize>,
) -> Vec<Vec<usize>> {
    let mut order = stage_order(seed, si, spec, data);
    steps
        .map(|step| data.unit_records(&order.batch(step, spec.batch_size)))
        .collect()
}

/// The order the stage visits its examples in: a pure function of the seed and the stage, so
/// a resumed stage sees the batches it would have seen.
fn stage_order(seed: u64, si: usize, spec: &StageSpec, data: &Dataset) -> Order {
    let order = Order::new(seed, si, data.units());
    match spec.order {
        DataOrder::Shuffled => order,
        DataOrder::Curriculum => order.curriculum(),
        DataOrder::Bucketed => {
            let lengths = (0..data.units())
                .map(|u| {
                    data.unit_records(&[u])
                        .iter()
                        .map(|&r| data.encoded[r].ids.len())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            order.bucketed(lengths)
        }
    }
}

/// Tokens a batch attends to (its real, unpadded positions).
fn tokens(hb: &HostBatch) -> usize {
    hb.attention_mask.iter().filter(|m| **m > 0.0).count()
}

#[cfg(test)]
mod tests {
    use super::on_device;

    /// A device failure inside a step (CubeCL panics with its message and a backtrace) comes
    /// back as an error naming the stage, step and operation, with the first line of the
    /// message; a step that works passes its value through.
    #[test]
    fn a_failing_device_operation_is_an_error_not_a_panic() {
        let err = on_device((1, "sft", 4), "the forward pass and loss", || -> u32 {
            panic!("can't allocate buffer of size: 235958400\n   0: backtrace line")
        })
        .expect_err("the panic must become an error")
        .to_string();
        for part in [
            "stage 2 \"sft\", step 5",
            "the forward pass and loss failed on the device",
            "can't allocate buffer of size: 235958400",
            "--resume",
        ] {
            assert!(err.contains(part), "{part:?} missing from: {err}");
        }
        assert!(!err.contains("backtrace line"), "{err}");
        assert_eq!(on_device((0, "a", 0), "x", || 7).unwrap(), 7);
    }
}
