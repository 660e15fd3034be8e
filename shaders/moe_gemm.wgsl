// MoE expert GEMM over the expert-sorted rows (the ScatterMoE idea): for every row s of the
// sorted order, c[s] = a[src(s)] @ W[e(s)], where e(s) is the expert whose segment
// [offsets[e], offsets[e + 1]) holds s. With GATHER, src(s) = rows[s] (the token), so the
// tokens are gathered as the tile loads them and no [S, Kd] copy of the input is made;
// without it, src(s) = s (the input is already in sorted order, e.g. the expert activations).
// With TRANS the weights are stored [E, Nd, Kd] and used transposed (the backward's
// dA = dC W^T); otherwise [E, Kd, Nd].
//
// Tiles of TM x TN outputs per workgroup, 4 x 4 per invocation in registers, TK-deep slices of
// both operands in workgroup memory. A tile of rows that straddles a segment boundary runs
// once per expert it meets, each pass loading only its expert's rows (the others read as 0),
// so the accumulators end up with every row's own expert. Rows at or past the kept total
// (offsets[E]) are written as 0: dropped assignments and padding point there.
//
// Layouts (row-major f32): a [M, Kd] (GATHER) or [S, Kd]; rows [S] (i32); w as above;
// offsets [E + 1] (i32); c [S, Nd]. info: S.

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> rows: array<i32>;
@group(0) @binding(2) var<storage, read_write> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> offsets: array<i32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

const E: u32 = {{ e }}u;
const KD: u32 = {{ kd }}u;
const ND: u32 = {{ nd }}u;
const TRANS: bool = {{ trans }};
const GATHER: bool = {{ gather }};
const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

// [TK][TM / 4] and [TK][TN / 4] vec4s: a thread's 4 rows (columns) are one vec4
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;
var<workgroup> seg: vec2<u32>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let s_rows = info[0];
    let r0 = wid.x * TM;
    let c0 = wid.y * TN;
    let tx = tid % 16u; // this thread's 4 columns: c0 + 4 tx ..
    let ty = tid / 16u; // this thread's 4 rows: r0 + 4 ty ..

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var e = 0u; e < E; e++) {
        if (tid == 0u) {
            seg = vec2<u32>(max(u32(offsets[e]), r0), min(u32(offsets[e + 1u]), r0 + TM));
        }
        let sg = workgroupUniformLoad(&seg);
        if (sg.x >= sg.y) {
            continue;
        }
        for (var k0 = 0u; k0 < KD; k0 += TK) {
            // A: TM rows x TK depth; consecutive threads read consecutive depths of one row
            for (var i = 0u; i < 4u; i++) {
                let idx = tid + i * 256u;
                let m = idx / TK;
                let kk = idx % TK;
                let row = r0 + m;
                var v = 0.0;
                if (row >= sg.x && row < sg.y && k0 + kk < KD) {
                    var src = row;
                    if (GATHER) {
                        src = u32(rows[row]);
                    }
                    v = a[src * KD + k0 + kk];
                }
                a_tile[kk * (TM / 4u) + m / 4u][m % 4u] = v;
            }
            // B: TK depth x TN columns, read along the stored rows
            for (var i = 0u; i < 4u; i++) {
                let idx = tid + i * 256u;
                var kk: u32;
                var nn: u32;
                if (TRANS) {
                    kk = idx % TK;
                    nn = idx / TK;
                } else {
                    kk = idx / TN;
                    nn = idx % TN;
                }
                var v = 0.0;
                if (k0 + kk < KD && c0 + nn < ND) {
                    if (TRANS) {
                        v = w[(e * ND + c0 + nn) * KD + k0 + kk];
                    } else {
                        v = w[(e * KD + k0 + kk) * ND + c0 + nn];
                    }
                }
                b_tile[kk * (TN / 4u) + nn / 4u][nn % 4u] = v;
            }
            workgroupBarrier();
            for (var kk = 0u; kk < TK; kk++) {
                let av = a_tile[kk * (TM / 4u) + ty];
                let bv = b_tile[kk * (TN / 4u) + tx];
                acc0 += av.x * bv;
                acc1 += av.y * bv;
                acc2 += av.z * bv;
                acc3 += av.w * bv;
            }
            workgroupBarrier();
        }
    }

    var accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let row = r0 + 4u * ty + i;
        if (row >= s_rows) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = c0 + 4u * tx + j;
            if (col < ND) {
                c[row * ND + col] = accs[i][j];
            }
        }
    }
}
