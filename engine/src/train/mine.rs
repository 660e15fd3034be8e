//! The `mined` preference data of a stage: the model as it enters the stage answers the
//! single-turn yes/no questions of `train.json`, and its mistakes become the stage's pairs
//! (`data::mined`). The pairs are written to the run folder before training starts, so a
//! resumed stage trains on exactly the pairs it started with, and a user can read them.

use std::time::Instant;

use crate::config::Recipe;
use crate::data::llava::load_preferences;
use crate::data::mined::mine_pairs;
use crate::data::{Dataset, TextTokenizer};
use crate::eval::answer_all;
use crate::model::Mllm;
use crate::run::RunDir;
use crate::{Error, Result};

/// The pairs of stage `stage`: read back from the run folder when a previous attempt of this
/// run already mined them, otherwise mined from `model`'s answers to `questions` and saved.
pub fn stage_pairs(
    model: &Mllm,
    questions: &Dataset,
    tok: &TextTokenizer,
    recipe: &Recipe,
    run: &RunDir,
    stage: usize,
) -> Result<Dataset> {
    let file = run.mined_pairs(stage);
    let max_len = recipe.model.llm.max_positions;
    let vision = &recipe.model.vision;
    if file.exists() {
        let pairs = load_preferences(&file, true)?;
        log::info!(
            "stage {stage}: {} mined pairs read back from {}",
            pairs.len(),
            file.display()
        );
        return Dataset::from_pairs(file, &pairs, &recipe.image_root(), tok, vision, max_len);
    }
    let t0 = Instant::now();
    let answers = answer_all(model, tok, questions, 64, None)?;
    let (pairs, stats) = mine_pairs(&answers, recipe.seed ^ (stage as u64 + 1));
    if pairs.is_empty() {
        return Err(Error::Invalid(format!(
            "stage {stage}: no preference pair could be mined from {} yes/no questions of {} \
             ({} wrong on \"yes\", {} wrong on \"no\"): the model makes no mistake there, or \
             one answer never occurs",
            stats.yes_no,
            questions.path.display(),
            stats.wrong_on_yes,
            stats.wrong_on_no
        )));
    }
    let text = serde_json::to_string_pretty(&pairs).map_err(|e| Error::json(&file, e))?;
    crate::error::write_atomic(&file, text.as_bytes())?;
    log::info!(
        "stage {stage}: mined {} pairs from {} yes/no questions ({} wrong on \"yes\", {} wrong on \
         \"no\", the rest right answers for balance) in {:.1} s -> {}",
        stats.pairs,
        stats.yes_no,
        stats.wrong_on_yes,
        stats.wrong_on_no,
        t0.elapsed().as_secs_f64(),
        file.display()
    );
    Dataset::from_pairs(file, &pairs, &recipe.image_root(), tok, vision, max_len)
}
