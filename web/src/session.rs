//! A loaded student and the one thing the page asks of it: answer a question about an image,
//! streaming the text. Target-independent, so native tests check it against `condenser chat`.

use std::future::Future;
use std::path::Path;

use condenser_engine::burn::prelude::Device;
use condenser_engine::config::MllmConfig;
use condenser_engine::data::image::decode_image;
use condenser_engine::data::shapes::{WorldConfig, scene_from_seed};
use condenser_engine::data::{TextTokenizer, question_batch};
use condenser_engine::io::bundle::{self, Manifest};
use condenser_engine::model::{GenerateOptions, Mllm, Sampling};
use condenser_engine::{Error, Result};

/// A bundle's model and tokenizer on one device.
pub struct Session {
    pub model: Mllm,
    pub tokenizer: TextTokenizer,
    pub manifest: Option<Manifest>,
    device: Device,
}

/// What one question produced.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    pub text: String,
    pub ids: Vec<u32>,
}

impl Session {
    /// Builds the session from the bundle files' bytes (`bundle.json` may be absent).
    pub fn from_bundle(
        manifest: Option<&[u8]>,
        config: &[u8],
        weights: &[u8],
        tokenizer: &[u8],
        device: Device,
    ) -> Result<Session> {
        let manifest = manifest
            .map(|m| {
                let text = String::from_utf8_lossy(m);
                Manifest::parse(&text, Path::new(bundle::MANIFEST_FILE))
            })
            .transpose()?;
        let config: MllmConfig = serde_json::from_slice(config)
            .map_err(|e| Error::json(Path::new(bundle::CONFIG_FILE), e))?;
        let tokenizer = TextTokenizer::from_bytes(tokenizer, Path::new(bundle::TOKENIZER_FILE))?;
        tokenizer.check_fits(config.llm.vocab_size)?;
        let model =
            bundle::decode_weights(&config, weights, Path::new(bundle::WEIGHTS_FILE), &device)?;
        Ok(Session {
            model,
            tokenizer,
            manifest,
            device,
        })
    }

    /// True when the student has Mixture-of-Experts layers, whose routing reads the router's
    /// probabilities back to the host synchronously (which only the CPU backend can do in a
    /// browser).
    pub fn routes_on_host(config: &[u8]) -> bool {
        serde_json::from_slice::<MllmConfig>(config).is_ok_and(|c| c.llm.moe.is_some())
    }

    /// Answers `question` about the encoded image `image` (PNG, JPEG or WebP), greedily, as
    /// `condenser chat` does; `on_text` gets the whole answer so far after every token.
    pub async fn ask<F, Fut>(
        &self,
        image: &[u8],
        question: &str,
        max_tokens: usize,
        mut on_text: F,
    ) -> Result<Answer>
    where
        F: FnMut(&str, usize) -> Fut,
        Fut: Future<Output = ()>,
    {
        if question.trim().is_empty() {
            return Err(Error::Invalid("the question is empty".into()));
        }
        let vision = &self.model.config.vision;
        let pixels = decode_image(image, Path::new("the image"), vision)?;
        let batch = question_batch(&self.tokenizer, vision, pixels, question, &self.device)?;
        let opts = GenerateOptions {
            max_new_tokens: max_tokens.max(1),
            sampling: Sampling::Greedy,
            stop: self.tokenizer.stop_ids(),
            seed: 0,
        };
        let tok = &self.tokenizer;
        let mut so_far: Vec<u32> = Vec::new();
        let out = self
            .model
            .generate_stream(&batch, &opts, |_, id| {
                so_far.push(id);
                let text = tok.decode(&so_far);
                on_text(&text, so_far.len())
            })
            .await;
        let ids = out.into_iter().next().unwrap_or_default();
        Ok(Answer {
            text: tok.decode(&ids),
            ids,
        })
    }
}

/// A Shapes scene drawn from `seed` at the student's input size, as PNG bytes, with its
/// caption: the page's built-in images, from the same generator as the training data.
pub fn shapes_png(seed: u64, image_size: u32) -> (Vec<u8>, String) {
    let cfg = WorldConfig {
        image_size,
        ..WorldConfig::default()
    };
    let (scene, img) = scene_from_seed(seed, &cfg);
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encoding a PNG in memory cannot fail");
    (png, scene.caption())
}
