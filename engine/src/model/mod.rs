//! The multimodal model: [`VisionEncoder`] (ViT) -> [`Projector`] (mlp2x_gelu) -> [`Llm`]
//! (Llama/Qwen2-style decoder), joined by [`Mllm`]. Teacher and student are two instances of
//! the same types with different configs.

pub(crate) mod attention;
mod generate;
mod head_loss;
pub(crate) mod init;
mod llm;
mod mllm;
mod mlp;
pub mod moe;
mod projector;
mod rope;
mod vision;

pub use crate::rng::Rng;
pub use attention::{AttnMask, attention, attention_reference, causal_bias, padding_bias};
pub use generate::{GenerateOptions, Sampling};
pub use head_loss::{
    FUSED_CE_CHUNK_BYTES, HEAD_CHUNK_BYTES, LabelledRows, cross_entropy_chunk_rows,
    head_chunk_rows, labelled_cross_entropy, labelled_log_probs, sequence_log_probs,
};
pub use llm::{DecoderLayer, Ffn, KvCache, Llm, MoeTrace};
pub use mllm::{Mllm, MllmBatch, ParamCounts, Visual, masked_cross_entropy, masked_mean};
pub use mlp::Mlp;
pub use projector::Projector;
pub use rope::Rope;
pub use vision::VisionEncoder;

#[cfg(test)]
pub(crate) mod tests;
