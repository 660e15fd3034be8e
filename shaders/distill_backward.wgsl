// Distillation-loss backward: the gradient with respect to the student logits only (the
// teacher is a constant). With `b = s / T`, `p = softmax(b)` and `h_j = p_j dD/dp_j`,
//     dD/db_j = h_j - p_j sum_k h_k,
// where each kind's `h` is written so that no probability is ever divided by:
//     forward KL      -p_T
//     reverse KL      p_S (log p_S - log p_T + 1)
//     JSD(beta)       (1 - beta) p_S (log p_S - log M),   M = beta p_T + (1 - beta) p_S
//     skew fwd(alpha) -(1 - alpha) p_S p_T / M,            M = alpha p_T + (1 - alpha) p_S
//     skew rev(alpha) p_S (log p_S - log M + 1 - alpha p_S / M),  M = alpha p_S + (1 - alpha) p_T
//     TVD             0.5 p_S sign(p_S - p_T)
// Pass 1 sums h over the row, pass 2 writes `(h_j - p_j sum h) / T * grad_out[row]`. The
// normalisers come from the forward pass, so the row is read twice and written once.

@group(0) @binding(0) var<storage, read_write> student: array<f32>;
@group(0) @binding(1) var<storage, read_write> teacher: array<f32>;
// [N, 2] from the forward pass
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
// [N]: upstream gradient of each row's divergence
@group(0) @binding(3) var<storage, read_write> grad_out: array<f32>;
// [N, V]: gradient with respect to the student logits
@group(0) @binding(4) var<storage, read_write> grad_in: array<f32>;
// n_rows, vocab, rows per x, bits(1 / T), bits(PARAM)
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

var<workgroup> red: array<f32, WG>;

fn h_of(ls: f32, lt: f32, param: f32) -> f32 {
    if (KIND == 0u) {
        return -exp(lt);
    } else if (KIND == 1u) {
        return exp(ls) * (ls - lt + 1.0);
    } else if (KIND == 2u) {
        let lm = log_mix(param, lt, ls);
        return (1.0 - param) * exp(ls) * (ls - lm);
    } else if (KIND == 3u) {
        let lm = log_mix(param, lt, ls);
        return -(1.0 - param) * exp(ls + lt - lm);
    } else if (KIND == 4u) {
        let lm = log_mix(param, ls, lt);
        return exp(ls) * (ls - lm + 1.0 - param * exp(ls - lm));
    }
    let ps = exp(ls);
    return 0.5 * ps * sign(ps - exp(lt));
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let r = row_setup(wid);
    let v = r.v;
    let inv_t = r.inv_t;
    let param = r.param;
    let valid = r.valid;
    let row = r.row;
    let base = r.base;
    let lse_s = lse[2u * row];
    let lse_t = lse[2u * row + 1u];

    var acc = 0.0;
    for (var j = tid; j < v; j += WG) {
        let ls = student[base + j] * inv_t - lse_s;
        let lt = teacher[base + j] * inv_t - lse_t;
        acc += h_of(ls, lt, param);
    }
    red[tid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] += red[tid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    let scale = grad_out[row] * inv_t;
    if (valid) {
        for (var j = tid; j < v; j += WG) {
            let ls = student[base + j] * inv_t - lse_s;
            let lt = teacher[base + j] * inv_t - lse_t;
            grad_in[base + j] = (h_of(ls, lt, param) - exp(ls) * total) * scale;
        }
    }
}
