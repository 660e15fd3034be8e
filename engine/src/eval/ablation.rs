//! The ablation table: for each row, the mean and sample standard deviation over seeds of every
//! benchmark column (overall and per-type exact match, POPE F1 per negative sampling), and the
//! headline: method minus baseline with its confidence interval and Welch's t-test, and the
//! share of the teacher-baseline gap closed. Markdown and JSON are both generated from the same numbers.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::cost::RunCost;
use super::provenance::Provenance;
use super::stats::Welch;

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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowStats {
    pub label: String,
    pub group: String,
    pub runs: Vec<String>,
    /// Per column (see [`columns`]); `None` where no seed had the column.
    pub stats: Vec<Option<Stat>>,
    /// Training cost over the seeds, when the table reports it (tables made before it was
    /// recorded have none, and render as they did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<RowCost>,
}

/// A row's training cost over its seeds: minutes of optimiser steps and tokens per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RowCost {
    pub minutes: Stat,
    pub tokens_per_s: Stat,
}

impl RowCost {
    pub fn of(runs: &[RunCost]) -> Option<RowCost> {
        let minutes: Vec<f64> = runs.iter().map(|c| c.seconds / 60.0).collect();
        let rate: Vec<f64> = runs.iter().map(RunCost::tokens_per_s).collect();
        Some(RowCost {
            minutes: Stat::of(&minutes)?,
            tokens_per_s: Stat::of(&rate)?,
        })
    }
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
            cost: None,
        }
    }

    /// The row with the training cost of its runs (one per seed, in `runs` order).
    pub fn with_cost(mut self, costs: &[RunCost]) -> Self {
        self.cost = RowCost::of(costs);
        self
    }

    pub fn overall(&self) -> Stat {
        self.stats[0].expect("every result has an overall accuracy")
    }
}

/// The p-value a headline must fall below to be called significant.
pub const SIGNIFICANCE: f64 = 0.01;

/// The headline comparison of the method against the baseline (overall accuracy): the mean
/// difference over seeds with its 95% confidence interval and Welch's two-sided t-test.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Headline {
    pub method: String,
    pub baseline: String,
    pub delta: f64,
    /// Welch's test of method against baseline; `None` when a row has a single seed.
    pub welch: Option<Welch>,
    /// `p < SIGNIFICANCE` and the method above the baseline.
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
        let welch = Welch::test(m.mean, m.std, m.n, b.mean, b.std, b.n);
        let teacher_gap = teacher.and_then(find).map(|t| t.mean - b.mean);
        let gap_closed = teacher_gap
            .filter(|g| *g > 1e-9 && *g > 2.0 * b.std)
            .map(|g| delta / g);
        Headline {
            method: method.into(),
            baseline: baseline.into(),
            delta,
            significant: welch.is_some_and(|w| w.p < SIGNIFICANCE && delta > 0.0),
            welch,
            teacher_gap,
            gap_closed,
        }
    }

    /// The headline sentence under a table.
    pub fn sentence(&self) -> String {
        let test = match &self.welch {
            None => "a row has a single seed, so there is no estimate of the seed noise and no \
                     test (train more seeds with --seeds)"
                .to_string(),
            Some(w) => format!(
                "95% CI {:+.1} to {:+.1}; Welch's t = {:.2}, df = {:.1}, p = {}: {}",
                w.ci95.0,
                w.ci95.1,
                w.t,
                w.df,
                format_p(w.p),
                if self.significant {
                    format!("significant at p < {SIGNIFICANCE}")
                } else {
                    format!("NOT significant at p < {SIGNIFICANCE}")
                }
            ),
        };
        let gap = match (self.gap_closed, self.teacher_gap) {
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
        };
        format!(
            "**{}** vs **{}**: {:+.1} points overall ({test}).{gap}",
            self.method, self.baseline, self.delta
        )
    }
}

/// A p-value to three decimals (four below 0.01), or a bound when it is tiny.
pub fn format_p(p: f64) -> String {
    if p < 1e-4 {
        "< 0.0001".into()
    } else if p < 0.01 {
        format!("{p:.4}")
    } else {
        format!("{p:.3}")
    }
}

/// A generated ablation table: everything its markdown is rendered from, which is also what its
/// JSON twin holds. Rendering recomputes the headline from the rows, so a table whose JSON was
/// made by an older renderer or older statistics no longer renders to its committed markdown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AblationTable {
    pub title: String,
    pub description: String,
    /// The command that made the table.
    pub command: String,
    /// Backend, device, threads and runs at a time.
    pub device: String,
    pub provenance: Provenance,
    pub columns: Vec<String>,
    pub rows: Vec<RowStats>,
    /// Row label of the teacher, for the share of the gap closed.
    pub teacher: Option<String>,
    pub headline: Headline,
}

impl AblationTable {
    /// The table of `rows`, with its headline of `method` against `baseline`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        title: &str,
        description: &str,
        command: &str,
        device: &str,
        provenance: Provenance,
        rows: Vec<RowStats>,
        method: &str,
        baseline: &str,
        teacher: Option<&str>,
    ) -> Self {
        let headline = Headline::new(&rows, method, baseline, teacher);
        AblationTable {
            title: title.into(),
            description: description.into(),
            command: command.into(),
            device: device.into(),
            provenance,
            columns: columns(),
            rows,
            teacher: teacher.map(str::to_string),
            headline,
        }
    }

    /// The markdown: a header naming the command, device and provenance, one table with
    /// `mean ± std` cells, then the headline. Columns no row has a value for (e.g. the Shapes
    /// question types on another data set) are left out.
    pub fn markdown(&self) -> String {
        let headline = Headline::new(
            &self.rows,
            &self.headline.method,
            &self.headline.baseline,
            self.teacher.as_deref(),
        );
        markdown(self, &headline)
    }
}

fn markdown(table: &AblationTable, headline: &Headline) -> String {
    let AblationTable {
        title,
        description,
        command,
        device,
        rows,
        ..
    } = table;
    let data = &table.provenance.data;
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
    let _ = writeln!(md, "{}\n", table.provenance.markdown());
    let _ = writeln!(
        md,
        "Held-out test split of `{data}`, exact match in percent (POPE columns: F1; absent-yes: \
         share of absent-object questions answered \"yes\", lower is better; max-expert-share: \
         largest share of token assignments any expert of any MoE layer takes on the test \
         records, 25% when 4 experts are balanced), mean ± sample standard deviation over seeds \
         (n per row).\n"
    );
    let costed = rows.iter().any(|r| r.cost.is_some());
    if costed {
        let _ = writeln!(
            md,
            "Training cost per run: train-min is the summed wall time of the optimiser steps \
             (set-up, checkpoints and evaluation left out), tokens/s the real tokens of those \
             steps (visual tokens included) per second of them.\n"
        );
    }
    let _ = write!(md, "| group | row | n |");
    for c in &cols {
        let _ = write!(md, " {c} |");
    }
    if costed {
        md.push_str(" train-min | tokens/s |");
    }
    let _ = write!(md, "\n|---|---|---|");
    md.push_str(&"---|".repeat(cols.len() + if costed { 2 } else { 0 }));
    md.push('\n');
    for r in rows {
        let _ = write!(md, "| {} | {} | {} |", r.group, r.label, r.runs.len());
        for s in keep.iter().map(|&i| &r.stats[i]) {
            match s {
                Some(s) => {
                    let _ = write!(md, " {} |", cell(s, 1));
                }
                None => md.push_str(" - |"),
            }
        }
        if costed {
            match &r.cost {
                Some(c) => {
                    let _ = write!(
                        md,
                        " {} | {} |",
                        cell(&c.minutes, 1),
                        cell(&c.tokens_per_s, 0)
                    );
                }
                None => md.push_str(" - | - |"),
            }
        }
        md.push('\n');
    }
    let _ = writeln!(md, "\n{}", headline.sentence());
    md
}

/// `mean ± std` (the mean alone for one value) with `digits` decimals.
fn cell(s: &Stat, digits: usize) -> String {
    if s.n > 1 {
        format!("{:.digits$} ± {:.digits$}", s.mean, s.std)
    } else {
        format!("{:.digits$}", s.mean)
    }
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
        // Welch: se = sqrt(1/3 + 4/3), df = 50/17, t = 7.75: p between 0.001 and 0.01
        let w = h.welch.unwrap();
        assert!((w.t - 10.0 / (5.0f64 / 3.0).sqrt()).abs() < 1e-6);
        assert!(w.p < SIGNIFICANCE && w.p > 0.001, "{}", w.p);
        assert!(h.significant);
        assert!((h.gap_closed.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        let table = |rows: &[RowStats]| {
            let prov = Provenance {
                commit: "abc".into(),
                data: "data/shapes".into(),
                data_sha256: "0123456789abcdef0123".into(),
                recipes: [("assets/r.toml".to_string(), "f".repeat(64))].into(),
            };
            AblationTable::new(
                "T",
                "",
                "c",
                "cpu",
                prov,
                rows.to_vec(),
                "kd",
                "base",
                Some("teacher"),
            )
        };
        let md = table(&rows).markdown();
        assert!(
            md.contains("commit `abc` from data `data/shapes` (sha256 0123456789abcdef)"),
            "{md}"
        );
        assert!(md.contains("| g | base | 3 | 50.0 ± 2.0 |"), "{md}");
        assert!(md.contains("closes 33%"), "{md}");
        assert!(md.contains("(95% CI +"), "{md}");
        assert!(md.contains(": significant at p < 0.01"), "{md}");
        // a baseline level with the teacher has no gap to close
        let level = vec![
            row("teacher", &[0.55]),
            row("base", &[0.50, 0.56, 0.53]),
            row("kd", &[0.60, 0.61, 0.59]),
        ];
        let h = Headline::new(&level, "kd", "base", Some("teacher"));
        assert_eq!(h.gap_closed, None);
        assert!((h.teacher_gap.unwrap() - 2.0).abs() < 1e-9);
        let md = table(&level).markdown();
        assert!(md.contains("no share of a teacher-baseline gap"), "{md}");
        // +7.0 with a baseline spread of 3: p = 0.06, not significant
        assert!(!h.significant);
        assert!(md.contains("NOT significant at p < 0.01"), "{md}");
        // only the overall column has values here: the empty ones are left out
        assert!(md.contains("| group | row | n | overall |\n"), "{md}");
        // one seed per row: no noise estimate, never called significant
        let single = vec![
            row("teacher", &[0.8]),
            row("base", &[0.5]),
            row("kd", &[0.6]),
        ];
        let h1 = Headline::new(&single, "kd", "base", Some("teacher"));
        assert!(h1.welch.is_none() && !h1.significant);
        let md1 = table(&single).markdown();
        assert!(md1.contains("no estimate of the seed noise"), "{md1}");
        // the JSON twin renders to the same markdown
        let t = table(&rows);
        let back: AblationTable =
            serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.markdown(), t.markdown());
        assert!(
            !t.markdown().contains("train-min"),
            "no cost recorded, no cost columns"
        );

        // rows with a training cost get two more columns; a row without one shows dashes
        let cost = |s: f64, tokens: u64| RunCost { seconds: s, tokens };
        let mut costed = rows.clone();
        costed[1] =
            costed[1]
                .clone()
                .with_cost(&[cost(60.0, 6000), cost(120.0, 6000), cost(90.0, 9000)]);
        let t = table(&costed);
        let md = t.markdown();
        assert!(
            md.contains("| group | row | n | overall | train-min | tokens/s |\n"),
            "{md}"
        );
        assert!(
            md.contains("| g | base | 3 | 50.0 ± 2.0 | 1.5 ± 0.5 | 83 ± 29 |"),
            "{md}"
        );
        assert!(md.contains("| g | kd | 3 | 60.0 ± 1.0 | - | - |"), "{md}");
        let back: AblationTable =
            serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.markdown(), md);
    }
}
