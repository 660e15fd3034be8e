//! Scaled dot-product attention as plain burn ops. This is the reference the WGSL flash
//! kernel will replace (and be tested against); it materialises the `[B, H, Tq, Tk]` scores.

use burn::prelude::*;
use burn::tensor::activation::softmax;

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
