//! `condenser prefs`: build hallucination preference pairs (chosen = the data set's answer,
//! rejected = the same answer naming an object absent from the image, or "yes" for a "no") from
//! any LLaVA-format conversation file, for LLaVA-MoD's preference distillation stage; or
//! (`--from-answers`) pairs mined from a model's own wrong yes/no answers, as written by
//! `condenser eval --answers`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use condenser_engine::data::llava::load_conversations;
use condenser_engine::data::mined::mine_pairs;
use condenser_engine::data::prefs::build_pairs;
use condenser_engine::data::shapes::object_names;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// LLaVA conversation JSON to read (e.g. data/shapes/train.json).
    #[arg(required_unless_present = "from_answers")]
    pub input: Option<PathBuf>,
    /// Mine pairs from a model's answers instead (the JSON lines of `condenser eval --answers`,
    /// best on the training split): every wrong yes/no answer (existence questions, or untyped
    /// ones; relation questions are left out) becomes a pair (chosen = the
    /// expected answer, rejected = the other word), and the answer with fewer mistakes is
    /// topped up with right answers so "yes" and "no" are chosen equally often. Image paths
    /// stay relative to the data folder the answers came from: write the pairs there.
    #[arg(long, conflicts_with_all = ["input", "objects", "per_record"])]
    pub from_answers: Option<PathBuf>,
    /// Where to write the pairs (`image`, `prompt`, `chosen`, `rejected` JSON); a recipe stage
    /// with `data = "preference"` reads `prefs.json` beside its data.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Object phrases, one per line ("red circle", "dog"): what an answer may name and a
    /// rejected answer may hallucinate. Default: the Shapes world's 24 objects.
    #[arg(long)]
    pub objects: Option<PathBuf>,
    /// Pairs at most per record.
    #[arg(long, default_value_t = 1)]
    pub per_record: usize,
    /// Seed for picking turns and hallucinated objects (or, with --from-answers, the right
    /// answers that balance the pairs).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if let Some(answers) = &args.from_answers {
        return from_answers(answers, &args.output, args.seed);
    }
    let input = args
        .input
        .expect("clap requires INPUT without --from-answers");
    anyhow::ensure!(args.per_record >= 1, "--per-record must be at least 1");
    let objects = match &args.objects {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading the object list {}", p.display()))?
            .lines()
            .map(str::to_string)
            .filter(|l| !l.trim().is_empty())
            .collect(),
        None => object_names(),
    };
    anyhow::ensure!(
        objects.len() >= 2,
        "the object list needs at least two phrases"
    );
    let records = load_conversations(&input, false)?;
    let (pairs, stats) = build_pairs(&records, &objects, args.per_record, args.seed);
    anyhow::ensure!(
        !pairs.is_empty(),
        "no pair could be built from {} records: no answer names a listed object (or says \"no\" \
         to a question about one); check --objects",
        stats.records
    );
    let text = serde_json::to_string_pretty(&pairs)?;
    condenser_engine::error::write_atomic(&args.output, text.as_bytes())?;
    println!(
        "wrote {}: {} pairs from {} records ({} without a listed object, {} mentioning every object)",
        args.output.display(),
        stats.pairs,
        stats.records,
        stats.skipped_no_object,
        stats.skipped_no_absent
    );
    Ok(())
}

fn from_answers(path: &Path, output: &Path, seed: u64) -> anyhow::Result<()> {
    let answers = condenser_engine::data::read_answers(path)?;
    let (pairs, stats) = mine_pairs(&answers, seed);
    anyhow::ensure!(
        !pairs.is_empty(),
        "no pair could be mined from {}: {} answers, {} to yes/no questions with an image, {} \
         wrong on \"yes\", {} wrong on \"no\" (a pair needs a mistake, and both answers must occur)",
        path.display(),
        stats.answers,
        stats.yes_no,
        stats.wrong_on_yes,
        stats.wrong_on_no
    );
    let text = serde_json::to_string_pretty(&pairs)?;
    condenser_engine::error::write_atomic(output, text.as_bytes())?;
    println!(
        "wrote {}: {} pairs from {} yes/no answers ({} wrong on \"yes\", {} wrong on \"no\", \
         the rest right answers for balance)",
        output.display(),
        stats.pairs,
        stats.yes_no,
        stats.wrong_on_yes,
        stats.wrong_on_no
    );
    Ok(())
}
