//! The one data flow of the design: recipe -> ordered stages -> for each stage: data -> forward
//! -> loss -> backward -> clip -> AdamW -> events, checkpoints every N steps and at each stage
//! end -> final checkpoint -> evaluation -> report.
//!
//! Every input (recipe, tokenizer, data, images, initial checkpoints) is checked before the run
//! folder is touched, so bad input never leaves a folder that could pass for a result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::checkpoint::{self, TrainState};
use super::distill::{TEACHER_CACHE_MAX_BYTES, Teacher, TeacherCache, teacher_forward};
use super::events::{Event, EventLog, Observer};
use super::order::Order;
use super::{clip, freeze, schedule};
use crate::backend::DeviceInfo;
use crate::config::{DataKind, DataOrder, Objective, Recipe};
use crate::data::llava::load_conversations;
use crate::data::mined::yes_no_turns;
use crate::data::{Dataset, HostBatch, Padding, TextTokenizer, host_batch};
use crate::distill::HiddenProjection;
use crate::eval::{self, EvalResult};
use crate::model::moe::Phase;
use crate::model::{Mllm, Visual, masked_cross_entropy};
use crate::{Error, Result};

/// How to run a recipe.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Parent of run folders (`runs/`).
    pub runs_dir: PathBuf,
    /// Continue from the newest checkpoint when the run folder has one.
    pub resume: bool,
    /// Replace an existing run folder instead of refusing.
    pub overwrite: bool,
    /// Stop (as if killed) right after this many optimiser steps, with a checkpoint written.
    pub stop_after_steps: Option<usize>,
    /// Evaluate on the data's `test.json` at the end.
    pub eval: bool,
    /// Cap on evaluated questions (all when `None`).
    pub eval_limit: Option<usize>,
    /// Raised by another thread (the desktop app's Stop button) to end the run after its
    /// current step with a checkpoint written, exactly as `--resume` expects.
    pub stop: StopFlag,
}

impl RunOptions {
    /// Whether the run stops (checkpoint written) after global step `global_step`: the
    /// `stop_after_steps` limit, or a stop requested through [`StopFlag`].
    fn stop_due(&self, global_step: usize) -> bool {
        self.stop_after_steps == Some(global_step) || self.stop.requested()
    }
}

/// A request to stop a run cleanly, shared between the run and whoever may ask.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl StopFlag {
    pub fn request(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            runs_dir: PathBuf::from("runs"),
            resume: true,
            overwrite: false,
            stop_after_steps: None,
            eval: true,
            eval_limit: None,
            stop: StopFlag::default(),
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_dir: PathBuf,
    /// False when stopped early by `stop_after_steps`.
    pub finished: bool,
    pub final_checkpoint: Option<PathBuf>,
    pub eval: Option<EvalResult>,
    pub model: Option<Mllm>,
}

impl RunOutcome {
    /// A run stopped early by `stop_after_steps`, its newest checkpoint written.
    fn stopped(run_dir: PathBuf, model: Mllm) -> Self {
        RunOutcome {
            run_dir,
            finished: false,
            final_checkpoint: None,
            eval: None,
            model: Some(model),
        }
    }
}

/// Everything a run needs, loaded and checked up front.
struct Inputs {
    tokenizer: TextTokenizer,
    data: BTreeMap<DataKind, Dataset>,
    vision_ckpt: Option<PathBuf>,
}

/// Resolves `init.vision_from`: a run name (its final checkpoint) or a checkpoint folder.
pub fn resolve_checkpoint(spec: &str, runs_dir: &Path) -> Result<PathBuf> {
    let as_path = PathBuf::from(spec);
    let candidates = [
        runs_dir
            .join(spec)
            .join("checkpoints")
            .join(checkpoint::FINAL),
        as_path.clone(),
    ];
    candidates
        .into_iter()
        .find(|p| p.join(checkpoint::MODEL_FILE).exists())
        .ok_or_else(|| Error::Checkpoint {
            path: as_path,
            message: format!(
                "no checkpoint found: expected a finished run `{}` or a checkpoint folder holding {}",
                runs_dir.join(spec).display(),
                checkpoint::MODEL_FILE
            ),
        })
}

fn load_inputs(recipe: &Recipe, opts: &RunOptions) -> Result<Inputs> {
    let tokenizer = TextTokenizer::load(&recipe.tokenizer_path())?;
    tokenizer.check_fits(recipe.model.llm.vocab_size)?;
    let mut data = BTreeMap::new();
    for s in &recipe.stages {
        let key = s.data;
        if let std::collections::btree_map::Entry::Vacant(e) = data.entry(key) {
            let ds = match key {
                // the questions mined pairs come from: train.json's yes/no turns, one per record
                DataKind::Mined => {
                    let path = recipe.data.join(s.data.train_file());
                    let records = load_conversations(&path, recipe.require_image)?;
                    Dataset::from_records(
                        path,
                        yes_no_turns(&records),
                        &recipe.data,
                        &tokenizer,
                        &recipe.model.vision,
                        recipe.model.llm.max_positions,
                    )?
                }
                DataKind::Preference | DataKind::Caption | DataKind::Instruct => {
                    let load = if key == DataKind::Preference {
                        Dataset::load_pairs
                    } else {
                        Dataset::load
                    };
                    load(
                        &recipe.data,
                        s.data.train_file(),
                        &tokenizer,
                        &recipe.model.vision,
                        recipe.model.llm.max_positions,
                        recipe.require_image,
                    )?
                }
            };
            if ds.is_empty() {
                return Err(Error::Record {
                    path: ds.path.clone(),
                    index: 0,
                    id: String::new(),
                    message: if key == DataKind::Mined {
                        "no yes/no question (an answer that is \"yes\" or \"no\", with an image) \
                         to mine preference pairs from"
                            .into()
                    } else {
                        "no records: a stage needs data".into()
                    },
                });
            }
            e.insert(ds);
        }
    }
    let vision_ckpt = match &recipe.init.vision_from {
        None => None,
        Some(spec) => {
            let p = resolve_checkpoint(spec, &opts.runs_dir)?;
            let cfg = checkpoint::load_config(&p)?;
            if cfg.vision != recipe.model.vision {
                return Err(Error::Checkpoint {
                    path: p,
                    message:
                        "its vision encoder has another shape than the recipe's [model.vision]"
                            .into(),
                });
            }
            Some(p)
        }
    };
    Ok(Inputs {
        tokenizer,
        data,
        vision_ckpt,
    })
}

/// Runs (or resumes) a recipe.
pub fn run_recipe(
    recipe: &Recipe,
    device: &Device,
    info: &DeviceInfo,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<RunOutcome> {
    let inputs = load_inputs(recipe, opts)?;
    let teacher = match &recipe.teacher {
        None => None,
        Some(t) => {
            let ck = resolve_checkpoint(&t.from, &opts.runs_dir)?;
            let mut teacher = Teacher::load(
                &ck,
                &recipe.model,
                &inputs.tokenizer,
                &device.clone().inner(),
            )?;
            teacher.model.set_kernels(recipe.kernels);
            if recipe.init.llm_from_teacher {
                checkpoint::check_llm_prefix(&ck, &recipe.model.llm)?;
            }
            if let Some(w) = teacher.vocab.warning() {
                log::warn!("{w}");
            }
            Some(teacher)
        }
    };
    let upcycle = match &recipe.init.upcycle_from {
        None => None,
        Some(spec) => {
            let ck = resolve_checkpoint(spec, &opts.runs_dir)?;
            checkpoint::check_upcycle(&ck, &recipe.model)?;
            Some(ck)
        }
    };
    let start_model = match &recipe.init.model_from {
        None => None,
        Some(spec) => {
            let ck = resolve_checkpoint(spec, &opts.runs_dir)?;
            let cfg = checkpoint::load_config(&ck)?;
            if cfg != recipe.model {
                return Err(Error::Checkpoint {
                    path: ck.join(checkpoint::CONFIG_FILE),
                    message: format!(
                        "[init] model_from needs a checkpoint of exactly the recipe's [model] \
                         (checkpoint {cfg:?}, recipe {:?})",
                        recipe.model
                    ),
                });
            }
            Some(ck)
        }
    };
    let run_dir = opts.runs_dir.join(&recipe.name);
    let ck_dir = run_dir.join("checkpoints");
    let recipe_text = recipe.to_toml();

    // decide between a fresh start and a resume before writing anything
    let mut resume_from = None;
    if run_dir.exists() {
        let saved = std::fs::read_to_string(run_dir.join("recipe.toml")).ok();
        let latest = checkpoint::latest(&ck_dir);
        if opts.overwrite || (latest.is_none() && !run_dir.join("report.json").exists()) {
            std::fs::remove_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
        } else if !opts.resume {
            return Err(Error::Invalid(format!(
                "{} already exists: resume it, choose another name, or overwrite it",
                run_dir.display()
            )));
        } else if saved.as_deref() != Some(recipe_text.as_str()) {
            return Err(Error::Invalid(format!(
                "{} was started with a different recipe ({}): refusing to resume it with this one",
                run_dir.display(),
                run_dir.join("recipe.toml").display()
            )));
        } else {
            resume_from = latest;
        }
    }
    std::fs::create_dir_all(&ck_dir).map_err(|e| Error::io(&ck_dir, e))?;
    crate::error::write_atomic(run_dir.join("recipe.toml"), recipe_text.as_bytes())?;
    // the run folder is self-contained: chat/eval find the tokenizer beside the checkpoints
    let tok_copy = run_dir.join("tokenizer.json");
    std::fs::copy(&inputs.tokenizer.path, &tok_copy).map_err(|e| Error::io(&tok_copy, e))?;
    let mut log = EventLog::open(&run_dir.join("events.jsonl"), observer)?;
    let started = Instant::now();
    log.emit(Event::RunStart {
        run: recipe.name.clone(),
        device: format!("{} ({})", info.backend, info.name),
        resumed_from: resume_from.as_ref().map(|p| p.display().to_string()),
    })?;

    let ad = device.clone().autodiff();
    let mut model = Mllm::new(&recipe.model, recipe.seed, &ad);
    let mut state = TrainState {
        stage: 0,
        step: 0,
        global_step: 0,
        stage_done: false,
    };
    let counts = model.param_counts();
    log.emit(Event::ModelBuilt {
        params: counts.total(),
        vision: counts.vision,
        projector: counts.projector,
        llm: counts.llm,
    })?;
    if let Some(ck) = &resume_from {
        model = checkpoint::load_model(ck, model)?;
        state = checkpoint::load_state(ck)?;
    } else {
        if let Some(ck) = &upcycle {
            model = checkpoint::load_upcycled(ck, model)?;
        }
        if let Some(ck) = &start_model {
            model = checkpoint::load_model(ck, model)?;
        }
        if let Some(v) = &inputs.vision_ckpt {
            model = checkpoint::load_vision(v, model)?;
        }
        if let (true, Some(t)) = (recipe.init.llm_from_teacher, &teacher) {
            model = checkpoint::load_llm_prefix(&t.checkpoint, model)?;
        }
    }
    // attention follows the recipe's kernel policy like the distillation loss does
    model.set_kernels(recipe.kernels);

    let first_stage = if state.stage_done {
        state.stage + 1
    } else {
        state.stage
    };
    for si in first_stage..recipe.stages.len() {
        let spec = &recipe.stages[si];
        let start_step = if si == state.stage && !state.stage_done {
            state.step
        } else {
            0
        };
        let mined;
        let data = if spec.data == DataKind::Mined {
            mined = super::mine::stage_pairs(
                &model.valid(),
                &inputs.data[&spec.data],
                &inputs.tokenizer,
                recipe,
                &run_dir,
                si,
            )?;
            &mined
        } else {
            &inputs.data[&spec.data]
        };
        model = freeze::apply(model, &spec.freeze);
        let trainable = freeze::trainable_count(&model);
        let steps = ((spec.epochs * data.units() as f64) / spec.batch_size as f64)
            .ceil()
            .max(1.0) as usize;
        log.emit(Event::StageStart {
            stage: si,
            name: spec.name.clone(),
            steps,
            trainable,
            examples: data.units(),
        })?;

        let mut optim = adamw(spec);
        if start_step > 0 {
            let ck = resume_from
                .as_ref()
                .expect("mid-stage state comes from a checkpoint");
            optim = checkpoint::load_optim(ck, optim)?;
        }

        let visual = VisualSource::new(&model, data, !spec.freeze.vision.trains(), &ad);
        let inner = device.clone().inner();
        let distill = match (&spec.objective, &teacher) {
            (Objective::Distill(d), Some(t)) => {
                let tvis = VisualSource::frozen(&t.model.vision, data, &inner);
                let bytes = TeacherCache::bytes(t, data);
                let source = if bytes <= TEACHER_CACHE_MAX_BYTES {
                    let t0 = Instant::now();
                    let cache = TeacherCache::build(
                        t,
                        data,
                        inputs.tokenizer.special.pad,
                        &|idx| tvis.for_batch(data, idx, &inner),
                        &inner,
                    );
                    log::info!(
                        "stage {:?}: teacher outputs cached for {} examples ({:.0} MB) in {:.1} s",
                        spec.name,
                        data.len(),
                        bytes as f64 / 1e6,
                        t0.elapsed().as_secs_f64()
                    );
                    TeacherSource::Cached(cache)
                } else {
                    TeacherSource::Live(Box::new(tvis))
                };
                let mut d = *d;
                d.divergence.kernels = recipe.kernels;
                Some((d, t, source))
            }
            _ => None,
        };
        // LLaVADI's projection lives for the stage; a mid-stage checkpoint carries it.
        let mut align = match distill {
            Some((d, t, _)) if d.hidden > 0.0 => {
                let module = HiddenProjection::new(
                    recipe.model.llm.hidden,
                    t.model.config.llm.hidden,
                    recipe.seed ^ ((si as u64 + 1) * 0x9E37),
                    &ad,
                );
                let o = adamw(spec);
                Some(if start_step > 0 {
                    let ck = resume_from
                        .as_ref()
                        .expect("mid-stage state comes from a checkpoint");
                    checkpoint::load_align(ck, module, o)?
                } else {
                    (module, o)
                })
            }
            _ => None,
        };
        let contrastive = match spec.objective {
            Objective::Contrastive { regions, .. } => {
                Some(super::contrastive::ContrastiveTargets::build(
                    data,
                    &inputs.tokenizer,
                    (regions > 0.0).then(|| recipe.model.vision.num_patches()),
                )?)
            }
            Objective::LanguageModel | Objective::Distill(_) | Objective::Preference(_) => None,
        };
        // preference distillation: the reference model's log-probs of every answer, once per
        // stage (the teacher, as in LLaVA-MoD, or the student as it enters the stage)
        let reference = match (&spec.objective, &teacher) {
            (Objective::Preference(p), Some(t)) => {
                let t0 = Instant::now();
                let (who, r) = match p.reference {
                    crate::config::PreferenceReference::Teacher => {
                        let tvis = VisualSource::frozen(&t.model.vision, data, &inner);
                        let r = super::preference::reference_logps(
                            &t.model,
                            data,
                            inputs.tokenizer.special.pad,
                            &|idx| tvis.for_batch(data, idx, &inner),
                            &inner,
                        );
                        ("teacher", r)
                    }
                    crate::config::PreferenceReference::Student => {
                        let frozen = model.valid();
                        let svis = VisualSource::frozen(&frozen.vision, data, &inner);
                        let r = super::preference::reference_logps(
                            &frozen,
                            data,
                            inputs.tokenizer.special.pad,
                            &|idx| svis.for_batch(data, idx, &inner),
                            &inner,
                        );
                        ("initial student", r)
                    }
                };
                log::info!(
                    "stage {:?}: {who} log-probs of {} answers in {:.1} s",
                    spec.name,
                    r.len(),
                    t0.elapsed().as_secs_f64()
                );
                Some(r)
            }
            _ => None,
        };
        let mut order = Order::new(recipe.seed, si, data.units());
        match spec.order {
            DataOrder::Shuffled => {}
            DataOrder::Curriculum => order = order.curriculum(),
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
                order = order.bucketed(lengths);
            }
        }
        let stage_start = Instant::now();
        let mut loss_sum = 0.0f64;
        let mut loss_n = 0usize;
        for step in start_step..steps {
            let t0 = Instant::now();
            let idx = data.unit_records(&order.batch(step, spec.batch_size));
            let examples: Vec<_> = idx.iter().map(|&i| &data.encoded[i]).collect();
            let hb = host_batch(
                &examples,
                recipe.model.vision.num_visual_tokens(),
                inputs.tokenizer.special.pad,
                Padding::Right,
            );
            let vis = visual.for_batch(data, &idx, &ad);
            let mut terms = BTreeMap::new();
            let mut routing = Vec::new();
            let mut relation = None;
            let want_relation =
                step == 0 || (step + 1) % super::RELATION_EVERY == 0 || step + 1 == steps;
            let loss = match spec.objective {
                Objective::LanguageModel => {
                    let batch = hb.to_device(vis, &ad);
                    let (h, trace) = model.hidden_routed(&batch, Phase::Train);
                    let ce = masked_cross_entropy(
                        model.llm.logits(h),
                        batch.targets.clone(),
                        batch.loss_mask.clone(),
                    );
                    let total = if trace.losses.is_some() {
                        terms.insert("ce".into(), ce.clone().into_scalar::<f32>());
                        super::router::add_router_losses(&model, &trace, ce, &mut terms)
                    } else {
                        ce
                    };
                    routing = trace.layers;
                    total
                }
                Objective::Distill(_) => {
                    let (d, t, source) = distill.as_ref().expect("teacher loaded for distill");
                    let t_out = match source {
                        TeacherSource::Cached(c) => c.batch(&idx, &hb, &ad),
                        TeacherSource::Live(tvis) => {
                            teacher_forward(t, &hb, tvis.for_batch(data, &idx, &inner), &ad)
                        }
                    };
                    let out = super::distill::distill_loss(
                        &model,
                        align.as_ref().map(|a| &a.0),
                        t,
                        d,
                        &hb,
                        vis,
                        t_out,
                        want_relation,
                        &ad,
                    );
                    terms = out.terms;
                    routing = out.routing;
                    relation = out.relation;
                    out.total
                }
                Objective::Preference(p) => {
                    let out = super::preference::preference_step(
                        &model,
                        &p,
                        reference
                            .as_deref()
                            .expect("computed for preference stages"),
                        &hb,
                        &idx,
                        vis,
                        &ad,
                    );
                    terms = out.terms;
                    routing = out.routing;
                    out.total
                }
                Objective::Contrastive {
                    temperature,
                    regions,
                } => {
                    let targets = contrastive.as_ref().expect("built for contrastive stages");
                    let out = super::contrastive::contrastive_loss(
                        &model,
                        vis,
                        targets,
                        &idx,
                        inputs.tokenizer.special.pad,
                        temperature,
                        regions,
                        &ad,
                    );
                    if let Some(r) = out.region {
                        terms.insert("region".to_string(), r.into_scalar::<f32>());
                    }
                    out.total
                }
            };
            let loss_value: f32 = loss.clone().into_scalar::<f32>();
            if !loss_value.is_finite() {
                return Err(Error::Invalid(format!(
                    "stage {:?} step {step}: loss is {loss_value}; lower the learning rate",
                    spec.name
                )));
            }
            let mut raw = loss.backward();
            if let Some((module, mut o)) = align.take() {
                let g = GradientsParams::from_module(&mut raw, &module);
                let lr = schedule::lr_at(step, steps, spec.lr, spec.warmup, spec.min_lr_ratio);
                let module = o.step(lr, module, g);
                align = Some((module, o));
            }
            let mut grads = GradientsParams::from_grads(raw, &model);
            let grad_norm = clip::clip_global_norm(&model, &mut grads, spec.grad_clip);
            let lr = schedule::lr_at(step, steps, spec.lr, spec.warmup, spec.min_lr_ratio);
            model = optim.step(lr, model, grads);
            state = TrainState {
                stage: si,
                step: step + 1,
                global_step: state.global_step + 1,
                stage_done: false,
            };
            loss_sum += loss_value as f64;
            loss_n += 1;
            let secs = t0.elapsed().as_secs_f64();
            log.emit(Event::Step {
                stage: si,
                name: spec.name.clone(),
                step: step + 1,
                steps,
                global_step: state.global_step,
                loss: loss_value,
                terms,
                lr,
                grad_norm,
                tokens_per_s: tokens(&hb) as f64 / secs.max(1e-9),
                elapsed_s: started.elapsed().as_secs_f64(),
                routing,
            })?;
            if let Some((n, teacher, student)) = relation {
                log.emit(Event::Relation {
                    stage: si,
                    name: spec.name.clone(),
                    global_step: state.global_step,
                    n,
                    teacher,
                    student,
                })?;
            }
            let stop_now = opts.stop_due(state.global_step);
            let periodic = spec.checkpoint_every > 0 && (step + 1) % spec.checkpoint_every == 0;
            if (periodic || stop_now) && step + 1 < steps {
                let name = format!("step-{:06}", state.global_step);
                let align_state = align.as_ref().map(|(m, o)| (m, o));
                save_logged(
                    &mut log,
                    &ck_dir,
                    &name,
                    &model,
                    Some(&optim),
                    align_state,
                    &state,
                )?;
            }
            if stop_now && step + 1 < steps {
                log.emit(Event::Stopped {
                    global_step: state.global_step,
                })?;
                return Ok(RunOutcome::stopped(run_dir, model));
            }
        }
        state.stage_done = true;
        let name = format!("stage-{si}-{}", sanitize(&spec.name));
        save_logged(&mut log, &ck_dir, &name, &model, None, None, &state)?;
        log.emit(Event::StageEnd {
            stage: si,
            name: spec.name.clone(),
            mean_loss: (loss_sum / loss_n.max(1) as f64) as f32,
            seconds: stage_start.elapsed().as_secs_f64(),
        })?;
        let stop_now = opts.stop_due(state.global_step);
        if stop_now && si + 1 < recipe.stages.len() {
            log.emit(Event::Stopped {
                global_step: state.global_step,
            })?;
            return Ok(RunOutcome::stopped(run_dir, model));
        }
    }
    let final_ck = checkpoint::save(&ck_dir, checkpoint::FINAL, &model, None, None, &state)?;

    let eval = if opts.eval && recipe.data.join("test.json").exists() {
        let test = Dataset::load(
            &recipe.data,
            "test.json",
            &inputs.tokenizer,
            &recipe.model.vision,
            recipe.model.llm.max_positions,
            recipe.require_image,
        )?;
        let inference = model.valid();
        let mut result = eval::evaluate(&inference, &inputs.tokenizer, &test, 64, opts.eval_limit);
        result.routing = eval::routing::routing_profile(
            &inference,
            &inputs.tokenizer,
            &test,
            64,
            opts.eval_limit,
        );
        if !result.routing.is_empty() {
            eval::routing::write_heatmap(&result.routing, &run_dir.join("routing.png"))?;
        }
        log.emit(Event::Eval {
            split: "test".into(),
            accuracy: result.accuracy,
            questions: result.questions,
        })?;
        eval::report::write_run_report(&run_dir, recipe, info, &model.param_counts(), &result)?;
        Some(result)
    } else {
        None
    };
    log.emit(Event::RunEnd {
        seconds: started.elapsed().as_secs_f64(),
    })?;
    Ok(RunOutcome {
        run_dir,
        finished: true,
        final_checkpoint: Some(final_ck),
        eval,
        model: Some(model),
    })
}

/// Writes a checkpoint and records it in the event log.
fn save_logged(
    log: &mut EventLog,
    dir: &Path,
    name: &str,
    model: &Mllm,
    optim: Option<&ModuleOptimizer>,
    align: Option<(&HiddenProjection, &ModuleOptimizer)>,
    state: &TrainState,
) -> Result<()> {
    let p = checkpoint::save(dir, name, model, optim, align, state)?;
    log.emit(Event::Checkpoint {
        path: p.display().to_string(),
        global_step: state.global_step,
    })
}

fn tokens(hb: &HostBatch) -> usize {
    hb.attention_mask.iter().filter(|m| **m > 0.0).count()
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Every image of `data` as one `[N, 3, S, S]` tensor (a zero image when there are none).
fn all_images(data: &Dataset, s: usize, device: &Device) -> Tensor<4> {
    if data.num_images() == 0 {
        Tensor::<4>::zeros([1, 3, s, s], device)
    } else {
        let n = data.num_images();
        Tensor::<4>::from_data(TensorData::new(data.images.clone(), [n, 3, s, s]), device)
    }
}

/// A frozen encoder's features of `images`, in chunks of 256 images.
fn encode_all(vision: &crate::model::VisionEncoder, images: Tensor<4>) -> Tensor<3> {
    let n = images.dims()[0];
    let chunks: Vec<Tensor<3>> = (0..n)
        .step_by(256)
        .map(|start| vision.forward(images.clone().narrow(0, start, 256.min(n - start))))
        .collect();
    Tensor::cat(chunks, 0)
}

/// The stage's AdamW (the model's and, for LLaVADI, the alignment projection's).
fn adamw(spec: &crate::config::StageSpec) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_weight_decay(spec.weight_decay as f32)
        .with_epsilon(1e-8)
        .init()
}

/// Where a distillation stage's teacher outputs come from.
enum TeacherSource {
    Cached(TeacherCache),
    Live(Box<VisualSource>),
}

/// Where a stage's visual input comes from. With a frozen encoder its features never change, so
/// they are computed once per stage (without autodiff) and looked up per batch; otherwise the
/// pixels go through the encoder every step.
enum VisualSource {
    Features(Tensor<3>),
    Pixels(Tensor<4>),
}

impl VisualSource {
    fn new(model: &Mllm, data: &Dataset, frozen: bool, device: &Device) -> Self {
        let images = all_images(data, model.config.vision.image_size, device);
        if !frozen {
            return VisualSource::Pixels(images);
        }
        let features = encode_all(&model.vision.valid(), images.inner());
        VisualSource::Features(features.autodiff())
    }

    /// Features of a frozen encoder living on an inner (non-autodiff) device: the teacher's.
    fn frozen(vision: &crate::model::VisionEncoder, data: &Dataset, inner: &Device) -> Self {
        let images = all_images(data, vision.config.image_size, inner);
        VisualSource::Features(encode_all(vision, images))
    }

    fn for_batch(&self, data: &Dataset, idx: &[usize], device: &Device) -> Visual {
        let rows: Vec<i64> = idx
            .iter()
            .map(|&i| data.image_of[i].unwrap_or(0) as i64)
            .collect();
        let sel = Tensor::<1, Int>::from_data(TensorData::new(rows, [idx.len()]), device);
        match self {
            VisualSource::Features(f) => Visual::Features(f.clone().select(0, sel)),
            VisualSource::Pixels(p) => Visual::Pixels(p.clone().select(0, sel)),
        }
    }
}
