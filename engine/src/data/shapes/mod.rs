//! The Shapes world: a deterministic, seeded generator of small RGB images of coloured shapes on
//! a 3x3 grid, with captions (pre-training), multi-turn instruction conversations, single-turn
//! test questions of several types (colour, shape, count, position, relation, existence with
//! POPE-style random / popular / adversarial negatives) and preference pairs. It writes exactly
//! what a user's own data looks like: PNG files + LLaVA conversation JSON + `tokenizer.json`.

mod draw;
mod qa;
mod scene;
pub mod vocab;

#[cfg(test)]
mod tests;

pub use qa::{AnswerStyle, CAPTION_PROMPT, QuestionType};
pub use scene::{Colour, Obj, Scene, Shape};
pub use vocab::{SPECIAL_TOKENS, tokenizer_json, words};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::llava::Conversation;
use crate::rng::Rng;
use crate::{Error, Result};

/// Generator settings; saved as `world.json` beside the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldConfig {
    pub seed: u64,
    pub image_size: u32,
    pub train_images: usize,
    pub val_images: usize,
    pub test_images: usize,
    /// Instruction turns per training conversation.
    pub turns: usize,
    /// Objects per image, inclusive range.
    pub min_objects: usize,
    pub max_objects: usize,
    /// How lookup questions are answered (see [`AnswerStyle`]).
    pub answers: AnswerStyle,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            seed: 7,
            image_size: 36,
            train_images: 6000,
            val_images: 300,
            test_images: 500,
            turns: 5,
            min_objects: 1,
            max_objects: 4,
            answers: AnswerStyle::Grounded,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct WorldSummary {
    pub root: PathBuf,
    pub images: usize,
    pub captions: usize,
    pub train_conversations: usize,
    pub val_questions: usize,
    pub test_questions: usize,
    pub preference_pairs: usize,
}

/// The three splits, each with its own images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// Writes the world into `root` (created if needed). Files are written to a temporary folder
/// and moved into place at the end, so an interrupted generation leaves no half world behind.
pub fn generate(root: &Path, cfg: &WorldConfig) -> Result<WorldSummary> {
    if cfg.min_objects == 0 || cfg.max_objects > 4 || cfg.min_objects > cfg.max_objects {
        return Err(Error::Invalid(format!(
            "objects per image must satisfy 1 <= min ({}) <= max ({}) <= 4",
            cfg.min_objects, cfg.max_objects
        )));
    }
    if cfg.image_size < 24 {
        return Err(Error::Invalid(format!(
            "image size {} is below 24 pixels",
            cfg.image_size
        )));
    }
    let parent = root
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let staging = crate::error::tmp_sibling(root);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    std::fs::create_dir_all(staging.join("images")).map_err(|e| Error::io(&staging, e))?;

    let rng = Rng::new(cfg.seed);
    let popularity = scene::Popularity::default();
    let mut captions = Vec::new();
    let mut train = Vec::new();
    let mut val = Vec::new();
    let mut test = Vec::new();
    let mut prefs = Vec::new();
    let mut images = 0;
    for (split, count, salt) in [
        (Split::Train, cfg.train_images, 1u64),
        (Split::Val, cfg.val_images, 2),
        (Split::Test, cfg.test_images, 3),
    ] {
        let mut rng = rng.fork(salt);
        for i in 0..count {
            let scene = Scene::sample(&mut rng, cfg.min_objects, cfg.max_objects, &popularity);
            let file = format!("{}_{i:05}.png", split.name());
            let img = draw::render(&scene, cfg.image_size, &mut rng);
            let path = staging.join("images").join(&file);
            img.save(&path).map_err(|e| Error::Image {
                path: path.clone(),
                message: e.to_string(),
            })?;
            images += 1;
            let image = format!("images/{file}");
            let id = format!("{}-{i:05}", split.name());
            match split {
                Split::Train => {
                    captions.push(
                        Conversation::single(
                            format!("{id}-cap"),
                            &image,
                            format!("<image>\n{}", qa::CAPTION_PROMPT),
                            scene.caption(),
                            None,
                        )
                        .with_regions(scene.regions()),
                    );
                    let conv = qa::conversation(
                        &id,
                        &image,
                        &scene,
                        cfg.turns,
                        cfg.answers,
                        &mut rng,
                        &popularity,
                    );
                    train.push((scene.objects.len(), conv));
                    prefs.push(qa::preference(
                        &id,
                        i,
                        &image,
                        &scene,
                        &mut rng,
                        &popularity,
                    ));
                }
                Split::Val => val.extend(qa::probe_questions(
                    &id,
                    &image,
                    &scene,
                    cfg.answers,
                    &mut rng,
                    &popularity,
                )),
                Split::Test => test.extend(qa::probe_questions(
                    &id,
                    &image,
                    &scene,
                    cfg.answers,
                    &mut rng,
                    &popularity,
                )),
            }
        }
    }
    fn write<T: Serialize + ?Sized>(dir: &Path, name: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value).expect("generated data serialises");
        crate::error::write_atomic(dir.join(name), text.as_bytes())
    }
    write(&staging, "captions.json", &captions)?;
    // a curriculum written into the file: fewest objects first (stable, so generation order
    // breaks ties); stages with `order = "curriculum"` read the first epoch in this order
    train.sort_by_key(|(objects, _)| *objects);
    let train: Vec<Conversation> = train.into_iter().map(|(_, c)| c).collect();
    write(&staging, "train.json", &train)?;
    write(&staging, "val.json", &val)?;
    write(&staging, "test.json", &test)?;
    write(&staging, "prefs.json", &prefs)?;
    write(&staging, "world.json", cfg)?;
    write(&staging, "tokenizer.json", &tokenizer_json())?;

    if root.exists() {
        std::fs::remove_dir_all(root).map_err(|e| Error::io(root, e))?;
    }
    std::fs::rename(&staging, root).map_err(|e| Error::io(root, e))?;
    Ok(WorldSummary {
        root: root.to_path_buf(),
        images,
        captions: captions.len(),
        train_conversations: train.len(),
        val_questions: val.len(),
        test_questions: test.len(),
        preference_pairs: prefs.len(),
    })
}

/// One scene of the world drawn from its own seed (the browser page's "new image"): the same
/// sampler and renderer the data files come from, so the student sees images of its training
/// distribution. Returns the scene (its caption is the ground truth) and the picture.
pub fn scene_from_seed(seed: u64, cfg: &WorldConfig) -> (Scene, image::RgbImage) {
    let mut rng = Rng::new(seed);
    let scene = Scene::sample(
        &mut rng,
        cfg.min_objects.clamp(1, 4),
        cfg.max_objects.clamp(cfg.min_objects.clamp(1, 4), 4),
        &scene::Popularity::default(),
    );
    let img = draw::render(&scene, cfg.image_size.max(24), &mut rng);
    (scene, img)
}

/// Every object the world can draw, as the phrases its text uses ("red circle"): the object
/// list `condenser prefs` uses for Shapes data.
pub fn object_names() -> Vec<String> {
    Colour::ALL
        .iter()
        .flat_map(|c| {
            Shape::ALL
                .iter()
                .map(move |s| format!("{} {}", c.word(), s.word()))
        })
        .collect()
}

/// True when `root` holds a world generated with exactly `cfg`.
pub fn is_generated(root: &Path, cfg: &WorldConfig) -> bool {
    std::fs::read_to_string(root.join("world.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<WorldConfig>(&t).ok())
        .is_some_and(|c| &c == cfg)
}
