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
use crate::backend::kernels::Kernels;
use crate::config::{DataKind, Recipe};
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

/// The checkpoints a recipe starts from, resolved and checked before the run folder is touched.
pub struct Init {
    /// `[teacher] from`, loaded on the inner device.
    pub teacher: Option<Teacher>,
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
        let teacher = match &recipe.teacher {
            None => None,
            Some(t) => {
                let ck = runs.resolve_checkpoint(&t.from)?;
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
            upcycle,
            start_model,
        })
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
