// MoE routing, forward: per token, the top-K of the E router logits (ties to the lower expert
// index, as the reference) and their weights renormalised over the chosen K. Renormalising the
// softmax over the chosen experts is the softmax of the chosen logits alone:
//   w_j = exp(l_j) / sum_{chosen j'} exp(l_j')
// so the full softmax is never formed here (the load-balancing loss forms it on its own).
//
// Layouts: logits [N, E]; routed [N] (1 = routed, 0 = padding); weights [N, K]; experts [N, K]
// as i32, E for every slot of a padding token (whose weights are 0). info: N.
// One invocation per token; E <= 32 (the chosen set is a bit mask).

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> routed: array<f32>;
@group(0) @binding(2) var<storage, read_write> weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> experts: array<i32>;
@group(0) @binding(4) var<storage, read_write> info: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let tok = token(gid);
    if (tok.y == 0u) {
        return;
    }
    let t = tok.x;
    if (routed[t] == 0.0) {
        for (var j = 0u; j < K; j++) {
            weights[t * K + j] = 0.0;
            experts[t * K + j] = i32(E);
        }
        return;
    }
    var taken = 0u;
    var chosen: array<u32, K>;
    var vals: array<f32, K>;
    for (var j = 0u; j < K; j++) {
        var best = 0.0;
        var bi = E;
        for (var e = 0u; e < E; e++) {
            let v = logits[t * E + e];
            // strictly greater keeps the lower index on ties
            if ((taken & (1u << e)) == 0u && (bi == E || v > best)) {
                best = v;
                bi = e;
            }
        }
        taken |= 1u << bi;
        chosen[j] = bi;
        vals[j] = best;
    }
    // vals[0] is the largest chosen logit
    let mx = vals[0];
    var s = 0.0;
    for (var j = 0u; j < K; j++) {
        vals[j] = exp(vals[j] - mx);
        s += vals[j];
    }
    for (var j = 0u; j < K; j++) {
        weights[t * K + j] = vals[j] / s;
        experts[t * K + j] = i32(chosen[j]);
    }
}
