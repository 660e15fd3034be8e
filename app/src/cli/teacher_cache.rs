//! `condenser teacher-cache`: runs a teacher once over a data folder and keeps its top-k
//! log-probabilities (and RDist's matrices) on disk, so distillation stages train without the
//! teacher resident (`[teacher] cache = "CACHE"`). Sharded builds (`--shard I/N`, one per
//! machine or array task) are merged with `teacher-cache merge`; `teacher-cache info` says what
//! a cache holds.

use std::path::PathBuf;

use condenser_engine::train::teacher_cache::{
    self, BuildOptions, CachePositions, CachedTeacher, DEFAULT_TOP_K, EXAMPLES_PER_PART, Manifest,
    Shard,
};

use super::{DeviceArgs, progress};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Run the teacher over the data and write the cache (or one shard of it). Resumes: parts
    /// already in the output folder are kept.
    Build(BuildArgs),
    /// Merge the shards of a sharded build into one cache (folders holding shard-I-of-N.json
    /// and their parts; one folder when the shards shared a file system).
    Merge(MergeArgs),
    /// What a cache holds: its teacher, settings, size and bytes per position.
    Info(InfoArgs),
}

/// Which positions keep the teacher's distribution (`--positions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Positions {
    /// The responses (what `tokens = "response"`, the default, distils) and the visual tokens.
    Responses,
    /// Every token (for stages with `tokens = "all"`).
    All,
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// The teacher: a checkpoint folder or a finished run (`runs/<run>`, its final checkpoint),
    /// with its tokenizer.json beside it or in its run folder.
    pub teacher: PathBuf,
    /// The data folder (LLaVA JSON).
    #[arg(long)]
    pub data: PathBuf,
    /// The data files to cache, comma-separated (default: train.json and captions.json, those
    /// that exist): a stage on `data = "instruct"` reads train.json, on "caption" captions.json.
    #[arg(long, value_delimiter = ',')]
    pub files: Vec<String>,
    /// Where the records' images are (default: the data folder).
    #[arg(long)]
    pub image_folder: Option<PathBuf>,
    /// The cache folder.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Tokens kept per position, besides the tail bucket that holds the rest of the mass.
    #[arg(long, default_value_t = DEFAULT_TOP_K)]
    pub top_k: usize,
    /// The distribution kept is softmax(logits / T): equal to the stages' divergence
    /// temperature (a stage at another temperature refuses the cache).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Z-score the logits first (for stages with `zscore = true`).
    #[arg(long)]
    pub zscore: bool,
    #[arg(long, value_enum, default_value_t = Positions::Responses)]
    pub positions: Positions,
    /// Build shard I of N (0-based): the parts [I*P/N, (I+1)*P/N) of each file's P parts,
    /// so N machines (a Slurm array, a Kubernetes indexed Job) build disjoint parts.
    #[arg(long, value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// Examples per teacher forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Longest tokenised record (default: the teacher's max_positions); must equal the
    /// student recipe's [model.llm] max_positions.
    #[arg(long)]
    pub max_positions: Option<usize>,
    /// Keep records without an image (recipes' `require_image = false`).
    #[arg(long)]
    pub allow_text_only: bool,
    /// Examples per part file: the unit a resumed build keeps and shards split. Every shard of
    /// one cache must use the same.
    #[arg(long, default_value_t = EXAMPLES_PER_PART)]
    pub part_size: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// The merged cache's folder (may be one of the inputs).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Folders holding shard manifests and their parts.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// The cache folder.
    pub cache: PathBuf,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Build(a) => build(a),
        What::Merge(a) => {
            let m = teacher_cache::merge(&a.shards, &a.out)?;
            progress::result(&format!(
                "merged {} into {}\n{}",
                a.shards
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                a.out.display(),
                summary(&m)
            ));
            Ok(())
        }
        What::Info(a) => {
            let cache = CachedTeacher::open(&a.cache)?;
            progress::result(&summary(&cache.manifest));
            Ok(())
        }
    }
}

fn build(a: BuildArgs) -> anyhow::Result<()> {
    let teacher = condenser_engine::run::Runs::new(".").resolve_checkpoint(
        a.teacher
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("{}: not a UTF-8 path", a.teacher.display()))?,
    )?;
    let files = if a.files.is_empty() {
        let found: Vec<String> = ["train.json", "captions.json"]
            .into_iter()
            .filter(|f| a.data.join(f).exists())
            .map(String::from)
            .collect();
        anyhow::ensure!(
            !found.is_empty(),
            "{}: neither train.json nor captions.json is here: name the files with --files",
            a.data.display()
        );
        found
    } else {
        a.files.clone()
    };
    let (device, _) = a.device.device()?;
    let opts = BuildOptions {
        teacher,
        data: a.data.clone(),
        files,
        image_folder: a.image_folder.clone(),
        out: a.out.clone(),
        top_k: a.top_k,
        temperature: a.temperature,
        zscore: a.zscore,
        positions: match a.positions {
            Positions::Responses => CachePositions::Responses,
            Positions::All => CachePositions::All,
        },
        shard: a.shard.unwrap_or(Shard::WHOLE),
        batch_size: a.batch_size.max(1),
        max_positions: a.max_positions,
        require_image: !a.allow_text_only,
        part_size: a.part_size,
    };
    let every = progress::log_every();
    let mut last: Option<std::time::Instant> = None;
    let manifest = teacher_cache::build(&opts, &device, &mut |p| {
        if p.total == 0 || last.is_some_and(|t| t.elapsed().as_secs_f64() < every) {
            return;
        }
        last = Some(std::time::Instant::now());
        let fresh = p.done - p.resumed;
        let left = p.total - p.done;
        let eta = if fresh > 0 {
            format!(", ETA {:.0} s", p.elapsed_s / fresh as f64 * left as f64)
        } else {
            String::new()
        };
        progress::milestone(&format!(
            "[teacher-cache] {} {}/{} examples ({:.0}%){}, {:.0} s elapsed{eta}",
            p.file,
            p.done,
            p.total,
            100.0 * p.done as f64 / p.total as f64,
            if p.resumed > 0 {
                format!(", {} found from an earlier build", p.resumed)
            } else {
                String::new()
            },
            p.elapsed_s
        ));
    })?;
    let next = if opts.shard == Shard::WHOLE {
        format!(
            "use it with `[teacher] cache = \"{}\"` in a recipe",
            opts.out.display()
        )
    } else {
        format!(
            "shard {}/{} done; when every shard is, run `condenser teacher-cache merge -o CACHE \
             FOLDERS...`",
            opts.shard.index, opts.shard.count
        )
    };
    progress::result(&format!("{}\n{next}", summary(&manifest)));
    Ok(())
}

/// What a manifest says, for the terminal.
fn summary(m: &Manifest) -> String {
    let (bytes, positions) = m.size();
    let examples: usize = m
        .files
        .iter()
        .map(|f| f.parts.iter().map(|p| p.count).sum::<usize>())
        .sum();
    let files: Vec<String> = m
        .files
        .iter()
        .map(|f| {
            format!(
                "{} ({} examples)",
                f.file,
                f.parts.iter().map(|p| p.count).sum::<usize>()
            )
        })
        .collect();
    format!(
        "teacher cache: {}\n  teacher weights {}..., top-{} of {} tokens at T = {}{}, positions: {:?}\n  \
         {} examples, {} positions, {:.2} MiB: {:.0} bytes per position; teacher time {:.1} s",
        files.join(", "),
        &m.key.teacher_weights[..12],
        m.key.top_k,
        m.key.vocab,
        m.key.temperature,
        if m.key.zscore { " (z-scored)" } else { "" },
        m.key.positions,
        examples,
        positions,
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / positions.max(1) as f64,
        m.build_seconds
    )
}
