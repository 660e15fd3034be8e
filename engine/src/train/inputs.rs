//! What a run reads before it writes anything: the tokenizer, every stage's data, and the
//! checkpoints the recipe starts from (`[init]`, `[teacher]`), each resolved through the runs
//! folder and checked against the recipe. Bad input is reported here, so it never leaves a run
//! folder that could pass for a result.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::prelude::*;

use super::events::Event;
use super::record::Recorder;
use super::teacher::Teacher;
use super::teacher_cache::{self, CachePositions, CachedTeacher};
use crate::backend::kernels::Kernels;
use crate::config::{DataKind, KdTokens, Objective, Recipe, TeacherCacheSpec};
use crate::data::llava::load_conversations;
use crate::data::mined::yes_no_turns;
use crate::data::{Dataset, TextTokenizer};
use crate::model::Mllm;
use crate::run::Runs;
use crate::run::checkpoint::{self, TrainState};
use crate::{Error, Result};

/// Everything a run needs, loaded and checked up front.
pub struct Inputs {
    pub tokenizer: TextTokenizer,
    /// Each data kind the stages use, loaded once.
    pub data: BTreeMap<DataKind, Dataset>,
    /// `[init] vision_from`, resolved and checked.
    pub vision_ckpt: Option<PathBuf>,
}

impl Inputs {
    /// Loads and checks the tokenizer, every stage's data and `[init] vision_from`.
    pub fn load(recipe: &Recipe, runs: &Runs) -> Result<Inputs> {
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
                            &recipe.image_root(),
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
                            &recipe.image_root(),
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
                let p = runs.resolve_checkpoint(spec)?;
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
}

/// Whether some part of the recipe runs the teacher itself: a preference stage (the reference
/// model), `llm_from_teacher`, or a distillation stage without a cache.
pub(super) fn needs_live_teacher(recipe: &Recipe) -> bool {
    let cached = recipe.teacher.as_ref().is_some_and(|t| t.cache.is_some());
    recipe.init.llm_from_teacher
        || recipe.stages.iter().any(|s| match s.objective {
            Objective::Preference(_) => true,
            Objective::Distill(_) => !cached,
            _ => false,
        })
}

/// Checks a teacher cache against every distillation stage of the recipe.
fn check_cache_stages(
    recipe: &Recipe,
    inputs: &Inputs,
    cache: &CachedTeacher,
    weights: Option<&str>,
) -> Result<()> {
    for s in &recipe.stages {
        if let Objective::Distill(d) = &s.objective {
            cache.check_stage(
                &recipe.model,
                &inputs.tokenizer,
                d,
                s.data.train_file(),
                &inputs.data[&s.data],
                weights,
            )?;
        }
    }
    Ok(())
}

/// The checkpoints a recipe starts from, resolved and checked before the run folder is touched.
pub struct Init {
    /// `[teacher] from`, loaded on the inner device when some stage runs it (or a cache is
    /// built from it).
    pub teacher: Option<Teacher>,
    /// The teacher cache distillation stages read (`[teacher] cache`): opened here when it is a
    /// folder, built by [`Init::build_teacher_cache`] when the run makes its own.
    pub teacher_cache: Option<CachedTeacher>,
    /// SHA-256 of the teacher's weights, when a cache is checked against them or built.
    teacher_weights: Option<String>,
    /// `[init] upcycle_from`.
    upcycle: Option<PathBuf>,
    /// `[init] model_from`.
    start_model: Option<PathBuf>,
}

impl Init {
    pub fn resolve(
        recipe: &Recipe,
        runs: &Runs,
        inputs: &Inputs,
        kernels: Kernels,
        device: &Device,
    ) -> Result<Init> {
        let teacher_ck = match recipe.teacher.as_ref().and_then(|t| t.from.as_ref()) {
            Some(from) => Some(runs.resolve_checkpoint(from)?),
            None => None,
        };
        let cache_spec = recipe.teacher.as_ref().and_then(|t| t.cache.clone());
        // the teacher's weights, when a cache is to be checked against them or built from them
        let teacher_weights = match (&teacher_ck, &cache_spec) {
            (Some(ck), Some(_)) => Some(teacher_cache::sha256_file(
                &ck.join(checkpoint::MODEL_FILE),
            )?),
            _ => None,
        };
        let teacher_cache = match &cache_spec {
            Some(TeacherCacheSpec::Path(dir)) => {
                let cache = CachedTeacher::open(std::path::Path::new(dir))?;
                check_cache_stages(recipe, inputs, &cache, teacher_weights.as_deref())?;
                Some(cache)
            }
            _ => None,
        };
        let load_teacher =
            needs_live_teacher(recipe) || matches!(cache_spec, Some(TeacherCacheSpec::Build(_)));
        let teacher = match teacher_ck.filter(|_| load_teacher) {
            None => None,
            Some(ck) => {
                let teacher = Teacher::load(
                    &ck,
                    &recipe.model,
                    &inputs.tokenizer,
                    kernels,
                    &device.clone().inner(),
                )?;
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
                let ck = runs.resolve_checkpoint(spec)?;
                checkpoint::check_upcycle(&ck, &recipe.model)?;
                Some(ck)
            }
        };
        let start_model = match &recipe.init.model_from {
            None => None,
            Some(spec) => {
                let ck = runs.resolve_checkpoint(spec)?;
                let cfg = checkpoint::load_config(&ck)?;
                if cfg != recipe.model {
                    return Err(Error::Checkpoint {
                        path: ck.join(checkpoint::CONFIG_FILE),
                        message: format!(
                            "[init] model_from needs a checkpoint of exactly the recipe's \
                             [model] (checkpoint {cfg:?}, recipe {:?})",
                            recipe.model
                        ),
                    });
                }
                Some(ck)
            }
        };
        Ok(Init {
            teacher,
            teacher_cache,
            teacher_weights,
            upcycle,
            start_model,
        })
    }

    /// Builds the run's own teacher cache (`[teacher] cache = { top_k }`) in `dir`, resuming a
    /// partial one, opens and checks it, and drops the live teacher when no stage needs it any
    /// more. Does nothing for other recipes.
    pub fn build_teacher_cache(
        &mut self,
        recipe: &Recipe,
        inputs: &Inputs,
        dir: &std::path::Path,
        device: &Device,
    ) -> Result<()> {
        let Some(TeacherCacheSpec::Build(spec)) =
            recipe.teacher.as_ref().and_then(|t| t.cache.clone())
        else {
            return Ok(());
        };
        let teacher = self
            .teacher
            .as_ref()
            .expect("a cache build loads the teacher");
        let distill: Vec<_> = recipe
            .stages
            .iter()
            .filter_map(|s| match &s.objective {
                Objective::Distill(d) => Some((s.data, d)),
                _ => None,
            })
            .collect();
        let Some((_, first)) = distill.first() else {
            return Ok(());
        };
        let settings = teacher_cache::build::Settings {
            top_k: spec.top_k,
            temperature: first.divergence.temperature,
            zscore: first.divergence.zscore,
            positions: if distill.iter().any(|(_, d)| d.tokens == KdTokens::All) {
                CachePositions::All
            } else {
                CachePositions::Responses
            },
            max_positions: recipe.model.llm.max_positions,
            require_image: recipe.require_image,
            part_size: teacher_cache::EXAMPLES_PER_PART,
        };
        let mut kinds: Vec<DataKind> = distill.iter().map(|(k, _)| *k).collect();
        kinds.sort();
        kinds.dedup();
        let files: Vec<(&str, &Dataset)> = kinds
            .iter()
            .map(|k| (k.train_file(), &inputs.data[k]))
            .collect();
        if !teacher_cache::manifest_path(dir).exists() {
            let mut last = std::time::Instant::now();
            let t0 = std::time::Instant::now();
            teacher_cache::build::build_from(
                &teacher.model,
                self.teacher_weights.as_deref().expect("weights hashed"),
                &inputs.tokenizer,
                &files,
                &settings,
                dir,
                teacher_cache::Shard::WHOLE,
                32,
                &device.clone().inner(),
                &mut |p| {
                    if last.elapsed().as_secs_f64() >= 30.0 || p.done == p.total {
                        last = std::time::Instant::now();
                        log::info!(
                            "teacher cache: {}/{} examples ({} resumed), {:.0} s",
                            p.done,
                            p.total,
                            p.resumed,
                            t0.elapsed().as_secs_f64()
                        );
                    }
                },
            )?;
        }
        let cache = CachedTeacher::open(dir)?;
        check_cache_stages(recipe, inputs, &cache, self.teacher_weights.as_deref())?;
        log::info!("{}", cache.describe());
        self.teacher_cache = Some(cache);
        if !needs_live_teacher(recipe) {
            // the point of the cache: the student trains without the teacher resident
            self.teacher = None;
        }
        Ok(())
    }

    /// The student as this attempt starts it: the resumed checkpoint's weights and position,
    /// or a seeded model initialised as `[init]` says. Logs the model's size.
    pub fn student(
        &self,
        recipe: &Recipe,
        inputs: &Inputs,
        resume_from: Option<&std::path::Path>,
        rec: &mut Recorder,
        device: &Device,
    ) -> Result<(Mllm, TrainState)> {
        let mut model = Mllm::new(&recipe.model, recipe.seed, device);
        let counts = model.param_counts();
        rec.emit(Event::ModelBuilt {
            params: counts.total(),
            vision: counts.vision,
            projector: counts.projector,
            llm: counts.llm,
        })?;
        if let Some(ck) = resume_from {
            return Ok((
                checkpoint::load_model(ck, model)?,
                checkpoint::load_state(ck)?,
            ));
        }
        if let Some(ck) = &self.upcycle {
            model = checkpoint::load_upcycled(ck, model)?;
        }
        if let Some(ck) = &self.start_model {
            model = checkpoint::load_model(ck, model)?;
        }
        if let Some(v) = &inputs.vision_ckpt {
            model = checkpoint::load_vision(v, model)?;
        }
        if let (true, Some(t)) = (recipe.init.llm_from_teacher, &self.teacher) {
            model = checkpoint::load_llm_prefix(&t.checkpoint, model)?;
        }
        let state = TrainState {
            stage: 0,
            step: 0,
            global_step: 0,
            stage_done: false,
        };
        Ok((model, state))
    }
}
