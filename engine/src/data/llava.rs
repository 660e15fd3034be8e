//! LLaVA conversation JSON (`id`, `image`, `conversations: [{from, value}]`) and preference JSON
//! (`image`, `prompt`, `chosen`, `rejected`). Loading reports the file, line and column of any
//! malformed record.
//!
//! The ShareGPT variants other tools write are read as well: `role`/`content` turns and a
//! `messages` list (the chat format of transformers and LLaMA-Factory), content given as a list
//! of parts (`{"type": "image"}`, `{"type": "text", "text": ...}`), a `system` turn first,
//! numeric or missing ids, and records without an image where the recipe allows them.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::qtype::QuestionType;
use crate::{Error, Result};

/// Who speaks a turn. LLaVA data uses `human`/`gpt`; `user`/`assistant` are accepted too.
/// A `system` turn may open a conversation: the chat template folds it into the first human
/// turn (as Gemma's and Mistral's do), so no tokenizer needs a token of its own for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Speaker {
    #[serde(rename = "system")]
    System,
    #[serde(rename = "human", alias = "user")]
    Human,
    #[serde(rename = "gpt", alias = "assistant")]
    Gpt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    #[serde(alias = "role")]
    pub from: Speaker,
    #[serde(alias = "content", deserialize_with = "content")]
    pub value: String,
}

/// A turn's text: a string, or a list of parts where an image part stands for `<image>` (the
/// content format of transformers' chat templates).
fn content<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Part {
        Text { text: String },
        Image {},
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
    }
    let parts = match Content::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "expected the turn's text: a string, or a list of {\"type\": \"text\", \"text\": ...} \
             and {\"type\": \"image\"} parts",
        )
    })? {
        Content::Text(s) => return Ok(s),
        Content::Parts(p) => p,
    };
    let mut out = String::new();
    for p in parts {
        let piece = match p {
            Part::Text { text } => text,
            Part::Image {} => "<image>".to_string(),
        };
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&piece);
    }
    Ok(out)
}

/// A record's id: a string, a number, or missing (then its index in the file).
fn id<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(match Id::deserialize(d)? {
        Id::Text(s) => s,
        Id::Number(n) => n.to_string(),
    })
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
    /// The record's id; a record without one is named by its index in the file.
    #[serde(default, deserialize_with = "id")]
    pub id: String,
    /// Image path relative to the data folder (or the recipe's `image_folder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The turns: an optional `system` turn, then human and gpt turns alternating.
    #[serde(alias = "messages")]
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

    /// The (human, gpt) exchanges, in order, without the system turn.
    pub fn exchanges(&self) -> impl Iterator<Item = (&Turn, &Turn)> {
        let system = self
            .conversations
            .first()
            .is_some_and(|t| t.from == Speaker::System);
        self.conversations[usize::from(system)..]
            .chunks_exact(2)
            .map(|p| (&p[0], &p[1]))
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
    let mut convs: Vec<Conversation> =
        serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
    non_empty(path, &text, convs.len())?;
    for (i, c) in convs.iter_mut().enumerate() {
        if c.id.is_empty() {
            c.id = format!("#{i}");
        }
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
    let system = usize::from(
        c.conversations
            .first()
            .is_some_and(|t| t.from == Speaker::System),
    );
    if c.conversations.len() < system + 2 {
        return Err(bad(
            "expected at least one human turn and one gpt turn".into()
        ));
    }
    for (k, t) in c.conversations.iter().enumerate().skip(system) {
        let want = if (k - system) % 2 == 0 {
            Speaker::Human
        } else {
            Speaker::Gpt
        };
        if t.from != want {
            let order = if t.from == Speaker::System {
                "a system turn may only come first"
            } else {
                "turns must alternate, human first, after an optional system turn"
            };
            return Err(bad(format!(
                "turn {k} is from {}, expected {} ({order})",
                t.from.name(),
                want.name()
            )));
        }
    }
    if (c.conversations.len() - system) % 2 == 1 {
        return Err(bad(
            "ends with a human turn: every human turn needs the gpt turn that answers it".into(),
        ));
    }
    if c.conversations[..system]
        .iter()
        .any(|t| t.value.contains("<image>"))
    {
        return Err(bad(
            "the system turn holds <image>: it belongs in a human turn".into(),
        ));
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
        let answers = c.exchanges().count();
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

impl Speaker {
    /// The name LLaVA data gives it.
    pub fn name(self) -> &'static str {
        match self {
            Speaker::System => "system",
            Speaker::Human => "human",
            Speaker::Gpt => "gpt",
        }
    }
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

    #[test]
    fn sharegpt_variants_read_as_llava_records() {
        let p = write(
            "variants.json",
            r#"[
              {"id": 7, "image": "a.png", "messages": [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
                {"role": "user", "content": "And the shape?"},
                {"role": "assistant", "content": "circle"}]},
              {"conversations": [
                {"from": "human", "value": "Say hi."},
                {"from": "gpt", "value": "hi"}]}
            ]"#,
        );
        let r = load_conversations(&p, false).unwrap();
        assert_eq!(r[0].id, "7");
        assert_eq!(
            r[1].id, "#1",
            "a record without an id is named by its index"
        );
        assert_eq!(r[0].conversations[0].from, Speaker::System);
        assert_eq!(r[0].conversations[1].value, "<image>\nWhat colour?");
        assert_eq!(r[0].conversations[2].value, "red");
        let exchanges: Vec<(&str, &str)> = r[0]
            .exchanges()
            .map(|(q, a)| (q.value.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(
            exchanges,
            [
                ("<image>\nWhat colour?", "red"),
                ("And the shape?", "circle")
            ]
        );
        // the text-only record is refused where the recipe needs an image in every record
        let err = load_conversations(&p, true).unwrap_err().to_string();
        assert!(err.contains("#1") && err.contains("has no image"), "{err}");
    }

    #[test]
    fn turn_order_is_checked_around_the_system_turn() {
        for (turns, message) in [
            (
                r#"{"from": "human", "value": "<image> a"}, {"from": "system", "value": "s"}, {"from": "gpt", "value": "b"}"#,
                "a system turn may only come first",
            ),
            (
                r#"{"from": "system", "value": "s"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "<image> a"}"#,
                "turn 1 is from gpt, expected human",
            ),
            (
                r#"{"from": "human", "value": "<image> a"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}"#,
                "ends with a human turn",
            ),
            (
                r#"{"from": "system", "value": "<image>"}, {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}"#,
                "the system turn holds <image>",
            ),
            (
                r#"{"from": "human", "value": 5}, {"from": "gpt", "value": "b"}"#,
                "expected the turn's text",
            ),
        ] {
            let p = write(
                "order.json",
                &format!(r#"[{{"id": "x", "image": "a.png", "conversations": [{turns}]}}]"#),
            );
            let err = load_conversations(&p, true).unwrap_err().to_string();
            assert!(err.contains(message), "{message:?} not in {err}");
        }
    }
}
