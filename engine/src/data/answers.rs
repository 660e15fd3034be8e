//! Scored answers: what evaluation produces per question, what a report keeps a few of, and the
//! `answers.jsonl` file of `condenser eval --answers` (one [`Answer`] per line), which error
//! analysis reads and preference mining (`condenser prefs --from-answers`) turns into pairs.
//! This file is the only code that writes or reads that format.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::QuestionType;
use crate::{Error, Result};

/// One scored answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub id: String,
    pub question: String,
    pub expected: String,
    pub answer: String,
    pub correct: bool,
    /// The record's image, relative to the data folder (as in the LLaVA JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// One line of `answers.jsonl`: a scored answer and its question's type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    #[serde(flatten)]
    pub sample: Sample,
    #[serde(default)]
    pub question_type: Option<QuestionType>,
}

/// Writes `answers` as JSON lines, all or nothing.
pub fn write_answers(path: &Path, answers: &[(Option<QuestionType>, Sample)]) -> Result<()> {
    let mut lines = String::new();
    for (qtype, s) in answers {
        let line = Answer {
            sample: s.clone(),
            question_type: *qtype,
        };
        // through a JSON value, so the keys come out in one stable order
        let value = serde_json::to_value(&line).map_err(|e| Error::json(path, e))?;
        lines.push_str(&value.to_string());
        lines.push('\n');
    }
    crate::error::write_atomic(path, lines.as_bytes())
}

/// Reads an `answers.jsonl`; a line that is not an answer is reported with its number.
pub fn read_answers(path: &Path) -> Result<Vec<(Option<QuestionType>, Sample)>> {
    let text = crate::error::read_to_string(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Answer>(l)
                .map(|a| (a.question_type, a.sample))
                .map_err(|e| Error::Json {
                    path: path.to_path_buf(),
                    line: i + 1,
                    column: e.column(),
                    message: format!(
                        "expected one answer of `condenser eval --answers` (id, question, \
                         expected, answer, correct, image): {e}"
                    ),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_a_bad_line_is_named() {
        let dir = std::env::temp_dir().join(format!("condenser-answers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.jsonl");
        let answers = vec![
            (
                Some(QuestionType::Exist(crate::data::NegativeSampling::Random)),
                Sample {
                    id: "r1".into(),
                    question: "is there a red circle ?".into(),
                    expected: "yes".into(),
                    answer: "no".into(),
                    correct: false,
                    image: Some("images/a.png".into()),
                },
            ),
            (
                None,
                Sample {
                    id: "r2".into(),
                    question: "what colour ?".into(),
                    expected: "red".into(),
                    answer: "red".into(),
                    correct: true,
                    image: None,
                },
            ),
        ];
        write_answers(&path, &answers).unwrap();
        assert_eq!(read_answers(&path).unwrap(), answers);
        std::fs::write(&path, "{\"id\":\"x\"}\n\nnot json\n").unwrap();
        let e = read_answers(&path).unwrap_err().to_string();
        assert!(e.contains("a.jsonl:1:"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
