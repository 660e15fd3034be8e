//! A 20-step slice of the real-weights pipeline (scripts/real-weights.sh runs it whole): the
//! shipped `real-teacher` and `real-kd` recipes over checkpoints made by the importer from real
//! SmolLM2-135M-Instruct weights (GGUF) and the real DINOv2-S backbone (ONNX, imported for
//! 112 px as the script does), on real easy-VQA questions and images. The teacher is the
//! whole 30-layer decoder, the student its first 8 layers; both tokenizers get the chat
//! template's tokens on import. 10 teacher steps, then 10 distillation steps, then a short
//! evaluation: every loss finite, every distillation term logged, the teacher untouched.
//!
//! Needs `.cache/smollm2` (scripts/fetch-smollm2.sh), `.cache/dinov2`
//! (scripts/fetch-dinov2.sh) and `.cache/easy-vqa` (scripts/fetch-easy-vqa.sh --raw);
//! scripts/test.sh fetches all three.

use std::path::{Path, PathBuf};

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::config::Recipe;
use condenser_engine::data::easy_vqa;
use condenser_engine::io::{
    FeatureSelect, ImportOptions, ImportSource, import_model, write_imported,
};
use condenser_engine::train::{RunOptions, run_recipe};
use condenser_tests::{StepTerms, repo, scratch};

fn cached(rel: &str, script: &str) -> PathBuf {
    let p = repo().join(rel);
    assert!(p.exists(), "{} missing: run {script}", p.display());
    p
}

/// The questions about the first `train` training and `test` test images (about ten each).
fn first_images(train: usize, test: usize) -> easy_vqa::Subset {
    easy_vqa::Subset {
        train_images: Some(train),
        test_images: Some(test),
    }
}

/// A checkpoint of `tower` (imported for 112 px, as scripts/real-weights.sh does) and the first
/// `layers` layers of the GGUF decoder (all when `None`), with the chat template's tokens, in
/// `out`.
fn import_real(
    tower: &Path,
    gguf: &Path,
    layers: Option<usize>,
    out: &Path,
    device: &condenser_engine::burn::prelude::Device,
) {
    let source = ImportSource::Parts {
        vision: tower.to_path_buf(),
        llm: gguf.to_path_buf(),
    };
    let options = ImportOptions {
        select: FeatureSelect {
            image_size: Some(112),
            ..FeatureSelect::default()
        },
        llm_layers: layers,
        seed: 0,
        chat_tokens: true,
    };
    let imported = import_model(&source, &options, device).unwrap();
    write_imported(&imported, out).unwrap();
}

/// A shipped recipe with its folders pointed into `dir`, each stage cut to `steps` steps.
fn recipe(name: &str, dir: &Path, data: &Path, train: usize, steps: usize) -> Recipe {
    let path = repo().join("assets/recipes").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "\"checkpoints/",
            &format!("\"{}/", dir.join("checkpoints").display()),
        )
        .replace(
            "\"data/easy-vqa\"",
            &format!("{:?}", data.display().to_string()),
        );
    let mut r = condenser_engine::run::Runs::new(dir.join("runs"))
        .parse_recipe(&text, &path)
        .unwrap_or_else(|e| panic!("{e}"));
    for s in &mut r.stages {
        s.batch_size = 4;
        s.epochs = (steps * s.batch_size) as f64 / train as f64;
        s.checkpoint_every = 0;
    }
    r
}

#[test]
fn real_weights_slice_teacher_then_distilled_student() {
    let gguf = cached(
        ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "scripts/fetch-smollm2.sh",
    );
    let raw = cached(
        ".cache/easy-vqa/easy_vqa/data",
        "scripts/fetch-easy-vqa.sh --raw",
    );
    let dir = scratch("real-weights");
    let (device, info) = select(BackendChoice::Cpu).unwrap();

    // data: real easy-VQA questions and images, converted as `condenser data easy-vqa` does
    let data = dir.join("data");
    let train = easy_vqa::convert(&raw, &data, first_images(8, 1))
        .unwrap()
        .train;

    // checkpoints: as scripts/real-weights.sh imports them
    let tower = repo().join(".cache/dinov2/vit_s_focus.onnx");
    assert!(
        tower.exists(),
        "{} missing: run scripts/fetch-dinov2.sh",
        tower.display()
    );
    for (name, layers) in [("real-teacher", None), ("real-student", Some(8))] {
        import_real(
            &tower,
            &gguf,
            layers,
            &dir.join("checkpoints").join(name),
            &device,
        );
    }

    let runs = dir.join("runs");
    let opts = RunOptions {
        runs_dir: runs.clone(),
        eval: true,
        eval_limit: Some(6),
        ..RunOptions::default()
    };
    let steps = 5; // per stage; two stages per recipe
    let teacher = recipe("real-teacher.toml", &dir, &data, train, steps);
    assert_eq!(
        teacher.model.llm.layers, 30,
        "the model comes from the checkpoint"
    );
    let mut seen = StepTerms::default();
    let t = run_recipe(&teacher, &device, &info, &opts, &mut seen).unwrap();
    assert!(t.finished && t.eval.is_some());
    assert_eq!(seen.0.len(), 2 * steps);
    let teacher_file = runs.join("real-teacher/checkpoints/final/model.bpk");
    let before = std::fs::read(&teacher_file).unwrap();

    let student = recipe("real-kd.toml", &dir, &data, train, steps);
    assert_eq!(student.model.llm.layers, 8);
    let mut seen = StepTerms::default();
    let s = run_recipe(&student, &device, &info, &opts, &mut seen).unwrap();
    assert!(s.finished && s.eval.is_some());
    assert_eq!(seen.0.len(), 2 * steps);
    assert_eq!(
        std::fs::read(&teacher_file).unwrap(),
        before,
        "teacher changed"
    );
    for (stage, terms) in &seen.0 {
        assert!(terms.values().all(|v| v.is_finite()), "{stage}: {terms:?}");
    }
    let dft = &seen.0.last().unwrap().1;
    for term in ["ce", "res", "vis", "rel"] {
        assert!(
            dft.keys().any(|k| k.contains(term)),
            "DFT logs its {term} term: {dft:?}"
        );
    }
}

/// Each step's loss (as `total`) and named terms.
#[derive(Default)]
struct StepLosses(Vec<std::collections::BTreeMap<String, f32>>);

impl condenser_engine::train::Observer for StepLosses {
    fn on_event(&mut self, e: &condenser_engine::train::Event) {
        if let condenser_engine::train::Event::Step { loss, terms, .. } = e {
            let mut all = terms.clone();
            all.insert("total".into(), *loss);
            self.0.push(all);
        }
    }
}

/// The real-weights recipes on lavapipe, at a size where the path before the labelled-position
/// loss could not run: batch 10 of real easy-VQA conversations (81 tokens with the 64 visual
/// ones) makes the full `[B, T, V]` logits of SmolLM2's 49,158-token vocabulary 159 MB, beyond
/// lavapipe's 128 MiB binding. The decoders are cut to 2 layers (teacher) and 1 (student) to
/// keep CI's time; the vocabulary, tower and data are the real ones. The SFT stage of
/// `real-teacher.toml` and the DFT stage of `real-kd.toml` each run one step on lavapipe and on
/// the CPU backend: the first-step losses (and every distillation term) agree to 2e-3 relative.
/// (The full-size commands are in the README, "Real models on any device".)
#[test]
fn real_recipes_first_steps_match_between_lavapipe_and_the_cpu() {
    let gguf = cached(
        ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "scripts/fetch-smollm2.sh",
    );
    let raw = cached(
        ".cache/easy-vqa/easy_vqa/data",
        "scripts/fetch-easy-vqa.sh --raw",
    );
    let tower = cached(".cache/dinov2/vit_s_focus.onnx", "scripts/fetch-dinov2.sh");
    let dir = scratch("real-lavapipe");
    let (cpu, cpu_info) = select(BackendChoice::Cpu).unwrap();
    let (gpu, gpu_info) =
        select(BackendChoice::Wgpu).expect("a wgpu adapter (scripts/setup.sh installs lavapipe)");
    let data = dir.join("data");
    let train = easy_vqa::convert(&raw, &data, first_images(4, 1))
        .unwrap()
        .train;
    for (name, layers) in [("real-teacher", 2), ("real-student", 1)] {
        import_real(
            &tower,
            &gguf,
            Some(layers),
            &dir.join("checkpoints").join(name),
            &cpu,
        );
    }
    let batch = 10;
    // one stage of a shipped recipe, one step of `batch`
    let one_stage = |file: &str, stage: &str| {
        let mut r = recipe(file, &dir, &data, train, 1);
        r.stages.retain(|s| s.name == stage);
        let s = &mut r.stages[0];
        s.batch_size = batch;
        s.epochs = batch as f64 / train as f64;
        r
    };
    // the naive path's logits would not fit one binding of lavapipe
    let vocab = 49_158usize;
    let longest = 81usize;
    assert!(batch * longest * vocab * 4 > 128 << 20);
    let first_step = |r: &Recipe, backend: &str| {
        let (device, info) = if backend == "cpu" {
            (&cpu, &cpu_info)
        } else {
            (&gpu, &gpu_info)
        };
        let opts = RunOptions {
            runs_dir: dir.join(format!("runs-{backend}")),
            eval: false,
            ..RunOptions::default()
        };
        let mut seen = StepLosses::default();
        let out = run_recipe(r, device, info, &opts, &mut seen)
            .unwrap_or_else(|e| panic!("{} on {backend}: {e}", r.name));
        assert!(out.finished);
        assert_eq!(seen.0.len(), 1);
        seen.0.remove(0)
    };
    let close = |what: &str,
                 a: &std::collections::BTreeMap<String, f32>,
                 b: &std::collections::BTreeMap<String, f32>| {
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, x) in a {
            let y = b[k];
            assert!(x.is_finite() && y.is_finite(), "{what} {k}: {x} / {y}");
            assert!(
                (x - y).abs() <= 2e-3 * x.abs().max(1e-2),
                "{what} {k}: lavapipe {y} vs cpu {x}"
            );
        }
    };
    let sft = one_stage("real-teacher.toml", "sft");
    let (c, g) = (first_step(&sft, "cpu"), first_step(&sft, "wgpu"));
    eprintln!("sft first step: cpu {c:?}, lavapipe {g:?}");
    close("sft", &c, &g);
    // each backend's teacher is its own finished SFT run, in its own runs folder
    let kd = one_stage("real-kd.toml", "dft");
    let (c, g) = (first_step(&kd, "cpu"), first_step(&kd, "wgpu"));
    eprintln!("dft first step: cpu {c:?}, lavapipe {g:?}");
    for term in ["ce", "res", "vis", "rel"] {
        assert!(c.contains_key(term), "DFT logs {term}: {c:?}");
    }
    close("dft", &c, &g);
}
