//! Process-wide counts of Condenser's own kernel launches, by family. A training step on wgpu
//! that silently fell back to the burn-ops reference would still train and pass every A/B test
//! (both sides would be the reference); these counters let a test assert that the kernels really
//! ran, and that `--kernels reference` ran none. Relaxed atomics: one add per dispatch, next to
//! a GPU launch that costs microseconds.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The kernel families, one per launch site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// Flash attention, forward and backward (`attention.rs`).
    Attention,
    /// Fused cross-entropy over vocabulary slabs (`cross_entropy.rs`).
    CrossEntropy,
    /// The distillation divergences, forward and backward (`distill.rs`).
    Distill,
    /// MoE routing, gather/scatter and expert GEMMs (`moe_kernel.rs`).
    Moe,
}

static COUNTS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Counts one dispatch of `family`; called right before each `client.launch`.
pub(super) fn record(family: Family) {
    COUNTS[family as usize].fetch_add(1, Ordering::Relaxed);
}

/// Launches since the process started, by family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KernelLaunches {
    pub attention: u64,
    pub cross_entropy: u64,
    pub distill: u64,
    pub moe: u64,
}

impl KernelLaunches {
    /// Launches between `earlier` and `self`.
    pub fn since(self, earlier: KernelLaunches) -> KernelLaunches {
        KernelLaunches {
            attention: self.attention - earlier.attention,
            cross_entropy: self.cross_entropy - earlier.cross_entropy,
            distill: self.distill - earlier.distill,
            moe: self.moe - earlier.moe,
        }
    }

    pub fn total(self) -> u64 {
        self.attention + self.cross_entropy + self.distill + self.moe
    }
}

/// The counts so far.
pub fn kernel_launches() -> KernelLaunches {
    let get = |f: Family| COUNTS[f as usize].load(Ordering::Relaxed);
    KernelLaunches {
        attention: get(Family::Attention),
        cross_entropy: get(Family::CrossEntropy),
        distill: get(Family::Distill),
        moe: get(Family::Moe),
    }
}
