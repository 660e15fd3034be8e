//! Reports, generated from results (never edited by hand): a run's `report.md` + `report.json`
//! (the run folder writes them), and the side-by-side comparison of several runs.

use std::fmt::Write as _;

use serde::Serialize;

use super::EvalResult;
use crate::backend::DeviceInfo;
use crate::config::Recipe;
use crate::data::QuestionType;
use crate::model::ParamCounts;

#[derive(Serialize)]
struct RunReport<'a> {
    run: &'a str,
    device: &'a DeviceInfo,
    params: &'a ParamCounts,
    eval: &'a EvalResult,
}

/// The `report.json` and `report.md` of one run.
pub fn run_report(
    recipe: &Recipe,
    device: &DeviceInfo,
    params: &ParamCounts,
    eval: &EvalResult,
) -> RunReportFiles {
    let json = serde_json::to_string_pretty(&RunReport {
        run: &recipe.name,
        device,
        params,
        eval,
    })
    .expect("serialisable");
    let mut md = String::new();
    let _ = writeln!(md, "# Run `{}`\n", recipe.name);
    let _ = writeln!(
        md,
        "Device: {} ({}). Model: {params}.\n",
        device.backend, device.name
    );
    let _ = writeln!(
        md,
        "Held-out exact-match accuracy: **{:.1}%** over {} questions.\n",
        100.0 * eval.accuracy,
        eval.questions
    );
    md.push_str(&comparison(&[(recipe.name.as_str(), eval)]));
    if !eval.routing.is_empty() {
        md.push_str(&routing_section(eval));
    }
    md.push_str("\n## Examples\n\n| question | expected | answer |\n|---|---|---|\n");
    for s in eval.samples.iter().take(12) {
        let _ = writeln!(
            md,
            "| {} | {} | {}{} |",
            s.question,
            s.expected,
            s.answer,
            if s.correct { "" } else { " ✗" }
        );
    }
    RunReportFiles { json, md }
}

/// A run's report as the run folder stores it (`run::RunDir::write_report`).
pub struct RunReportFiles {
    /// `report.json`: the run, device, parameter counts and the whole evaluation.
    pub json: String,
    /// `report.md`: the same for people, with example answers.
    pub md: String,
}

/// The MoE routing table (share of each expert per layer, visual / text) and the heatmap.
fn routing_section(eval: &EvalResult) -> String {
    let mut md = String::from(
        "\n## MoE routing on the test records\n\n![layer x expert routing: visual tokens left, text tokens right](routing.png)\n\n",
    );
    let e = eval.routing[0].visual.len();
    md.push_str("| layer | tokens |");
    for k in 0..e {
        let _ = write!(md, " expert {k} |");
    }
    md.push_str(" dropped | router entropy (nats) |\n|---|---|");
    md.push_str(&"---|".repeat(e + 2));
    md.push('\n');
    for l in &eval.routing {
        for (kind, counts) in [("visual", &l.visual), ("text", &l.text)] {
            let total: usize = counts.iter().sum();
            let _ = write!(md, "| {} | {kind} |", l.layer);
            for c in counts {
                let _ = write!(md, " {:.1}% |", 100.0 * *c as f64 / total.max(1) as f64);
            }
            let _ = writeln!(md, " {} | {:.3} |", l.dropped, l.entropy);
        }
    }
    md
}

/// Markdown tables comparing runs: accuracy overall and per question type, then POPE per
/// negative sampling. Only what the data has is shown: a type column when some run was scored
/// on that type, the POPE table when some run has existence questions (a data set of the
/// user's own has neither unless its records carry `question_types`).
pub fn comparison(runs: &[(&str, &EvalResult)]) -> String {
    let types: Vec<QuestionType> = QuestionType::ALL
        .into_iter()
        .filter(|t| runs.iter().any(|(_, r)| r.by_type.contains_key(t.name())))
        .collect();
    let mut md = String::new();
    md.push_str("| model | overall |");
    for t in &types {
        let _ = write!(md, " {} |", t.name());
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---|".repeat(types.len()));
    md.push('\n');
    for (name, r) in runs {
        let _ = write!(md, "| {name} | {:.1} |", 100.0 * r.accuracy);
        for t in &types {
            match r.by_type.get(t.name()) {
                Some(s) => {
                    let _ = write!(md, " {:.1} |", 100.0 * s.accuracy);
                }
                None => md.push_str(" - |"),
            }
        }
        md.push('\n');
    }
    if runs.iter().all(|(_, r)| r.pope.is_empty()) {
        return md;
    }
    md.push_str("\nPOPE (existence questions; yes = positive):\n\n| model | sampling | accuracy | precision | recall | F1 | yes-ratio | yes on absent |\n|---|---|---|---|---|---|---|---|\n");
    for (name, r) in runs {
        for (k, p) in &r.pope {
            let _ = writeln!(
                md,
                "| {name} | {k} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                100.0 * p.accuracy,
                100.0 * p.precision,
                100.0 * p.recall,
                100.0 * p.f1,
                100.0 * p.yes_ratio,
                100.0 * p.absent_yes
            );
        }
    }
    md
}

/// The main job's one-line verdict: how far the method's student moved from the baseline towards
/// the teacher, as a share of the teacher-baseline gap (overall exact match).
pub fn gap_closed(teacher: &EvalResult, baseline: &EvalResult, method: &EvalResult) -> String {
    let (t, b, m) = (
        100.0 * teacher.accuracy,
        100.0 * baseline.accuracy,
        100.0 * method.accuracy,
    );
    let gap = t - b;
    if gap <= 0.0 {
        return format!(
            "The baseline ({b:.1}) is not below the teacher ({t:.1}): there is no gap to close."
        );
    }
    format!(
        "Teacher {t:.1}, baseline {b:.1}, distilled {m:.1}: a teacher-baseline gap of {gap:.1} \
         points, of which distillation closes {:.0}%.",
        100.0 * (m - b) / gap
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{PopeScore, TypeScore};

    #[test]
    fn a_comparison_shows_only_what_the_data_has() {
        // a data set of the user's own: no question types, no existence questions
        let plain = EvalResult {
            questions: 10,
            correct: 5,
            accuracy: 0.5,
            ..Default::default()
        };
        let md = comparison(&[("a", &plain), ("b", &plain)]);
        assert_eq!(md.lines().next(), Some("| model | overall |"), "{md}");
        assert!(!md.contains("POPE"), "{md}");

        // one run scored on colour questions: that column, and a dash for the other run
        let mut typed = plain.clone();
        typed.by_type.insert(
            "colour".into(),
            TypeScore {
                questions: 4,
                correct: 3,
                accuracy: 0.75,
            },
        );
        typed.pope.insert("random".into(), PopeScore::default());
        let md = comparison(&[("a", &typed), ("b", &plain)]);
        assert_eq!(
            md.lines().next(),
            Some("| model | overall | colour |"),
            "{md}"
        );
        assert!(md.contains("| b | 50.0 | - |"), "{md}");
        assert!(md.contains("POPE") && md.contains("| a | random |"), "{md}");
    }
}
