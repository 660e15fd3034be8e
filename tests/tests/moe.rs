//! LLaVA-MoD end to end on the smoke recipes: a dense student, sparse upcycling (the MoE model
//! computes what the dense one did), dense-to-sparse training where only experts and routers
//! move and tokens over capacity are dropped and counted, an exact resume mid-stage, and
//! preference distillation with the teacher as reference, with routing in the report.

use std::path::Path;

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::burn::prelude::*;
use condenser_engine::config::{Recipe, load_recipe};
use condenser_engine::data::{Dataset, Padding, TextTokenizer, host_batch};
use condenser_engine::model::Mllm;
use condenser_engine::model::Visual;
use condenser_engine::model::moe::{LayerRouting, Phase};
use condenser_engine::run::checkpoint::{load_full, load_upcycled};
use condenser_engine::train::{Event, Observer, RunOptions, Silent, run_recipe};
use condenser_tests::{
    assert_same_weights, copy_dir, repo, scratch, smoke_recipe, tiny_world, weights,
};

fn recipe(name: &str, data: &Path) -> Recipe {
    let mut r = load_recipe(repo().join(format!("assets/recipes/{name}.toml"))).unwrap();
    r.data = data.to_path_buf();
    r
}

#[derive(Default)]
struct Steps(Vec<(String, Vec<String>, Vec<LayerRouting>)>);
impl Observer for Steps {
    fn on_event(&mut self, e: &Event) {
        if let Event::Step {
            name,
            terms,
            routing,
            ..
        } = e
        {
            self.0.push((
                name.clone(),
                terms.keys().cloned().collect(),
                routing.clone(),
            ));
        }
    }
}

/// Logits of the first test records at their real (non-padding) positions, teacher-forced, at
/// the evaluation capacity. (Routers skip padding, so padded positions differ by design.)
fn logits(model: &Mllm, data: &Path, device: &Device) -> Vec<f32> {
    let tok = TextTokenizer::load(&data.join("tokenizer.json")).unwrap();
    let test = Dataset::load(
        data,
        "test.json",
        data,
        &tok,
        &model.config.vision,
        model.config.llm.max_positions,
        true,
    )
    .unwrap();
    let idx: Vec<usize> = (0..8).collect();
    let ex: Vec<_> = idx.iter().map(|&i| &test.encoded[i]).collect();
    let nv = model.config.vision.num_visual_tokens();
    let hb = host_batch(&ex, nv, tok.special.pad, Padding::Right);
    let images = test.pixels(&idx, device).unwrap();
    let batch = hb.to_device(Visual::Pixels(images), device);
    let (h, trace) = model.hidden_routed(&batch, Phase::Eval);
    if model.config.llm.moe.is_some() {
        assert_eq!(trace.layers.len(), 2);
        assert!(trace.layers.iter().all(|l| l.dropped == 0));
    }
    let v = model.config.llm.vocab_size;
    let all = model
        .llm
        .logits(h)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    all.chunks(v)
        .zip(&batch.real)
        .filter(|(_, real)| **real)
        .flat_map(|(row, _)| row.to_vec())
        .collect()
}

#[test]
fn upcycle_train_sparse_resume_and_preference_distil() {
    let dir = scratch("moe");
    let data = tiny_world(&dir);
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let runs = dir.join("runs");
    let opts = RunOptions {
        runs_dir: runs.clone(),
        eval: false,
        ..RunOptions::default()
    };
    run_recipe(&smoke_recipe(&data), &device, &info, &opts, &mut Silent).unwrap();
    run_recipe(
        &recipe("smoke-mod-dense", &data),
        &device,
        &info,
        &opts,
        &mut Silent,
    )
    .unwrap();

    // upcycling: experts are copies of the dense FFN, so the MoE model's outputs are the dense
    // model's (no drops at the evaluation capacity)
    let dense_ck = runs.join("smoke-mod-dense/checkpoints/final");
    let dense = load_full(&dense_ck, &device).unwrap();
    let sparse_recipe = recipe("smoke-mod", &data);
    let fresh = Mllm::new(&sparse_recipe.model, sparse_recipe.seed, &device);
    let upcycled = load_upcycled(&dense_ck, fresh).unwrap();
    let (a, b) = (
        logits(&dense, &data, &device),
        logits(&upcycled, &data, &device),
    );
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff < 1e-4,
        "upcycled logits differ from the dense ones by {diff}"
    );

    // dense-to-sparse: router losses logged, routing reported per layer, drops counted, and
    // only the MoE blocks change
    let mut steps = Steps::default();
    let out = run_recipe(&sparse_recipe, &device, &info, &opts, &mut steps).unwrap();
    let (_, terms, routing) = &steps.0[0];
    assert_eq!(terms, &["ce", "moe_aux", "moe_z", "res"]);
    assert_eq!(routing.len(), 2, "one entry per MoE layer");
    assert!(
        steps
            .0
            .iter()
            .any(|(_, _, r)| r.iter().any(|l| l.dropped > 0)),
        "capacity 1.0 with top-2 must drop some assignments"
    );
    let trained = out.model.unwrap();
    for ((name, before), (_, after)) in weights(&upcycled).iter().zip(weights(&trained)) {
        let moved = before.iter().zip(&after).any(|(x, y)| x != y);
        let moe = name.starts_with("llm.") && name.contains(".mlp.");
        assert_eq!(moved, moe, "{name}: only (and every) MoE parameter trains");
    }

    // a run killed mid-stage resumes to the same weights
    let runs_b = dir.join("runs-b");
    std::fs::create_dir_all(&runs_b).unwrap();
    for run in ["smoke", "smoke-mod-dense"] {
        copy_dir(&runs.join(run), &runs_b.join(run));
    }
    let first = RunOptions {
        runs_dir: runs_b.clone(),
        eval: false,
        stop_after_steps: Some(2),
        ..RunOptions::default()
    };
    assert!(
        !run_recipe(&sparse_recipe, &device, &info, &first, &mut Silent)
            .unwrap()
            .finished
    );
    let second = RunOptions {
        runs_dir: runs_b,
        eval: false,
        ..RunOptions::default()
    };
    let resumed = run_recipe(&sparse_recipe, &device, &info, &second, &mut Silent).unwrap();
    assert_same_weights(
        &trained,
        resumed.model.as_ref().unwrap(),
        1e-6,
        "resumed MoE",
    );

    // preference distillation against the teacher, then the report draws the routing
    let teacher_file = runs.join("smoke/checkpoints/final/model.bpk");
    let teacher_before = std::fs::read(&teacher_file).unwrap();
    let mut steps = Steps::default();
    let with_eval = RunOptions {
        eval: true,
        ..opts.clone()
    };
    let pref = run_recipe(
        &recipe("smoke-mod-pref", &data),
        &device,
        &info,
        &with_eval,
        &mut steps,
    )
    .unwrap();
    assert_eq!(
        steps.0[0].1,
        ["ce", "margin", "moe_aux", "moe_z", "pref", "pref_acc"]
    );
    assert_eq!(std::fs::read(&teacher_file).unwrap(), teacher_before);
    let eval = pref.eval.unwrap();
    assert_eq!(eval.routing.len(), 2);
    let run_dir = runs.join("smoke-mod-pref");
    assert!(run_dir.join("routing.png").exists());
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(
        md.contains("MoE routing") && md.contains("routing.png"),
        "{md}"
    );

    // the same stage on pairs mined from the student's own yes/no mistakes: the pairs are
    // saved in the run folder, balanced, and a run stopped mid-stage resumes on the same file
    let mut mined = recipe("smoke-mod-pref", &data);
    mined.name = "smoke-mod-mined".into();
    mined.stages[0].data = condenser_engine::config::DataKind::Mined;
    let stop = RunOptions {
        stop_after_steps: Some(1),
        ..opts.clone()
    };
    assert!(
        !run_recipe(&mined, &device, &info, &stop, &mut Silent)
            .unwrap()
            .finished
    );
    let file = runs.join("smoke-mod-mined/mined-0.json");
    let saved = std::fs::read(&file).unwrap();
    let pairs: Vec<condenser_engine::data::PreferencePair> =
        serde_json::from_slice(&saved).unwrap();
    assert!(!pairs.is_empty());
    let yes = pairs.iter().filter(|p| p.chosen == "yes").count();
    assert_eq!(2 * yes, pairs.len(), "balanced yes / no");
    for p in &pairs {
        assert_eq!(
            (p.chosen.as_str(), p.rejected.as_str()),
            if p.chosen == "yes" {
                ("yes", "no")
            } else {
                ("no", "yes")
            }
        );
        assert!(p.prompt.starts_with("<image>\nis there"), "{}", p.prompt);
        assert!(data.join(&p.image).exists());
    }
    let resume = RunOptions {
        resume: true,
        ..opts.clone()
    };
    let mut steps = Steps::default();
    assert!(
        run_recipe(&mined, &device, &info, &resume, &mut steps)
            .unwrap()
            .finished
    );
    assert!(!steps.0.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), saved, "mined once per stage");
}

#[test]
fn upcycling_and_preference_misuse_is_refused_before_any_folder() {
    let dir = scratch("moe-bad");
    let data = tiny_world(&dir);
    let text = std::fs::read_to_string(repo().join("assets/recipes/smoke-mod.toml")).unwrap();
    let no_moe = text.replace("[model.llm.moe]", "[unused]");
    let err = condenser_engine::config::parse_recipe(&no_moe, Path::new("m.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("m.toml"), "{err}");
    let pref = std::fs::read_to_string(repo().join("assets/recipes/smoke-mod-pref.toml")).unwrap();
    let wrong_data = pref.replace("data = \"preference\"", "data = \"instruct\"");
    let err = condenser_engine::config::parse_recipe(&wrong_data, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("preference"), "{err}");

    // upcycling from a checkpoint of another shape names the file
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let runs = dir.join("runs");
    let opts = RunOptions {
        runs_dir: runs.clone(),
        eval: false,
        ..RunOptions::default()
    };
    let mut teacher = smoke_recipe(&data);
    teacher.stages.truncate(1);
    run_recipe(&teacher, &device, &info, &opts, &mut Silent).unwrap();
    let mut r = recipe("smoke-mod", &data);
    r.init.upcycle_from = Some("smoke".into());
    let err = match run_recipe(&r, &device, &info, &opts, &mut Silent) {
        Ok(_) => panic!("upcycled from a checkpoint of another shape"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("config.json") && err.contains("must equal"),
        "{err}"
    );
    assert!(!runs.join("smoke-mod").exists());
}

/// The issue-5 A/B switch on the MoE chain: dense-to-sparse training on wgpu through the
/// routing kernels (top-k, counting sort with capacity drops, gather GEMMs) and through the
/// burn-ops reference gives the same losses and the same per-layer routing (expert loads and
/// drops) at every step. The dense runs it starts from are trained on the CPU (checkpoints are
/// device-independent). There must be a wgpu adapter (CI installs lavapipe).
#[test]
fn moe_kernels_on_and_off_give_the_same_losses_and_routing() {
    use condenser_engine::config::KernelPolicy;
    let dir = scratch("moe-kernels-ab");
    let data = tiny_world(&dir);
    let (cpu, cpu_info) = select(BackendChoice::Cpu).unwrap();
    let runs = dir.join("runs");
    let opts = RunOptions {
        runs_dir: runs.clone(),
        eval: false,
        ..RunOptions::default()
    };
    run_recipe(&smoke_recipe(&data), &cpu, &cpu_info, &opts, &mut Silent).unwrap();
    let dense = recipe("smoke-mod-dense", &data);
    run_recipe(&dense, &cpu, &cpu_info, &opts, &mut Silent).unwrap();

    #[derive(Default)]
    struct Seen(Vec<(f32, Vec<LayerRouting>)>);
    impl Observer for Seen {
        fn on_event(&mut self, e: &Event) {
            if let Event::Step { loss, routing, .. } = e {
                self.0.push((*loss, routing.clone()));
            }
        }
    }
    let (gpu, gpu_info) = select(BackendChoice::Wgpu).expect("a wgpu adapter");
    let run = |policy: KernelPolicy, sub: &str| {
        let runs_p = dir.join(sub);
        std::fs::create_dir_all(&runs_p).unwrap();
        for run in ["smoke", "smoke-mod-dense"] {
            copy_dir(&runs.join(run), &runs_p.join(run));
        }
        let mut r = recipe("smoke-mod", &data);
        r.kernels = policy;
        let o = RunOptions {
            runs_dir: runs_p,
            eval: false,
            ..RunOptions::default()
        };
        let mut seen = Seen::default();
        run_recipe(&r, &gpu, &gpu_info, &o, &mut seen).unwrap();
        seen.0
    };
    let on = run(KernelPolicy::Auto, "auto");
    let off = run(KernelPolicy::Reference, "reference");
    assert_eq!(on.len(), off.len());
    assert!(on.len() >= 2, "{} steps", on.len());
    assert!(
        on.iter().any(|(_, r)| r.iter().any(|l| l.dropped > 0)),
        "the capacity must drop some assignments, so the kernels' drops are compared"
    );
    for (i, ((a, ra), (b, rb))) in on.iter().zip(&off).enumerate() {
        let rel = (a - b).abs() / b.abs().max(1e-6);
        assert!(
            rel < 1e-3,
            "step {}: kernels {a} vs reference {b} (rel {rel})",
            i + 1
        );
        for (la, lb) in ra.iter().zip(rb) {
            assert_eq!(
                (&la.visual, &la.text, la.dropped),
                (&lb.visual, &lb.text, lb.dropped),
                "step {}: layer {} routing",
                i + 1,
                la.layer
            );
            assert!(
                (la.entropy - lb.entropy).abs() < 1e-4,
                "step {}: entropy",
                i + 1
            );
        }
    }
}
