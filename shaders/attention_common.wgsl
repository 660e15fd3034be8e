// Shared by the flash-attention kernels (spliced in after each kernel's bindings).
//
// Layouts (contiguous f32): q, o, do [B, H, Tq, D]; k, v [B, Hk, Tk, D] with H a multiple of Hk
// (grouped-query heads: query head h reads key/value head h / (H / Hk)); key_mask [B, Tk] (1 = a
// real key, 0 = padding); lse, delta [B, H, Tq]. `info`: B, H, Hk, Tq, Tk, causal, offset,
// bits(scale). With `causal`, query i sits at absolute position i + offset and sees keys
// j <= i + offset (offset = Tk - Tq when a KV cache holds the earlier keys).
//
// One invocation owns one query row (forward, dQ) or one key row (dK/dV); a workgroup's rows
// share tiles of TR rows of the other side, loaded cooperatively into workgroup memory. No
// [Tq, Tk] matrix is ever stored: the forward keeps an online softmax (running max, rescaled sum
// and output), the backward recomputes probabilities from the saved log-sum-exp.

const D: u32 = {{ d }}u;
const WG: u32 = {{ wg }}u;
// Rows per tile: TR * D = TILE floats (8 KiB), far inside WebGPU's 16 KiB of workgroup memory.
const TR: u32 = {{ tr }}u;
const TILE: u32 = {{ tile }}u;
const NEG: f32 = -3.0e38;
// The log-sum-exp of a query that sees no key: every recomputed probability exp(s - BIG) is 0.
const BIG: f32 = 3.0e38;

struct Params {
    b: u32,
    h: u32,
    hk: u32,
    tq: u32,
    tk: u32,
    causal: bool,
    offset: u32,
    scale: f32,
}

fn params() -> Params {
    return Params(info[0], info[1], info[2], info[3], info[4], info[5] == 1u, info[6],
        bitcast<f32>(info[7]));
}

// Whether query i may attend key j (the key-padding mask is checked separately).
fn visible(p: Params, i: u32, j: u32) -> bool {
    return !p.causal || j <= i + p.offset;
}
