//! `condenser export --web`: a checkpoint as the browser page's bundle (config.json,
//! weights.safetensors, tokenizer.json, bundle.json). With `--dtype auto` the smallest of
//! these precisions that leaves every greedy answer on a question set (the Shapes test split by
//! default) identical to the f32 weights' is chosen: all f16; then f16 for some parts (vision
//! encoder + projector, LLM + projector, vision encoder, LLM; the largest saving first); else
//! all f32. The trials are kept in bundle.json.

use std::path::{Path, PathBuf};

use anyhow::Context;
use condenser_engine::burn::prelude::Device;
use condenser_engine::data::{Dataset, TextTokenizer};
use condenser_engine::eval::answer_all;
use condenser_engine::io::bundle::{self, Manifest, Part, Precision, PrecisionCheck, Trial};
use condenser_engine::model::Mllm;
use condenser_engine::train::checkpoint;

/// The weights' precision in a browser bundle.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtypeChoice {
    /// The smallest precision (all f16, then f16 for some of vision / projector / LLM) that
    /// changes no answer on the check split, else f32.
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
    let (precision, reason, check) = match web.dtype {
        DtypeChoice::F16 => (
            Precision::f16(),
            "asked for (--dtype f16)".to_string(),
            None,
        ),
        DtypeChoice::F32 => (
            Precision::f32(),
            "asked for (--dtype f32)".to_string(),
            None,
        ),
        DtypeChoice::Auto => {
            let check = precision_check(&model, &tok, web)?;
            let (precision, reason) = match check.trials.iter().find(|t| t.differing == 0) {
                Some(t) => (
                    t.precision.clone(),
                    format!(
                        "{} weights give the f32 answers to all {} questions",
                        t.precision.label(),
                        check.questions
                    ),
                ),
                None => (
                    Precision::f32(),
                    format!(
                        "every f16 choice changed answers (all f16: {} of {})",
                        check.trials[0].differing, check.questions
                    ),
                ),
            };
            (precision, reason, Some(check))
        }
    };
    let manifest = Manifest {
        format: bundle::FORMAT.into(),
        version: bundle::VERSION,
        precision,
        reason,
        params: 0,
        weights_bytes: 0,
        source: source.display().to_string(),
        check,
    };
    let m = bundle::write_bundle(out, &model, &tok_bytes, manifest)?;
    println!(
        "wrote {}: {} parameters, {} weights ({:.1} KiB): {}",
        out.display(),
        m.params,
        m.precision.label(),
        m.weights_bytes as f64 / 1024.0,
        m.reason
    );
    Ok(())
}

/// Answers the check split with the f32 weights, then with each candidate precision until one
/// changes nothing.
fn precision_check(
    model: &Mllm,
    tok: &TextTokenizer,
    web: &WebArgs,
) -> anyhow::Result<PrecisionCheck> {
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
    let full = answer_all(model, tok, &data, 64, web.check_limit);
    // all f16 first, then the partial choices, largest saving first
    let counts = model.param_counts();
    let saving = |p: &Precision| {
        p.f16
            .iter()
            .map(|part| match part {
                Part::Vision => counts.vision,
                Part::Projector => counts.projector,
                Part::Llm => counts.llm,
            })
            .sum::<usize>()
    };
    let mut candidates = vec![
        Precision::only(&[Part::Vision, Part::Projector]),
        Precision::only(&[Part::Llm, Part::Projector]),
        Precision::only(&[Part::Vision]),
        Precision::only(&[Part::Llm]),
    ];
    candidates.sort_by_key(|p| std::cmp::Reverse(saving(p)));
    candidates.insert(0, Precision::f16());
    let mut trials = Vec::new();
    for precision in candidates {
        let rounded = answer_all(
            &bundle::rounded(model, &precision)?,
            tok,
            &data,
            64,
            web.check_limit,
        );
        let mut differing = 0;
        let mut first = None;
        for ((_, a), (_, b)) in full.iter().zip(&rounded) {
            if a.answer != b.answer {
                differing += 1;
                first.get_or_insert_with(|| format!("{}: {:?} -> {:?}", a.id, a.answer, b.answer));
            }
        }
        let done = differing == 0;
        trials.push(Trial {
            precision,
            differing,
            first_difference: first,
        });
        if done {
            break;
        }
    }
    Ok(PrecisionCheck {
        questions_from: split.display().to_string(),
        questions: full.len(),
        trials,
    })
}
