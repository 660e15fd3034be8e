//! `condenser export`: a decoder as a Hugging Face folder (config.json + model.safetensors with
//! HF names, plus tokenizer.json) that transformers' `from_pretrained` loads. The source is a
//! Condenser checkpoint (its LLM: e.g. a distilled student's decoder), a llama GGUF file, or a
//! HF folder. With `--web`, the whole multimodal checkpoint as the browser page's bundle
//! (see `export_web`).

use std::path::PathBuf;

use anyhow::Context;
use condenser_engine::io::{
    ModelFormat, detect, export_hf_llm, llm_from_tensors, load_hf_llm, read_gguf,
};
use condenser_engine::run::checkpoint;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint folder (runs/<run>/checkpoints/final), a llama GGUF file, or a HF folder.
    pub source: PathBuf,
    /// Output folder (created; config.json, model.safetensors and tokenizer.json are replaced).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Tokenizer to copy beside the weights (default: the run folder's, or the GGUF's own).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Write the browser page's bundle (vision encoder, projector and LLM; config.json,
    /// weights.safetensors, tokenizer.json, bundle.json) instead of a HF decoder folder. The
    /// source must be a checkpoint folder.
    #[arg(long)]
    pub web: bool,
    #[command(flatten)]
    pub web_args: super::export_web::WebArgs,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let (device, _) = args.device.device()?;
    let src = &args.source;
    if args.web {
        return super::export_web::main(src, &args.out, args.tokenizer, &args.web_args, &device);
    }
    let (llm, own_tokenizer, default_tokenizer) = match detect(src) {
        Some(ModelFormat::Gguf | ModelFormat::Onnx) => {
            let g = read_gguf(src)?;
            let llm = llm_from_tensors(&g.config, g.tensors, &device)?;
            (llm, Some(g.tokenizer), None)
        }
        Some(ModelFormat::Checkpoint) => {
            let model = checkpoint::load_full(src, &device)?;
            let tok = condenser_engine::run::checkpoint_tokenizer(src);
            (model.llm, None, tok)
        }
        Some(ModelFormat::HfFolder) => {
            let llm = load_hf_llm(src, &device)?;
            (llm, None, Some(src.join("tokenizer.json")))
        }
        None => anyhow::bail!(
            "{}: not a GGUF file, a checkpoint folder (no {}) or a HF folder (no config.json)",
            src.display(),
            checkpoint::MODEL_FILE
        ),
    };
    export_hf_llm(&llm, &args.out)?;
    let tok_out = args.out.join("tokenizer.json");
    match (args.tokenizer.or(default_tokenizer), own_tokenizer) {
        (Some(path), _) if path.exists() => {
            std::fs::copy(&path, &tok_out)
                .with_context(|| format!("copying {} to {}", path.display(), tok_out.display()))?;
        }
        (_, Some(tok)) => tok
            .save(&tok_out, true)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tok_out.display()))?,
        (Some(path), None) => {
            eprintln!("note: no tokenizer written ({} not found)", path.display())
        }
        (None, None) => eprintln!("note: no tokenizer written"),
    }
    println!(
        "wrote {} ({} layers, hidden {}, vocab {})",
        args.out.display(),
        llm.config.layers,
        llm.config.hidden,
        llm.config.vocab_size
    );
    Ok(())
}
