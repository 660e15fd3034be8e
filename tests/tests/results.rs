//! The committed ablation tables cannot go stale: every set in `assets/ablations/` has its table
//! in `docs/results/`, the markdown is exactly what today's renderer makes of the JSON beside it
//! (so a change to the statistics or the layout forces a regeneration), and the recipe and set
//! files it was made from hash to what the JSON recorded (so a changed recipe forces one too).

use condenser_engine::config::{AblationSet, load_ablation};
use condenser_engine::eval::ablation::AblationTable;
use condenser_tests::repo;

/// Sets whose committed tables are known to predate today's format or recipes and await their
/// 5-seed regeneration on a fresh clone (issue 25). They are reported, not failed, and the test
/// fails when one of them is current again, so the list cannot outlive its reason.
const AWAITING_REGENERATION: &[&str] = &[];

#[test]
fn committed_ablation_tables_match_their_json_and_todays_recipes() {
    let root = repo();
    let mut sets: Vec<_> = std::fs::read_dir(root.join("assets/ablations"))
        .expect("assets/ablations")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    sets.sort();
    assert!(!sets.is_empty(), "no ablation sets found");
    let mut failures = Vec::new();
    for path in &sets {
        let set = load_ablation(path).expect("the set parses");
        let problems = problems_of(&root, &set);
        let awaiting = AWAITING_REGENERATION.contains(&set.name.as_str());
        match (awaiting, problems.is_empty()) {
            (false, _) => failures.extend(problems),
            (true, true) => failures.push(format!(
                "{}: current again; take {:?} off AWAITING_REGENERATION",
                set.output.display(),
                set.name
            )),
            (true, false) => eprintln!("awaiting regeneration: {}", problems.join("; ")),
        }
    }
    assert!(
        failures.is_empty(),
        "stale results:\n{}",
        failures.join("\n")
    );
}

/// Why `set`'s committed table is not what today's code and recipes would make; empty when
/// it is.
fn problems_of(root: &std::path::Path, set: &AblationSet) -> Vec<String> {
    let mut problems = Vec::new();
    let md_path = root.join(&set.output);
    let json_path = md_path.with_extension("json");
    let Ok(json) = std::fs::read_to_string(&json_path) else {
        problems.push(format!(
            "{}: missing; make it with `condenser ablate {}` (the set's header says how)",
            json_path.display(),
            set.name
        ));
        return problems;
    };
    let table: AblationTable = match serde_json::from_str(&json) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!(
                "{}: not a table of today's format ({e}); regenerate it with `condenser \
                     ablate {} --seeds 5`",
                json_path.display(),
                set.name
            ));
            return problems;
        }
    };
    // the command that made it, with its seed count
    let regenerate = format!("regenerate with `{}`", table.command);
    let md = std::fs::read_to_string(&md_path).unwrap_or_default();
    if md != table.markdown() {
        problems.push(format!(
            "{}: differs from its JSON as rendered today; {regenerate}",
            md_path.display()
        ));
    }
    for stale in table.provenance.stale_recipes(root) {
        problems.push(format!(
            "{}: made from another {stale}; {regenerate}",
            md_path.display()
        ));
    }
    // every row's recipe is among the hashed files, so none can change unseen
    for row in &set.rows {
        let key = row.recipe.to_string_lossy().replace('\\', "/");
        if !table.provenance.recipes.contains_key(&key) {
            problems.push(format!(
                "{}: no hash recorded for {key}; {regenerate}",
                md_path.display()
            ));
        }
    }
    problems
}
