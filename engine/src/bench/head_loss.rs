//! The language-model head loss three ways, on the device of the run (wgpu or the CPU):
//! - **full**: the path before the labelled-position loss: logits of every position of the
//!   batch `[positions, V]`, log-softmax, the targets picked under the loss mask;
//! - **chunked ops**: the labelled positions gathered, the head and log-softmax in chunks on
//!   plain burn ops (the CPU path, and the `reference` kernel policy);
//! - **fused**: the same rows through the fused-linear cross-entropy kernel (wgpu only).

use burn::prelude::*;
use serde::Serialize;

use super::{MemoryProbe, interleaved_median_ms, normal};
use crate::backend::kernels::Kernels;
use crate::model::{
    LabelledRows, cross_entropy_chunk_rows, labelled_cross_entropy, masked_cross_entropy,
};

/// One size of the head-loss sweep: a batch of `positions` tokens of which `labelled` carry a
/// label, hidden width and vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HeadLossSize {
    pub positions: usize,
    pub labelled: usize,
    pub hidden: usize,
    pub vocab: usize,
}

impl std::fmt::Display for HeadLossSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}x{}x{}",
            self.positions, self.labelled, self.hidden, self.vocab
        )
    }
}

/// Which way the head loss is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadLossPath {
    Full,
    ChunkedOps,
    Fused,
}

/// One measured size; `None` where a path does not run (no kernel on the CPU, or full logits
/// larger than the device's largest buffer).
#[derive(Debug, Clone, Serialize)]
pub struct HeadLossBenchRow {
    pub size: HeadLossSize,
    /// Rows per chunk of the fused path on wgpu, of the chunked ops on the CPU.
    pub chunk: usize,
    /// Median forward+backward (loss, gradients of hidden states and head), ms.
    pub fused_ms: Option<f64>,
    pub chunked_ms: f64,
    pub full_ms: Option<f64>,
    /// Memory one forward+backward takes beyond its inputs, MiB, in a fresh process.
    pub fused_mib: Option<f64>,
    pub chunked_mib: f64,
    pub full_mib: Option<f64>,
    /// The head-weight gradient `[hidden, vocab]`, MiB: memory every path must hold.
    pub weight_grad_mib: f64,
    /// Largest |loss - full loss| (or vs the chunked loss where full does not run).
    pub loss_diff: f64,
}

/// Hidden states `[1, positions, hidden]`, head `[hidden, vocab]`, targets and a loss mask that
/// labels `labelled` positions spread over the batch.
pub(super) fn inputs(s: HeadLossSize, ad: &Device) -> (Tensor<3>, Tensor<2>, Vec<i64>, Vec<f32>) {
    let seed = (s.positions * 7 + s.hidden * 3 + s.vocab) as u64;
    let mut rng = crate::rng::Rng::new(seed + 2);
    let targets: Vec<i64> = (0..s.positions)
        .map(|_| rng.below(s.vocab) as i64)
        .collect();
    let mut mask = vec![0.0f32; s.positions];
    let step = s.positions as f64 / s.labelled.max(1) as f64;
    for i in 0..s.labelled.min(s.positions) {
        mask[(i as f64 * step) as usize] = 1.0;
    }
    (
        normal([1, s.positions, s.hidden], seed, 1.0, ad),
        normal(
            [s.hidden, s.vocab],
            seed + 1,
            1.0 / (s.hidden as f64).sqrt(),
            ad,
        ),
        targets,
        mask,
    )
}

/// One forward+backward of `path`; returns the loss.
pub(super) fn pass(
    h: &Tensor<3>,
    w: &Tensor<2>,
    targets: &[i64],
    mask: &[f32],
    path: HeadLossPath,
) -> f32 {
    let [_, t, _] = h.dims();
    let v = w.dims()[1];
    let device = h.device();
    let hs = h.clone().require_grad();
    let ws = w.clone().require_grad();
    let loss = match path {
        HeadLossPath::Full => {
            let logits = hs.clone().matmul(ws.clone().unsqueeze_dim(0));
            let tg =
                Tensor::<2, Int>::from_data(TensorData::new(targets.to_vec(), [1, t]), &device);
            let m = Tensor::<2>::from_data(TensorData::new(mask.to_vec(), [1, t]), &device);
            masked_cross_entropy(logits, tg, m)
        }
        HeadLossPath::ChunkedOps | HeadLossPath::Fused => {
            let at = LabelledRows::from_mask(mask, targets);
            let kernels = if path == HeadLossPath::Fused {
                Kernels::Fused
            } else {
                Kernels::Reference
            };
            let chunk = cross_entropy_chunk_rows(v, kernels);
            labelled_cross_entropy(hs.clone(), ws.clone(), &at, chunk, kernels)
        }
    };
    let grads = loss.clone().backward();
    let _ = hs
        .grad(&grads)
        .expect("hidden gradient")
        .slice([0..1, 0..1, 0..1])
        .into_scalar::<f32>();
    let _ = ws
        .grad(&grads)
        .expect("weight gradient")
        .slice([0..1, 0..1])
        .into_scalar::<f32>();
    loss.into_scalar::<f32>()
}

/// The sweep on `device`: the fused path where the device runs the kernels, the full path
/// where its logits fit `max_buffer` bytes.
pub fn head_loss_sweep(
    device: &Device,
    sizes: &[HeadLossSize],
    max_buffer: u64,
    repeats: usize,
    memory: &mut dyn FnMut(MemoryProbe) -> crate::Result<f64>,
    progress: &mut dyn FnMut(&HeadLossBenchRow),
) -> crate::Result<Vec<HeadLossBenchRow>> {
    let ad = device.clone().autodiff();
    let kernel = Kernels::for_device(&ad).fused();
    let mut rows = Vec::new();
    for &size in sizes {
        let weight_bytes = (size.hidden * size.vocab * 4) as u64;
        if weight_bytes > max_buffer {
            // the head (and its gradient) cannot exist on this device at all: a model this size
            // is refused by the memory plan before training, so there is nothing to measure
            log::warn!(
                "head loss {size}: skipped, the [{}, {}] head ({:.1} MiB) exceeds the device's \
                 largest buffer ({:.1} MiB)",
                size.hidden,
                size.vocab,
                weight_bytes as f64 / 1048576.0,
                max_buffer as f64 / 1048576.0
            );
            continue;
        }
        let (h, w, targets, mask) = inputs(size, &ad);
        // the reference forms several logit-sized tensors: leave it out beyond half the limit
        // (at exactly the limit it failed inside lavapipe)
        let full_fits = 2 * (size.positions * size.vocab * 4) as u64 <= max_buffer;
        let mut paths = vec![HeadLossPath::ChunkedOps];
        if kernel {
            paths.push(HeadLossPath::Fused);
        }
        if full_fits {
            paths.push(HeadLossPath::Full);
        }
        let losses: Vec<f32> = paths
            .iter()
            .map(|&p| pass(&h, &w, &targets, &mask, p))
            .collect();
        let mut closures: Vec<Box<dyn FnMut()>> = paths
            .iter()
            .map(|&p| {
                let (h, w, targets, mask) = (&h, &w, &targets, &mask);
                Box::new(move || {
                    pass(h, w, targets, mask, p);
                }) as Box<dyn FnMut()>
            })
            .collect();
        let mut refs: Vec<&mut dyn FnMut()> =
            closures.iter_mut().map(|c| c.as_mut() as _).collect();
        let ms = interleaved_median_ms(repeats, &mut refs);
        drop(refs);
        drop(closures);
        let at = |p: HeadLossPath| paths.iter().position(|&q| q == p);
        let mut mib = |p: HeadLossPath| -> crate::Result<Option<f64>> {
            match at(p) {
                Some(_) => memory(MemoryProbe::HeadLoss {
                    size,
                    path: p,
                    cpu: !Kernels::for_device(device).fused(),
                })
                .map(Some),
                None => Ok(None),
            }
        };
        let baseline = losses[at(HeadLossPath::Full).unwrap_or(0)];
        let row = HeadLossBenchRow {
            size,
            chunk: cross_entropy_chunk_rows(size.vocab, Kernels::for_device(device)),
            fused_ms: at(HeadLossPath::Fused).map(|i| ms[i]),
            chunked_ms: ms[0],
            full_ms: at(HeadLossPath::Full).map(|i| ms[i]),
            fused_mib: mib(HeadLossPath::Fused)?,
            chunked_mib: mib(HeadLossPath::ChunkedOps)?.unwrap_or(0.0),
            full_mib: mib(HeadLossPath::Full)?,
            weight_grad_mib: (size.hidden * size.vocab * 4) as f64 / (1024.0 * 1024.0),
            loss_diff: losses
                .iter()
                .map(|l| (l - baseline).abs() as f64)
                .fold(0.0, f64::max),
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The generated results section for the head loss.
pub fn head_loss_table(device_name: &str, rows: &[HeadLossBenchRow], command: &str) -> String {
    let mut md = format!(
        "## Language-model head loss: fused-linear cross-entropy vs chunked burn ops vs full logits\n\n\
         Device: **{device_name}**. Generated by `{command}`.\n\
         A batch of `positions` tokens of which `labelled` carry a label. *full*: the logits of \
         every position, log-softmax, masked mean (the path before the labelled-position loss); \
         *chunked ops*: the labelled rows gathered, then a chunk at a time on burn ops the \
         head, the loss and the chunk's logit gradient, folded into the hidden-state and head \
         gradients in the forward pass (the GPU kernel's scheme, so no chunk is kept for the \
         backward); *fused*: the same rows through `shaders/cross_entropy.wgsl` (wgpu only). \
         Time: median forward+backward (loss, gradients of the hidden states and the head). \
         Memory: what one forward+backward takes beyond its inputs, in a fresh process (device \
         pool on wgpu, resident-set high-water mark on the CPU); *beyond weight grad* is the \
         fused (or, on the CPU, chunked) figure less the `[hidden, vocab]` head gradient every \
         path holds. `-`: the path does not run here (no kernel on the CPU; full logits larger \
         than the device's largest buffer).\n\n\
         | positions | labelled | hidden | vocab | chunk | fused ms | chunked ops ms | full ms | fused MiB | chunked ops MiB | full MiB | weight grad MiB | beyond weight grad MiB | loss diff |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let opt = |x: Option<f64>, digits: usize| match x {
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    };
    for r in rows {
        let s = r.size;
        let lean = r.fused_mib.unwrap_or(r.chunked_mib) - r.weight_grad_mib;
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {:.1} | {} | {:.1} | {:.1} | {:.1e} |\n",
            s.positions,
            s.labelled,
            s.hidden,
            s.vocab,
            r.chunk,
            opt(r.fused_ms, 2),
            r.chunked_ms,
            opt(r.full_ms, 2),
            opt(r.fused_mib, 1),
            r.chunked_mib,
            opt(r.full_mib, 1),
            r.weight_grad_mib,
            lean,
            r.loss_diff
        ));
    }
    md
}
