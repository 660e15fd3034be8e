//! Resizing a tower's learned position embeddings to another patch grid, as transformers'
//! `interpolate_pos_encoding` does (DINOv2 always, CLIP/SigLIP on request): the patch positions
//! seen as a `[C, g, g]` image, resampled bicubically (PyTorch's `interpolate(mode="bicubic",
//! align_corners=False)`, cubic coefficient -0.75, edge taps clamped), leading tokens (CLS)
//! kept as they are. Done once on import, so the encoder itself only ever sees its own grid.

use super::safetensors::HostTensor;

/// PyTorch's cubic convolution coefficient.
const A: f32 = -0.75;

/// The four tap weights for fractional offset `t` in [0, 1).
fn cubic_weights(t: f32) -> [f32; 4] {
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For each output index along an axis of `n_in` -> `n_out`: the four clamped source indices and
/// their weights (half-pixel centres; a cubic source index is not clamped before the floor,
/// as in PyTorch).
fn taps(n_in: usize, n_out: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|o| {
            let src = scale * (o as f32 + 0.5) - 0.5;
            let base = src.floor();
            let w = cubic_weights(src - base);
            let idx =
                [-1i64, 0, 1, 2].map(|d| (base as i64 + d).clamp(0, n_in as i64 - 1) as usize);
            (idx, w)
        })
        .collect()
}

/// `positions` (any shape whose product of leading axes is `rows` and last axis `C`) holding
/// `leading` extra tokens and then a square grid of patch positions, resized to `grid x grid`
/// patches. `None` when the patch count is not a square (the caller reports the mismatch).
pub(crate) fn resize_positions(
    positions: &HostTensor,
    leading: usize,
    grid: usize,
) -> Option<HostTensor> {
    let c = *positions.shape.last()?;
    let rows = positions.values.len() / c.max(1);
    let patches = rows.checked_sub(leading)?;
    let side = (patches as f64).sqrt().round() as usize;
    if side * side != patches || side == 0 || grid == 0 {
        return None;
    }
    let src = &positions.values;
    let mut out = src[..leading * c].to_vec();
    out.reserve(grid * grid * c);
    let (ty, tx) = (taps(side, grid), taps(side, grid));
    for (iy, wy) in &ty {
        for (ix, wx) in &tx {
            for ch in 0..c {
                // along x within each of the four rows, then along y (PyTorch's order)
                let mut v = 0.0f32;
                for (ky, &y) in iy.iter().enumerate() {
                    let row = leading + y * side;
                    let mut r = 0.0f32;
                    for (kx, &x) in ix.iter().enumerate() {
                        r += src[(row + x) * c + ch] * wx[kx];
                    }
                    v += r * wy[ky];
                }
                out.push(v);
            }
        }
    }
    let mut shape = positions.shape.clone();
    let n = shape.len();
    // keep the stored rank: [1, T, C] stays three-dimensional, [T, C] two
    shape[n - 2] = leading + grid * grid;
    for d in shape.iter_mut().take(n - 2) {
        *d = 1;
    }
    Some(HostTensor { shape, values: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weights_sum_to_one_and_an_unchanged_grid_is_the_identity() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let w = cubic_weights(t);
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let p = HostTensor {
            shape: vec![1, 1 + 9, 2],
            values: (0..20).map(|i| i as f32 * 0.3 - 1.0).collect(),
        };
        let same = resize_positions(&p, 1, 3).unwrap();
        assert_eq!(same.shape, vec![1, 10, 2]);
        for (a, b) in same.values.iter().zip(&p.values) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    /// Values PyTorch 2.15 gives for `interpolate(x, size, mode="bicubic",
    /// align_corners=False)`: a ramp 4 x 4 -> 8 x 8 (one row; the -0.75 kernel does not keep
    /// a ramp straight, so this checks the coefficient and the edge clamping) and
    /// `arange(16)^1.5` 4 x 4 -> 3 x 3 (downsampling, non-integer source positions).
    #[test]
    fn matches_pytorch_bicubic_and_keeps_cls() {
        let ramp = HostTensor {
            shape: vec![17, 1],
            values: std::iter::once(7.0)
                .chain((0..16).map(|i| (i % 4) as f32))
                .collect(),
        };
        let up = resize_positions(&ramp, 1, 8).unwrap();
        assert_eq!(up.shape, vec![65, 1]);
        assert_eq!(up.values[0], 7.0);
        let torch_row = [
            -0.105_468_75,
            0.191_406_25,
            0.667_968_75,
            1.296_875,
            1.703_125,
            2.332_031_3,
            2.808_593_8,
            3.105_468_8,
        ];
        for (x, want) in torch_row.iter().enumerate() {
            let got = up.values[1 + 3 * 8 + x];
            assert!((got - want).abs() < 1e-5, "x {x}: {got} vs {want}");
        }
        let powers = HostTensor {
            shape: vec![1, 16, 1],
            values: (0..16).map(|i| (i as f32).powf(1.5)).collect(),
        };
        let down = resize_positions(&powers, 0, 3).unwrap();
        assert_eq!(down.shape, vec![1, 9, 1]);
        let torch = [
            1.044_040_3,
            3.093_447,
            6.464_964,
            14.774_773,
            20.206_583,
            26.165_308,
            39.755_76,
            46.957_058,
            54.593_956,
        ];
        for (got, want) in down.values.iter().zip(torch) {
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }
        assert!(
            resize_positions(&ramp, 2, 8).is_none(),
            "15 patches is no square"
        );
    }
}
