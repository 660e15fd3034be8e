//! `condenser data`: convert public data sets to Condenser's layout (LLaVA JSON + images +
//! tokenizer.json), so recipes train on them like on the Shapes world.

use std::path::PathBuf;

use condenser_engine::data::easy_vqa;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub set: Set,
}

#[derive(clap::Subcommand, Debug)]
pub enum Set {
    /// easy-VQA (MIT; 4,000 train + 1,000 test shape images with questions). Fetch it with
    /// scripts/fetch-easy-vqa.sh, then point --from at its data folder. Writes train.json,
    /// test.json, the images, a word-level tokenizer.json, and captions.json: one caption per
    /// training image ("a blue circle .") gathered from what its questions state, for caption
    /// stages (contrastive tower pre-training, projector pre-training, DPT).
    EasyVqa {
        /// The package's `easy_vqa/data` folder (train/ and test/ with questions.json, images/).
        #[arg(long, default_value = ".cache/easy-vqa/easy_vqa/data")]
        from: PathBuf,
        /// Output data folder.
        #[arg(long, default_value = "data/easy-vqa")]
        out: PathBuf,
        /// Keep only the questions about the first N training images (all 4,000 by default).
        /// Real-model runs on a CPU use a subset to fit their time budget.
        #[arg(long, value_name = "N")]
        train_images: Option<usize>,
        /// Keep only the questions about the first N test images (all 1,000 by default).
        #[arg(long, value_name = "N")]
        test_images: Option<usize>,
    },
}

pub fn main(args: Args) -> anyhow::Result<()> {
    match args.set {
        Set::EasyVqa {
            from,
            out,
            train_images,
            test_images,
        } => {
            let subset = easy_vqa::Subset {
                train_images,
                test_images,
            };
            let c = easy_vqa::convert(&from, &out, subset)?;
            println!(
                "wrote {}: {} train and {} test questions over {} images, {} captions, {} tokens \
                 in tokenizer.json",
                out.display(),
                c.train,
                c.test,
                c.images,
                c.captions,
                c.vocab
            );
        }
    }
    Ok(())
}
