//! easy-VQA (MIT): 64x64 PNG images of one coloured shape, with (question, answer, image id)
//! triples; 4,000 train and 1,000 test images. Converted to Condenser's data layout: LLaVA
//! conversation JSON (`train.json`, `test.json`), the images under `images/<split>/`, and a
//! word-level `tokenizer.json` over every question and answer (the same layout as the Shapes
//! world's, so the chat template and recipes work unchanged).
//!
//! easy-VQA has no captions, but its training questions state every image's two facts: the
//! shape's colour and kind, as an answer ("what color is the shape?" -> "blue"), inside a
//! question ("what is the blue shape?") or through a yes/no answer ("is there not a circle?" ->
//! "no"). The conversion gathers them into `captions.json` ("a blue circle ."), so caption
//! stages (contrastive pre-training of a tower, projector pre-training, LLaVA-KD's DPT) run on
//! easy-VQA as they do on the Shapes world. Only training questions are read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::llava::Conversation;
use super::shapes::CAPTION_PROMPT;
use super::shapes::vocab::{SPECIAL_TOKENS, tokenizer_json_for};
use crate::{Error, Result};

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub train: usize,
    pub test: usize,
    pub images: usize,
    pub vocab: usize,
    /// Captions written (one per training image whose questions state a fact about it).
    pub captions: usize,
}

/// easy-VQA's shape colours and kinds (its generator's lists).
const COLOURS: [&str; 8] = [
    "red", "green", "blue", "black", "gray", "teal", "brown", "yellow",
];
const KINDS: [&str; 3] = ["circle", "rectangle", "triangle"];

/// What one image's questions have said about it so far.
#[derive(Debug, Default, Clone, PartialEq)]
struct Facts {
    colour: Option<String>,
    kind: Option<String>,
}

impl Facts {
    /// Records what (`question`, `answer`) states about the image: an answer that is a colour or
    /// a kind, or the colour or kind a question names when the image has it (a "what is the X
    /// shape?" question, a yes to a positive yes/no question, a no to a negated one).
    fn learn(&mut self, question: &str, answer: &str) {
        let q = words(question);
        let answer = answer.trim().to_lowercase();
        let negated = q.iter().any(|w| w == "not" || w == "no");
        let present = match answer.as_str() {
            "yes" => !negated,
            "no" => negated,
            // an open question's premise: "what is the blue shape?" has a blue shape
            _ => true,
        };
        if !present {
            return;
        }
        for w in q.iter().map(String::as_str).chain([answer.as_str()]) {
            if COLOURS.contains(&w) {
                self.colour = Some(w.to_string());
            } else if KINDS.contains(&w) {
                self.kind = Some(w.to_string());
            }
        }
    }

    /// "a blue circle .", "a blue shape ." or "a circle ."; none when nothing is known.
    fn caption(&self) -> Option<String> {
        match (&self.colour, &self.kind) {
            (Some(c), Some(k)) => Some(format!("a {c} {k} .")),
            (Some(c), None) => Some(format!("a {c} shape .")),
            (None, Some(k)) => Some(format!("a {k} .")),
            (None, None) => None,
        }
    }
}

/// Splits text the way the tokenizer's `Whitespace` pre-tokeniser does (`\w+|[^\w\s]+`), after
/// lowercasing, so the vocabulary holds exactly the tokens encoding will ask for.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_word = false;
    for c in text.to_lowercase().chars() {
        if c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let w = c.is_alphanumeric() || c == '_';
        if !cur.is_empty() && w != cur_word {
            out.push(std::mem::take(&mut cur));
        }
        cur_word = w;
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// How much of each split to keep: the questions of the first `n` images of the split (in the
/// order its `questions.json` first names them), or all of them. A subset keeps every question
/// about a kept image, so the question mix stays the split's own; runs at real-model scale on a
/// CPU use it to fit their budget.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Subset {
    pub train_images: Option<usize>,
    pub test_images: Option<usize>,
}

/// Converts the package's `easy_vqa/data` folder (holding `train/` and `test/`, each with
/// `questions.json` and `images/`) into `out`, keeping `subset` of each split.
pub fn convert(src: &Path, out: &Path, subset: Subset) -> Result<Converted> {
    for split in ["train", "test"] {
        let q = src.join(split).join("questions.json");
        if !q.exists() {
            return Err(Error::io(
                &q,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "expected easy-VQA's data folder (train/questions.json, test/questions.json)",
                ),
            ));
        }
    }
    let mut vocab: BTreeSet<String> = BTreeSet::new();
    let mut counts = [0usize; 2];
    let mut images = 0;
    let mut facts: std::collections::BTreeMap<u64, (String, Facts)> = Default::default();
    let splits = [("train", subset.train_images), ("test", subset.test_images)];
    for (k, (split, keep)) in splits.into_iter().enumerate() {
        let qpath = src.join(split).join("questions.json");
        let text = crate::error::read_to_string(&qpath)?;
        let triples: Vec<(String, String, u64)> =
            serde_json::from_str(&text).map_err(|e| Error::json(&qpath, e))?;
        let img_dir = out.join("images").join(split);
        std::fs::create_dir_all(&img_dir).map_err(|e| Error::io(&img_dir, e))?;
        let mut copied = BTreeSet::new();
        let mut records = Vec::with_capacity(triples.len());
        let keep = keep.unwrap_or(usize::MAX);
        for (i, (question, answer, image)) in triples.into_iter().enumerate() {
            if !copied.contains(&image) && copied.len() >= keep {
                continue;
            }
            let from: PathBuf = src.join(split).join("images").join(format!("{image}.png"));
            let rel = format!("images/{split}/{image}.png");
            if copied.insert(image) {
                if !from.exists() {
                    return Err(Error::Record {
                        path: qpath.clone(),
                        index: i,
                        id: image.to_string(),
                        message: format!("its image {} is missing", from.display()),
                    });
                }
                let to = out.join(&rel);
                std::fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
            }
            if split == "train" {
                let entry = facts
                    .entry(image)
                    .or_insert_with(|| (rel.clone(), Facts::default()));
                entry.1.learn(&question, &answer);
            }
            vocab.extend(words(&question));
            vocab.extend(words(&answer));
            records.push(Conversation::single(
                format!("easy-vqa-{split}-{i:05}"),
                &rel,
                format!("<image>\n{question}"),
                answer,
                None,
            ));
        }
        if records.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no {split} questions to write (a subset of 0 images, or an empty file)",
                qpath.display()
            )));
        }
        images += copied.len();
        counts[k] = records.len();
        let json = serde_json::to_string(&records).expect("serialisable");
        crate::error::write_atomic(out.join(format!("{split}.json")), json.as_bytes())?;
    }
    let captions: Vec<Conversation> = facts
        .into_iter()
        .filter_map(|(image, (rel, f))| {
            let caption = f.caption()?;
            vocab.extend(words(&caption));
            Some(Conversation::single(
                format!("easy-vqa-caption-{image:05}"),
                &rel,
                format!("<image>\n{CAPTION_PROMPT}"),
                caption,
                None,
            ))
        })
        .collect();
    if !captions.is_empty() {
        vocab.extend(words(CAPTION_PROMPT));
    }
    let json = serde_json::to_string(&captions).expect("serialisable");
    crate::error::write_atomic(out.join("captions.json"), json.as_bytes())?;
    let words: Vec<String> = SPECIAL_TOKENS
        .iter()
        .map(|s| s.to_string())
        .chain(
            vocab
                .into_iter()
                .filter(|w| !SPECIAL_TOKENS.contains(&w.as_str())),
        )
        .collect();
    let tok = serde_json::to_string_pretty(&tokenizer_json_for(&words)).expect("serialisable");
    crate::error::write_atomic(out.join("tokenizer.json"), tok.as_bytes())?;
    Ok(Converted {
        train: counts[0],
        test: counts[1],
        images,
        vocab: words.len(),
        captions: captions.len(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_like_the_whitespace_pre_tokenizer() {
        assert_eq!(
            super::words("What is the Blue shape?"),
            vec!["what", "is", "the", "blue", "shape", "?"]
        );
        assert_eq!(super::words("a  b?!c"), vec!["a", "b", "?!", "c"]);
    }

    #[test]
    fn questions_state_the_facts_of_a_caption() {
        let facts = |qa: &[(&str, &str)]| {
            let mut f = super::Facts::default();
            for (q, a) in qa {
                f.learn(q, a);
            }
            f.caption()
        };
        // answers, and the premise of an open question
        assert_eq!(
            facts(&[("what is the blue shape?", "rectangle")]).as_deref(),
            Some("a blue rectangle .")
        );
        assert_eq!(
            facts(&[("what color is the shape?", "teal")]).as_deref(),
            Some("a teal shape .")
        );
        // yes/no: a yes to a positive question, a no to a negated one
        assert_eq!(
            facts(&[
                ("does the image contain a circle?", "yes"),
                ("is there not a red shape?", "no")
            ])
            .as_deref(),
            Some("a red circle .")
        );
        // a no to a positive question and a yes to a negated one say what is absent: nothing
        assert_eq!(
            facts(&[
                ("is there a triangle in the image?", "no"),
                ("is no blue shape present?", "yes")
            ]),
            None
        );
    }
}
