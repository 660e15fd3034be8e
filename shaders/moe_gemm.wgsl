// MoE expert GEMM over the expert-sorted rows (the ScatterMoE idea): for every row s of the
// sorted order, c[s] = a[src(s)] @ W[e(s)], where e(s) is the expert whose segment
// [offsets[e], offsets[e + 1]) holds s. With GATHER, src(s) = rows[s] (the token), so tokens
// are gathered as they are read and no [S, Kd] copy of the input is made; without it,
// src(s) = s (the input is already in sorted order, e.g. the expert activations). The weights
// are [E, Kd, Nd]. (The backward's dA = dC W^T runs this kernel on transposed weights.)
//
// A workgroup owns R rows and WG * 4 columns; each invocation keeps its 4 columns of the R rows
// in registers (one vec4 accumulator per row, named by the generated snippets). Every row's
// source offset is the same across the workgroup, so its loads are uniform (one scalar load
// broadcast to all lanes on SIMD-over-invocations devices such as lavapipe), and each step of
// the depth loop does one 4-column weight load per invocation for 4 R multiply-adds; no
// workgroup memory and no barriers. A tile of rows that straddles a segment boundary runs
// once per expert it meets, each pass masking the rows that are not its expert's. Rows at or
// past the kept total (offsets[E]) are written as 0: dropped assignments and padding point
// there.
//
// Layouts (row-major f32): a [M, Kd] (GATHER) or [S, Kd]; rows [S] (i32); w [E, Kd, Nd];
// offsets [E + 1] (i32); c [S, Nd]. info: S.

// f32, or vec4<f32> when Kd is a multiple of 4 (then four depth steps per load)
@group(0) @binding(0) var<storage, read_write> a: array<{{ a_type }}>;
@group(0) @binding(1) var<storage, read_write> rows: array<i32>;
// f32, or vec4<f32> when Nd is a multiple of 4 (one 16-byte load per step)
@group(0) @binding(2) var<storage, read_write> w: array<{{ w_type }}>;
@group(0) @binding(3) var<storage, read_write> offsets: array<i32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

const E: u32 = {{ e }}u;

// The source offset of row r0 + r when it lies in [lo, hi), and whether it does.
fn source(row: u32, lo: u32, hi: u32) -> vec2<u32> {
    if (row < lo || row >= hi) {
        return vec2<u32>(0u, 0u);
    }
    return vec2<u32>(source_row(row) * KD, 1u);
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let s_rows = info[0];
    let r0 = wid.x * R;
    let col = wid.y * WG * 4u + 4u * lid;
    if (col >= ND) {
        return;
    }
    let cs = columns(col);
    let c0 = cs.x;
    let c1 = cs.y;
    let c2 = cs.z;
    let c3 = cs.w;
    {{ init }}
    for (var e = 0u; e < E; e++) {
        let lo = max(u32(offsets[e]), r0);
        let hi = min(u32(offsets[e + 1u]), r0 + R);
        if (lo >= hi) {
            continue;
        }
        {{ sources }}
        {{ depth_loop }}
    }
    {{ store }}
}

fn store(row: u32, s_rows: u32, col: u32, v: vec4<f32>) {
    if (row >= s_rows) {
        return;
    }
    let base = row * ND + col;
    c[base] = v.x;
    if (col + 1u < ND) {
        c[base + 1u] = v.y;
    }
    if (col + 2u < ND) {
        c[base + 2u] = v.z;
    }
    if (col + 3u < ND) {
        c[base + 3u] = v.w;
    }
}
