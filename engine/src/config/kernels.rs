//! The recipe's kernel policy (`kernels = "auto" | "reference"`).

use serde::{Deserialize, Serialize};

/// Whether the fused kernels run where they can (`auto`, the default) or the plain burn-ops
/// reference runs everywhere (`reference`), for A/B runs and for bisecting a numerical
/// difference. A run resolves it once against its device (`backend::kernels::Kernels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelPolicy {
    #[default]
    Auto,
    Reference,
}

impl std::str::FromStr for KernelPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "reference" => Ok(Self::Reference),
            other => Err(format!(
                "unknown kernels policy {other:?}: expected auto or reference"
            )),
        }
    }
}
