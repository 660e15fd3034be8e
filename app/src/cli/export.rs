//! `condenser export`: a decoder as a Hugging Face folder (config.json + model.safetensors with
//! HF names, plus tokenizer.json) that transformers' `from_pretrained` loads, or (`--format
//! gguf`) as a llama.cpp GGUF file with its tokenizer and chat template. The source is a
//! Condenser checkpoint (its LLM: e.g. a distilled student's decoder), a llama GGUF file, or a
//! HF folder. With `--format web`, the whole multimodal checkpoint as the browser page's bundle
//! (see `export_web`).

use std::path::PathBuf;

use anyhow::Context;
use condenser_engine::data::TextTokenizer;
use condenser_engine::io::{
    GgufType, ModelFormat, detect, export_gguf, export_hf_llava, export_hf_llm, llm_from_tensors,
    load_hf_llm, read_gguf,
};
use condenser_engine::run::checkpoint;

/// What `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The decoder as a transformers folder (`LlamaForCausalLM` / `Qwen2ForCausalLM`).
    Hf,
    /// The decoder as one llama.cpp GGUF file (`--gguf-type`), tokenizer and chat template in
    /// its metadata; the tokenizer must be byte-level BPE.
    Gguf,
    /// The whole multimodal checkpoint as a transformers LLaVA folder
    /// (`LlavaForConditionalGeneration`, tokenizer and processor): CLIP, SigLIP or DINOv2
    /// towers (imported ones); Condenser's own encoders end in a LayerNorm LLaVA cannot express.
    HfLlava,
    /// The whole multimodal checkpoint as the browser page's bundle.
    Web,
}

/// The weight type of a GGUF export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GgufWeights {
    F32,
    F16,
    /// 8-bit blocks (about half of f16's size); every matrix row must be a multiple of 32.
    #[value(name = "q8_0")]
    Q8_0,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint folder (runs/<run>/checkpoints/final), a llama GGUF file, or a HF folder.
    pub source: PathBuf,
    /// Output: a folder for `hf` and `web` (created; files of the same names are replaced), a
    /// file for `gguf` (e.g. student.gguf).
    #[arg(long, short)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Hf)]
    pub format: Format,
    /// Weights of a GGUF export (norms and biases stay f32).
    #[arg(long, value_enum, default_value_t = GgufWeights::F16)]
    pub gguf_type: GgufWeights,
    /// Tokenizer to copy beside the weights (default: the run folder's, or the GGUF's own).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// The same as `--format web`: the browser page's bundle (vision encoder, projector and
    /// LLM; config.json, weights.safetensors, tokenizer.json, bundle.json). The source must be a
    /// checkpoint folder.
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
    if args.web || args.format == Format::Web {
        return super::export_web::main(src, &args.out, args.tokenizer, &args.web_args, &device);
    }
    if args.format == Format::HfLlava {
        anyhow::ensure!(
            detect(src) == Some(ModelFormat::Checkpoint),
            "{}: --format hf-llava exports a checkpoint folder (no {} here)",
            src.display(),
            checkpoint::MODEL_FILE
        );
        let model = checkpoint::load_full(src, &device)?;
        let path = args
            .tokenizer
            .clone()
            .or_else(|| condenser_engine::run::checkpoint_tokenizer(src))
            .context("the LLaVA folder needs the model's tokenizer: --tokenizer")?;
        let tok = TextTokenizer::load(&path)?;
        tok.check_fits(model.config.llm.vocab_size)?;
        let tower = export_hf_llava(&model, tok.special.image, Some(&tok), &args.out)?;
        println!(
            "wrote {}: LlavaForConditionalGeneration ({tower:?} tower of {} layers at {} px, \
             {} decoder layers, vocab {}), tokenizer and processor",
            args.out.display(),
            model.config.vision.layers,
            model.config.vision.image_size,
            model.config.llm.layers,
            model.config.llm.vocab_size
        );
        return Ok(());
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
    if args.format == Format::Gguf {
        let path = args.tokenizer.clone().or(default_tokenizer).context(
            "a GGUF export needs the tokenizer with the chat template's tokens: --tokenizer",
        )?;
        let tok = TextTokenizer::load(&path)?;
        let name = src
            .components()
            .rev()
            .find_map(|c| {
                let s = c.as_os_str().to_string_lossy();
                (!matches!(s.as_ref(), "final" | "checkpoints")).then(|| s.to_string())
            })
            .unwrap_or_else(|| "condenser".into());
        let ty = match args.gguf_type {
            GgufWeights::F32 => GgufType::F32,
            GgufWeights::F16 => GgufType::F16,
            GgufWeights::Q8_0 => GgufType::Q8_0,
        };
        export_gguf(&llm, &tok, &name, ty, &args.out)?;
        let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
        println!(
            "wrote {} ({:?}, {:.1} MiB: {} layers, hidden {}, vocab {}, tokenizer {})",
            args.out.display(),
            args.gguf_type,
            bytes as f64 / (1 << 20) as f64,
            llm.config.layers,
            llm.config.hidden,
            llm.config.vocab_size,
            path.display()
        );
        return Ok(());
    }
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
