
// Shared by moe_gemm.wgsl and moe_weight_grad.wgsl (spliced in after each kernel's bindings):
// the expert GEMMs over the expert-sorted rows. A workgroup holds R rows of accumulators and
// WG * 4 columns of Nd, 4 per invocation; KD is the depth of the input rows, GATHER says
// whether sorted row s reads input row rows[s] (the token) or row s itself.

const KD: u32 = {{ kd }}u;
const ND: u32 = {{ nd }}u;
const GATHER: bool = {{ gather }};
const R: u32 = {{ r }}u;
const WG: u32 = {{ wg }}u;

// The four columns starting at `col` that an invocation owns; columns past the end read the
// last one (their results are not stored).
fn columns(col: u32) -> vec4<u32> {
    return vec4<u32>(col, min(col + 1u, ND - 1u), min(col + 2u, ND - 1u), min(col + 3u, ND - 1u));
}

// The input row that sorted row s reads.
fn source_row(s: u32) -> u32 {
    if (GATHER) {
        return u32(rows[s]);
    }
    return s;
}
