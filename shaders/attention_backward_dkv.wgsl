// Flash-attention backward, key side: dK and dV per key row, summed over every query head of
// its group (grouped-query attention) and every query that sees it. Needs `delta` from the
// query-side kernel. Workgroup (x: block of WG key rows, y: b * Hk + kv head).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> key_mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> d_o: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dk: array<f32>;
@group(0) @binding(8) var<storage, read_write> dv: array<f32>;
@group(0) @binding(9) var<storage, read_write> info: array<u32>;

var<workgroup> q_tile: array<f32, TILE>;
var<workgroup> do_tile: array<f32, TILE>;
var<workgroup> l_tile: array<f32, TR>;
var<workgroup> dl_tile: array<f32, TR>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let p = params();
    let bkv = wid.y;
    let b = bkv / p.hk;
    let kvh = bkv % p.hk;
    let group = p.h / p.hk;
    let j = wid.x * WG + tid;
    let jc = min(j, p.tk - 1u);
    let krow = bkv * p.tk + jc;
    let live = j < p.tk && key_mask[b * p.tk + jc] != 0.0;

    var kr: array<f32, D>;
    var vr: array<f32, D>;
    var dka: array<f32, D>;
    var dva: array<f32, D>;
    for (var d = 0u; d < D; d++) {
        kr[d] = k[krow * D + d];
        vr[d] = v[krow * D + d];
        dka[d] = 0.0;
        dva[d] = 0.0;
    }
    // queries before the block's first key cannot see any of it under a causal mask
    var qstart = 0u;
    let j0 = wid.x * WG;
    if (p.causal && j0 > p.offset) {
        qstart = ((j0 - p.offset) / TR) * TR;
    }
    for (var g = 0u; g < group; g++) {
        let bh = b * p.h + kvh * group + g;
        for (var t0 = qstart; t0 < p.tq; t0 += TR) {
            workgroupBarrier();
            for (var e = tid; e < TILE; e += WG) {
                let i = t0 + e / D;
                if (i < p.tq) {
                    q_tile[e] = q[(bh * p.tq + i) * D + e % D] * p.scale;
                    do_tile[e] = d_o[(bh * p.tq + i) * D + e % D];
                }
            }
            for (var r = tid; r < TR; r += WG) {
                let i = min(t0 + r, p.tq - 1u);
                l_tile[r] = lse[bh * p.tq + i];
                dl_tile[r] = delta[bh * p.tq + i];
            }
            workgroupBarrier();
            if (live) {
                for (var r = 0u; r < TR; r++) {
                    let i = t0 + r;
                    if (i >= p.tq || !visible(p, i, j)) {
                        continue;
                    }
                    var s = 0.0;
                    var dp = 0.0;
                    for (var d = 0u; d < D; d++) {
                        s += q_tile[r * D + d] * kr[d];
                        dp += do_tile[r * D + d] * vr[d];
                    }
                    let pr = exp(s - l_tile[r]);
                    let ds = pr * (dp - dl_tile[r]);
                    for (var d = 0u; d < D; d++) {
                        dva[d] += pr * do_tile[r * D + d];
                        dka[d] += ds * q_tile[r * D + d];
                    }
                }
            }
        }
    }
    if (j < p.tk) {
        for (var d = 0u; d < D; d++) {
            // q_tile already carries the scale, so dS q_scaled = scale dS q
            dk[krow * D + d] = dka[d];
            dv[krow * D + d] = dva[d];
        }
    }
}
