//! Knowledge distillation (LLaVA-KD, LLaVADI): divergences between teacher and student token
//! distributions, relation distillation over visual tokens, hidden-state alignment, and the
//! vocabulary policy. Plain burn ops; the fused kernels of `shaders/` implement the same specs.

pub(crate) mod divergence;
mod hidden;
mod preference;
mod relation;
mod vocab;

pub use divergence::{Divergence, DivergenceSpec, masked_divergence, token_divergence, zscore};
pub use hidden::{HiddenProjection, hidden_mse};
pub use preference::{PairLogps, PreferenceLoss, preference_loss, sequence_logps};
pub use relation::{relation_loss, self_correlation};
pub use vocab::VocabAlignment;

#[cfg(test)]
mod tests;
