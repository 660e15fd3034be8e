// Flash-attention forward: out = softmax(scale * q k^T + mask) v per query row, and the row's
// log-sum-exp for the backward pass. Workgroup (x: block of WG query rows, y: b * H + h).
{{ enable }}

@group(0) @binding(0) var<storage, read_write> q: array<vec4<{{ elem }}>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<{{ elem }}>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<{{ elem }}>>;
@group(0) @binding(3) var<storage, read_write> key_mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<{{ elem }}>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let p = params();
    let qr = query_row(p, wid, tid);
    let i = qr.i;
    let live = qr.live;
    let row = qr.row;
    let qb = qr.qb;
    let kend = qr.kend;

    // q0.. (the scaled query row) and a0.. (the unnormalised output)
    {{ fwd_init }}
    var m = NEG;
    var l = 0.0;
    let kend_u = key_bound(qr, tid);
    for (var t0 = 0u; t0 < kend_u; t0 += TR) {
        load_key_tile(p, qr, t0, tid);
        // every lane runs every key (rows past Tq compute on a clamped row and store nothing):
        // no divergent branch, so the tile reads stay uniform broadcasts
        for (var r = 0u; r < TR; r++) {
            let j = t0 + r;
            let ok = j < kend && m_tile[r] != 0.0 && visible(p, i, j);
            let kb = r * D4;
            var s = 0.0;
            {{ fwd_dot }}
            // online softmax; a key this query may not see changes nothing
            let mn = select(m, max(m, s), ok);
            let c = exp(m - mn);
            let e = select(0.0, exp(s - mn), ok);
            l = l * c + e;
            {{ fwd_update }}
            m = mn;
        }
    }
    if (live) {
        let inv = select(0.0, 1.0 / l, l > 0.0);
        {{ fwd_store }}
        lse[row] = select(BIG, m + log(l), l > 0.0);
    }
}
