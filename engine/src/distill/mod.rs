//! Knowledge distillation (LLaVA-KD, LLaVADI): divergences between teacher and student token
//! distributions, relation distillation over visual tokens, hidden-state alignment, the
//! preference losses and the vocabulary policy. The references are plain burn ops; the
//! divergences switch to the fused kernels of `shaders/` (which implement the same specs) when
//! the run's [`crate::backend::kernels::Kernels`] says so. The settings these losses read are
//! recipe types in `config`.

pub(crate) mod divergence;
mod hidden;
mod preference;
mod relation;
pub mod sparse;
mod vocab;

pub use crate::config::PreferenceLoss;
pub use divergence::{Divergence, DivergenceSpec, masked_divergence, token_divergence, zscore};
pub use hidden::{HiddenProjection, hidden_mse};
pub use preference::{PairLogps, preference_loss, sequence_logps};
pub use relation::{correlation_loss, linear_self_correlation, relation_loss, self_correlation};
pub use vocab::VocabAlignment;

#[cfg(test)]
mod tests;
