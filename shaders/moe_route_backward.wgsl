// MoE routing, backward: the gradient of the router logits from the gradient g of the
// renormalised weights. The weights are a softmax over the chosen logits, so for chosen j
//   dl_j = w_j (g_j - sum_j' w_j' g_j')
// and every other logit gets 0 (top-k is piecewise constant). Padding tokens get 0.
//
// Layouts: weights, g [N, K]; experts [N, K] (i32, E = padding); dlogits [N, E]. info: N.

@group(0) @binding(0) var<storage, read_write> weights: array<f32>;
@group(0) @binding(1) var<storage, read_write> experts: array<i32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> info: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let tok = token(gid);
    if (tok.y == 0u) {
        return;
    }
    let t = tok.x;
    for (var e = 0u; e < E; e++) {
        dlogits[t * E + e] = 0.0;
    }
    var wg = 0.0;
    for (var j = 0u; j < K; j++) {
        wg += weights[t * K + j] * g[t * K + j];
    }
    for (var j = 0u; j < K; j++) {
        let e = u32(experts[t * K + j]);
        if (e < E) {
            dlogits[t * E + e] = weights[t * K + j] * (g[t * K + j] - wg);
        }
    }
}
