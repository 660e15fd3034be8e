//! The multimodal model: visual tokens from the ViT go through the projector and replace the
//! `<image>` placeholder span in the LLM's input embeddings.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::attention::AttnMask;
use super::llm::{KvCache, Llm, MoeTrace};
use super::moe::{Phase, Route};
use super::projector::Projector;
use super::vision::VisionEncoder;
use crate::config::MllmConfig;
use crate::rng::Rng;

/// Vision encoder + projector + LLM.
#[derive(Module, Debug)]
pub struct Mllm {
    pub vision: VisionEncoder,
    pub projector: Projector,
    pub llm: Llm,
    #[module(skip)]
    pub config: MllmConfig,
}

/// What the model sees for the image part of a batch.
#[derive(Debug, Clone)]
pub enum Visual {
    /// Normalised pixels `[B, 3, H, W]`: the vision encoder runs.
    Pixels(Tensor<4>),
    /// Vision-encoder outputs `[B, Nv, C]` computed earlier (the encoder is frozen, so its
    /// features never change during a stage and are computed once).
    Features(Tensor<3>),
}

/// A padded batch ready for the model. Built by `data::batch`.
#[derive(Debug, Clone)]
pub struct MllmBatch {
    /// Token ids `[B, T]`; image placeholder slots hold any valid id (their embedding is replaced).
    pub input_ids: Tensor<2, Int>,
    /// `[B*T]` indices into `cat([token embeddings (B*T rows), visual tokens (B*Nv rows)])`:
    /// where each input position takes its embedding from.
    pub gather: Tensor<1, Int>,
    /// RoPE positions `[B, T]`.
    pub positions: Tensor<2, Int>,
    /// 1 for real tokens, 0 for padding `[B, T]`.
    pub attention_mask: Tensor<2>,
    /// Next-token targets `[B, T]` (the shift is done once, when batching).
    pub targets: Tensor<2, Int>,
    /// 1 where `targets` counts for the loss (assistant tokens), else 0 `[B, T]`.
    pub loss_mask: Tensor<2>,
    pub visual: Visual,
    /// Host copies, row-major `[B*T]`: which positions are real tokens (MoE routers skip
    /// padding) and which hold visual tokens (routing telemetry splits by it).
    pub real: Vec<bool>,
    pub is_visual: Vec<bool>,
}

impl MllmBatch {
    /// The routers' view of this batch.
    pub fn route(&self, phase: Phase) -> Route {
        Route {
            routed: self.real.clone(),
            visual: self.is_visual.clone(),
            phase,
        }
    }
}

/// Parameter counts per module.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ParamCounts {
    pub vision: usize,
    pub projector: usize,
    pub llm: usize,
}

impl ParamCounts {
    pub fn total(&self) -> usize {
        self.vision + self.projector + self.llm
    }
}

impl std::fmt::Display for ParamCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} params (vision {}, projector {}, llm {})",
            human(self.total()),
            human(self.vision),
            human(self.projector),
            human(self.llm)
        )
    }
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

impl Mllm {
    /// Builds a model with seeded weights (same seed, same weights on every backend).
    pub fn new(config: &MllmConfig, seed: u64, device: &Device) -> Self {
        let rng = Rng::new(seed);
        Mllm {
            vision: VisionEncoder::new(&config.vision, &mut rng.fork(1), device),
            projector: Projector::new(
                config.vision.hidden,
                config.llm.hidden,
                &mut rng.fork(2),
                device,
            ),
            llm: Llm::new(&config.llm, &mut rng.fork(3), device),
            config: config.clone(),
        }
    }

    /// Chooses where attention and MoE routing run, as the run resolved it once for its recipe
    /// and device. A new or loaded model uses the kernels wherever its device runs them.
    pub fn set_kernels(&mut self, kernels: crate::backend::kernels::Kernels) {
        self.vision.kernels = kernels;
        self.llm.kernels = kernels;
    }

    /// Sets how images are brought to the encoder's input (no weight depends on it: LLaVA's
    /// `image_aspect_ratio` is a training choice, not part of the tower).
    pub fn set_preprocess(&mut self, preprocess: crate::config::Preprocess) {
        self.config.vision.preprocess = preprocess;
        self.vision.config.preprocess = preprocess;
    }

    pub fn param_counts(&self) -> ParamCounts {
        ParamCounts {
            vision: self.vision.num_params(),
            projector: self.projector.num_params(),
            llm: self.llm.num_params(),
        }
    }

    /// Projected visual tokens `[B, Nv, D]`.
    pub fn visual_tokens(&self, visual: Visual) -> Tensor<3> {
        let feats = match visual {
            Visual::Pixels(px) => self.vision.forward(px),
            Visual::Features(f) => f,
        };
        self.projector.forward(feats)
    }

    /// Input embeddings `[B, T, D]` with the visual tokens spliced in.
    pub fn input_embeddings(&self, batch: &MllmBatch) -> Tensor<3> {
        let [b, t] = batch.input_ids.dims();
        let text = self.llm.embed(batch.input_ids.clone());
        let d = text.dims()[2];
        let vis = self.visual_tokens(batch.visual.clone());
        let nv = vis.dims()[1];
        let table = Tensor::cat(vec![text.reshape([b * t, d]), vis.reshape([b * nv, d])], 0);
        table.select(0, batch.gather.clone()).reshape([b, t, d])
    }

    /// Final hidden states `[B, T, D]` for a right- or left-padded batch (no cache), MoE
    /// layers at the evaluation capacity.
    pub fn hidden(&self, batch: &MllmBatch) -> Tensor<3> {
        self.hidden_routed(batch, Phase::Eval).0
    }

    /// Final hidden states and what the MoE routers did (`phase` picks the capacity factor).
    pub fn hidden_routed(&self, batch: &MllmBatch, phase: Phase) -> (Tensor<3>, MoeTrace) {
        let x = self.input_embeddings(batch);
        let mask = AttnMask::causal(batch.attention_mask.clone());
        let route = batch.route(phase);
        self.llm
            .hidden_routed(x, batch.positions.clone(), mask, None, Some(&route))
    }

    /// Logits `[B, T, V]`.
    pub fn logits(&self, batch: &MllmBatch) -> Tensor<3> {
        self.llm.logits(self.hidden(batch))
    }

    /// Autoregressive cross-entropy over the counted (assistant) tokens, averaged over them.
    pub fn loss(&self, batch: &MllmBatch) -> Tensor<1> {
        masked_cross_entropy(
            self.logits(batch),
            batch.targets.clone(),
            batch.loss_mask.clone(),
        )
    }

    /// Runs the prompt through the model and fills `cache`; returns the last position's
    /// logits `[B, V]`. Used by generation.
    pub fn prefill(&self, batch: &MllmBatch, cache: &mut KvCache) -> Tensor<2> {
        let x = self.input_embeddings(batch);
        let [b, t, _] = x.dims();
        let mask = AttnMask::causal(batch.attention_mask.clone());
        let route = batch.route(Phase::Eval);
        let (h, _) =
            self.llm
                .hidden_routed(x, batch.positions.clone(), mask, Some(cache), Some(&route));
        let last = h.narrow(1, t - 1, 1);
        let v = self.config.llm.vocab_size;
        self.llm.logits(last).reshape([b, v])
    }
}

/// Mean token cross-entropy over positions where `mask` is 1 (`logits [B, T, V]`,
/// `targets [B, T]`, `mask [B, T]`). Returns a `[1]` tensor; 0 when nothing is counted.
pub fn masked_cross_entropy(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let logp = log_softmax(logits, 2);
    let picked = logp.gather(2, targets.reshape([b, t, 1])).reshape([b, t]);
    masked_mean(picked, mask).neg()
}

/// Mean of `values` over the positions where `mask` is 1 (`[1]`); 0 when nothing is counted.
pub fn masked_mean<const D: usize>(values: Tensor<D>, mask: Tensor<D>) -> Tensor<1> {
    let count = mask.clone().sum().clamp_min(1.0);
    (values * mask).sum() / count
}
