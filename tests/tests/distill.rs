//! Distillation end to end on the smoke recipes: a `smoke` teacher, then the `smoke-kd` student
//! through DPT -> SFT -> DFT with every loss term on. The teacher never changes, every term is
//! logged, and a KD run killed mid-DFT resumes to the same weights (the hidden-alignment
//! projection and its optimiser state travel in the checkpoint).

use std::path::Path;

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::config::{Recipe, load_recipe};
use condenser_engine::train::{RunOptions, Silent, run_recipe};
use condenser_tests::{
    StepTerms, assert_same_weights, copy_dir, repo, scratch, smoke_recipe, smoke_teacher,
    tiny_world, weights,
};

fn kd_recipe(data: &Path) -> Recipe {
    let mut r = load_recipe(repo().join("assets/recipes/smoke-kd.toml")).expect("smoke-kd parses");
    r.data = data.to_path_buf();
    r
}

#[test]
fn kd_student_learns_from_a_frozen_teacher_and_resumes_exactly() {
    let dir = scratch("kd");
    let data = tiny_world(&dir);
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let runs = dir.join("runs");
    let opts = RunOptions {
        runs_dir: runs.clone(),
        eval: false,
        ..RunOptions::default()
    };
    run_recipe(&smoke_recipe(&data), &device, &info, &opts, &mut Silent).unwrap();
    let teacher_file = runs.join("smoke/checkpoints/final/model.bpk");
    let before = std::fs::read(&teacher_file).unwrap();

    let recipe = kd_recipe(&data);
    let mut terms = StepTerms::default();
    let a = run_recipe(&recipe, &device, &info, &opts, &mut terms).unwrap();
    assert!(a.finished);
    assert_eq!(
        std::fs::read(&teacher_file).unwrap(),
        before,
        "teacher changed"
    );

    // every configured term is logged in its stage, and divergences are non-negative
    let stage_terms = |stage: &str| -> Vec<String> {
        let t = &terms.0.iter().find(|(n, _)| n == stage).unwrap().1;
        assert!(
            t.values().all(|v| v.is_finite() && *v >= -1e-6),
            "{stage}: {t:?}"
        );
        t.keys().cloned().collect()
    };
    assert_eq!(stage_terms("dpt"), ["ce", "rel", "res", "vis"]);
    assert_eq!(stage_terms("sft"), Vec::<String>::new());
    assert_eq!(stage_terms("dft"), ["ce", "hidden", "rel", "res", "vis"]);

    // kill inside DFT (3 + 3 + 3 steps: step 8 is DFT's second) and resume
    let runs_b = dir.join("runs-b");
    std::fs::create_dir_all(&runs_b).unwrap();
    copy_dir(&runs.join("smoke"), &runs_b.join("smoke"));
    let first = RunOptions {
        runs_dir: runs_b.clone(),
        eval: false,
        stop_after_steps: Some(8),
        ..RunOptions::default()
    };
    let b1 = run_recipe(&recipe, &device, &info, &first, &mut Silent).unwrap();
    assert!(!b1.finished);
    let second = RunOptions {
        runs_dir: runs_b,
        eval: false,
        ..RunOptions::default()
    };
    let b2 = run_recipe(&recipe, &device, &info, &second, &mut Silent).unwrap();
    assert!(b2.finished);
    assert_same_weights(
        a.model.as_ref().unwrap(),
        b2.model.as_ref().unwrap(),
        1e-6,
        "resumed KD weights",
    );
}

#[test]
fn distill_without_a_teacher_or_with_a_mismatched_one_is_refused() {
    let dir = scratch("kd-bad");
    let data = tiny_world(&dir);
    let text = std::fs::read_to_string(repo().join("assets/recipes/smoke-kd.toml")).unwrap();
    let no_teacher = text.replace("[teacher]\nfrom = \"smoke\"\n", "");
    let err = condenser_engine::config::parse_recipe(&no_teacher, Path::new("kd.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kd.toml") && err.contains("[teacher]"),
        "{err}"
    );
    let wrong_kind = text.replace("kind = \"sft\"", "kind = \"dpt\"");
    let err = condenser_engine::config::parse_recipe(&wrong_kind, Path::new("kd.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Dpt"), "{err}");

    // a teacher whose visual tokens differ from the student's
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let runs = dir.join("runs");
    let opts = RunOptions {
        runs_dir: runs.clone(),
        eval: false,
        ..RunOptions::default()
    };
    let mut teacher = smoke_recipe(&data);
    teacher.model.vision.drop_cls = !teacher.model.vision.drop_cls;
    teacher.stages.truncate(1);
    run_recipe(&teacher, &device, &info, &opts, &mut Silent).unwrap();
    let mut kd = kd_recipe(&data);
    kd.init.vision_from = None;
    let err = match run_recipe(&kd, &device, &info, &opts, &mut Silent) {
        Ok(_) => panic!("a mismatched teacher was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("visual tokens"), "{err}");
    assert!(
        !runs.join("smoke-kd").exists(),
        "a refused run left a folder"
    );
}

/// LLaVADI's initialisation copies the teacher's embeddings and first layers into a shallower
/// student, and refuses a student of another width.
#[test]
fn student_llm_can_start_from_the_teachers_first_layers() {
    use condenser_engine::burn::prelude::Device;
    use condenser_engine::model::Mllm;
    use condenser_engine::run::checkpoint::{load_full, load_llm_prefix};

    let (_, runs) = smoke_teacher(&scratch("kd-prefix"), Some(1));
    let ck = runs.join("smoke/checkpoints/final");
    let flex = Device::flex();
    let t = load_full(&ck, &flex).unwrap();

    let mut cfg = t.config.clone();
    cfg.llm.layers = 1;
    let s = load_llm_prefix(&ck, Mllm::new(&cfg, 99, &flex)).unwrap();
    assert_eq!(s.llm.layers.len(), 1);
    let tw: std::collections::BTreeMap<_, _> = weights(&t).into_iter().collect();
    let sw = weights(&s);
    let mut copied = 0;
    for (name, v) in &sw {
        if name.starts_with("llm.") {
            assert_eq!(
                Some(v),
                tw.get(name),
                "{name} was not copied from the teacher"
            );
            copied += 1;
        }
    }
    assert!(copied > 5, "only {copied} LLM tensors compared");

    let mut wide = cfg.clone();
    wide.llm.hidden *= 2;
    let err = match load_llm_prefix(&ck, Mllm::new(&wide, 1, &flex)) {
        Ok(_) => panic!("a wider student was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("everything but depth"), "{err}");
}

/// Cached teacher outputs equal the live teacher's on batches of examples of different lengths.
#[test]
fn cached_teacher_outputs_match_the_live_teacher() {
    use condenser_engine::backend::kernels::Kernels;
    use condenser_engine::burn::prelude::*;
    use condenser_engine::data::{Dataset, Padding, TextTokenizer, host_batch};
    use condenser_engine::model::Visual;
    use condenser_engine::train::teacher::{Teacher, TeacherCache, teacher_forward};

    let (data, runs) = smoke_teacher(&scratch("kd-cache"), None);
    let recipe = smoke_recipe(&data);
    let tok = TextTokenizer::load(&data.join("tokenizer.json")).unwrap();
    let inner = Device::flex();
    let ad = inner.clone().autodiff();
    let teacher = Teacher::load(
        &runs.join("smoke/checkpoints/final"),
        &recipe.model,
        &tok,
        Kernels::for_device(&inner),
        &inner,
    )
    .unwrap();
    let ds = Dataset::load(
        &data,
        "train.json",
        &data,
        &tok,
        &recipe.model.vision,
        recipe.model.llm.max_positions,
        true,
    )
    .unwrap();
    let pixels = |idx: &[usize]| Visual::Pixels(ds.pixels(idx, &inner).unwrap());
    let nv = recipe.model.vision.num_visual_tokens();
    let cache = TeacherCache::new(&teacher, usize::MAX);
    // the first epoch fills the cache, in batches of 8 in order
    let all: Vec<usize> = (0..ds.len()).collect();
    for chunk in all.chunks(8) {
        let ex: Vec<_> = chunk.iter().map(|&i| &ds.encoded[i]).collect();
        let hb = host_batch(&ex, nv, tok.special.pad, Padding::Right);
        cache.batch(&teacher, chunk, &hb, || pixels(chunk), &ad);
    }
    assert_eq!(cache.len(), ds.len());
    let idx = [5usize, 0, 17, 3];
    let lens: Vec<usize> = idx.iter().map(|&i| ds.encoded[i].ids.len()).collect();
    assert!(
        lens.iter().any(|l| *l != lens[0]),
        "the batch must mix lengths"
    );
    let examples: Vec<_> = idx.iter().map(|&i| &ds.encoded[i]).collect();
    let hb = host_batch(&examples, nv, tok.special.pad, Padding::Right);
    let cached = cache.batch(
        &teacher,
        &idx,
        &hb,
        || panic!("every example is cached: the teacher must not run"),
        &ad,
    );
    let live = teacher_forward(&teacher, &hb, pixels(&idx), &ad);
    let host = |t: Tensor<3>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    // the cache holds hidden states only: the logits are formed from them per step
    for (name, a, b) in [("hidden", host(cached), host(live))] {
        let per_pos = a.len() / (hb.b * hb.t);
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            let pos = k / per_pos;
            if hb.attention_mask[pos] > 0.0 {
                assert!((x - y).abs() < 1e-4, "{name}[{k}]: cached {x} vs live {y}");
            }
        }
    }
}

/// A teacher trained with another tokenizer is refused, naming both files, before any run
/// folder is written.
#[test]
fn teacher_with_another_tokenizer_is_refused() {
    let (data, runs) = smoke_teacher(&scratch("kd-tok"), Some(1));
    let tok = runs.join("smoke/tokenizer.json");
    let mut text = std::fs::read_to_string(&tok).unwrap();
    text.push('\n');
    std::fs::write(&tok, text).unwrap();
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let opts = RunOptions {
        runs_dir: runs.clone(),
        eval: false,
        ..RunOptions::default()
    };
    let err = match run_recipe(&kd_recipe(&data), &device, &info, &opts, &mut Silent) {
        Ok(_) => panic!("a teacher with another tokenizer was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("tokenizer") && err.contains("smoke/tokenizer.json"),
        "{err}"
    );
    assert!(
        !runs.join("smoke-kd").exists(),
        "a refused run left a folder"
    );
}

/// A distillation objective without cross-entropy (and with RDist on hidden states) never needs
/// the student's logits whole: on wgpu its divergences go through the fused-linear kernels from
/// the hidden states and the head. Its losses, step by step, equal the reference path's.
#[test]
fn fused_linear_kd_terms_match_the_reference_on_wgpu() {
    use condenser_engine::config::KernelPolicy;
    use condenser_engine::config::{Objective, RelationFeatures};
    let dir = scratch("kd-fused-linear");
    let (data, runs) = smoke_teacher(&dir, None);
    let (device, info) = select(BackendChoice::Wgpu).expect("a wgpu adapter");
    let run = |policy: KernelPolicy, sub: &str| {
        let mut r = kd_recipe(&data);
        r.kernels = policy;
        r.stages.truncate(1);
        for s in &mut r.stages {
            if let Objective::Distill(d) = &mut s.objective {
                d.ce = 0.0;
                d.relation = RelationFeatures::Hidden;
                d.divergence.zscore = false;
            }
        }
        let out = dir.join(sub);
        copy_dir(&runs, &out);
        let opts = RunOptions {
            runs_dir: out,
            eval: false,
            ..RunOptions::default()
        };
        let mut terms = StepTerms::default();
        run_recipe(&r, &device, &info, &opts, &mut terms).unwrap();
        terms.0
    };
    let fused = run(KernelPolicy::Auto, "fused");
    let reference = run(KernelPolicy::Reference, "reference");
    eprintln!("fused {fused:?}\nreference {reference:?}");
    assert_eq!(fused.len(), reference.len());
    assert!(fused.len() >= 3);
    for ((stage, a), (_, b)) in fused.iter().zip(&reference) {
        assert!(!a.contains_key("ce"), "{a:?}");
        for key in ["res", "vis"] {
            let (x, y) = (a[key], b[key]);
            assert!(
                (x - y).abs() <= 1e-3 * y.abs().max(1e-3),
                "{stage} {key}: fused {x} vs reference {y}"
            );
        }
    }
}

/// The engine's run plan (what the main job and ablations use): a student that needs a teacher
/// starts only once the teacher's run has finished (it would fail to find the teacher's final
/// checkpoint otherwise), runs side by side where they may, and a plan whose runs wait for each
/// other is refused instead of hanging.
#[test]
fn a_plan_runs_dependent_runs_in_order_and_refuses_a_circle() {
    use condenser_engine::train::{Observer, PlanObserver, PlannedRun, RunOutcome, run_plan};
    use std::sync::Mutex;

    struct Order(Mutex<Vec<String>>);
    impl PlanObserver for Order {
        fn run_observer(&self, _: &PlannedRun) -> Box<dyn Observer + Send + '_> {
            Box::new(Silent)
        }
        fn finished(&self, run: &PlannedRun, _: &RunOutcome, _: f64, _: usize, _: usize) {
            self.0.lock().unwrap().push(run.id.clone());
        }
    }

    let dir = scratch("plan");
    let data = tiny_world(&dir);
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let opts = |eval: bool| RunOptions {
        runs_dir: dir.join("runs"),
        eval,
        ..RunOptions::default()
    };
    let mut teacher = smoke_recipe(&data);
    teacher.stages.truncate(1);
    let mut student = kd_recipe(&data);
    student.stages.truncate(1);
    let planned = |id: &str, recipe: &Recipe, eval: bool, after: &[&str]| PlannedRun {
        id: id.into(),
        recipe: recipe.clone(),
        opts: opts(eval),
        after: after.iter().map(|a| a.to_string()).collect(),
    };
    // listed student first: the plan, not the list order, decides when it starts
    let plan = vec![
        planned("smoke-kd", &student, true, &["smoke"]),
        planned("smoke:eval", &teacher, true, &["smoke"]),
        planned("smoke", &teacher, false, &[]),
    ];
    let order = Order(Mutex::new(Vec::new()));
    let out = run_plan(plan, 2, &device, &info, &order).unwrap();
    let order = order.0.into_inner().unwrap();
    assert_eq!(order.len(), 3);
    assert_eq!(order[0], "smoke", "{order:?}");
    assert!(out["smoke"].eval.is_none());
    assert!(out["smoke:eval"].eval.is_some());
    assert!(out["smoke-kd"].finished && out["smoke-kd"].eval.is_some());

    let circle = vec![
        planned("a", &teacher, false, &["b"]),
        planned("b", &student, false, &["a"]),
    ];
    let err = run_plan(circle, 2, &device, &info, &Order(Mutex::new(Vec::new())))
        .unwrap_err()
        .to_string();
    assert!(err.contains("never became ready"), "{err}");
}
