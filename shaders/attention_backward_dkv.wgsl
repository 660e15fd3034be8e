// Flash-attention backward, key side: dK and dV per key row, summed over every query head of
// its group (grouped-query attention) and every query that sees it. Needs `delta` from the
// query-side kernel. Workgroup (x: block of WG key rows, y: b * Hk + kv head).
{{ enable }}

@group(0) @binding(0) var<storage, read_write> q: array<vec4<{{ elem }}>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<{{ elem }}>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<{{ elem }}>>;
@group(0) @binding(3) var<storage, read_write> key_mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> d_o: array<vec4<{{ elem }}>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dk: array<vec4<{{ elem }}>>;
@group(0) @binding(8) var<storage, read_write> dv: array<vec4<{{ elem }}>>;
@group(0) @binding(9) var<storage, read_write> info: array<u32>;

var<workgroup> q_tile: array<vec4<f32>, TILE4>;
var<workgroup> do_tile: array<vec4<f32>, TILE4>;
var<workgroup> l_tile: array<f32, TR>;
var<workgroup> dl_tile: array<f32, TR>;
var<workgroup> bounds: vec3<u32>;

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
    let kb = krow * D4;
    let live = j < p.tk && key_mask[b * p.tk + jc] != 0.0;

    // k0.., v0.. (this key's rows) and dk0.., dv0.. (their gradients)
    {{ dkv_init }}
    // queries before the block's first key cannot see any of it under a causal mask
    var qstart = 0u;
    let j0 = wid.x * WG;
    if (p.causal && j0 > p.offset) {
        qstart = ((j0 - p.offset) / TR) * TR;
    }
    // values read from a storage buffer are not uniform to WGSL's analysis, and every
    // workgroupBarrier below must be: the loop bounds go through workgroupUniformLoad
    if (tid == 0u) {
        bounds = vec3<u32>(group, qstart, p.tq);
    }
    let u = workgroupUniformLoad(&bounds);
    for (var g = 0u; g < u.x; g++) {
        let bh = b * p.h + kvh * group + g;
        for (var t0 = u.y; t0 < u.z; t0 += TR) {
            workgroupBarrier();
            for (var e = tid; e < TILE4; e += WG) {
                let i = t0 + e / D4;
                if (i < p.tq) {
                    q_tile[e] = vec4<f32>(q[(bh * p.tq + i) * D4 + e % D4]) * p.scale;
                    do_tile[e] = vec4<f32>(d_o[(bh * p.tq + i) * D4 + e % D4]);
                }
            }
            for (var r = tid; r < TR; r += WG) {
                let i = min(t0 + r, p.tq - 1u);
                l_tile[r] = lse[bh * p.tq + i];
                dl_tile[r] = delta[bh * p.tq + i];
            }
            workgroupBarrier();
            // every lane runs every query (see the forward kernel): no divergent branch
            for (var r = 0u; r < TR; r++) {
                let i = t0 + r;
                let ok = live && i < p.tq && visible(p, i, j);
                let qt = r * D4;
                var s = 0.0;
                var dp = 0.0;
                {{ dkv_dots }}
                let pr = select(0.0, exp(s - l_tile[r]), ok);
                let ds = pr * (dp - dl_tile[r]);
                {{ dkv_add }}
            }
        }
    }
    if (j < p.tk) {
        // q_tile already carries the scale, so dS q_scaled = scale dS q
        {{ dkv_store }}
    }
}
