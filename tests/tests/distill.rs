//! Distillation end to end on the smoke recipes: a `smoke` teacher, then the `smoke-kd` student
//! through DPT -> SFT -> DFT with every loss term on. The teacher never changes, every term is
//! logged, and a KD run killed mid-DFT resumes to the same weights (the hidden-alignment
//! projection and its optimiser state travel in the checkpoint).

use std::path::Path;

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::config::{Recipe, load_recipe};
use condenser_engine::train::{Event, Observer, RunOptions, Silent, run_recipe};
use condenser_tests::{repo, scratch, smoke_recipe, tiny_world, weights};

fn kd_recipe(data: &Path) -> Recipe {
    let mut r =
        load_recipe(repo().join("assets/recipes/smoke-kd.toml")).expect("smoke-kd parses");
    r.data = data.to_path_buf();
    r
}

#[derive(Default)]
struct Terms(Vec<(String, std::collections::BTreeMap<String, f32>)>);
impl Observer for Terms {
    fn on_event(&mut self, e: &Event) {
        if let Event::Step { name, terms, .. } = e {
            self.0.push((name.clone(), terms.clone()));
        }
    }
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
    let mut terms = Terms::default();
    let a = run_recipe(&recipe, &device, &info, &opts, &mut terms).unwrap();
    assert!(a.finished);
    assert_eq!(std::fs::read(&teacher_file).unwrap(), before, "teacher changed");

    // every configured term is logged in its stage, and divergences are non-negative
    let stage_terms = |stage: &str| -> Vec<String> {
        let t = &terms.0.iter().find(|(n, _)| n == stage).unwrap().1;
        assert!(t.values().all(|v| v.is_finite() && *v >= -1e-6), "{stage}: {t:?}");
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
    let (wa, wb) = (
        weights(a.model.as_ref().unwrap()),
        weights(b2.model.as_ref().unwrap()),
    );
    for ((na, va), (_, vb)) in wa.iter().zip(&wb) {
        let d = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-6, "{na}: resumed KD weights differ by {d}");
    }
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
    assert!(err.contains("kd.toml") && err.contains("[teacher]"), "{err}");
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
    assert!(!runs.join("smoke-kd").exists(), "a refused run left a folder");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
