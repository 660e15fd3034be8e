//! The ablation table: for each row, the mean and sample standard deviation over seeds of every
//! benchmark column (overall and per-type exact match, POPE F1 per negative sampling), and the
//! headline: method minus baseline against twice the seeds' spread, and the share of the
//! teacher-baseline gap closed. Markdown and JSON are both generated from the same numbers.

use std::fmt::Write as _;

use serde::Serialize;

use super::EvalResult;
use crate::data::{NegativeSampling, QuestionType};

/// Column names, in table order.
pub fn columns() -> Vec<String> {
    let mut c = vec!["overall".to_string()];
    c.extend(QuestionType::ALL.iter().map(|t| t.name().to_string()));
    c.extend(
        NegativeSampling::ALL
            .iter()
            .map(|s| format!("pope-f1-{}", s.name())),
    );
    c.push("absent-yes".into());
    c.push("max-expert-share".into());
    c
}

/// One result's values for [`columns`], in percent.
pub fn values(r: &EvalResult) -> Vec<Option<f64>> {
    let mut v = vec![Some(100.0 * r.accuracy)];
    v.extend(
        QuestionType::ALL
            .iter()
            .map(|t| r.by_type.get(t.name()).map(|s| 100.0 * s.accuracy)),
    );
    v.extend(
        NegativeSampling::ALL
            .iter()
            .map(|s| r.pope.get(s.name()).map(|p| 100.0 * p.f1)),
    );
    // hallucination: the share of absent-object questions answered "yes", over all samplings
    let absent: Vec<f64> = r.pope.values().map(|p| p.absent_yes).collect();
    v.push((!absent.is_empty()).then(|| 100.0 * absent.iter().sum::<f64>() / absent.len() as f64));
    v.push(super::routing::max_expert_share(&r.routing).map(|x| 100.0 * x));
    v
}

/// Mean and sample standard deviation (0 for a single value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(xs: &[f64]) -> Option<Stat> {
        if xs.is_empty() {
            return None;
        }
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Stat { mean, std, n })
    }
}

/// One aggregated row.
#[derive(Debug, Clone, Serialize)]
pub struct RowStats {
    pub label: String,
    pub group: String,
    pub runs: Vec<String>,
    /// Per column (see [`columns`]); `None` where no seed had the column.
    pub stats: Vec<Option<Stat>>,
}

impl RowStats {
    pub fn new(label: &str, group: &str, results: &[(String, EvalResult)]) -> RowStats {
        let per_seed: Vec<Vec<Option<f64>>> = results.iter().map(|(_, r)| values(r)).collect();
        let stats = (0..columns().len())
            .map(|c| {
                let xs: Vec<f64> = per_seed.iter().filter_map(|v| v[c]).collect();
                Stat::of(&xs)
            })
            .collect();
        RowStats {
            label: label.into(),
            group: group.into(),
            runs: results.iter().map(|(n, _)| n.clone()).collect(),
            stats,
        }
    }

    pub fn overall(&self) -> Stat {
        self.stats[0].expect("every result has an overall accuracy")
    }
}

/// The headline comparison of the method against the baseline (overall accuracy).
#[derive(Debug, Clone, Serialize)]
pub struct Headline {
    pub method: String,
    pub baseline: String,
    pub delta: f64,
    /// Twice the larger of the two rows' seed standard deviations.
    pub two_std: f64,
    /// Whether both rows have at least two seeds, so that `two_std` estimates the seed noise.
    pub noise_known: bool,
    /// `delta > two_std` with the noise known.
    pub significant: bool,
    /// `teacher - baseline`, when a teacher row exists.
    pub teacher_gap: Option<f64>,
    /// `(method - baseline) / (teacher - baseline)`, when a teacher row exists and the
    /// baseline is further below it than twice its own seed std: a share of a gap that is
    /// within the seed noise (or negative) would be a meaningless number.
    pub gap_closed: Option<f64>,
}

impl Headline {
    pub fn new(rows: &[RowStats], method: &str, baseline: &str, teacher: Option<&str>) -> Self {
        let find = |l: &str| rows.iter().find(|r| r.label == l).map(|r| r.overall());
        let m = find(method).expect("method row");
        let b = find(baseline).expect("baseline row");
        let delta = m.mean - b.mean;
        let two_std = 2.0 * m.std.max(b.std);
        let noise_known = m.n > 1 && b.n > 1;
        let teacher_gap = teacher.and_then(find).map(|t| t.mean - b.mean);
        let gap_closed = teacher_gap
            .filter(|g| *g > 1e-9 && *g > 2.0 * b.std)
            .map(|g| delta / g);
        Headline {
            method: method.into(),
            baseline: baseline.into(),
            delta,
            two_std,
            noise_known,
            significant: noise_known && delta > two_std,
            teacher_gap,
            gap_closed,
        }
    }
}

/// The markdown table: a header line naming the command and device, then one table with
/// `mean ± std` cells grouped by the rows' groups, then the headline. `data` names the data
/// folder whose test split was scored. Columns no row has a value for (e.g. the Shapes question
/// types on another data set) are left out.
pub fn markdown(
    title: &str,
    description: &str,
    command: &str,
    device: &str,
    data: &str,
    rows: &[RowStats],
    headline: &Headline,
) -> String {
    let all = columns();
    let keep: Vec<usize> = (0..all.len())
        .filter(|&i| rows.iter().any(|r| r.stats[i].is_some()))
        .collect();
    let cols: Vec<&String> = keep.iter().map(|&i| &all[i]).collect();
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    let _ = writeln!(
        md,
        "Generated by `{command}` on {device}. Do not edit: re-run the command.\n"
    );
    if !description.is_empty() {
        let _ = writeln!(md, "{}\n", description.trim());
    }
    let _ = writeln!(
        md,
        "Held-out test split of `{data}`, exact match in percent (POPE columns: F1; absent-yes: \
         share of absent-object questions answered \"yes\", lower is better; max-expert-share: \
         largest share of token assignments any expert of any MoE layer takes on the test \
         records, 25% when 4 experts are balanced), mean ± sample standard deviation over seeds \
         (n per row).\n"
    );
    let _ = write!(md, "| group | row | n |");
    for c in &cols {
        let _ = write!(md, " {c} |");
    }
    let _ = write!(md, "\n|---|---|---|");
    md.push_str(&"---|".repeat(cols.len()));
    md.push('\n');
    for r in rows {
        let _ = write!(md, "| {} | {} | {} |", r.group, r.label, r.runs.len());
        for s in keep.iter().map(|&i| &r.stats[i]) {
            match s {
                Some(s) if s.n > 1 => {
                    let _ = write!(md, " {:.1} ± {:.1} |", s.mean, s.std);
                }
                Some(s) => {
                    let _ = write!(md, " {:.1} |", s.mean);
                }
                None => md.push_str(" - |"),
            }
        }
        md.push('\n');
    }
    let noise = if !headline.noise_known {
        "a row has a single seed, so there is no estimate of the seed noise (train more seeds \
         with --seeds)"
            .to_string()
    } else {
        format!(
            "twice the larger seed std is {:.1}, so the difference is {}",
            headline.two_std,
            if headline.significant {
                "larger than the seed noise"
            } else {
                "NOT larger than the seed noise"
            }
        )
    };
    let _ = writeln!(
        md,
        "\n**{}** vs **{}**: {:+.1} points overall; {noise}.{}",
        headline.method,
        headline.baseline,
        headline.delta,
        match (headline.gap_closed, headline.teacher_gap) {
            (Some(g), _) => format!(" It closes {:.0}% of the teacher-baseline gap.", 100.0 * g),
            (None, Some(gap)) if gap >= 0.0 => format!(
                " The baseline is only {gap:.1} points below the teacher, within twice its seed \
                 std, so no share of a teacher-baseline gap is given."
            ),
            (None, Some(gap)) => format!(
                " The baseline is {:.1} points above the teacher, so no share of a \
                 teacher-baseline gap is given.",
                -gap
            ),
            (None, None) => String::new(),
        }
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_headline() {
        let s = Stat::of(&[1.0, 2.0, 3.0]).unwrap();
        assert!((s.mean - 2.0).abs() < 1e-12 && (s.std - 1.0).abs() < 1e-12);
        assert_eq!(Stat::of(&[5.0]).unwrap().std, 0.0);
        let row = |label: &str, accs: &[f64]| {
            let results: Vec<(String, EvalResult)> = accs
                .iter()
                .map(|a| {
                    (
                        label.to_string(),
                        EvalResult {
                            accuracy: *a,
                            ..Default::default()
                        },
                    )
                })
                .collect();
            RowStats::new(label, "g", &results)
        };
        let rows = vec![
            row("teacher", &[0.80]),
            row("base", &[0.50, 0.52, 0.48]),
            row("kd", &[0.60, 0.61, 0.59]),
        ];
        let h = Headline::new(&rows, "kd", "base", Some("teacher"));
        assert!((h.delta - 10.0).abs() < 1e-9);
        assert!((h.two_std - 4.0).abs() < 1e-9);
        assert!(h.significant);
        assert!((h.gap_closed.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        let md = markdown(
            "T",
            "",
            "condenser ablate kd",
            "cpu",
            "data/shapes",
            &rows,
            &h,
        );
        assert!(md.contains("| g | base | 3 | 50.0 ± 2.0 |"), "{md}");
        assert!(md.contains("closes 33%"), "{md}");
        // a baseline level with the teacher has no gap to close
        let level = vec![
            row("teacher", &[0.55]),
            row("base", &[0.50, 0.56, 0.53]),
            row("kd", &[0.60, 0.61, 0.59]),
        ];
        let h = Headline::new(&level, "kd", "base", Some("teacher"));
        assert_eq!(h.gap_closed, None);
        assert!((h.teacher_gap.unwrap() - 2.0).abs() < 1e-9);
        let md = markdown("T", "", "c", "cpu", "d", &level, &h);
        assert!(md.contains("no share of a teacher-baseline gap"), "{md}");
        assert!(md.contains("larger than the seed noise"), "{md}");
        // only the overall column has values here: the empty ones are left out
        assert!(md.contains("| group | row | n | overall |\n"), "{md}");
        // one seed per row: no noise estimate, never called significant
        let single = vec![
            row("teacher", &[0.8]),
            row("base", &[0.5]),
            row("kd", &[0.6]),
        ];
        let h1 = Headline::new(&single, "kd", "base", Some("teacher"));
        assert!(!h1.noise_known && !h1.significant);
        let md1 = markdown("T", "", "c", "cpu", "d", &single, &h1);
        assert!(md1.contains("no estimate of the seed noise"), "{md1}");
    }
}
