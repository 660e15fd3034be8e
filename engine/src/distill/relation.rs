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

/// `1 - cos(vec(R_s), vec(R_t))` per sample, averaged over the batch: `student [B, N, Ds]`,
/// `teacher [B, N, Dt]` (teacher detached). Returns a `[1]` tensor.
pub fn relation_loss(student: Tensor<3>, teacher: Tensor<3>) -> Tensor<1> {
    let [b, n, _] = student.dims();
    assert_eq!(
        teacher.dims()[..2],
        [b, n],
        "teacher and student must have the same number of visual tokens"
    );
    let rs = self_correlation(student).reshape([b, n * n]);
    let rt = self_correlation(teacher.detach()).reshape([b, n * n]);
    let dot = (rs.clone() * rt.clone()).sum_dim(1);
    let ns = rs.powi_scalar(2).sum_dim(1).sqrt();
    let nt = rt.powi_scalar(2).sum_dim(1).sqrt();
    let cos = dot / (ns * nt).clamp_min(1e-12);
    (cos.neg() + 1.0).mean().reshape([1])
}
