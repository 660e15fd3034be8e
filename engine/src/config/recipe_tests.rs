use super::*;
use crate::config::PreferenceReference;

const GOOD: &str = r#"
name = "t"
data = "d"
[model.vision]
image_size = 32
patch_size = 8
hidden = 32
layers = 1
heads = 2
mlp_hidden = 64
[model.llm]
vocab_size = 64
hidden = 32
layers = 1
heads = 2
kv_heads = 1
intermediate = 64
[[stage]]
name = "pt"
data = "caption"
batch_size = 4
lr = 1e-3
freeze = { vision = "frozen", projector = "full", llm = { from_layer = 1 } }
"#;

#[test]
fn parses_and_resolves_defaults() {
    let r = parse_recipe(GOOD, Path::new("x.toml")).unwrap();
    assert_eq!(
        r.stages[0].freeze.llm,
        FreezeSpec::Partial { from_layer: 1 }
    );
    assert_eq!(r.stages[0].grad_clip, 1.0);
    let again = parse_recipe(&r.to_toml(), Path::new("y.toml")).unwrap();
    assert_eq!(again, r);
}

#[test]
fn unknown_key_names_key_and_file() {
    let text = GOOD.replace("lr = 1e-3", "lr = 1e-3\nlearning_rate = 3");
    let err = parse_recipe(&text, Path::new("recipes/x.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("recipes/x.toml"), "{err}");
    assert!(err.contains("learning_rate"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn rejects_bad_shapes() {
    let text = GOOD.replace("patch_size = 8", "patch_size = 7");
    let err = parse_recipe(&text, Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("patch_size"), "{err}");
}

#[test]
fn preference_reference_defaults_to_the_teacher_and_is_left_out_when_default() {
    let text = GOOD.replace(
        "data = \"caption\"",
        "data = \"preference\"\nobjective = { kind = \"preference\" }",
    ) + "[teacher]\nfrom = \"x\"\n";
    let r = parse_recipe(&text, Path::new("x.toml")).unwrap();
    let Objective::Preference(p) = r.stages[0].objective else {
        panic!("a preference objective")
    };
    assert_eq!(p.reference, PreferenceReference::Teacher);
    let saved = r.to_toml();
    assert!(
        !saved.contains("reference ="),
        "left out when default:\n{saved}"
    );
    let mut with_student = r.clone();
    if let Objective::Preference(p) = &mut with_student.stages[0].objective {
        p.reference = PreferenceReference::Student;
    }
    let text = with_student.to_toml();
    assert!(text.contains("reference = \"student\""), "{text}");
    assert_eq!(
        parse_recipe(&text, Path::new("y.toml")).unwrap(),
        with_student
    );
}
