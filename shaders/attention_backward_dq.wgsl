// Flash-attention backward, query side: dQ, and delta_i = dO_i . O_i, which the key-side kernel
// reads. Probabilities are recomputed from the forward's log-sum-exp; dS = P (dO V^T - delta).
// Workgroup (x: block of WG query rows, y: b * H + h).
{{ enable }}

@group(0) @binding(0) var<storage, read_write> q: array<vec4<{{ elem }}>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<{{ elem }}>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<{{ elem }}>>;
@group(0) @binding(3) var<storage, read_write> key_mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<{{ elem }}>>;
@group(0) @binding(5) var<storage, read_write> d_o: array<vec4<{{ elem }}>>;
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;
@group(0) @binding(7) var<storage, read_write> dq: array<vec4<{{ elem }}>>;
@group(0) @binding(8) var<storage, read_write> delta: array<f32>;
@group(0) @binding(9) var<storage, read_write> info: array<u32>;

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

    // q0.. (scaled query), g0.. (output gradient), a0.. (dQ), and dlt = dO . O
    var dlt = 0.0;
    {{ dq_init }}
    let li = lse[row];
    let kend_u = key_bound(qr, tid);
    for (var t0 = 0u; t0 < kend_u; t0 += TR) {
        load_key_tile(p, qr, t0, tid);
        // every lane runs every key (see the forward kernel): no divergent branch
        for (var r = 0u; r < TR; r++) {
            let j = t0 + r;
            let ok = j < kend && m_tile[r] != 0.0 && visible(p, i, j);
            let kb = r * D4;
            var s = 0.0;
            var dp = 0.0;
            {{ dq_dots }}
            let ds = select(0.0, exp(s - li) * (dp - dlt), ok);
            {{ dq_add }}
        }
    }
    if (live) {
        {{ dq_store }}
        delta[row] = dlt;
    }
}
