//! The output shapes and dtypes of every kernel op, as burn's `Fusion` backend needs them when
//! it records an op (before running it): each function takes the inputs' specs and the op's
//! ordinary arguments in declaration order and must describe exactly what the CubeCL launch
//! code returns (`buffers.rs` makes f32 and i32 outputs; the attention outputs follow the
//! queries' dtype).

use burn::backend::fusion::custom::TensorSpec;
use burn::tensor::{DType, Shape};

fn f32_of(dims: &[usize]) -> TensorSpec {
    TensorSpec::new(Shape::from(dims.to_vec()), DType::F32)
}

fn i32_of(dims: &[usize]) -> TensorSpec {
    TensorSpec::new(Shape::from(dims.to_vec()), DType::I32)
}

/// The sum of a fused-linear loss: one f32.
fn scalar() -> TensorSpec {
    f32_of(&[1])
}

/// `distill_rows`: one f32 per row of the `[N, V]` logits.
pub fn rows_f32(
    student: &TensorSpec,
    _teacher: &TensorSpec,
    _kind: &u32,
    _param: &f32,
    _inv_temp: &f32,
    _slab_rows: &u32,
) -> TensorSpec {
    f32_of(&[student.shape[0]])
}

/// The divergence per row and the log-sum-exps `[N, 2]`.
pub fn distill_forward(
    student: &TensorSpec,
    teacher: &TensorSpec,
    kind: &u32,
    param: &f32,
    inv_temp: &f32,
    slab_rows: &u32,
) -> (TensorSpec, TensorSpec) {
    let n = student.shape[0];
    (
        rows_f32(student, teacher, kind, param, inv_temp, slab_rows),
        f32_of(&[n, 2]),
    )
}

/// The gradient of the student logits: f32 `[N, V]`.
#[allow(clippy::too_many_arguments)]
pub fn distill_backward(
    student: &TensorSpec,
    _teacher: &TensorSpec,
    _lse: &TensorSpec,
    _grad_out: &TensorSpec,
    _kind: &u32,
    _param: &f32,
    _inv_temp: &f32,
    _slab_rows: &u32,
) -> TensorSpec {
    f32_of(&[student.shape[0], student.shape[1]])
}

#[allow(clippy::too_many_arguments)]
pub fn fused_linear_distill(
    _hidden: &TensorSpec,
    _weight: &TensorSpec,
    _teacher_hidden: &TensorSpec,
    _teacher_weight: &TensorSpec,
    _row_weight: &TensorSpec,
    _kind: &u32,
    _param: &f32,
    _inv_temp: &f32,
    _chunk: &u32,
) -> TensorSpec {
    scalar()
}

/// The loss and the gradients, shaped and typed like `hidden` and `weight` (the chunk's logits
/// are the matmul of the two, and their gradient is folded back through the same matmuls).
#[allow(clippy::too_many_arguments)]
pub fn fused_linear_distill_grads(
    hidden: &TensorSpec,
    weight: &TensorSpec,
    _teacher_hidden: &TensorSpec,
    _teacher_weight: &TensorSpec,
    _row_weight: &TensorSpec,
    _kind: &u32,
    _param: &f32,
    _inv_temp: &f32,
    _chunk: &u32,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (scalar(), hidden.clone(), weight.clone())
}

pub fn fused_linear_cross_entropy(
    _hidden: &TensorSpec,
    _weight: &TensorSpec,
    _targets: &TensorSpec,
    _row_weight: &TensorSpec,
    _chunk: &u32,
) -> TensorSpec {
    scalar()
}

pub fn fused_linear_cross_entropy_grads(
    hidden: &TensorSpec,
    weight: &TensorSpec,
    _targets: &TensorSpec,
    _row_weight: &TensorSpec,
    _chunk: &u32,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (scalar(), hidden.clone(), weight.clone())
}

/// The output (like the queries) and the log-sum-exps `[B, H, Tq]`.
pub fn attention_forward(
    q: &TensorSpec,
    _k: &TensorSpec,
    _v: &TensorSpec,
    _key_mask: &TensorSpec,
    _causal: &u32,
    _scale: &f32,
) -> (TensorSpec, TensorSpec) {
    let s = &q.shape;
    (q.clone(), f32_of(&[s[0], s[1], s[2]]))
}

/// `(dq, dk, dv)`: shaped like q, k and v, all in the queries' dtype (the kernels compute in
/// the queries' dtype and refuse keys and values of another).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &TensorSpec,
    k: &TensorSpec,
    v: &TensorSpec,
    _key_mask: &TensorSpec,
    _out: &TensorSpec,
    _lse: &TensorSpec,
    _grad_out: &TensorSpec,
    _causal: &u32,
    _scale: &f32,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    let like_q = |t: &TensorSpec| TensorSpec::new(t.shape.clone(), q.dtype);
    (q.clone(), like_q(k), like_q(v))
}

/// `(weights [N, k] f32, experts [N, k] i32)`.
pub fn moe_route(logits: &TensorSpec, _routed: &TensorSpec, k: &u32) -> (TensorSpec, TensorSpec) {
    let n = logits.shape[0];
    let k = *k as usize;
    (f32_of(&[n, k]), i32_of(&[n, k]))
}

/// `(sorted_rows [N k], slot_pos [N, k], offsets [E + 1], counts [E])`, all i32.
pub fn moe_sort(
    experts: &TensorSpec,
    num_experts: &u32,
    _capacity: &u32,
) -> (TensorSpec, TensorSpec, TensorSpec, TensorSpec) {
    let (n, k) = (experts.shape[0], experts.shape[1]);
    let e = *num_experts as usize;
    (
        i32_of(&[n * k]),
        i32_of(&[n, k]),
        i32_of(&[e + 1]),
        i32_of(&[e]),
    )
}

/// `[S, Nd]` f32 for `S` sorted rows and weights `[E, Kd, Nd]`.
pub fn moe_gather_matmul(
    _a: &TensorSpec,
    rows: &TensorSpec,
    w: &TensorSpec,
    _offsets: &TensorSpec,
    _gather: &u32,
) -> TensorSpec {
    f32_of(&[rows.shape.num_elements(), w.shape[2]])
}

/// The router-logit gradient `[N, E]` f32.
pub fn moe_route_backward(
    weights: &TensorSpec,
    _experts: &TensorSpec,
    _grad: &TensorSpec,
    num_experts: &u32,
) -> TensorSpec {
    f32_of(&[weights.shape[0], *num_experts as usize])
}

/// `(d a, d w)`, f32 and shaped like `a` and `w`.
pub fn moe_gather_matmul_backward(
    a: &TensorSpec,
    _rows: &TensorSpec,
    w: &TensorSpec,
    _offsets: &TensorSpec,
    _grad: &TensorSpec,
    _gather: &u32,
) -> (TensorSpec, TensorSpec) {
    (
        TensorSpec::new(a.shape.clone(), DType::F32),
        TensorSpec::new(w.shape.clone(), DType::F32),
    )
}
