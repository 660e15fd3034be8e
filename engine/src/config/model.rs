//! Model shapes. Teacher and student are the same [`MllmConfig`] type with different numbers.

use serde::{Deserialize, Serialize};

use super::Preprocess;

/// ViT vision encoder (CLIP/SigLIP/DINOv2-style, pre-norm).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    /// Square input size in pixels.
    pub image_size: usize,
    /// Square patch size in pixels; `image_size` must be a multiple.
    pub patch_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_hidden: usize,
    /// Per-channel normalisation applied after scaling pixels to [0, 1].
    #[serde(default = "default_mean")]
    pub mean: [f32; 3],
    #[serde(default = "default_std")]
    pub std: [f32; 3],
    /// Resizing, cropping and padding ahead of normalisation (`[model.vision.preprocess]`).
    #[serde(default, skip_serializing_if = "Preprocess::is_default")]
    pub preprocess: Preprocess,
    /// Drop the first token from the features handed to the projector: the CLS token (LLaVA
    /// does), or on a tower without one the first patch (what LLaVA's and TinyLLaVA's token
    /// selection does to a SigLIP tower, kept so imported models give the same numbers).
    #[serde(default = "yes")]
    pub drop_cls: bool,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// A learned CLS token in front of the patches (CLIP and DINOv2 have one, SigLIP none).
    #[serde(default = "yes")]
    pub class_token: bool,
    /// Bias on the patch embedding (SigLIP and DINOv2 have one, CLIP none).
    #[serde(default = "yes")]
    pub patch_bias: bool,
    /// LayerNorm over the embeddings before the first block (CLIP's `pre_layrnorm`).
    #[serde(default)]
    pub pre_norm: bool,
    /// LayerNorm over the last block's output. LLaVA and TinyLLaVA take the penultimate
    /// block's raw output instead: such a tower is imported one block shorter and without it.
    #[serde(default = "yes")]
    pub post_norm: bool,
    /// The MLP's activation.
    #[serde(default)]
    pub act: VisionAct,
    /// A learned per-channel scale on each block's attention and MLP outputs before they are
    /// added to the residual stream (DINOv2's `layer_scale1/2`, CaiT's LayerScale).
    #[serde(default)]
    pub layer_scale: bool,
}

/// Activation between the two linear maps of a vision block's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VisionAct {
    /// Exact (erf) GELU: HF `gelu`; DINOv2.
    #[default]
    Gelu,
    /// tanh-approximated GELU: HF `gelu_pytorch_tanh`, SigLIP.
    GeluTanh,
    /// `x * sigmoid(1.702 x)`: HF `quick_gelu`, OpenAI CLIP.
    QuickGelu,
}

fn default_mean() -> [f32; 3] {
    [0.5, 0.5, 0.5]
}
fn default_std() -> [f32; 3] {
    [0.5, 0.5, 0.5]
}
fn yes() -> bool {
    true
}
fn default_ln_eps() -> f64 {
    1e-5
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Number of patch tokens.
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Tokens in the encoder's sequence: the patches, plus CLS when the tower has one.
    pub fn num_positions(&self) -> usize {
        self.num_patches() + usize::from(self.class_token)
    }
    /// Whether the features handed to the projector start with the CLS token.
    pub fn emits_cls(&self) -> bool {
        self.class_token && !self.drop_cls
    }
    /// Tokens handed to the projector (the encoder's sequence, less the first when dropped).
    pub fn num_visual_tokens(&self) -> usize {
        self.num_positions() - usize::from(self.drop_cls)
    }
}

/// mlp2x_gelu projector: `Linear(C, D) -> GELU -> Linear(D, D)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProjectorConfig {
    #[default]
    Mlp2xGelu,
}

/// Llama/Qwen2-style decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    /// Key/value heads (GQA); must divide `heads`.
    pub kv_heads: usize,
    pub intermediate: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_rms_eps")]
    pub rms_eps: f64,
    /// Share the input embedding with the output head.
    #[serde(default)]
    pub tie_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2 has it, Llama does not).
    #[serde(default)]
    pub qkv_bias: bool,
    /// Longest sequence RoPE tables are built for.
    #[serde(default = "default_max_pos")]
    pub max_positions: usize,
    /// Mixture-of-Experts feed-forward blocks in some layers; a dense decoder when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<super::MoeSpec>,
}

fn default_max_pos() -> usize {
    512
}

impl LlmConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// The same decoder with every feed-forward block dense (what an MoE model is upcycled from).
    pub fn dense(&self) -> LlmConfig {
        LlmConfig {
            moe: None,
            ..self.clone()
        }
    }

    /// Whether layer `i` has an MoE feed-forward block.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.moe
            .as_ref()
            .is_some_and(|m| m.placement.layers(self.layers).contains(&i))
    }
}

/// A whole multimodal model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllmConfig {
    pub vision: VisionConfig,
    #[serde(default)]
    pub projector: ProjectorConfig,
    pub llm: LlmConfig,
}

impl MllmConfig {
    /// Checks the shape constraints a config must meet before a model is built.
    pub fn validate(&self) -> Result<(), String> {
        let v = &self.vision;
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err(format!(
                "vision.image_size {} is not a multiple of vision.patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        v.preprocess.validate(v.image_size)?;
        if v.num_visual_tokens() == 0 {
            return Err(
                "vision: dropping the first token leaves no visual tokens (one patch, no CLS)"
                    .into(),
            );
        }
        if v.heads == 0 || !v.hidden.is_multiple_of(v.heads) {
            return Err(format!(
                "vision.hidden {} is not divisible by vision.heads {}",
                v.hidden, v.heads
            ));
        }
        let l = &self.llm;
        if l.heads == 0 || !l.hidden.is_multiple_of(l.heads) {
            return Err(format!(
                "llm.hidden {} is not divisible by llm.heads {}",
                l.hidden, l.heads
            ));
        }
        if l.kv_heads == 0 || !l.heads.is_multiple_of(l.kv_heads) {
            return Err(format!(
                "llm.heads {} is not a multiple of llm.kv_heads {}",
                l.heads, l.kv_heads
            ));
        }
        if let Some(m) = &l.moe {
            m.validate(l.layers)?;
        }
        if !l.head_dim().is_multiple_of(2) {
            return Err(format!(
                "llm head dim {} must be even for RoPE",
                l.head_dim()
            ));
        }
        Ok(())
    }
}
