// MoE dispatch: a stable counting sort of the token-expert assignments by expert, with the
// per-expert capacity applied, in one workgroup.
//
// Assignments are taken slot-major (every token's first choice, in token order, before any
// second choice), the order in which the reference fills capacities: an assignment is kept
// when fewer than `capacity` earlier assignments (in that order) went to its expert. Each of
// the WG invocations owns a contiguous run of that order; per-invocation histograms, an
// exclusive scan over invocations per expert (the prefix sum) and a second pass over the run
// give every assignment its rank within its expert, so the sort is stable and deterministic.
//
// Layouts: experts [N, K] (i32, E = padding); sorted_rows [S = N K]: the token of each kept
// assignment, grouped by expert (rows past the kept total are 0, a valid index);
// slot_pos [N, K]: where each assignment's row sits in sorted_rows, or S - 1 when it was
// dropped or is padding (row S - 1 is then past the kept total, and the expert GEMM leaves it
// 0); offsets [E + 1]: start of each expert's rows, offsets[E] the kept total; counts [E]: each
// expert's assignments before capacity (routing telemetry). info: N, capacity.

@group(0) @binding(0) var<storage, read_write> experts: array<i32>;
@group(0) @binding(1) var<storage, read_write> sorted_rows: array<i32>;
@group(0) @binding(2) var<storage, read_write> slot_pos: array<i32>;
@group(0) @binding(3) var<storage, read_write> offsets: array<i32>;
@group(0) @binding(4) var<storage, read_write> counts: array<i32>;
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

const E: u32 = {{ e }}u;
const K: u32 = {{ k }}u;
const WG: u32 = 64u;

// per invocation and expert: its count, then (after the scan) its first rank
var<workgroup> ranks: array<u32, 2048>; // WG * E, E <= 32
var<workgroup> starts: array<u32, 33>; // E + 1

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(local_invocation_index) tid: u32) {
    let n = info[0];
    let cap = info[1];
    let s = n * K;
    let run = (s + WG - 1u) / WG;
    let a0 = min(tid * run, s);
    let a1 = min(a0 + run, s);

    var local: array<u32, E>;
    for (var e = 0u; e < E; e++) {
        local[e] = 0u;
    }
    for (var a = a0; a < a1; a++) {
        let ex = u32(experts[(a % n) * K + a / n]);
        if (ex < E) {
            local[ex] += 1u;
        }
    }
    for (var e = 0u; e < E; e++) {
        ranks[tid * E + e] = local[e];
    }
    workgroupBarrier();
    if (tid < E) {
        var running = 0u;
        for (var w = 0u; w < WG; w++) {
            let c = ranks[w * E + tid];
            ranks[w * E + tid] = running;
            running += c;
        }
        counts[tid] = i32(running);
        starts[tid] = min(running, cap);
    }
    workgroupBarrier();
    if (tid == 0u) {
        var off = 0u;
        for (var e = 0u; e < E; e++) {
            let kept = starts[e];
            starts[e] = off;
            offsets[e] = i32(off);
            off += kept;
        }
        starts[E] = off;
        offsets[E] = i32(off);
    }
    workgroupBarrier();
    for (var e = 0u; e < E; e++) {
        local[e] = ranks[tid * E + e];
    }
    for (var a = a0; a < a1; a++) {
        let t = a % n;
        let slot = a / n;
        let ex = u32(experts[t * K + slot]);
        var pos = s - 1u;
        if (ex < E) {
            let r = local[ex];
            local[ex] = r + 1u;
            if (r < cap) {
                pos = starts[ex] + r;
                sorted_rows[pos] = i32(t);
            }
        }
        slot_pos[t * K + slot] = i32(pos);
    }
    for (var p = starts[E] + tid; p < s; p += WG) {
        sorted_rows[p] = 0;
    }
}
