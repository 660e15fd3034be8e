//! `condenser shapes`: generate the Shapes world.

use std::path::PathBuf;

use condenser_engine::data::shapes::{AnswerStyle, WorldConfig, generate};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output folder (replaced if it exists).
    #[arg(long, default_value = "data/shapes")]
    pub out: PathBuf,
    #[command(flatten)]
    pub world: WorldArgs,
}

/// Shapes-world size and seed.
#[derive(clap::Args, Debug, Clone)]
pub struct WorldArgs {
    /// Generator seed: the same seed writes the same world, byte for byte.
    #[arg(long, default_value_t = WorldConfig::default().seed)]
    pub seed: u64,
    /// Training images (each with a caption, a multi-turn conversation and a preference pair).
    #[arg(long, default_value_t = WorldConfig::default().train_images)]
    pub train: usize,
    /// Validation images (single-turn probe questions).
    #[arg(long, default_value_t = WorldConfig::default().val_images)]
    pub val: usize,
    /// Test images (single-turn probe questions, about 11 per image).
    #[arg(long, default_value_t = WorldConfig::default().test_images)]
    pub test: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = WorldConfig::default().image_size)]
    pub image_size: u32,
    /// Fewest objects per image (1-4).
    #[arg(long, default_value_t = WorldConfig::default().min_objects)]
    pub min_objects: usize,
    /// Most objects per image (1-4).
    #[arg(long, default_value_t = WorldConfig::default().max_objects)]
    pub max_objects: usize,
    /// Question turns per training conversation.
    #[arg(long, default_value_t = WorldConfig::default().turns)]
    pub turns: usize,
    /// How colour, shape, position and relation questions are answered: `grounded` restates
    /// what the question is about right before the fact ("circle green"), `short` gives the fact
    /// alone ("green"). Count and existence answers are one word either way.
    #[arg(long, default_value = WorldConfig::default().answers.name(), value_parser = parse_style)]
    pub answers: AnswerStyle,
}

fn parse_style(s: &str) -> Result<AnswerStyle, String> {
    AnswerStyle::parse(s).ok_or_else(|| {
        let names: Vec<_> = AnswerStyle::ALL.iter().map(|x| x.name()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

impl WorldArgs {
    pub fn config(&self) -> WorldConfig {
        WorldConfig {
            seed: self.seed,
            image_size: self.image_size,
            train_images: self.train,
            val_images: self.val,
            test_images: self.test,
            turns: self.turns,
            min_objects: self.min_objects,
            max_objects: self.max_objects,
            answers: self.answers,
        }
    }
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let s = generate(&args.out, &args.world.config())?;
    println!(
        "wrote {}: {} images, {} captions, {} training conversations, {} val / {} test questions, {} preference pairs",
        s.root.display(),
        s.images,
        s.captions,
        s.train_conversations,
        s.val_questions,
        s.test_questions,
        s.preference_pairs
    );
    Ok(())
}
