//! `condenser export --web`: a checkpoint as the browser page's bundle (config.json,
//! weights.safetensors, tokenizer.json, bundle.json). With `--dtype auto` the weights are f16
//! when the student's greedy answers on a question set (the Shapes test split by default) are
//! identical with f16-rounded and with f32 weights, else f32; the verdict is kept in bundle.json.

use std::path::{Path, PathBuf};

use anyhow::Context;
use condenser_engine::burn::prelude::Device;
use condenser_engine::data::{Dataset, TextTokenizer};
use condenser_engine::eval::answer_all;
use condenser_engine::io::bundle::{self, Manifest, PrecisionCheck, WeightDtype};
use condenser_engine::model::Mllm;
use condenser_engine::train::checkpoint;

/// The weights' precision in a browser bundle.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtypeChoice {
    /// f16 if it changes no answer on the check split, else f32.
    Auto,
    F16,
    F32,
}

/// What `--web` needs beyond the shared export arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct WebArgs {
    /// Weight precision of the bundle.
    #[arg(long, value_enum, default_value_t = DtypeChoice::Auto)]
    pub dtype: DtypeChoice,
    /// Data folder of the f16 check's questions (`--dtype auto`).
    #[arg(long, default_value = "data/shapes")]
    pub data: PathBuf,
    /// Split file inside the data folder.
    #[arg(long, default_value = "test.json")]
    pub split: String,
    /// Check at most this many questions (default: the whole split).
    #[arg(long)]
    pub check_limit: Option<usize>,
}

pub fn main(
    source: &Path,
    out: &Path,
    tokenizer: Option<PathBuf>,
    web: &WebArgs,
    device: &Device,
) -> anyhow::Result<()> {
    if !source.join(checkpoint::MODEL_FILE).exists() {
        anyhow::bail!(
            "{}: --web needs a Condenser checkpoint folder (no {} here), e.g. \
             runs/shapes-kd/checkpoints/final",
            source.display(),
            checkpoint::MODEL_FILE
        );
    }
    let model = checkpoint::load_full(source, device)?;
    let tok = super::eval::tokenizer_for(source, tokenizer, Some(&web.data))?;
    tok.check_fits(model.config.llm.vocab_size)?;
    let tok_bytes =
        std::fs::read(&tok.path).with_context(|| format!("reading {}", tok.path.display()))?;
    let (dtype, reason, check) = match web.dtype {
        DtypeChoice::F16 => (WeightDtype::F16, "asked for (--dtype f16)".to_string(), None),
        DtypeChoice::F32 => (WeightDtype::F32, "asked for (--dtype f32)".to_string(), None),
        DtypeChoice::Auto => {
            let check = f16_check(&model, &tok, web)?;
            let (dtype, reason) = if check.differing == 0 {
                (
                    WeightDtype::F16,
                    format!("f16 weights give the same answers on all {} questions", check.questions),
                )
            } else {
                (
                    WeightDtype::F32,
                    format!(
                        "f16 weights change {} of {} answers",
                        check.differing, check.questions
                    ),
                )
            };
            (dtype, reason, Some(check))
        }
    };
    let manifest = Manifest {
        format: bundle::FORMAT.into(),
        version: bundle::VERSION,
        dtype,
        reason,
        params: 0,
        weights_bytes: 0,
        source: source.display().to_string(),
        check,
    };
    let m = bundle::write_bundle(out, &model, &tok_bytes, dtype, manifest)?;
    println!(
        "wrote {}: {} parameters, {} weights ({:.1} KiB): {}",
        out.display(),
        m.params,
        serde_json::to_value(m.dtype)?.as_str().unwrap_or_default(),
        m.weights_bytes as f64 / 1024.0,
        m.reason
    );
    Ok(())
}

/// Answers the check split with the f32 weights and with f16-rounded ones.
fn f16_check(model: &Mllm, tok: &TextTokenizer, web: &WebArgs) -> anyhow::Result<PrecisionCheck> {
    let split = web.data.join(&web.split);
    if !split.exists() {
        anyhow::bail!(
            "{}: the f16 check (--dtype auto) answers this split and it is missing; generate it \
             (`condenser shapes`), point --data/--split at your own, or choose --dtype f16|f32",
            split.display()
        );
    }
    let data = Dataset::load(
        &web.data,
        &web.split,
        tok,
        &model.config.vision,
        model.config.llm.max_positions,
        false,
    )?;
    let half = bundle::rounded(model, WeightDtype::F16)?;
    let full = answer_all(model, tok, &data, 64, web.check_limit);
    let rounded = answer_all(&half, tok, &data, 64, web.check_limit);
    let mut differing = 0;
    let mut first = None;
    for ((_, a), (_, b)) in full.iter().zip(&rounded) {
        if a.answer != b.answer {
            differing += 1;
            first.get_or_insert_with(|| format!("{}: {:?} -> {:?}", a.id, a.answer, b.answer));
        }
    }
    Ok(PrecisionCheck {
        questions_from: split.display().to_string(),
        questions: full.len(),
        differing,
        first_difference: first,
    })
}
