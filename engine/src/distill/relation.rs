//! LLaVA-KD's relation distillation (RDist, eq. 4-5): the student should relate its visual tokens
//! to one another the way the teacher does. Each model's visual-token outputs are L2-normalised
//! and multiplied into a self-correlation matrix `R = y y^T` (`Np x Np`); the loss is
//! `1 - cos(vec(R_s), vec(R_t))`. The two models may have different widths (or vocabularies, when
//! logits are used): only the `Np x Np` matrices are compared.

use burn::prelude::*;

/// Row-wise L2 normalisation over the last dimension of `[B, N, D]`.
fn normalise(y: Tensor<3>) -> Tensor<3> {
    let norm = y.clone().powi_scalar(2).sum_dim(2).sqrt().clamp_min(1e-8);
    y / norm
}

/// Self-correlation matrices `[B, N, N]` of visual-token features `[B, N, D]`.
pub fn self_correlation(y: Tensor<3>) -> Tensor<3> {
    let n = normalise(y);
    n.clone().matmul(n.swap_dims(1, 2))
}

/// [`self_correlation`] of the logits `hidden [B, N, H] @ weight [H, V]`, formed `cols`
/// vocabulary columns at a time: `y y^T` and the squared row norms are sums over the
/// vocabulary, so they add up over column chunks, and the `[B, N, V]` logits never exist
/// (for a 49k vocabulary and 49 visual tokens, a batch of 16 would need 154 MB at once).
pub fn linear_self_correlation(hidden: Tensor<3>, weight: Tensor<2>, cols: usize) -> Tensor<3> {
    let v = weight.dims()[1];
    let [b, n, h] = hidden.dims();
    // one 2-d matmul over all the batch's rows: a batched matmul against the broadcast head
    // would give the head's gradient a `[B, H, cols]` intermediate before summing over B
    let flat = hidden.reshape([b * n, h]);
    let cols = cols.max(1);
    let mut gram: Option<Tensor<3>> = None;
    let mut sq: Option<Tensor<3>> = None;
    for start in (0..v).step_by(cols) {
        let len = cols.min(v - start);
        let y = flat
            .clone()
            .matmul(weight.clone().narrow(1, start, len))
            .reshape([b, n, len]);
        let g = y.clone().matmul(y.clone().swap_dims(1, 2));
        let s2 = y.powi_scalar(2).sum_dim(2);
        gram = Some(match gram {
            None => g,
            Some(a) => a + g,
        });
        sq = Some(match sq {
            None => s2,
            Some(a) => a + s2,
        });
    }
    let norm = sq.expect("a vocabulary").sqrt().clamp_min(1e-8);
    gram.expect("a vocabulary") / norm.clone() / norm.swap_dims(1, 2)
}

/// `1 - cos(vec(R_s), vec(R_t))` per sample, averaged over the batch: `student [B, N, Ds]`,
/// `teacher [B, N, Dt]` (teacher detached). Returns a `[1]` tensor.
pub fn relation_loss(student: Tensor<3>, teacher: Tensor<3>) -> Tensor<1> {
    let [b, n, _] = student.dims();
    assert_eq!(
        teacher.dims()[..2],
        [b, n],
        "teacher and student must have the same number of visual tokens"
    );
    correlation_loss(
        self_correlation(student),
        self_correlation(teacher.detach()),
    )
}

/// [`relation_loss`] from the two self-correlation matrices `[B, N, N]` (the teacher's
/// detached here).
pub fn correlation_loss(student: Tensor<3>, teacher: Tensor<3>) -> Tensor<1> {
    let [b, n, _] = student.dims();
    let rs = student.reshape([b, n * n]);
    let rt = teacher.detach().reshape([b, n * n]);
    let dot = (rs.clone() * rt.clone()).sum_dim(1);
    let ns = rs.powi_scalar(2).sum_dim(1).sqrt();
    let nt = rt.powi_scalar(2).sum_dim(1).sqrt();
    let cos = dot / (ns * nt).clamp_min(1e-12);
    (cos.neg() + 1.0).mean().reshape([1])
}
