// MoE expert GEMM, weight gradient: for every expert e,
//   dW[e] = sum over rows s of its segment [offsets[e], offsets[e + 1]) of a[src(s)]^T g[s]
// with src(s) = rows[s] under GATHER (tokens gathered as they are read) or s otherwise, as in
// moe_gemm.wgsl. Workgroup (x: R rows of Kd, y: WG * 4 columns of Nd, z: expert); it walks its
// expert's segment one row at a time: the R input values of that row are uniform across the
// workgroup (scalar loads), each invocation loads 4 columns of g and does 4 R multiply-adds
// into its registers. An expert that got no rows gets a zero gradient.
//
// Layouts (row-major f32): a [M, Kd] or [S, Kd]; rows [S] (i32); g [S, Nd]; offsets [E + 1];
// dw [E, Kd, Nd]. info: S.

// f32, or vec4<f32> when Kd is a multiple of 4 (then four rows of dW per load)
@group(0) @binding(0) var<storage, read_write> a: array<{{ a_type }}>;
@group(0) @binding(1) var<storage, read_write> rows: array<i32>;
// f32, or vec4<f32> when Nd is a multiple of 4 (one 16-byte load per step)
@group(0) @binding(2) var<storage, read_write> g: array<{{ g_type }}>;
@group(0) @binding(3) var<storage, read_write> offsets: array<i32>;
@group(0) @binding(4) var<storage, read_write> dw: array<f32>;
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let k0 = wid.x * R;
    let col = wid.y * WG * 4u + 4u * lid;
    let e = wid.z;
    if (col >= ND) {
        return;
    }
    let cs = columns(col);
    let c0 = cs.x;
    let c1 = cs.y;
    let c2 = cs.z;
    let c3 = cs.w;
    // (the segment end is clamped to the rows there are, should the offsets disagree)
    let lo = u32(offsets[e]);
    let hi = min(u32(offsets[e + 1u]), info[0]);
    {{ init }}
    for (var s = lo; s < hi; s++) {
        let ab = source_row(s) * KD;
        let gb = s * ND;
        let gv = {{ load_g }};
        {{ fma }}
    }
    {{ store }}
}

fn store(kr: u32, e: u32, col: u32, v: vec4<f32>) {
    if (kr >= KD) {
        return;
    }
    let base = (e * KD + kr) * ND + col;
    dw[base] = v.x;
    if (col + 1u < ND) {
        dw[base + 1u] = v.y;
    }
    if (col + 2u < ND) {
        dw[base + 2u] = v.z;
    }
    if (col + 3u < ND) {
        dw[base + 3u] = v.w;
    }
}
