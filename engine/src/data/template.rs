//! The chat template: `<bos> <|user|> {human} <|assistant|> {gpt} <|end|> <|user|> ...`.
//! `<image>` expands to the model's number of visual tokens. Only assistant tokens (the answer
//! and its `<|end|>`) are marked for the loss (TinyLLaVA eq. 3). A system turn is folded into
//! the first human turn, `{system}\n\n{human}`, as Gemma's and Mistral's templates do: it needs
//! no token of its own, so every tokenizer with the chat tokens can carry it.

use super::llava::{Speaker, Turn};
use super::tokenizer::TextTokenizer;
use crate::Result;

/// A tokenised conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// `true` at assistant tokens (counted by the loss as prediction targets).
    pub assistant: Vec<bool>,
    /// First position of the visual-token span, if the conversation has `<image>`.
    pub image_start: Option<usize>,
}

fn push_human(
    tok: &TextTokenizer,
    value: &str,
    num_visual: usize,
    out: &mut Encoded,
) -> Result<()> {
    let s = tok.special;
    out.ids.push(s.user);
    let mut parts = value.splitn(2, "<image>");
    let before = parts.next().unwrap_or("");
    out.ids.extend(tok.encode(before)?);
    if let Some(after) = parts.next() {
        out.image_start = Some(out.ids.len());
        out.ids.extend(std::iter::repeat_n(s.image, num_visual));
        out.ids.extend(tok.encode(after)?);
    }
    out.ids.push(s.assistant);
    out.assistant.resize(out.ids.len(), false);
    Ok(())
}

/// Encodes a whole conversation for training.
pub fn encode_conversation(
    tok: &TextTokenizer,
    turns: &[Turn],
    num_visual: usize,
) -> Result<Encoded> {
    let mut out = Encoded {
        ids: vec![tok.special.bos],
        assistant: vec![false],
        image_start: None,
    };
    let mut system: Option<&str> = None;
    for t in turns {
        match t.from {
            Speaker::System => system = Some(&t.value),
            Speaker::Human => match system.take() {
                Some(sys) => {
                    push_human(tok, &format!("{sys}\n\n{}", t.value), num_visual, &mut out)?
                }
                None => push_human(tok, &t.value, num_visual, &mut out)?,
            },
            Speaker::Gpt => {
                out.ids.extend(tok.encode(&t.value)?);
                out.ids.push(tok.special.end);
                out.assistant.resize(out.ids.len(), true);
            }
        }
    }
    Ok(out)
}

/// Encodes a prompt for generation: every turn, ending with the open `<|assistant|>` of the
/// last human turn. `turns` must end with a human turn.
pub fn encode_prompt(tok: &TextTokenizer, turns: &[Turn], num_visual: usize) -> Result<Encoded> {
    encode_conversation(tok, turns, num_visual)
}

/// This template in Jinja, for the formats that carry one (a transformers tokenizer's and
/// processor's `chat_template`, GGUF's `tokenizer.chat_template`): the same tokens as
/// [`encode_conversation`], a system turn folded into the first user turn, `<image>` where a
/// content part is an image.
pub const CHAT_TEMPLATE_JINJA: &str = "{{ bos_token }}{% set ns = namespace(system='') %}{% for m in messages %}\
{% if m['content'] is string %}{% set text = m['content'] %}{% else %}{% set text = namespace(v='') %}\
{% for p in m['content'] %}{% if p['type'] == 'image' %}{% set text.v = text.v + '<image>\\n' %}\
{% elif p['type'] == 'text' %}{% set text.v = text.v + p['text'] %}{% endif %}{% endfor %}{% set text = text.v %}{% endif %}\
{% if m['role'] == 'system' %}{% set ns.system = text + '\\n\\n' %}\
{% elif m['role'] == 'user' %}<|user|>{{ ns.system }}{{ text }}<|assistant|>{% set ns.system = '' %}\
{% elif m['role'] == 'assistant' %}{{ text }}<|end|>{% endif %}{% endfor %}";

/// Canonical form of an answer for exact-match scoring: lower case, single spaces, no final
/// punctuation.
pub fn normalise_answer(s: &str) -> String {
    s.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(['.', '?', '!', ' '])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> TextTokenizer {
        let dir = std::env::temp_dir().join(format!("condenser-template-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        let doc = crate::data::shapes::tokenizer_json();
        std::fs::write(&path, serde_json::to_string(&doc).unwrap()).unwrap();
        TextTokenizer::load(&path).unwrap()
    }

    #[test]
    fn a_system_turn_is_folded_into_the_first_human_turn() {
        let tok = tokenizer();
        let with = encode_conversation(
            &tok,
            &[
                Turn {
                    from: Speaker::System,
                    value: "red".into(),
                },
                Turn::human("<image> circle"),
                Turn::gpt("yes"),
                Turn::human("blue"),
                Turn::gpt("no"),
            ],
            4,
        )
        .unwrap();
        let folded = encode_conversation(
            &tok,
            &[
                Turn::human("red\n\n<image> circle"),
                Turn::gpt("yes"),
                Turn::human("blue"),
                Turn::gpt("no"),
            ],
            4,
        )
        .unwrap();
        assert_eq!(with, folded);
        // the system text is prompt, not target, and the image span moved past it
        let plain =
            encode_conversation(&tok, &[Turn::human("<image> circle"), Turn::gpt("yes")], 4)
                .unwrap();
        assert!(with.image_start > plain.image_start);
        let targets = |e: &Encoded| e.assistant.iter().filter(|a| **a).count();
        assert_eq!(targets(&with), targets(&folded));
    }
}
