//! Every shipped recipe parses, validates, and round-trips through its resolved form.

use condenser_engine::config::{load_recipe, parse_recipe};
use condenser_tests::repo;

#[test]
fn shipped_recipes_parse_and_round_trip() {
    let dir = repo().join("assets/recipes");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let r = load_recipe(&path).unwrap_or_else(|e| panic!("{e}"));
            let again = parse_recipe(&r.to_toml(), &path).unwrap();
            assert_eq!(again, r, "{}", path.display());
            n += 1;
        }
    }
    assert!(
        n >= 5,
        "expected the vision, teacher, teacher-share, student and smoke recipes"
    );
}

#[test]
fn teacher_and_student_share_the_vision_encoder_and_tokenizer_space() {
    let load = |n: &str| load_recipe(repo().join("assets/recipes").join(n)).unwrap();
    let (v, t, s) = (
        load("shapes-vision.toml"),
        load("shapes-teacher.toml"),
        load("shapes-student.toml"),
    );
    assert_eq!(t.model.vision, v.model.vision);
    assert_eq!(s.model.vision, v.model.vision);
    assert_eq!(t.init.vision_from.as_deref(), Some("shapes-vision"));
    assert_eq!(s.init.vision_from.as_deref(), Some("shapes-vision"));
    assert_eq!(t.model.llm.vocab_size, s.model.llm.vocab_size);
    assert!(s.model.llm.hidden * s.model.llm.layers < t.model.llm.hidden * t.model.llm.layers);
}

/// Every shipped ablation set loads and every row resolves to a valid, distinct recipe.
#[test]
fn shipped_ablation_sets_resolve() {
    let root = condenser_tests::repo();
    for e in std::fs::read_dir(root.join("assets/ablations")).unwrap() {
        let path = e.unwrap().path();
        let set = condenser_engine::config::load_ablation(&path).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for row in &set.rows {
            let r = row.recipe(&set.name, &root, 1).unwrap();
            assert!(
                seen.insert(r.to_toml()),
                "{}: row {:?} repeats another",
                path.display(),
                row.label
            );
        }
    }
}
