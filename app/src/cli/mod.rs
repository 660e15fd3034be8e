//! Command-line interface: one subcommand per file.

mod ablate;
mod bench;
mod bench_step;
mod chat;
mod data;
mod demo;
mod eval;
mod export;
mod export_web;
mod generate;
mod gui;
mod import;
mod info;
mod prefs;
mod progress;
mod recipes;
mod run;
mod shapes;
mod teacher_cache;
mod tokenizer;

use clap::{Parser, Subcommand};
use condenser_engine::backend::{self, BackendChoice, DeviceInfo};
use condenser_engine::burn;

/// Condenser: distil large multimodal LLMs into small ones, on any GPU wgpu reaches.
///
/// Start with `condenser demo`: it generates the built-in Shapes world, pre-trains a shared
/// vision encoder, trains a teacher, a baseline student and a distilled (LLaVA-KD) student, evaluates them on held-out
/// questions and prints the comparison. Every run lives in `runs/<name>/` (resolved recipe,
/// events.jsonl, checkpoints, report) and resumes where it stopped if interrupted.
#[derive(Parser, Debug)]
#[command(name = "condenser", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: progress::LogArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List GPU adapters (API, limits, features) and the device Condenser would use.
    Info(info::Args),
    /// Generate the Shapes world (PNG images + LLaVA JSON + tokenizer.json).
    Shapes(shapes::Args),
    /// Run a TOML recipe (stages, checkpoints, evaluation, report).
    Run(run::Args),
    /// Evaluate a checkpoint on a LLaVA-format split.
    Eval(eval::Args),
    /// Ask a trained model about an image.
    Chat(chat::Args),
    /// The main job: Shapes world -> vision encoder -> teacher -> baseline student -> KD
    /// student -> comparison.
    Demo(demo::Args),
    /// Train an ablation set's rows with several seeds and write its generated results table.
    Ablate(ablate::Args),
    /// Build hallucination preference pairs from LLaVA-format conversations.
    Prefs(prefs::Args),
    /// Convert a public data set (easy-VQA) to LLaVA JSON + images + tokenizer.json.
    #[command(subcommand_value_name = "SET")]
    Data(data::Args),
    /// Train a tokenizer.json (byte-level BPE or word-level) on a data folder's conversations.
    Tokenizer(tokenizer::Args),
    /// Run a teacher once over a data folder and keep its top-k log-probs on disk (zstd parts,
    /// a hashed manifest; sharded builds merge), so distillation trains without the teacher
    /// resident: `[teacher] cache = "CACHE"`.
    TeacherCache(teacher_cache::Args),
    /// Write a model out: a decoder (checkpoint's LLM, GGUF file or HF folder) as a Hugging
    /// Face folder or a llama.cpp GGUF file, a whole checkpoint as a transformers LLaVA folder,
    /// or a checkpoint as the browser page's bundle (`--format hf|gguf|hf-llava|web`).
    Export(export::Args),
    /// Build a Condenser checkpoint from real weights: a LLaVA / TinyLLaVA folder, or a
    /// CLIP/SigLIP tower plus a Llama/Qwen2 decoder (HF folder or GGUF) and a fresh projector.
    Import(import::Args),
    /// Continue a text with an imported decoder (HF safetensors folder or llama GGUF file).
    Generate(generate::Args),
    /// The desktop app: watch, start, stop and compare runs (stage progress, loss curves,
    /// expert routing heatmaps, relation matrices, sample answers).
    Gui(gui::Args),
    /// Benchmark the WGSL kernels against the burn-ops compositions they replace (wgpu only).
    Bench(bench::Args),
}

/// Options shared by commands that compute.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Compute backend: `auto` (first wgpu adapter, else the CPU), `wgpu`, or `cpu` (burn flex).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    pub backend: BackendChoice,
    /// Threads of the CPU backend (large matmuls, reductions and element-wise ops; small ones
    /// stay on one thread). Default: one per core. Two runs sharing a machine should split the
    /// cores between them.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// How `chat` and `generate` pick tokens.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus mass kept when sampling.
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// Generation options for up to `max_new_tokens` tokens, ending at any of `stop`.
    pub fn options(
        &self,
        max_new_tokens: usize,
        stop: Vec<u32>,
    ) -> condenser_engine::model::GenerateOptions {
        use condenser_engine::model::Sampling;
        condenser_engine::model::GenerateOptions {
            max_new_tokens,
            sampling: if self.temperature > 0.0 {
                Sampling::TopP {
                    temperature: self.temperature,
                    top_p: self.top_p,
                }
            } else {
                Sampling::Greedy
            },
            stop,
            seed: self.seed,
        }
    }
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse()
}

impl DeviceArgs {
    pub fn device(&self) -> anyhow::Result<(burn::prelude::Device, DeviceInfo)> {
        if self.backend == BackendChoice::Cpu {
            // state loaded outside a module (optimiser records) lands on burn's default device
            // first; make that the CPU too, so no GPU is touched when the user asked for none
            // SAFETY: called once at start-up, before any other thread exists.
            unsafe { std::env::set_var("BURN_DEVICE", "flex") };
        }
        let threads = backend::set_cpu_threads(self.threads)?;
        let (device, info) = backend::select(self.backend)?;
        log::info!("device: {} ({})", info.backend, info.name);
        if info.backend == "cpu" {
            log::info!("CPU threads: {threads}");
        }
        Ok((device, info))
    }
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    progress::configure(&cli.log);
    match cli.command {
        Command::Info(a) => info::main(a),
        Command::Shapes(a) => shapes::main(a),
        Command::Run(a) => run::main(a),
        Command::Eval(a) => eval::main(a),
        Command::Import(a) => import::main(a),
        Command::Chat(a) => chat::main(a),
        Command::Demo(a) => demo::main(a),
        Command::Ablate(a) => ablate::main(a),
        Command::Prefs(a) => prefs::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Gui(a) => gui::main(a),
        Command::Generate(a) => generate::main(a),
        Command::Export(a) => export::main(a),
        Command::Data(a) => data::main(a),
        Command::Tokenizer(a) => tokenizer::main(a),
        Command::TeacherCache(a) => teacher_cache::main(a),
    }
}
