// Shared by distill_forward.wgsl and distill_backward.wgsl (spliced in by the template, after
// the kernel's own bindings). One workgroup handles one row of the [N, V] logits; the
// divergence kind is a compile-time constant so every branch on it is uniform.
//
// Kinds: 0 forward KL, 1 reverse KL, 2 generalised JSD(beta), 3 skew forward KL(alpha),
// 4 skew reverse KL(alpha), 5 total variation. `PARAM` below is beta or alpha.

const WG: u32 = {{ wg }}u;
const KIND: u32 = {{ kind }}u;
// Running maximum of an empty partial: far below any finite logit, but not -inf, so that
// `exp(NEG - NEG)` stays 1 and a merge of two empty partials stays empty (z = 0).
const NEG: f32 = -3.0e38;

// log(a e^x + (1 - a) e^y) without leaving log space.
fn log_mix(a: f32, x: f32, y: f32) -> f32 {
    let xa = x + log(a);
    let yb = y + log(1.0 - a);
    let m = max(xa, yb);
    return m + log(1.0 + exp(-abs(xa - yb)));
}

// What a workgroup reads from the kernel's `info` buffer (declared by each kernel, in its
// last binding: n_rows, vocab, rows per x, bits(1 / T), bits(PARAM)) and the row it owns.
// Rows run over x, then y (a dispatch is at most 65535 workgroups per dimension). An invalid
// workgroup computes a clamped row and writes nothing, so that every workgroupBarrier stays in
// uniform control flow.
struct Row {
    v: u32,
    inv_t: f32,
    param: f32,
    row: u32,
    valid: bool,
    base: u32,
}

fn row_setup(wid: vec3<u32>) -> Row {
    let n = info[0];
    let v = info[1];
    let raw = wid.y * info[2] + wid.x;
    let row = min(raw, n - 1u);
    return Row(v, bitcast<f32>(info[3]), bitcast<f32>(info[4]), row, raw < n, row * v);
}
