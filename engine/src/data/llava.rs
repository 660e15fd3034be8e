//! LLaVA conversation JSON (`id`, `image`, `conversations: [{from, value}]`) and preference JSON
//! (`image`, `prompt`, `chosen`, `rejected`). Loading reports the file, line and column of any
//! malformed record.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::qtype::QuestionType;
use crate::{Error, Result};

/// Who speaks a turn. LLaVA data uses `human`/`gpt`; `user`/`assistant` are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Speaker {
    #[serde(rename = "human", alias = "user")]
    Human,
    #[serde(rename = "gpt", alias = "assistant")]
    Gpt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub from: Speaker,
    pub value: String,
}

impl Turn {
    pub fn human(value: impl Into<String>) -> Self {
        Turn {
            from: Speaker::Human,
            value: value.into(),
        }
    }
    pub fn gpt(value: impl Into<String>) -> Self {
        Turn {
            from: Speaker::Gpt,
            value: value.into(),
        }
    }
}

/// One LLaVA record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    /// Image path relative to the data folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub conversations: Vec<Turn>,
    /// Optional per-assistant-turn question types (Condenser's extension; ignored by others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_types: Option<Vec<QuestionType>>,
    /// Optional region phrases (Condenser's extension, for vision pre-training): one short
    /// description per cell of the encoder's patch grid, in row-major order, e.g. `"red circle"`
    /// or `"nothing"`. The region-contrastive objective pulls each patch token towards its phrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
}

impl Conversation {
    /// A one-question record.
    pub fn single(
        id: String,
        image: &str,
        question: String,
        answer: String,
        t: Option<QuestionType>,
    ) -> Self {
        Conversation {
            id,
            image: Some(image.into()),
            conversations: vec![Turn::human(question), Turn::gpt(answer)],
            question_types: t.map(|t| vec![t]),
            regions: None,
        }
    }

    /// The same record with region phrases attached.
    pub fn with_regions(mut self, regions: Vec<String>) -> Self {
        self.regions = Some(regions);
        self
    }
}

/// One preference pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferencePair {
    #[serde(default)]
    pub id: String,
    pub image: String,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

/// Reads a LLaVA JSON file and checks each record's structure: turns alternate starting with
/// `human`, at most one `<image>` placeholder (in a human turn), question types aligned with
/// the assistant turns, and `<image>` present when `require_image` is set.
pub fn load_conversations(path: &Path, require_image: bool) -> Result<Vec<Conversation>> {
    let text = crate::error::read_to_string(path)?;
    let convs: Vec<Conversation> = serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
    non_empty(path, &text, convs.len())?;
    for (i, c) in convs.iter().enumerate() {
        check(path, i, c, require_image)?;
    }
    Ok(convs)
}

/// An empty data file would train or evaluate nothing and still exit 0: it is an error, placed
/// at the list's opening bracket.
fn non_empty(path: &Path, text: &str, records: usize) -> Result<()> {
    if records > 0 {
        return Ok(());
    }
    let (mut line, mut column) = (1, 1);
    for ch in text.chars().take_while(|c| c.is_whitespace()) {
        if ch == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    Err(Error::Json {
        path: path.to_path_buf(),
        line,
        column,
        message: "the list of records is empty: expected at least one".into(),
    })
}

/// Whether an image path stays inside the folder it is resolved against: relative, and no `..`
/// (a data file must not make Condenser read files elsewhere on the machine).
fn stays_inside(image: &str) -> bool {
    Path::new(image)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn check(path: &Path, index: usize, c: &Conversation, require_image: bool) -> Result<()> {
    let bad = |message: String| Error::Record {
        path: path.to_path_buf(),
        index,
        id: c.id.clone(),
        message,
    };
    if let Some(image) = c.image.as_deref().filter(|i| !stays_inside(i)) {
        return Err(bad(format!(
            "image path {image:?} leaves the data folder: image paths are relative to it (or \
             to the recipe's image_folder), without `..`"
        )));
    }
    if c.conversations.len() < 2 {
        return Err(bad(
            "expected at least one human turn and one gpt turn".into()
        ));
    }
    for (k, t) in c.conversations.iter().enumerate() {
        let want = if k % 2 == 0 {
            Speaker::Human
        } else {
            Speaker::Gpt
        };
        if t.from != want {
            return Err(bad(format!(
                "turn {k} is from {:?}, expected {:?} (turns must alternate, human first)",
                t.from, want
            )));
        }
    }
    let placeholders: usize = c
        .conversations
        .iter()
        .map(|t| t.value.matches("<image>").count())
        .sum();
    let in_gpt = c
        .conversations
        .iter()
        .any(|t| t.from == Speaker::Gpt && t.value.contains("<image>"));
    if placeholders > 1 || in_gpt {
        return Err(bad(
            "expected exactly one <image> placeholder, in a human turn".into(),
        ));
    }
    match (&c.image, placeholders) {
        (Some(_), 0) if require_image => {
            return Err(bad(
                "has an image but no <image> placeholder in its conversation".into(),
            ));
        }
        (None, 1) => {
            return Err(bad(
                "has an <image> placeholder but no \"image\" field".into()
            ));
        }
        (None, 0) if require_image => {
            return Err(bad(
                "has no image, but this recipe needs an <image> in every conversation".into(),
            ));
        }
        _ => {}
    }
    if let Some(types) = &c.question_types {
        let answers = c.conversations.len() / 2;
        if types.len() != answers {
            return Err(bad(format!(
                "question_types has {} entries for {answers} gpt turns",
                types.len()
            )));
        }
    }
    Ok(())
}

/// Reads a preference JSON file and checks every pair: non-empty, distinct answers, and a
/// prompt that is a valid human turn for its image (one `<image>`, or none when the recipe
/// does not need one).
pub fn load_preferences(path: &Path, require_image: bool) -> Result<Vec<PreferencePair>> {
    let text = crate::error::read_to_string(path)?;
    let pairs: Vec<PreferencePair> =
        serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
    non_empty(path, &text, pairs.len())?;
    for (i, p) in pairs.iter().enumerate() {
        let bad = |message: String| Error::Record {
            path: path.to_path_buf(),
            index: i,
            id: p.id.clone(),
            message,
        };
        if p.chosen.trim().is_empty() || p.rejected.trim().is_empty() {
            return Err(bad("chosen and rejected must both be non-empty".into()));
        }
        if p.chosen == p.rejected {
            return Err(bad("chosen and rejected are the same answer".into()));
        }
        check(path, i, &p.as_conversation(true), require_image)?;
    }
    Ok(pairs)
}

impl PreferencePair {
    /// The pair as a one-turn conversation answered by `chosen` (or `rejected`).
    pub fn as_conversation(&self, chosen: bool) -> Conversation {
        let (answer, tag) = if chosen {
            (&self.chosen, "chosen")
        } else {
            (&self.rejected, "rejected")
        };
        Conversation {
            id: format!("{}-{tag}", self.id),
            image: Some(self.image.clone()),
            conversations: vec![Turn::human(self.prompt.clone()), Turn::gpt(answer.clone())],
            question_types: None,
            regions: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("condenser-llava-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn an_empty_data_file_is_an_error_at_its_bracket() {
        let p = write("empty.json", "\n  []\n");
        let err = load_conversations(&p, true).unwrap_err().to_string();
        assert!(
            err.contains("empty.json:2:3") && err.contains("empty"),
            "{err}"
        );
        let err = load_preferences(&p, true).unwrap_err().to_string();
        assert!(err.contains("empty.json:2:3"), "{err}");
    }

    #[test]
    fn image_paths_that_leave_the_data_folder_are_refused() {
        for (image, ok) in [
            ("images/a.png", true),
            ("./a.png", true),
            ("../a.png", false),
            ("images/../../a.png", false),
            ("/etc/a.png", false),
        ] {
            let p = write(
                "one.json",
                &format!(
                    r#"[{{"id": "x", "image": "{image}", "conversations": [
                        {{"from": "human", "value": "<image>\nwhat ?"}},
                        {{"from": "gpt", "value": "red"}}]}}]"#
                ),
            );
            match load_conversations(&p, true) {
                Ok(_) => assert!(ok, "{image} was accepted"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(!ok, "{image} was refused: {e}");
                    assert!(
                        e.contains(image) && e.contains("leaves the data folder"),
                        "{e}"
                    );
                }
            }
        }
    }
}
