//! The MoE sweep: one expert layer's forward+backward through the routing kernels, against the
//! plain burn-ops sparse reference (host routing, per-expert select, FFN and scatter-add) and
//! against running every expert densely on every token (the cost top-k routing exists to
//! avoid; LLaVA-MoD's "dense" comparison point), all on the same device in the same run.

use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};
use serde::Serialize;

use super::{MemoryProbe, interleaved_median_ms, max_abs_diff, normal};
use crate::config::MoeConfig;
use crate::model::moe::MoeMlp;
use crate::rng::Rng;

/// One layer size of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MoeSize {
    pub tokens: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub experts: usize,
    pub top_k: usize,
}

/// Which composition a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MoePath {
    /// The routing kernels (top-k, counting sort, gather GEMMs).
    Kernel,
    /// `MoeMlp` on plain burn ops: host routing, per-expert select / FFN / scatter-add.
    Sparse,
    /// Every expert on every token, weighted by the full router softmax, as three batched
    /// matmuls: what top-k routing saves.
    Dense,
}

#[derive(Debug, Clone, Serialize)]
pub struct MoeBenchRow {
    pub size: MoeSize,
    /// Median forward+backward time, milliseconds.
    pub kernel_ms: f64,
    pub sparse_ms: f64,
    pub dense_ms: f64,
    /// Device memory reserved by one forward+backward, MiB (measured in a fresh process).
    pub kernel_mib: f64,
    pub sparse_mib: f64,
    pub dense_mib: f64,
    /// Largest |kernel - sparse reference| over the layer's output.
    pub out_diff: f64,
}

impl MoeBenchRow {
    /// Kernel time over dense time (the target: at most 0.4 for top-2 of 8).
    pub fn dense_ratio(&self) -> f64 {
        self.kernel_ms / self.dense_ms
    }
    pub fn sparse_speedup(&self) -> f64 {
        self.sparse_ms / self.kernel_ms
    }
}

/// The layer (seeded, capacity high enough that nothing is dropped, so all three paths compute
/// the same function up to the dense path's extra experts) and its input `[1, tokens, hidden]`.
pub(super) fn moe_inputs(s: MoeSize, ad: &Device) -> (MoeMlp, Tensor<3>) {
    let no_drops = s.experts as f64 / s.top_k as f64;
    let config = MoeConfig {
        experts: s.experts,
        top_k: s.top_k,
        capacity_train: no_drops,
        capacity_eval: no_drops,
    };
    let seed = (s.tokens * 7 + s.hidden * 3 + s.experts) as u64;
    let moe = MoeMlp::new(s.hidden, s.intermediate, config, &mut Rng::new(seed), ad);
    let x = normal([1, s.tokens, s.hidden], seed + 1, 1.0, ad);
    (moe, x)
}

/// Every expert on every token, weighted by the router softmax.
fn dense_forward(moe: &MoeMlp, x: Tensor<3>) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let n = b * t;
    let e = moe.experts.len();
    let x2 = x.reshape([n, d]);
    let probs = softmax(moe.router.forward(x2.clone()), 1); // [n, e]
    let (gate_up, down) = moe.stacked_weights();
    let inter = down.dims()[1];
    let xe = x2.unsqueeze_dim::<3>(0).expand([e, n, d]);
    let h = xe.matmul(gate_up); // [e, n, 2I]
    let act = silu(h.clone().narrow(2, 0, inter)) * h.narrow(2, inter, inter);
    let out = act.matmul(down); // [e, n, d]
    let w = probs.transpose().reshape([e, n, 1]);
    (out * w).sum_dim(0).reshape([b, t, d])
}

/// One forward+backward of `sum(y)`; returns y on the host when `keep`.
pub(super) fn moe_pass(moe: &MoeMlp, x: &Tensor<3>, path: MoePath, keep: bool) -> Vec<f32> {
    let n = x.dims()[1];
    let x = x.clone().require_grad();
    let y = match path {
        MoePath::Dense => dense_forward(moe, x.clone()),
        MoePath::Kernel | MoePath::Sparse => {
            let policy = super::path(path == MoePath::Kernel);
            let factor = moe.config.capacity_train;
            moe.forward_at(x.clone(), &vec![true; n], factor, policy).y
        }
    };
    let grads = y.clone().sum().backward();
    let gx = x.grad(&grads).expect("input gradient");
    let gw = moe.experts[0]
        .down_proj
        .weight
        .grad(&grads)
        .expect("expert gradient");
    // reading one element waits for the whole gradient
    let _ = gx.slice([0..1, 0..1, 0..1]).into_scalar::<f32>();
    let _ = gw.slice([0..1, 0..1]).into_scalar::<f32>();
    if keep {
        y.into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// MoE layer forward+backward over `sizes` on a wgpu device (`device` must be one; the caller
/// checks): kernels against the sparse and the dense burn-ops compositions, memory as in
/// [`super::distill_sweep`].
pub fn moe_sweep(
    device: &Device,
    sizes: &[MoeSize],
    repeats: usize,
    memory: &mut dyn FnMut(MemoryProbe) -> crate::Result<f64>,
    progress: &mut dyn FnMut(&MoeBenchRow),
) -> crate::Result<Vec<MoeBenchRow>> {
    let ad = device.clone().autodiff();
    let mut rows = Vec::new();
    for &size in sizes {
        let (moe, x) = moe_inputs(size, &ad);
        // warm-ups compile the kernels outside the timings
        let ko = moe_pass(&moe, &x, MoePath::Kernel, true);
        let so = moe_pass(&moe, &x, MoePath::Sparse, true);
        moe_pass(&moe, &x, MoePath::Dense, false);
        let out_diff = max_abs_diff(&ko, &so);
        let ms = interleaved_median_ms(
            repeats,
            &mut [
                &mut || {
                    moe_pass(&moe, &x, MoePath::Kernel, false);
                },
                &mut || {
                    moe_pass(&moe, &x, MoePath::Sparse, false);
                },
                &mut || {
                    moe_pass(&moe, &x, MoePath::Dense, false);
                },
            ],
        );
        let (kernel_ms, sparse_ms, dense_ms) = (ms[0], ms[1], ms[2]);
        let probe = |path| MemoryProbe::Moe { size, path };
        let row = MoeBenchRow {
            size,
            kernel_ms,
            sparse_ms,
            dense_ms,
            kernel_mib: memory(probe(MoePath::Kernel))?,
            sparse_mib: memory(probe(MoePath::Sparse))?,
            dense_mib: memory(probe(MoePath::Dense))?,
            out_diff,
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The generated `docs/results/kernels.md` section for the MoE layer.
pub fn moe_table(device_name: &str, rows: &[MoeBenchRow], command: &str) -> String {
    let mut md = format!(
        "## MoE expert layer (SwiGLU experts): routing kernels vs burn ops, sparse and dense\n\n\
         Device: **{device_name}**. Generated by `{command}`.\n\
         Time: median forward+backward of one layer (gradients of the input, the router and \
         every expert), nothing dropped. *kernels*: top-k, counting sort and gather GEMMs in \
         WGSL; *sparse*: the same routing on plain burn ops (host decisions, per-expert \
         select / FFN / scatter-add); *dense*: every expert on every token weighted by the \
         router softmax (three batched matmuls). Memory: device memory reserved during one \
         forward+backward beyond the inputs, each in a fresh process.\n\n\
         | tokens | hidden | inter | experts | top-k | kernels ms | sparse ms | dense ms | kernels / dense | vs sparse | kernels MiB | sparse MiB | dense MiB | out diff |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        let s = r.size;
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2}x faster | {:.1} | {:.1} | {:.1} | {:.1e} |\n",
            s.tokens,
            s.hidden,
            s.intermediate,
            s.experts,
            s.top_k,
            r.kernel_ms,
            r.sparse_ms,
            r.dense_ms,
            r.dense_ratio(),
            r.sparse_speedup(),
            r.kernel_mib,
            r.sparse_mib,
            r.dense_mib,
            r.out_diff
        ));
    }
    md
}
