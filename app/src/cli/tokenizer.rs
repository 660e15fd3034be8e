//! `condenser tokenizer`: trains an HF `tokenizer.json` on a data folder's own conversations
//! (HF tokenizers' trainers; the chat template's special tokens first) and prints the
//! vocabulary size a recipe's `[model.llm]` needs.

use std::path::PathBuf;

use anyhow::Context as _;
use condenser_engine::data::tokenizer_build::{
    TokenizerKind, TokenizerSpec, build_tokenizer, data_texts,
};

use super::progress;

/// The tokenizer model (`--kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Byte-level BPE: no text is ever unknown, decoding gives it back exactly.
    Bpe,
    /// Lower-cased words, `<unk>` for the rest: for small closed vocabularies (short answers
    /// become one token each).
    Word,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The data folder: its train.json, captions.json and prefs.json (those that exist) are the
    /// text; test.json is never read.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write (default: the data folder's tokenizer.json, where recipes look first).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Kind::Bpe)]
    pub kind: Kind,
    /// The largest vocabulary, the 6 chat tokens (7 with word-level's `<unk>`) included
    /// (default: 8192 for BPE, 32768 for word-level). BPE stops early when nothing is left to
    /// merge; word-level keeps the most frequent words.
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Leave out merges (BPE) or words (word-level) seen fewer times (default: 2 for BPE, 1
    /// for word-level).
    #[arg(long)]
    pub min_frequency: Option<u64>,
    /// Replace an existing tokenizer file (models trained with the old one no longer read
    /// their inputs right).
    #[arg(long)]
    pub force: bool,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.data.join("tokenizer.json"));
    anyhow::ensure!(
        args.force || !out.exists(),
        "{}: already exists; models trained with it read their inputs through it (--force \
         replaces it, -o writes elsewhere)",
        out.display()
    );
    let (kind, vocab, min_frequency) = match args.kind {
        Kind::Bpe => (TokenizerKind::Bpe, 8192, 2),
        Kind::Word => (TokenizerKind::Word, 32768, 1),
    };
    let spec = TokenizerSpec {
        kind,
        vocab_size: args.vocab_size.unwrap_or(vocab),
        min_frequency: args.min_frequency.unwrap_or(min_frequency),
    };
    let started = std::time::Instant::now();
    let (texts, files) = data_texts(&args.data)?;
    let built = build_tokenizer(&texts, &spec)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    condenser_engine::error::write_atomic(&out, built.json.as_bytes())?;
    progress::result(&format!(
        "wrote {}: {} tokenizer of {} tokens, trained on {} texts of {} in {:.1} s\n\
         put `vocab_size = {}` (or more) under [model.llm] in your recipes",
        out.display(),
        match spec.kind {
            TokenizerKind::Bpe => "byte-level BPE",
            TokenizerKind::Word => "word-level",
        },
        built.vocab_size,
        built.texts,
        files.join(", "),
        started.elapsed().as_secs_f64(),
        built.vocab_size
    ));
    Ok(())
}
