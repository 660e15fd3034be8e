// MoE expert GEMM, weight gradient: for every expert e,
//   dW[e] = sum over rows s of its segment [offsets[e], offsets[e + 1]) of a[src(s)]^T g[s]
// with src(s) = rows[s] under GATHER (tokens gathered as the tile loads them) or s otherwise,
// as in moe_gemm.wgsl. Workgroup (x: TM rows of Kd, y: TN columns of Nd, z: expert); it walks
// its expert's segment TK rows at a time, 4 x 4 outputs per invocation. An expert that got no
// rows gets a zero gradient.
//
// Layouts (row-major f32): a [M, Kd] or [S, Kd]; rows [S] (i32); g [S, Nd]; offsets [E + 1];
// dw [E, Kd, Nd]. info: S.

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> rows: array<i32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> offsets: array<i32>;
@group(0) @binding(4) var<storage, read_write> dw: array<f32>;
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

const KD: u32 = {{ kd }}u;
const ND: u32 = {{ nd }}u;
const GATHER: bool = {{ gather }};
const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> a_tile: array<vec4<f32>, 256>; // [TK][TM / 4]
var<workgroup> g_tile: array<vec4<f32>, 256>; // [TK][TN / 4]
var<workgroup> seg: vec2<u32>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let k0 = wid.x * TM;
    let c0 = wid.y * TN;
    let e = wid.z;
    let tx = tid % 16u;
    let ty = tid / 16u;
    if (tid == 0u) {
        // (clamped to the rows there are, should the offsets ever disagree with them)
        seg = vec2<u32>(u32(offsets[e]), min(u32(offsets[e + 1u]), info[0]));
    }
    let sg = workgroupUniformLoad(&seg);

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var s0 = sg.x; s0 < sg.y; s0 += TK) {
        for (var i = 0u; i < 4u; i++) {
            let idx = tid + i * 256u;
            let ss = idx / TM;
            let m = idx % TM;
            let s = s0 + ss;
            var v = 0.0;
            var u = 0.0;
            if (s < sg.y) {
                var src = s;
                if (GATHER) {
                    src = u32(rows[s]);
                }
                if (k0 + m < KD) {
                    v = a[src * KD + k0 + m];
                }
                if (c0 + m < ND) {
                    u = g[s * ND + c0 + m];
                }
            }
            a_tile[ss * (TM / 4u) + m / 4u][m % 4u] = v;
            g_tile[ss * (TN / 4u) + m / 4u][m % 4u] = u;
        }
        workgroupBarrier();
        for (var ss = 0u; ss < TK; ss++) {
            let av = a_tile[ss * (TM / 4u) + ty];
            let gv = g_tile[ss * (TN / 4u) + tx];
            acc0 += av.x * gv;
            acc1 += av.y * gv;
            acc2 += av.z * gv;
            acc3 += av.w * gv;
        }
        workgroupBarrier();
    }

    var accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let kr = k0 + 4u * ty + i;
        if (kr >= KD) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = c0 + 4u * tx + j;
            if (col < ND) {
                dw[(e * KD + kr) * ND + col] = accs[i][j];
            }
        }
    }
}
