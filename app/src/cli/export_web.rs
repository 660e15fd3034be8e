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
use condenser_engine::io::bundle::{self, Manifest, Precision, PrecisionCheck};
use condenser_engine::model::Mllm;
use condenser_engine::run::checkpoint;

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
    if !checkpoint::is_checkpoint(source) {
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
            let (precision, reason) = check.choice();
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

/// The f16 check of `--dtype auto` on the check split (`--data`, `--split`).
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
        &web.data,
        tok,
        &model.config.vision,
        model.config.llm.max_positions,
        false,
    )?;
    Ok(bundle::precision_check(model, tok, &data, web.check_limit)?)
}
