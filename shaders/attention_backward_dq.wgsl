// Flash-attention backward, query side: dQ, and delta_i = dO_i . O_i, which the key-side kernel
// reads. Probabilities are recomputed from the forward's log-sum-exp; dS = P (dO V^T - delta).
// Workgroup (x: block of WG query rows, y: b * H + h).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> key_mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> d_o: array<f32>;
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;
@group(0) @binding(7) var<storage, read_write> dq: array<f32>;
@group(0) @binding(8) var<storage, read_write> delta: array<f32>;
@group(0) @binding(9) var<storage, read_write> info: array<u32>;

var<workgroup> k_tile: array<f32, TILE>;
var<workgroup> v_tile: array<f32, TILE>;
var<workgroup> m_tile: array<f32, TR>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let p = params();
    let bh = wid.y;
    let b = bh / p.h;
    let kvh = (bh % p.h) / (p.h / p.hk);
    let i = wid.x * WG + tid;
    let live = i < p.tq;
    let row = bh * p.tq + min(i, p.tq - 1u);

    var qr: array<f32, D>;
    var dor: array<f32, D>;
    var acc: array<f32, D>;
    var dlt = 0.0;
    for (var d = 0u; d < D; d++) {
        qr[d] = q[row * D + d] * p.scale;
        dor[d] = d_o[row * D + d];
        dlt += dor[d] * o[row * D + d];
        acc[d] = 0.0;
    }
    let li = lse[row];
    let kv0 = (b * p.hk + kvh) * p.tk;
    var kend = p.tk;
    if (p.causal) {
        kend = min(p.tk, wid.x * WG + WG - 1u + p.offset + 1u);
    }
    for (var t0 = 0u; t0 < kend; t0 += TR) {
        workgroupBarrier();
        for (var e = tid; e < TILE; e += WG) {
            let j = t0 + e / D;
            if (j < p.tk) {
                k_tile[e] = k[(kv0 + j) * D + e % D];
                v_tile[e] = v[(kv0 + j) * D + e % D];
            }
        }
        for (var r = tid; r < TR; r += WG) {
            let j = t0 + r;
            m_tile[r] = select(0.0, key_mask[b * p.tk + min(j, p.tk - 1u)], j < p.tk);
        }
        workgroupBarrier();
        if (live) {
            for (var r = 0u; r < TR; r++) {
                let j = t0 + r;
                if (j >= kend || m_tile[r] == 0.0 || !visible(p, i, j)) {
                    continue;
                }
                var s = 0.0;
                var dp = 0.0;
                for (var d = 0u; d < D; d++) {
                    s += qr[d] * k_tile[r * D + d];
                    dp += dor[d] * v_tile[r * D + d];
                }
                let ds = exp(s - li) * (dp - dlt);
                for (var d = 0u; d < D; d++) {
                    acc[d] += ds * k_tile[r * D + d];
                }
            }
        }
    }
    if (live) {
        for (var d = 0u; d < D; d++) {
            dq[row * D + d] = acc[d] * p.scale;
        }
        delta[row] = dlt;
    }
}
