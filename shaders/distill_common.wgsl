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

// Row and validity of this workgroup: rows run over x, then y (a dispatch is at most 65535
// workgroups per dimension). Invalid workgroups compute a clamped row and write nothing, so
// that every workgroupBarrier stays in uniform control flow.
fn row_of(wid: vec3<u32>, per_x: u32) -> u32 {
    return wid.y * per_x + wid.x;
}
