//! Every shipped recipe parses, validates, and round-trips through its resolved form.

use condenser_engine::config::{load_recipe, parse_recipe};
use condenser_engine::run::Runs;
use condenser_tests::repo;

/// A real-weights recipe: no `[model]` table, its model comes from a checkpoint that
/// `condenser import` writes first.
fn takes_an_imported_model(recipe: &std::path::Path) -> bool {
    !std::fs::read_to_string(recipe)
        .unwrap()
        .contains("\n[model")
}

/// Without its imported checkpoint, such a recipe must say which one it lacks.
fn names_the_missing_checkpoint(e: &impl std::fmt::Display) {
    let e = e.to_string();
    assert!(
        e.contains("model_from") && e.contains("checkpoints/"),
        "{e}"
    );
}

#[test]
fn shipped_recipes_parse_and_round_trip() {
    let dir = repo().join("assets/recipes");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if takes_an_imported_model(&path) {
                // (tests/tests/real_weights.rs runs these recipes after importing)
                let runs = Runs::new(repo().join("target/test-scratch/no-runs"));
                names_the_missing_checkpoint(&runs.load_recipe(&path).unwrap_err());
                continue;
            }
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
            let r = match row.recipe(&set.name, &root, 1) {
                Ok(r) => r,
                // (scripts/real-weights.sh imports the checkpoints before the set runs)
                Err(e) if takes_an_imported_model(&root.join(&row.recipe)) => {
                    names_the_missing_checkpoint(&e);
                    continue;
                }
                Err(e) => panic!("{}: row {:?}: {e}", path.display(), row.label),
            };
            assert!(
                seen.insert(r.to_toml()),
                "{}: row {:?} repeats another",
                path.display(),
                row.label
            );
        }
    }
}

/// The LLaVA-MoD set chains its rows: the MoE row upcycles the dense base run of the same seed,
/// the preference rows start from the runs they improve, and the dense comparison has the
/// MoE student's active FFN width and the same number of stages.
#[test]
fn mod_rows_chain_their_runs_by_seed() {
    let root = condenser_tests::repo();
    let set =
        condenser_engine::config::load_ablation(&root.join("assets/ablations/mod.toml")).unwrap();
    let row = |label: &str| {
        set.rows
            .iter()
            .find(|r| r.label == label)
            .unwrap()
            .recipe(&set.name, &root, 2)
            .unwrap()
    };
    let moe = row("MoE 4 x 64, top-2");
    assert_eq!(
        moe.init.upcycle_from.as_deref(),
        Some("mod-dense-ffn-64-upcycling-base-s2")
    );
    let spec = moe.model.llm.moe.as_ref().unwrap();
    let dense = row("dense, FFN 128 (equal active)");
    assert_eq!(
        dense.model.llm.intermediate,
        spec.top_k * moe.model.llm.intermediate
    );
    assert_eq!(dense.stages.len(), 3);
    assert_eq!(row("dense, FFN 64 (upcycling base)").stages.len(), 2);
    assert_eq!(
        row("MoE 4 x 64, top-2 + pref").init.model_from.as_deref(),
        Some("mod-moe-4-x-64-top-2-s2")
    );
    let dense_pref = row("dense, FFN 128 + pref");
    assert!(dense_pref.model.llm.moe.is_none());
    assert_eq!(dense_pref.model, dense.model);
    // the mined rows differ from the world-pair rows only in where their pairs come from
    use condenser_engine::config::DataKind;
    for (world, mined) in [
        ("MoE 4 x 64, top-2 + pref", "MoE 4 x 64, top-2 + mined pref"),
        ("dense, FFN 128 + pref", "dense, FFN 128 + mined pref"),
    ] {
        let (w, m) = (row(world), row(mined));
        assert_eq!(w.stages[0].data, DataKind::Preference);
        assert_eq!(m.stages[0].data, DataKind::Mined);
        assert_eq!((&m.model, &m.init), (&w.model, &w.init));
        assert_eq!(m.stages[0].objective, w.stages[0].objective);
    }
}
