// Cross-entropy of one chunk of the fused-linear cross-entropy (see
// engine/src/backend/kernels/cross_entropy.rs): for each row of the chunk's logits `[n, V]`,
//     loss_r = w_r (lse_r - l_r[t_r]),
// and, when GRAD is set, the gradient of `sum_r loss_r` with respect to the logits,
//     g_rj = w_r (softmax(l_r)_j - [j == t_r]),
// written over the logits in place: the logits are read twice (once for the log-sum-exp, once
// for the gradient) and the chunk never needs a second `[n, V]` buffer. A negative target
// marks a row without a label: its loss and gradient are 0.
//
// One workgroup reduces one row; rows run over x, then y (at most 65535 workgroups per
// dimension). An invalid workgroup computes a clamped row and writes nothing, so every
// workgroupBarrier stays in uniform control flow.

// [n, V]: the chunk's logits; the gradient on return when GRAD is set.
@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
// [n]: target ids, negative for no label.
@group(0) @binding(1) var<storage, read_write> targets: array<i32>;
// [n]: row weights (the mean's normaliser).
@group(0) @binding(2) var<storage, read_write> row_weight: array<f32>;
// [n]: weighted per-row losses.
@group(0) @binding(3) var<storage, read_write> out_loss: array<f32>;
// n_rows, vocab, rows per x
@group(0) @binding(4) var<storage, read_write> info: array<u32>;

const WG: u32 = {{ wg }}u;
const GRAD: bool = {{ grad }};
// Running maximum of an empty partial: far below any finite logit, but not -inf, so that
// `exp(NEG - NEG)` stays 1 and a merge of two empty partials stays empty (z = 0).
const NEG: f32 = -3.0e38;

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_z: array<f32, WG>;
var<workgroup> picked: f32;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let n = info[0];
    let v = info[1];
    let raw = wid.y * info[2] + wid.x;
    let row = min(raw, n - 1u);
    let valid = raw < n;
    let base = row * v;
    let t = targets[row];
    let w = row_weight[row];

    if (tid == 0u) {
        picked = 0.0;
    }
    workgroupBarrier();
    var m = NEG;
    var z = 0.0;
    for (var j = tid; j < v; j += WG) {
        let x = logits[base + j];
        if (x > m) {
            z = z * exp(m - x) + 1.0;
            m = x;
        } else {
            z += exp(x - m);
        }
        if (i32(j) == t) {
            picked = x;
        }
    }
    red_m[tid] = m;
    red_z[tid] = z;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            let m2 = max(red_m[tid], red_m[tid + s]);
            red_z[tid] = red_z[tid] * exp(red_m[tid] - m2) + red_z[tid + s] * exp(red_m[tid + s] - m2);
            red_m[tid] = m2;
        }
        workgroupBarrier();
    }
    let lse = red_m[0] + log(red_z[0]);
    let labelled = t >= 0 && u32(t) < v;
    if (valid && tid == 0u) {
        out_loss[row] = select(0.0, w * (lse - picked), labelled);
    }
    if (GRAD && valid) {
        let scale = select(0.0, w, labelled);
        for (var j = tid; j < v; j += WG) {
            let p = exp(logits[base + j] - lse);
            logits[base + j] = scale * (p - select(0.0, 1.0, i32(j) == t));
        }
    }
}
