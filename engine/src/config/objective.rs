//! What a stage optimises, as a recipe spells it: the objective kinds and their settings
//! (docs/METHODS.md sections 2-4, 6). Plain data: the losses that read them live in
//! `distill/` and `train/objective/`.

use serde::{Deserialize, Serialize};

/// What a stage optimises.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Objective {
    /// Next-token cross-entropy on assistant tokens.
    #[default]
    LanguageModel,
    /// CLIP-style symmetric InfoNCE between images and their captions (the last assistant
    /// turn): image embedding = the projected CLS token (the mean of the projected patch tokens
    /// when the encoder drops CLS), text embedding = the
    /// decoder's final hidden state at the caption's last token. Gives the vision encoder a
    /// direct training signal, with no cross-attention to discover first.
    ///
    /// With `regions > 0` a dense term is added with that weight: every patch token is
    /// classified against the text embeddings of the region phrases present in the batch
    /// (RegionCLIP-style), so the patch tokens, not only the image summary, carry what the
    /// text says about their part of the image. The records must carry `regions`.
    Contrastive {
        #[serde(default = "default_temperature")]
        temperature: f64,
        #[serde(default)]
        regions: f64,
    },
    /// Teacher-student distillation (LLaVA-KD MDist + RDist, LLaVADI hidden alignment): the
    /// weighted sum of the terms of [`DistillSpec`]. Needs `[teacher]`.
    Distill(DistillSpec),
    /// LLaVA-MoD preference distillation on `preference` data: a DPO-family loss whose
    /// reference model is the `[teacher]`, plus optional cross-entropy on the chosen answers.
    Preference(PreferenceSpec),
}

/// Preference distillation settings (docs/METHODS.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceSpec {
    /// Which DPO-family loss.
    #[serde(default)]
    pub loss: PreferenceLoss,
    /// Inverse temperature of the implicit reward (0.1 in LLaVA-MoD).
    #[serde(default = "tenth")]
    pub beta: f64,
    /// Weight of cross-entropy on the chosen answers (0: the preference loss alone).
    #[serde(default)]
    pub ce: f64,
    /// The reference model of the implicit reward: the teacher (LLaVA-MoD) or the student as it
    /// entered the stage (plain DPO; a diagnostic). Left out of saved recipes when `teacher`.
    #[serde(default, skip_serializing_if = "PreferenceReference::is_teacher")]
    pub reference: PreferenceReference,
}

/// Whose log-probabilities the preference loss measures the student against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreferenceReference {
    #[default]
    Teacher,
    /// The student's own weights at the start of the stage, frozen.
    Student,
}

impl PreferenceReference {
    fn is_teacher(&self) -> bool {
        *self == PreferenceReference::Teacher
    }
}

fn tenth() -> f64 {
    0.1
}

impl Default for PreferenceSpec {
    fn default() -> Self {
        PreferenceSpec {
            loss: Default::default(),
            beta: 0.1,
            ce: 0.0,
            reference: PreferenceReference::Teacher,
        }
    }
}

/// The terms of a distillation objective and their weights (docs/METHODS.md sections 2, 3, 6).
/// LLaVA-KD's released code has no training script, so its weights are the paper's symbols
/// (a, b, g), 1.0 each by default; LLaVADI's hidden-state term is off by default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSpec {
    /// Weight of the ordinary next-token cross-entropy on the responses (`L_PT` / `L_reg`).
    #[serde(default = "one")]
    pub ce: f64,
    /// Weight of `L_res`: the divergence on the tokens chosen by `tokens`.
    #[serde(default = "one")]
    pub res: f64,
    /// Weight of `L_vis`: the divergence of the LLM's output distributions at the visual-token
    /// positions.
    #[serde(default = "one")]
    pub vis: f64,
    /// Weight of `L_rel` (RDist): `1 - cos` between the self-correlation matrices of the
    /// visual-token outputs.
    #[serde(default = "one")]
    pub rel: f64,
    /// Weight of LLaVADI's MSE between the last hidden states (student mapped to the teacher's
    /// width by a learned 2-layer MLP) on the tokens chosen by `tokens`.
    #[serde(default)]
    pub hidden: f64,
    /// Which tokens `L_res` and the hidden term cover.
    #[serde(default)]
    pub tokens: KdTokens,
    /// Which visual-token outputs RDist relates.
    #[serde(default)]
    pub relation: RelationFeatures,
    /// The divergence, its temperature and logit normalisation.
    #[serde(default)]
    pub divergence: DivergenceSpec,
}

impl Default for DistillSpec {
    fn default() -> Self {
        DistillSpec {
            ce: 1.0,
            res: 1.0,
            vis: 1.0,
            rel: 1.0,
            hidden: 0.0,
            tokens: KdTokens::Response,
            relation: RelationFeatures::Logits,
            divergence: Default::default(),
        }
    }
}

/// Token selection for the response divergence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KdTokens {
    /// Only the tokens the cross-entropy counts (assistant responses): LLaVA-KD's `L_res`.
    #[default]
    Response,
    /// Every attended token (prompt, image and response): LLaVADI's best setting.
    All,
}

/// Features RDist correlates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RelationFeatures {
    /// The LLM's output logits at the visual positions (over the shared vocabulary).
    #[default]
    Logits,
    /// The last hidden states at the visual positions.
    Hidden,
}

/// Which divergence compares `p_T` (teacher) and `p_S` (student).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Divergence {
    /// `KL(p_T || p_S)`: mode-covering, the Hinton default.
    #[default]
    ForwardKl,
    /// `KL(p_S || p_T)`: mode-seeking (MiniLLM).
    ReverseKl,
    /// Generalised Jensen-Shannon (TRL GKD): `M = beta p_T + (1 - beta) p_S`,
    /// `beta KL(p_T || M) + (1 - beta) KL(p_S || M)`.
    Jsd {
        #[serde(default = "half")]
        beta: f64,
    },
    /// `KL(p_T || a p_T + (1 - a) p_S)` (DistiLLM).
    SkewForwardKl {
        #[serde(default = "tenth")]
        alpha: f64,
    },
    /// `KL(p_S || a p_S + (1 - a) p_T)` (DistiLLM).
    SkewReverseKl {
        #[serde(default = "tenth")]
        alpha: f64,
    },
    /// Total variation `0.5 sum |p_T - p_S|`.
    Tvd,
}

fn half() -> f64 {
    0.5
}

impl Divergence {
    /// Short name for logs and tables.
    pub fn label(&self) -> String {
        match self {
            Divergence::ForwardKl => "fkl".into(),
            Divergence::ReverseKl => "rkl".into(),
            Divergence::Jsd { beta } => format!("jsd({beta})"),
            Divergence::SkewForwardKl { alpha } => format!("skl({alpha})"),
            Divergence::SkewReverseKl { alpha } => format!("srkl({alpha})"),
            Divergence::Tvd => "tvd".into(),
        }
    }
}

/// A divergence with its temperature and logit normalisation: everything needed to turn two
/// logit tensors into one loss value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DivergenceSpec {
    #[serde(default)]
    pub divergence: Divergence,
    /// Softmax temperature applied to both models; the loss is scaled by `T^2` so that the
    /// gradient keeps its size as T changes (Hinton et al.).
    #[serde(default = "one")]
    pub temperature: f64,
    /// LLaVADI's per-token z-score of the logits (`(z - mean) / std` over the vocabulary) before
    /// the temperature: it removes the scale difference between a large and a small model's
    /// logits, so the student matches the teacher's ranking rather than its confidence.
    #[serde(default)]
    pub zscore: bool,
}

fn one() -> f64 {
    1.0
}

impl Default for DivergenceSpec {
    fn default() -> Self {
        DivergenceSpec {
            divergence: Divergence::ForwardKl,
            temperature: 1.0,
            zscore: false,
        }
    }
}

impl DivergenceSpec {
    /// Rejects values for which the divergence is undefined or degenerate, with a message the
    /// recipe loader prefixes with the file and stage.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let bad = |what: String| Err(what);
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!(
                "temperature must be a positive number, got {}",
                self.temperature
            ));
        }
        match self.divergence {
            Divergence::Jsd { beta } if !(beta > 0.0 && beta < 1.0) => bad(format!(
                "jsd beta must lie strictly between 0 and 1, got {beta}"
            )),
            Divergence::SkewForwardKl { alpha } | Divergence::SkewReverseKl { alpha }
                if !(0.0..1.0).contains(&alpha) =>
            {
                bad(format!("skew alpha must lie in [0, 1), got {alpha}"))
            }
            _ => Ok(()),
        }
    }
}

/// The four variants of LLaVA-MoD's official code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PreferenceLoss {
    /// DPO: `-log sigmoid(beta m)`.
    #[default]
    Sigmoid,
    /// SLiC-style hinge: `max(0, 1 - beta m)`.
    Hinge,
    /// IPO: `(m - 1 / (2 beta))^2`, a squared loss that does not push `m` to infinity.
    Ipo,
    /// KTO on pairs: chosen and rejected are scored separately against a batch-level KL
    /// baseline (detached, clamped at 0): `1 - sigmoid(beta (r+ - KL-))` and
    /// `1 - sigmoid(beta (KL+ - r-))`, with `r = pi - ref`.
    KtoPair,
}

impl PreferenceLoss {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sigmoid => "sigmoid",
            Self::Hinge => "hinge",
            Self::Ipo => "ipo",
            Self::KtoPair => "kto_pair",
        }
    }
}

fn default_temperature() -> f64 {
    0.07
}
