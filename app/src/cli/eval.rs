//! `condenser eval`: score a checkpoint on a LLaVA-format split.

use std::path::PathBuf;

use condenser_engine::data::{Dataset, TextTokenizer};
use condenser_engine::eval::{answer_all, report, score};
use condenser_engine::run::checkpoint;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint folder (e.g. runs/shapes-teacher/checkpoints/final).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Data folder holding the split and its images.
    #[arg(long, default_value = "data/shapes")]
    pub data: PathBuf,
    /// Split file inside the data folder.
    #[arg(long, default_value = "test.json")]
    pub split: String,
    /// Folder the split's image paths are resolved against (LLaVA's image_folder); default:
    /// the data folder.
    #[arg(long)]
    pub image_folder: Option<PathBuf>,
    /// Tokenizer (default: the run folder's copy, else the data folder's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Evaluate at most this many questions.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write every answer here, one JSON object per line (id, image, question type,
    /// question, expected, answer, correct): for error analysis, or for mining preference
    /// pairs from a model's own mistakes.
    #[arg(long)]
    pub answers: Option<PathBuf>,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

/// The tokenizer of a checkpoint: the explicit one, the checkpoint's own (an import) or its run
/// folder's copy, or the data's.
pub fn tokenizer_for(
    checkpoint: &std::path::Path,
    explicit: Option<PathBuf>,
    data: Option<&std::path::Path>,
) -> anyhow::Result<TextTokenizer> {
    let path = explicit
        .or_else(|| condenser_engine::run::checkpoint_tokenizer(checkpoint))
        .or(data.map(|d| d.join("tokenizer.json")))
        .ok_or_else(|| anyhow::anyhow!("no tokenizer found: pass --tokenizer"))?;
    Ok(TextTokenizer::load(&path)?)
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let (device, _) = args.device.device()?;
    let model = checkpoint::load_full(&args.checkpoint, &device)?;
    let tok = tokenizer_for(&args.checkpoint, args.tokenizer, Some(&args.data))?;
    tok.check_fits(model.config.llm.vocab_size)?;
    let data = Dataset::load(
        &args.data,
        &args.split,
        args.image_folder.as_ref().unwrap_or(&args.data),
        &tok,
        &model.config.vision,
        model.config.llm.max_positions,
        false,
    )?;
    let answers = answer_all(&model, &tok, &data, args.batch_size, args.limit)?;
    if let Some(p) = &args.answers {
        condenser_engine::data::write_answers(p, &answers)?;
    }
    let r = score(answers);
    println!(
        "{}",
        report::comparison(&[(&args.checkpoint.display().to_string(), &r)])
    );
    println!(
        "exact match: {:.1}% over {} questions",
        100.0 * r.accuracy,
        r.questions
    );
    if let Some(p) = args.json {
        condenser_engine::error::write_atomic(&p, serde_json::to_string_pretty(&r)?.as_bytes())?;
    }
    Ok(())
}
