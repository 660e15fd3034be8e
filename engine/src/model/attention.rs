//! Scaled dot-product attention. [`attention`] runs Condenser's flash kernels on wgpu devices
//! (`backend::kernels`, `O(T)` memory) and otherwise [`attention_reference`], plain burn ops that
//! materialise the `[B, H, Tq, Tk]` scores and are the kernels' test oracle.

use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::backend::kernels::{self, Kernels};

/// Which keys each query may see: a key-padding mask and causality, kept structured (not as an
/// additive `[.., Tq, Tk]` bias) so the flash kernels never need a `T x T` tensor.
#[derive(Debug, Clone)]
pub struct AttnMask {
    /// `[B, Tk]`, 1 for real keys and 0 for padding; `None` when every key is real.
    pub keys: Option<Tensor<2>>,
    /// Query i (at absolute position `Tk - Tq + i`) sees keys up to its own position.
    pub causal: bool,
}

impl AttnMask {
    /// Every query sees every key (the vision encoder).
    pub fn full() -> AttnMask {
        AttnMask {
            keys: None,
            causal: false,
        }
    }

    /// Causal over a `[B, Tk]` key mask (the decoder).
    pub fn causal(keys: Tensor<2>) -> AttnMask {
        AttnMask {
            keys: Some(keys),
            causal: true,
        }
    }

    /// The additive bias `[B or 1, 1, Tq, Tk]` the reference adds to the scores.
    pub fn bias(&self, tq: usize, tk: usize, device: &Device) -> Tensor<4> {
        let pad = self.keys.clone().map(padding_bias);
        match (pad, self.causal) {
            (Some(p), true) => p + causal_bias(tq, tk, device),
            (Some(p), false) => p,
            (None, true) => causal_bias(tq, tk, device),
            (None, false) => Tensor::zeros([1, 1, 1, tk], device),
        }
    }
}

/// `softmax(q k^T / sqrt(d) + mask) v` (shapes as [`attention_reference`]): the flash kernels
/// where the run resolved [`Kernels::Fused`] and the shape fits them (head dim a multiple of 4
/// up to 128), else the reference. The two differ only on a query that sees no key at all (a padding
/// position), which no loss reads: the kernel returns 0 there, the reference an average.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: &AttnMask,
    kernels: Kernels,
) -> Tensor<4> {
    let [b, h, tq, d] = q.dims();
    let tk = k.dims()[2];
    let device = q.device();
    let hk = k.dims()[1];
    let fits = kernels::flash_attention_unsupported(b, h, hk, tq, tk, d, mask.causal).is_none();
    if fits && kernels.fused() {
        let keys = mask
            .keys
            .clone()
            .unwrap_or_else(|| Tensor::ones([b, tk], &device));
        return kernels::flash_attention(q, k, v, keys, mask.causal, 1.0 / (d as f32).sqrt());
    }
    attention_reference(q, k, v, mask.bias(tq, tk, &device))
}

/// Large negative bias for masked positions (finite, so fully masked rows stay NaN-free).
pub const MASKED: f32 = -1.0e9;

/// `softmax(q k^T / sqrt(d) + bias) v`.
///
/// Shapes: `q [B, H, Tq, d]`, `k`/`v [B, Hkv, Tk, d]` with `H` a multiple of `Hkv` (grouped-query
/// heads are expanded here), `bias` broadcastable to `[B, 1, Tq, Tk]`.
pub fn attention_reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
    let [b, h, _, d] = q.dims();
    let [_, hkv, tk, _] = k.dims();
    let (k, v) = if h == hkv {
        (k, v)
    } else {
        let g = h / hkv;
        let expand = |t: Tensor<4>| {
            t.unsqueeze_dim::<5>(2)
                .expand([b, hkv, g, tk, d])
                .reshape([b, h, tk, d])
        };
        (expand(k), expand(v))
    };
    let scores = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar(1.0 / (d as f64).sqrt())
        + bias;
    softmax(scores, 3).matmul(v)
}

/// Additive causal bias `[1, 1, tq, tk]` for queries at positions `tk - tq .. tk`.
pub fn causal_bias(tq: usize, tk: usize, device: &Device) -> Tensor<4> {
    // query i sits at absolute position tk - tq + i and may see keys 0 ..= that position
    let offset = tk - tq;
    let bias: Vec<f32> = (0..tq)
        .flat_map(|i| (0..tk).map(move |j| if j > offset + i { MASKED } else { 0.0 }))
        .collect();
    Tensor::from_data(TensorData::new(bias, [1, 1, tq, tk]), device)
}

/// Additive key-padding bias `[B, 1, 1, Tk]` from a `[B, Tk]` 0/1 mask (1 = real token).
pub fn padding_bias(mask: Tensor<2>) -> Tensor<4> {
    let [b, tk] = mask.dims();
    (mask.neg() + 1.0).mul_scalar(MASKED).reshape([b, 1, 1, tk])
}
