//! The fused-linear distillation kernel (both LM heads + divergence, logits never whole)
//! against forming both models' logits and running the burn-ops divergence.

use burn::prelude::*;
use serde::Serialize;

use super::{MemoryProbe, fkl, interleaved_median_ms, normal};

/// One size of the fused-linear sweep.
#[derive(Debug, Clone, Serialize)]
pub struct FusedLinearBenchRow {
    pub tokens: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub chunk: usize,
    /// Median forward+backward (loss, then the gradients of hidden states and head weight), ms.
    pub fused_ms: f64,
    pub reference_ms: f64,
    /// Device memory reserved by one forward+backward beyond the inputs, MiB (measured in a
    /// fresh process).
    pub fused_mib: f64,
    pub reference_mib: f64,
    /// The head-weight gradient `[hidden, vocab]` itself, MiB: memory no variant can avoid.
    pub weight_grad_mib: f64,
    pub loss_diff: f64,
}

/// One forward+backward of the fused-linear loss (or its reference: the logits formed, then
/// burn ops); returns the loss.
pub(super) fn linear_pass(
    hid: &Tensor<2>,
    w: &Tensor<2>,
    teacher: &(Tensor<2>, Tensor<2>),
    rw: &Tensor<1>,
    fused: bool,
    chunk: usize,
) -> f32 {
    use crate::distill::divergence::{linear_divergence, token_divergence};
    let (spec, kernels) = fkl(fused);
    let hs = hid.clone().require_grad();
    let ws = w.clone().require_grad();
    let (th, tw) = teacher.clone();
    let loss = if fused {
        linear_divergence(
            hs.clone(),
            ws.clone(),
            th,
            tw,
            rw.clone(),
            &spec,
            kernels,
            chunk,
        )
    } else {
        // both models' logits formed whole, then the burn-ops divergence
        let s = hs.clone().matmul(ws.clone());
        let t = th.matmul(tw);
        (token_divergence(s, t, &spec, kernels) * rw.clone()).sum()
    };
    let grads = loss.clone().backward();
    let _ = hs
        .grad(&grads)
        .expect("hidden gradient")
        .slice([0..1, 0..1])
        .into_scalar::<f32>();
    let _ = ws
        .grad(&grads)
        .expect("weight gradient")
        .slice([0..1, 0..1])
        .into_scalar::<f32>();
    loss.into_scalar::<f32>()
}

/// Hidden states and head weight of the student, those of the teacher (the same widths), and
/// row weights (a plain mean) of the fused-linear sweep.
pub(super) fn linear_inputs(
    n: usize,
    h: usize,
    v: usize,
    ad: &Device,
) -> (Tensor<2>, Tensor<2>, (Tensor<2>, Tensor<2>), Tensor<1>) {
    let seed = (n * 7 + h * 3 + v) as u64;
    (
        normal([n, h], seed, 1.0, ad),
        normal([h, v], seed + 1, 1.0 / (h as f64).sqrt(), ad),
        (
            normal([n, h], seed + 2, 1.0, ad),
            normal([h, v], seed + 3, 3.0 / (h as f64).sqrt(), ad),
        ),
        Tensor::<1>::full([n], 1.0 / n as f32, ad),
    )
}

/// Forward KL through the head over `(tokens, hidden, vocab)` sizes on a wgpu device: the
/// fused-linear kernel path (`chunk` rows at a time) against forming the logits and running
/// burn ops (memory as in [`distill_sweep`]).
pub fn fused_linear_sweep(
    device: &Device,
    sizes: &[(usize, usize, usize)],
    chunk: usize,
    repeats: usize,
    memory: &mut dyn FnMut(MemoryProbe) -> crate::Result<f64>,
    progress: &mut dyn FnMut(&FusedLinearBenchRow),
) -> crate::Result<Vec<FusedLinearBenchRow>> {
    let ad = device.clone().autodiff();
    let mut rows = Vec::new();
    for &(n, h, v) in sizes {
        let (hid, w, t, rw) = linear_inputs(n, h, v, &ad);
        let fl = linear_pass(&hid, &w, &t, &rw, true, chunk);
        let rl = linear_pass(&hid, &w, &t, &rw, false, chunk);
        let ms = interleaved_median_ms(
            repeats,
            &mut [
                &mut || {
                    linear_pass(&hid, &w, &t, &rw, true, chunk);
                },
                &mut || {
                    linear_pass(&hid, &w, &t, &rw, false, chunk);
                },
            ],
        );
        let (fused_ms, reference_ms) = (ms[0], ms[1]);
        let probe = |kernel| MemoryProbe::FusedLinear {
            tokens: n,
            hidden: h,
            vocab: v,
            chunk,
            kernel,
        };
        let row = FusedLinearBenchRow {
            tokens: n,
            hidden: h,
            vocab: v,
            chunk,
            fused_ms,
            reference_ms,
            fused_mib: memory(probe(true))?,
            reference_mib: memory(probe(false))?,
            weight_grad_mib: (h * v * 4) as f64 / (1024.0 * 1024.0),
            loss_diff: (fl - rl).abs() as f64,
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The generated `docs/results/kernels.md` section for the fused-linear loss.
pub fn fused_linear_table(
    device_name: &str,
    rows: &[FusedLinearBenchRow],
    command: &str,
) -> String {
    let mut md = format!(
        "## Fused-linear distillation loss (forward KL through the head): kernel path vs logits + burn ops\n\n\
         Device: **{device_name}**. Generated by `{command}`.\n\
         Time: median forward+backward (loss, gradients of the hidden states and of the head \
         weight). Memory: device memory reserved during one forward+backward beyond the inputs; \
         the head-weight gradient column is the share of it that any variant must hold.\n\n\
         | tokens | hidden | vocab | chunk | fused ms | burn ops ms | speed-up | fused MiB | burn ops MiB | memory ratio | weight grad MiB | loss diff |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2}x | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1e} |\n",
            r.tokens,
            r.hidden,
            r.vocab,
            r.chunk,
            r.fused_ms,
            r.reference_ms,
            r.reference_ms / r.fused_ms,
            r.fused_mib,
            r.reference_mib,
            r.reference_mib / r.fused_mib.max(1e-9),
            r.weight_grad_mib,
            r.loss_diff
        ));
    }
    md
}
