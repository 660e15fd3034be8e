//! `condenser import`: real checkpoints in, a Condenser checkpoint folder out (model.bpk,
//! config.json, import.json with where each part came from, tokenizer.json when the sources
//! carry one). Recipes then start from it: `[init] model_from`, `vision_from`, `[teacher] from`.

use std::path::PathBuf;

use condenser_engine::io::{
    FeatureSelect, ImportOptions, ImportSource, import_model, write_imported,
};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  condenser import llava-folder --out checkpoints/llava
      a transformers LLaVA or TinyLLaVA Factory folder, every part as trained
  condenser import --vision siglip-folder --llm SmolLM2-135M-Instruct.Q4_1.gguf --out checkpoints/teacher
      a CLIP/SigLIP tower (hidden state -2, as LLaVA) and a decoder joined by a fresh projector
  condenser import --vision .cache/dinov2/vit_s_focus.onnx --image-size 112 --llm smollm2.gguf --out checkpoints/teacher
      the DINOv2-S backbone from its ONNX file (scripts/fetch-dinov2.sh), its positions
      resized for 112 px (8 x 8 patches)
  condenser import --vision runs/easyvqa-teacher/checkpoints/final --llm smollm2.gguf --llm-layers 8 --out checkpoints/student
      a trained Condenser encoder and the decoder's first 8 layers (LLaVADI's student init)")]
pub struct Args {
    /// A LLaVA (transformers) or TinyLLaVA Factory folder: config.json + *.safetensors.
    #[arg(conflicts_with_all = ["vision", "llm"], required_unless_present_all = ["vision", "llm"])]
    pub source: Option<PathBuf>,
    /// Vision tower: a CLIP/SigLIP/DINOv2 HF folder, a DINOv2 ONNX file (exported from
    /// transformers), or a Condenser checkpoint folder (its encoder).
    #[arg(long, requires = "llm")]
    pub vision: Option<PathBuf>,
    /// Decoder: a Llama/Qwen2 HF folder or a llama-architecture GGUF file.
    #[arg(long, requires = "vision")]
    pub llm: Option<PathBuf>,
    /// The checkpoint folder to write (built aside, then renamed into place).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace `--out` if it exists.
    #[arg(long)]
    pub force: bool,
    /// Which hidden state of a HF tower feeds the projector: negative counts from the end
    /// (-1 = last block, -2 = penultimate, LLaVA's default), 0 = the embeddings.
    #[arg(long, default_value_t = -2, allow_negative_numbers = true)]
    pub feature_layer: i64,
    /// Keep the tower's first token (CLS) in the visual tokens (LLaVA's `full` strategy);
    /// by default CLIP's CLS is dropped and SigLIP, which has none, keeps every patch.
    #[arg(long)]
    pub keep_first: bool,
    /// Input size in pixels for a HF/ONNX tower, when not the one it was trained at (DINOv2-S
    /// ships 518 px positions; 224 or less is usual under an LLM). The learned positions are
    /// resized bicubically to the new patch grid, as transformers interpolates them.
    #[arg(long, value_name = "PX")]
    pub image_size: Option<usize>,
    /// Keep only the decoder's first N layers.
    #[arg(long, value_name = "N")]
    pub llm_layers: Option<usize>,
    /// Seed of the fresh projector (with --vision/--llm).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Add the special tokens Condenser's chat template needs (<image>, <|user|>, ...) to the
    /// decoder's tokenizer, growing its embedding (and head) by as many rows, each the mean
    /// of the trained ones. Needed to train a real decoder on LLaVA-format data.
    #[arg(long)]
    pub chat_tokens: bool,
    /// LLaVA's `image_aspect_ratio`: `pad` pastes each image onto a square of the mean colour
    /// before the tower's processing, `square` does not (default: what the source says: a
    /// LLaVA-1.5 or TinyLLaVA config's own setting, else no padding).
    #[arg(long, value_enum)]
    pub image_aspect_ratio: Option<AspectRatio>,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

/// LLaVA's `image_aspect_ratio` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AspectRatio {
    Pad,
    Square,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if args.out.exists() && !args.force {
        anyhow::bail!("{}: exists; pass --force to replace it", args.out.display());
    }
    let source = match (args.source, args.vision, args.llm) {
        (Some(dir), None, None) => ImportSource::Whole(dir),
        (None, Some(vision), Some(llm)) => ImportSource::Parts { vision, llm },
        _ => anyhow::bail!("give a LLaVA folder, or both --vision and --llm"),
    };
    let options = ImportOptions {
        select: FeatureSelect {
            layer: args.feature_layer,
            drop_first: args.keep_first.then_some(false),
            image_size: args.image_size,
        },
        llm_layers: args.llm_layers,
        seed: args.seed,
        chat_tokens: args.chat_tokens,
    };
    let (device, _) = args.device.device()?;
    let mut imported = import_model(&source, &options, &device)?;
    if let Some(ratio) = args.image_aspect_ratio {
        let mut pre = imported.model.config.vision.preprocess;
        pre.pad_to_square = ratio == AspectRatio::Pad;
        imported.model.set_preprocess(pre);
    }
    write_imported(&imported, &args.out)?;
    let p = &imported.provenance;
    println!(
        "wrote {}: {}",
        args.out.display(),
        imported.model.param_counts()
    );
    println!("  vision    {}", p.vision);
    println!("  projector {}", p.projector);
    println!("  llm       {}", p.llm);
    if imported.tokenizer.is_none() {
        println!("  (no tokenizer.json: the sources carry none)");
    }
    Ok(())
}
