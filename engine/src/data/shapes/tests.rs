//! The Shapes world: deterministic by seed, answers worded as configured, preference pairs
//! balanced between "yes" and "no", and every word in its tokenizer.

use std::path::{Path, PathBuf};

use super::*;
use crate::data::llava::{PreferencePair, load_conversations};

fn world(name: &str, cfg: &WorldConfig) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("condenser-shapes-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    generate(&dir, cfg).unwrap();
    dir
}

fn small(answers: AnswerStyle) -> WorldConfig {
    WorldConfig {
        train_images: 40,
        val_images: 2,
        test_images: 20,
        answers,
        ..WorldConfig::default()
    }
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap()
}

#[test]
fn same_seed_same_world_and_answer_styles_share_the_scenes() {
    let a = world("a", &small(AnswerStyle::Grounded));
    let b = world("b", &small(AnswerStyle::Grounded));
    let c = world("c", &small(AnswerStyle::Short));
    for f in ["train.json", "test.json", "captions.json", "prefs.json"] {
        assert_eq!(read(&a, f), read(&b, f), "{f} differs between two runs");
    }
    // the answer style changes answers only: the same images and the same captions
    assert_eq!(read(&a, "captions.json"), read(&c, "captions.json"));
    assert_eq!(
        std::fs::read(a.join("images/train_00007.png")).unwrap(),
        std::fs::read(c.join("images/train_00007.png")).unwrap()
    );
    let grounded = load_conversations(&a.join("test.json"), true).unwrap();
    let short = load_conversations(&c.join("test.json"), true).unwrap();
    let mut seen = 0;
    for (g, s) in grounded.iter().zip(&short) {
        let (ga, sa) = (&g.conversations[1].value, &s.conversations[1].value);
        match g.question_types.as_ref().unwrap()[0] {
            QuestionType::Colour | QuestionType::Shape | QuestionType::Position => {
                // grounded = the referent, then the short answer
                assert!(
                    ga.ends_with(sa.as_str()) && ga.len() > sa.len(),
                    "{ga} / {sa}"
                );
                seen += 1;
            }
            _ => assert_eq!(ga, sa),
        }
    }
    assert!(seen >= 20);
    let vocab = words();
    let words: std::collections::HashSet<&str> = vocab.iter().map(String::as_str).collect();
    for r in &grounded {
        for t in &r.conversations {
            for w in t.value.replace("<image>", "").split_whitespace() {
                assert!(words.contains(w), "{w:?} is not in the tokenizer");
            }
        }
    }
}

#[test]
fn preference_pairs_prefer_the_truth_both_ways() {
    let dir = world("prefs", &small(AnswerStyle::Grounded));
    let pairs: Vec<PreferencePair> = serde_json::from_str(&read(&dir, "prefs.json")).unwrap();
    let yes = pairs.iter().filter(|p| p.chosen == "yes").count();
    let no = pairs.iter().filter(|p| p.chosen == "no").count();
    assert!(yes > 0 && no > 0, "yes {yes}, no {no}");
    assert!(yes.abs_diff(no) <= pairs.len() / 4, "yes {yes}, no {no}");
    for p in &pairs {
        assert_ne!(p.chosen, p.rejected);
        if p.chosen == "yes" {
            assert_eq!(p.rejected, "no");
        }
    }
}
