//! Preference pairs mined from a model's own answers (RLAIF-V's idea, with the data set as the
//! labeller): every yes/no question the model got wrong becomes a pair whose chosen answer is the
//! data's and whose rejected answer is the other word, so the pairs aim at the hallucinations
//! this model makes rather than at ones a generator imagined.
//!
//! Why the balancing: a student that hallucinates mostly says "yes" to absent objects, so its
//! mistakes are nearly all "chosen = no". Trained on those alone, DPO teaches "say no" and
//! present-object recall (and POPE F1) falls. The smaller side is therefore topped up with
//! questions the model answered right, until both answers are chosen equally often.
//!
//! Which questions: every yes/no question, except those typed as something other than
//! existence. On the Shapes world a relation question ("is the red circle left of the blue
//! square ?") is answered yes/no too, but its mistakes are spatial reasoning, not hallucinated
//! objects, and a student at chance there would get pairs of noise. Untyped questions (any
//! LLaVA-format data set) all count.

use super::answers::Sample;
use super::llava::{Conversation, PreferencePair, Turn};
use super::qtype::QuestionType;
use super::template::normalise_answer;
use crate::rng::Rng;

/// What [`mine_pairs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MinedStats {
    /// Answers read.
    pub answers: usize,
    /// Of those, hallucination questions (existence, or untyped) whose expected answer is "yes"
    /// or "no" and that have an image.
    pub yes_no: usize,
    /// Wrong answers to questions whose answer is "yes" (the model missed a present object).
    pub wrong_on_yes: usize,
    /// Wrong answers to questions whose answer is "no" (the model hallucinated).
    pub wrong_on_no: usize,
    /// Pairs written: `2 * per_side`, half of them with "yes" chosen.
    pub pairs: usize,
}

/// Whether mistakes on a question of this type are hallucinations (see the module doc).
pub fn mines(t: Option<QuestionType>) -> bool {
    matches!(t, None | Some(QuestionType::Exist(_)))
}

/// The single-turn yes/no questions of `records`: one record per (question, answer) turn whose
/// answer is "yes" or "no", with the image placeholder in front and the earlier turns dropped,
/// so each can be answered (and later trained on) alone. Records without an image are skipped:
/// a pair about an image needs one.
pub fn yes_no_turns(records: &[Conversation]) -> Vec<Conversation> {
    let mut out = Vec::new();
    for r in records {
        if r.image.is_none() {
            continue;
        }
        for (k, (q, a)) in r.exchanges().enumerate() {
            let qtype = r.question_types.as_ref().and_then(|t| t.get(k)).copied();
            if !mines(qtype) || !matches!(normalise_answer(&a.value).as_str(), "yes" | "no") {
                continue;
            }
            let question = q.value.replace("<image>", "");
            out.push(Conversation {
                id: format!("{}-t{k}", r.id),
                image: r.image.clone(),
                conversations: vec![
                    Turn::human(format!("<image>\n{}", question.trim())),
                    Turn::gpt(a.value.trim()),
                ],
                question_types: qtype.map(|t| vec![t]),
                regions: None,
            });
        }
    }
    out
}

/// Pairs from scored answers: every wrong yes/no answer, and on the side with fewer mistakes
/// as many right answers (seeded pick) as it takes to match the other side. The order is
/// shuffled with `seed`. Answers whose expected text is not "yes"/"no", without an image, or
/// of a type [`mines`] leaves out are ignored.
pub fn mine_pairs(
    answers: &[(Option<QuestionType>, Sample)],
    seed: u64,
) -> (Vec<PreferencePair>, MinedStats) {
    let mut stats = MinedStats {
        answers: answers.len(),
        ..Default::default()
    };
    // [expected yes, expected no] x [wrong, right]
    let mut wrong: [Vec<&Sample>; 2] = [Vec::new(), Vec::new()];
    let mut right: [Vec<&Sample>; 2] = [Vec::new(), Vec::new()];
    for (qtype, s) in answers {
        if !mines(*qtype) {
            continue;
        }
        let side = match normalise_answer(&s.expected).as_str() {
            "yes" => 0,
            "no" => 1,
            _ => continue,
        };
        if s.image.is_none() {
            continue;
        }
        stats.yes_no += 1;
        if s.correct {
            right[side].push(s);
        } else {
            wrong[side].push(s);
        }
    }
    stats.wrong_on_yes = wrong[0].len();
    stats.wrong_on_no = wrong[1].len();
    let mut rng = Rng::new(seed);
    let per_side = wrong[0]
        .len()
        .max(wrong[1].len())
        .min(wrong[0].len() + right[0].len())
        .min(wrong[1].len() + right[1].len());
    let mut pairs = Vec::with_capacity(2 * per_side);
    for side in 0..2 {
        let mut pick = wrong[side].clone();
        rng.shuffle(&mut pick);
        pick.truncate(per_side);
        let mut fill = right[side].clone();
        rng.shuffle(&mut fill);
        pick.extend(fill.into_iter().take(per_side - pick.len()));
        let (chosen, rejected) = if side == 0 {
            ("yes", "no")
        } else {
            ("no", "yes")
        };
        pairs.extend(pick.into_iter().map(|s| PreferencePair {
            id: format!("{}-mined", s.id),
            image: s.image.clone().expect("filtered above"),
            prompt: format!("<image>\n{}", s.question.replace("<image>", "").trim()),
            chosen: chosen.into(),
            rejected: rejected.into(),
        }));
    }
    rng.shuffle(&mut pairs);
    stats.pairs = pairs.len();
    (pairs, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{NegativeSampling, QuestionType};

    fn sample(id: &str, expected: &str, answer: &str) -> (Option<QuestionType>, Sample) {
        let qtype = Some(QuestionType::Exist(NegativeSampling::Adversarial));
        (
            qtype,
            Sample {
                id: id.into(),
                question: format!("is there a {id} ?"),
                expected: expected.into(),
                answer: answer.into(),
                correct: expected == answer,
                image: Some(format!("{id}.png")),
            },
        )
    }

    #[test]
    fn every_mistake_is_kept_and_the_sides_are_balanced_with_right_answers() {
        let mut answers = Vec::new();
        // 5 hallucinations ("yes" to an absent object), 1 miss, and right answers on both sides
        for i in 0..5 {
            answers.push(sample(&format!("h{i}"), "no", "yes"));
        }
        answers.push(sample("m0", "yes", "one"));
        for i in 0..10 {
            answers.push(sample(&format!("ry{i}"), "yes", "yes"));
            answers.push(sample(&format!("rn{i}"), "no", "no"));
        }
        answers.push(sample("colour", "red", "blue"));
        // a relation mistake is not a hallucination; an untyped yes/no question counts
        let mut relation = sample("rel", "yes", "no");
        relation.0 = Some(QuestionType::Relation);
        answers.push(relation);
        let mut untyped = sample("ry10", "yes", "yes");
        untyped.0 = None;
        answers.push(untyped);
        let (pairs, stats) = mine_pairs(&answers, 3);
        assert_eq!(stats.answers, 29);
        assert_eq!(stats.yes_no, 27);
        assert_eq!((stats.wrong_on_yes, stats.wrong_on_no), (1, 5));
        assert_eq!(pairs.len(), 10);
        let yes: Vec<_> = pairs.iter().filter(|p| p.chosen == "yes").collect();
        let no: Vec<_> = pairs.iter().filter(|p| p.chosen == "no").collect();
        assert_eq!((yes.len(), no.len()), (5, 5));
        assert!(yes.iter().all(|p| p.rejected == "no"));
        assert!(no.iter().all(|p| p.rejected == "yes"));
        // every mistake is in, on both sides; the "no" side holds no right answer
        for id in ["h0", "h1", "h2", "h3", "h4", "m0"] {
            assert!(pairs.iter().any(|p| p.id == format!("{id}-mined")), "{id}");
        }
        assert!(no.iter().all(|p| p.id.starts_with('h')));
        assert_eq!(yes.iter().filter(|p| p.id.starts_with("ry")).count(), 4);
        assert!(
            pairs
                .iter()
                .all(|p| p.prompt.starts_with("<image>\nis there"))
        );
        // the same seed gives the same pairs in the same order
        assert_eq!(mine_pairs(&answers, 3).0, pairs);
    }

    #[test]
    fn a_side_without_enough_questions_caps_both() {
        let answers = vec![
            sample("a", "no", "yes"),
            sample("b", "no", "yes"),
            sample("c", "no", "yes"),
            sample("d", "yes", "yes"),
        ];
        let (pairs, stats) = mine_pairs(&answers, 0);
        assert_eq!(stats.pairs, 2);
        assert_eq!(pairs.iter().filter(|p| p.chosen == "yes").count(), 1);
    }

    #[test]
    fn yes_no_turns_split_multi_turn_records() {
        let r = Conversation {
            id: "r".into(),
            image: Some("a.png".into()),
            conversations: vec![
                Turn::human("<image>\nwhat color is the circle ?"),
                Turn::gpt("red"),
                Turn::human("is there a blue square ?"),
                Turn::gpt("No"),
                Turn::human("is there a red circle ?"),
                Turn::gpt("yes"),
                Turn::human("is the red circle left of the blue square ?"),
                Turn::gpt("no"),
            ],
            question_types: Some(vec![
                QuestionType::Colour,
                QuestionType::Exist(NegativeSampling::Random),
                QuestionType::Exist(NegativeSampling::Popular),
                QuestionType::Relation,
            ]),
            regions: None,
        };
        let mut text_only = r.clone();
        text_only.image = None;
        let turns = yes_no_turns(&[r, text_only]);
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0].id, "r-t1");
        assert_eq!(
            turns[0].conversations[0].value,
            "<image>\nis there a blue square ?"
        );
        assert_eq!(turns[0].conversations[1].value, "No");
        assert_eq!(
            turns[0].question_types,
            Some(vec![QuestionType::Exist(NegativeSampling::Random)])
        );
        assert_eq!(turns[1].id, "r-t2");
        assert_eq!(
            turns[1].question_types,
            Some(vec![QuestionType::Exist(NegativeSampling::Popular)])
        );
    }
}
