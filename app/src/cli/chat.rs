//! `condenser chat`: one question about one image.

use std::path::PathBuf;

use condenser_engine::data::image::load_image;
use condenser_engine::data::question_batch;
use condenser_engine::run::checkpoint;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint folder (e.g. runs/shapes-teacher/checkpoints/final).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Image file (PNG, JPEG or WebP), brought to the encoder's input as the model's
    /// preprocessing says (resize, crop, pad).
    #[arg(long)]
    pub image: PathBuf,
    /// Folder a relative `--image` is read from (LLaVA's image_folder; default: the current
    /// folder), so image paths can be given as a data file writes them.
    #[arg(long)]
    pub image_folder: Option<PathBuf>,
    /// The question, e.g. "how many objects are there ?".
    #[arg(long)]
    pub prompt: String,
    /// Tokenizer (default: the run folder's copy).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: super::SamplingArgs,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let (device, _) = args.device.device()?;
    let model = checkpoint::load_full(&args.checkpoint, &device)?;
    let tok = super::eval::tokenizer_for(&args.checkpoint, args.tokenizer, None)?;
    tok.check_fits(model.config.llm.vocab_size)?;
    let cfg = &model.config.vision;
    let image = match &args.image_folder {
        Some(folder) if args.image.is_relative() => folder.join(&args.image),
        _ => args.image.clone(),
    };
    let pixels = load_image(&image, cfg)?;
    let batch = question_batch(&tok, cfg, pixels, &args.prompt, &device)?;
    let out = model.generate(
        &batch,
        &args.sampling.options(args.max_tokens, tok.stop_ids()),
    );
    println!("{}", tok.decode(&out[0]));
    Ok(())
}
