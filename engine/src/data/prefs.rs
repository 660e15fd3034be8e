//! Hallucination preference pairs for any LLaVA-format data set (LLaVA-MoD's preference
//! distillation data, here built instead of downloaded): for an assistant answer that names an
//! object, the rejected answer names an object the record never mentions instead; for a "no"
//! answer to a question about an object, the rejected answer is "yes". Objects are phrases from
//! a user-supplied list, matched as whole words.

use super::llava::{Conversation, PreferencePair};
use crate::rng::Rng;

/// What [`build_pairs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrefsStats {
    pub records: usize,
    pub pairs: usize,
    /// Records with no image, or no answer naming a listed object or answering "no".
    pub skipped_no_object: usize,
    /// Records mentioning every listed object, so no absent object was left to hallucinate.
    pub skipped_no_absent: usize,
}

/// Finds `phrase` in `text` as whole words (both lower-cased, word = alphanumeric run).
fn find_phrase(text: &str, phrase: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find(phrase) {
        let start = from + at;
        let end = start + phrase.len();
        let before = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let after = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
        if before && after {
            return Some(start);
        }
        from = start + 1;
    }
    None
}

/// Up to `per_record` pairs per record, chosen at random (seeded) among its eligible turns.
/// The prompt is the turn's question with the record's `<image>` placeholder in front.
pub fn build_pairs(
    records: &[Conversation],
    objects: &[String],
    per_record: usize,
    seed: u64,
) -> (Vec<PreferencePair>, PrefsStats) {
    let mut rng = Rng::new(seed);
    let objects: Vec<String> = objects
        .iter()
        .map(|o| o.trim().to_lowercase())
        .filter(|o| !o.is_empty())
        .collect();
    // longest first, so "red circle" wins over "circle"
    let mut by_len = objects.clone();
    by_len.sort_by_key(|o| std::cmp::Reverse(o.len()));
    let mut out = Vec::new();
    let mut stats = PrefsStats {
        records: records.len(),
        ..Default::default()
    };
    for r in records {
        let Some(image) = &r.image else {
            stats.skipped_no_object += 1;
            continue;
        };
        let all: String = r
            .conversations
            .iter()
            .map(|t| t.value.to_lowercase())
            .collect::<Vec<_>>()
            .join(" \n ");
        let absent: Vec<&String> = objects
            .iter()
            .filter(|o| find_phrase(&all, o).is_none())
            .collect();
        let mut candidates: Vec<(String, String, String)> = Vec::new(); // prompt, chosen, rejected
        for (q, a) in r.exchanges() {
            let prompt = format!("<image>\n{}", q.value.replace("<image>", "").trim());
            let answer = a.value.trim().to_string();
            let lower = answer.to_lowercase();
            let question = q.value.to_lowercase();
            if lower == "no" && by_len.iter().any(|o| find_phrase(&question, o).is_some()) {
                candidates.push((prompt, answer, "yes".into()));
                continue;
            }
            if absent.is_empty() {
                continue;
            }
            if let Some((at, o)) = by_len
                .iter()
                .find_map(|o| find_phrase(&lower, o).map(|at| (at, o)))
            {
                let fake = absent[rng.below(absent.len())];
                let rejected = format!("{}{}{}", &answer[..at], fake, &answer[at + o.len()..]);
                candidates.push((prompt, answer, rejected));
            }
        }
        if candidates.is_empty() {
            if absent.is_empty() {
                stats.skipped_no_absent += 1;
            } else {
                stats.skipped_no_object += 1;
            }
            continue;
        }
        rng.shuffle(&mut candidates);
        for (k, (prompt, chosen, rejected)) in candidates.into_iter().take(per_record).enumerate() {
            out.push(PreferencePair {
                id: format!("{}-pref{k}", r.id),
                image: image.clone(),
                prompt,
                chosen,
                rejected,
            });
        }
    }
    stats.pairs = out.len();
    (out, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Turn;

    fn conv(turns: &[(&str, &str)]) -> Conversation {
        Conversation {
            id: "r".into(),
            image: Some("a.png".into()),
            conversations: turns
                .iter()
                .flat_map(|(q, a)| [Turn::human(*q), Turn::gpt(*a)])
                .collect(),
            question_types: None,
            regions: None,
        }
    }

    #[test]
    fn rejected_answers_name_an_absent_object_or_say_yes() {
        let objects: Vec<String> = ["red circle", "blue square", "circle", "green diamond"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = conv(&[
            (
                "<image>\nwhere is the red circle ?",
                "red circle at top left",
            ),
            ("is there a blue square ?", "no"),
        ]);
        let (pairs, stats) = build_pairs(&[r], &objects, 2, 1);
        assert_eq!(stats.pairs, 2);
        for p in &pairs {
            assert!(p.prompt.starts_with("<image>\n"));
            assert_eq!(p.prompt.matches("<image>").count(), 1);
            if p.chosen == "no" {
                assert_eq!(p.rejected, "yes");
            } else {
                // the hallucinated object is one the record never mentions
                assert_eq!(p.rejected, "green diamond at top left");
            }
        }
        // a record with no listed object is skipped and counted
        let (none, stats) = build_pairs(&[conv(&[("<image>\nhi", "hello")])], &objects, 1, 1);
        assert!(none.is_empty());
        assert_eq!(stats.skipped_no_object, 1);
        // whole words only: "circles" is not "circle"
        assert_eq!(find_phrase("two circles", "circle"), None);
        assert_eq!(find_phrase("a circle .", "circle"), Some(2));
    }
}
