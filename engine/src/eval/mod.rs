//! Evaluation on held-out questions: greedy answers scored by exact match (overall and per
//! question type) and POPE metrics (accuracy, precision, recall, F1, yes-ratio) for each
//! negative-sampling strategy of the existence questions.

pub mod ablation;
pub mod cost;
pub mod provenance;
pub mod report;
pub mod routing;
pub mod stats;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::data::{
    Dataset, Padding, QuestionType, TextTokenizer, encode_prompt, host_batch, normalise_answer,
};
use crate::model::{GenerateOptions, Mllm, Sampling};
use crate::train::DEFAULT_FEATURE_CACHE_BYTES;
use crate::train::visual::VisualSource;

/// Accuracy of one question type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TypeScore {
    pub questions: usize,
    pub correct: usize,
    pub accuracy: f64,
}

/// POPE metrics for one negative-sampling strategy ("yes" is the positive class).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PopeScore {
    pub questions: usize,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub yes_ratio: f64,
    /// Share of the absent-object questions answered "yes" (hallucinations; 0 is best).
    #[serde(default)]
    pub absent_yes: f64,
}

/// One scored answer (a few are kept in the report as examples).
pub use crate::data::answers::Sample;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub questions: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub by_type: BTreeMap<String, TypeScore>,
    pub pope: BTreeMap<String, PopeScore>,
    pub samples: Vec<Sample>,
    /// MoE models: routing on the evaluated records per MoE layer (see `routing`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routing: Vec<crate::model::moe::LayerRouting>,
}

/// Answers every record's last question (earlier turns are given as context) and scores it.
pub fn evaluate(
    model: &Mllm,
    tok: &TextTokenizer,
    data: &Dataset,
    batch_size: usize,
    limit: Option<usize>,
) -> Result<EvalResult> {
    Ok(score(answer_all(model, tok, data, batch_size, limit)?))
}

/// Every record's answer (greedy), marked right or wrong, with its question type: what
/// [`evaluate`] scores, and what the browser export compares between f32 and f16 weights.
pub fn answer_all(
    model: &Mllm,
    tok: &TextTokenizer,
    data: &Dataset,
    batch_size: usize,
    limit: Option<usize>,
) -> Result<Vec<(Option<QuestionType>, Sample)>> {
    let device = model.vision.position_embedding.val().device();
    let nv = model.config.vision.num_visual_tokens();
    let n = limit.map_or(data.len(), |l| l.min(data.len()));
    // room for the longest reference answer plus a few tokens, so a wrong longer answer is seen
    // as wrong rather than cut to look right
    let longest = data.records[..n]
        .iter()
        .filter_map(|r| r.conversations.last())
        .map(|t| tok.encode(&t.value).map_or(0, |ids| ids.len()))
        .max()
        .unwrap_or(0);
    let opts = GenerateOptions {
        max_new_tokens: longest + 4,
        sampling: Sampling::Greedy,
        stop: tok.stop_ids(),
        seed: 0,
    };
    // the encoder is fixed while answering, so each image is encoded once however many
    // questions ask about it (easy-VQA asks about ten per image)
    let visual = VisualSource::frozen(&model.vision, DEFAULT_FEATURE_CACHE_BYTES);
    let mut scored: Vec<(Option<QuestionType>, Sample)> = Vec::with_capacity(n);
    for start in (0..n).step_by(batch_size.max(1)) {
        let idx: Vec<usize> = (start..(start + batch_size).min(n)).collect();
        let prompts: Vec<_> = idx
            .iter()
            .map(|&i| {
                let turns = &data.records[i].conversations;
                encode_prompt(tok, &turns[..turns.len() - 1], nv)
                    .expect("records were encoded when loaded")
            })
            .collect();
        let refs: Vec<_> = prompts.iter().collect();
        let hb = host_batch(&refs, nv, tok.special.pad, Padding::Left);
        let batch = hb.to_device(visual.for_records(data, &idx, &device)?, &device);
        let outs = model.generate(&batch, &opts);
        for (&i, out) in idx.iter().zip(outs) {
            let r = &data.records[i];
            let turns = &r.conversations;
            let expected = normalise_answer(&turns[turns.len() - 1].value);
            let answer = normalise_answer(&tok.decode(&out));
            let qtype = r.question_types.as_ref().and_then(|t| t.last().copied());
            scored.push((
                qtype,
                Sample {
                    id: r.id.clone(),
                    question: turns[turns.len() - 2]
                        .value
                        .replace("<image>", "")
                        .trim()
                        .to_string(),
                    correct: answer == expected,
                    image: r.image.clone(),
                    expected,
                    answer,
                },
            ));
        }
    }
    Ok(scored)
}

/// Aggregates scored answers.
pub fn score(scored: Vec<(Option<QuestionType>, Sample)>) -> EvalResult {
    let mut r = EvalResult {
        questions: scored.len(),
        ..Default::default()
    };
    let mut pope_counts: BTreeMap<String, [usize; 4]> = BTreeMap::new(); // tp fp tn fn
    for (t, s) in &scored {
        r.correct += usize::from(s.correct);
        if let Some(t) = t {
            let e = r.by_type.entry(t.name().to_string()).or_default();
            e.questions += 1;
            e.correct += usize::from(s.correct);
            if let QuestionType::Exist(sampling) = t {
                let c = pope_counts.entry(sampling.name().to_string()).or_default();
                let (gold, pred) = (s.expected == "yes", s.answer == "yes");
                let k = match (gold, pred) {
                    (true, true) => 0,
                    (false, true) => 1,
                    (false, false) => 2,
                    (true, false) => 3,
                };
                c[k] += 1;
            }
        }
    }
    r.accuracy = ratio(r.correct, r.questions);
    for v in r.by_type.values_mut() {
        v.accuracy = ratio(v.correct, v.questions);
    }
    for (k, [tp, fp, tn, fn_]) in pope_counts {
        let n = tp + fp + tn + fn_;
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        r.pope.insert(
            k,
            PopeScore {
                questions: n,
                accuracy: ratio(tp + tn, n),
                precision,
                recall,
                f1,
                yes_ratio: ratio(tp + fp, n),
                absent_yes: ratio(fp, fp + tn),
            },
        );
    }
    r.samples = scored.into_iter().map(|x| x.1).take(24).collect();
    r
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::NegativeSampling;

    fn s(expected: &str, answer: &str) -> Sample {
        Sample {
            id: String::new(),
            question: String::new(),
            expected: expected.into(),
            answer: answer.into(),
            correct: expected == answer,
            image: None,
        }
    }

    #[test]
    fn pope_metrics_match_hand_counts() {
        let e = Some(QuestionType::Exist(NegativeSampling::Popular));
        // tp=2, fp=1, tn=1, fn=0
        let r = score(vec![
            (e, s("yes", "yes")),
            (e, s("yes", "yes")),
            (e, s("no", "yes")),
            (e, s("no", "no")),
            (Some(QuestionType::Count), s("two", "three")),
        ]);
        let p = &r.pope["popular"];
        assert_eq!(p.questions, 4);
        assert!((p.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((p.recall - 1.0).abs() < 1e-12);
        assert!((p.f1 - 0.8).abs() < 1e-12);
        assert!((p.yes_ratio - 0.75).abs() < 1e-12);
        assert!((p.accuracy - 0.75).abs() < 1e-12);
        assert_eq!(r.by_type["count"].correct, 0);
        assert!((r.accuracy - 0.6).abs() < 1e-12);
    }
}
