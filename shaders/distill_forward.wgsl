// Distillation-loss forward: per row, the divergence between softmax(teacher / T) and
// softmax(student / T), and the two log-sum-exps the backward pass reuses.
//
// KL kinds take one pass over the vocabulary: an online log-sum-exp per model (running max,
// rescaled sum) plus the rescaled weighted sum `sum e^(a - m) (a - b)`. The mixture kinds
// (JSD, skew KLs, TVD) need both normalisers before they can form `log M`, so they read the
// row a second time. No probability vector is ever stored.

@group(0) @binding(0) var<storage, read_write> student: array<f32>;
@group(0) @binding(1) var<storage, read_write> teacher: array<f32>;
// [N]: the per-row divergence (before the T^2 scale).
@group(0) @binding(2) var<storage, read_write> out_div: array<f32>;
// [N, 2]: log-sum-exp of student / T and of teacher / T.
@group(0) @binding(3) var<storage, read_write> out_lse: array<f32>;
// n_rows, vocab, rows per x, bits(1 / T), bits(PARAM)
@group(0) @binding(4) var<storage, read_write> info: array<u32>;

var<workgroup> red_ms: array<f32, WG>;
var<workgroup> red_zs: array<f32, WG>;
var<workgroup> red_mt: array<f32, WG>;
var<workgroup> red_zt: array<f32, WG>;
var<workgroup> red_w: array<f32, WG>;

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

    // Pass 1: online log-sum-exp of both models; for the KL kinds also the weighted sum,
    // kept relative to the running max of the model whose probabilities weight it.
    var ms = NEG;
    var zs = 0.0;
    var mt = NEG;
    var zt = 0.0;
    var w = 0.0;
    for (var j = tid; j < v; j += WG) {
        let b = student[base + j] * inv_t;
        let a = teacher[base + j] * inv_t;
        if (b > ms) {
            let c = exp(ms - b);
            zs = zs * c + 1.0;
            if (KIND == 1u) { w = w * c; }
            ms = b;
        } else {
            zs += exp(b - ms);
        }
        if (a > mt) {
            let c = exp(mt - a);
            zt = zt * c + 1.0;
            if (KIND == 0u) { w = w * c; }
            mt = a;
        } else {
            zt += exp(a - mt);
        }
        if (KIND == 0u) { w += exp(a - mt) * (a - b); }
        if (KIND == 1u) { w += exp(b - ms) * (b - a); }
    }
    red_ms[tid] = ms;
    red_zs[tid] = zs;
    red_mt[tid] = mt;
    red_zt[tid] = zt;
    red_w[tid] = w;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            let ms2 = max(red_ms[tid], red_ms[tid + s]);
            let cs1 = exp(red_ms[tid] - ms2);
            let cs2 = exp(red_ms[tid + s] - ms2);
            let mt2 = max(red_mt[tid], red_mt[tid + s]);
            let ct1 = exp(red_mt[tid] - mt2);
            let ct2 = exp(red_mt[tid + s] - mt2);
            if (KIND == 0u) { red_w[tid] = red_w[tid] * ct1 + red_w[tid + s] * ct2; }
            if (KIND == 1u) { red_w[tid] = red_w[tid] * cs1 + red_w[tid + s] * cs2; }
            red_zs[tid] = red_zs[tid] * cs1 + red_zs[tid + s] * cs2;
            red_zt[tid] = red_zt[tid] * ct1 + red_zt[tid + s] * ct2;
            red_ms[tid] = ms2;
            red_mt[tid] = mt2;
        }
        workgroupBarrier();
    }
    let lse_s = red_ms[0] + log(red_zs[0]);
    let lse_t = red_mt[0] + log(red_zt[0]);

    var div = 0.0;
    if (KIND == 0u) {
        div = red_w[0] / red_zt[0] - lse_t + lse_s;
    } else if (KIND == 1u) {
        div = red_w[0] / red_zs[0] - lse_s + lse_t;
    } else {
        // Pass 2: the mixture kinds, now that both normalisers are known.
        var acc = 0.0;
        for (var j = tid; j < v; j += WG) {
            let ls = student[base + j] * inv_t - lse_s;
            let lt = teacher[base + j] * inv_t - lse_t;
            if (KIND == 2u) {
                let lm = log_mix(param, lt, ls);
                acc += param * exp(lt) * (lt - lm) + (1.0 - param) * exp(ls) * (ls - lm);
            } else if (KIND == 3u) {
                let lm = log_mix(param, lt, ls);
                acc += exp(lt) * (lt - lm);
            } else if (KIND == 4u) {
                let lm = log_mix(param, ls, lt);
                acc += exp(ls) * (ls - lm);
            } else {
                acc += 0.5 * abs(exp(ls) - exp(lt));
            }
        }
        // every thread has read red_*[0] above; wait before reusing red_w
        workgroupBarrier();
        red_w[tid] = acc;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (tid < s) {
                red_w[tid] += red_w[tid + s];
            }
            workgroupBarrier();
        }
        div = red_w[0];
    }
    if (valid && tid == 0u) {
        out_div[row] = div;
        out_lse[2u * row] = lse_s;
        out_lse[2u * row + 1u] = lse_t;
    }
}
