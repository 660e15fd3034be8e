//! `condenser generate`: text continuation with an imported decoder (a HF safetensors folder or a
//! llama GGUF file), to check an import the way a user would: by what the model says.

use std::path::PathBuf;

use anyhow::Context;
use condenser_engine::io::{llm_from_tensors, load_hf_llm, read_gguf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A llama-architecture GGUF file, or a HF folder (config.json, *.safetensors and
    /// tokenizer.json) of a Llama or Qwen2 decoder.
    pub model: PathBuf,
    /// The text to continue, e.g. "The capital of France is".
    #[arg(long)]
    pub prompt: String,
    /// Tokenizer for a HF folder (default: its tokenizer.json); GGUF files carry their own.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: super::SamplingArgs,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let (device, _) = args.device.device()?;
    let gguf =
        condenser_engine::io::detect(&args.model) == Some(condenser_engine::io::ModelFormat::Gguf);
    let (llm, tok, eos) = if gguf {
        let g = read_gguf(&args.model)?;
        let llm = llm_from_tensors(&g.config, g.tensors, &device)?;
        (llm, g.tokenizer, g.eos)
    } else {
        let llm = load_hf_llm(&args.model, &device)?;
        let path = args
            .tokenizer
            .clone()
            .unwrap_or_else(|| args.model.join("tokenizer.json"));
        let tok = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        (llm, tok, None)
    };
    let enc = tok
        .encode(args.prompt.as_str(), false)
        .map_err(|e| anyhow::anyhow!("cannot tokenise the prompt: {e}"))?;
    let out = llm.generate_text(
        enc.get_ids(),
        &args
            .sampling
            .options(args.max_tokens, eos.into_iter().collect()),
    );
    let text = tok
        .decode(&out, false)
        .map_err(|e| anyhow::anyhow!("cannot decode: {e}"))
        .context("decoding the answer")?;
    println!("{}{}", args.prompt, text);
    Ok(())
}
