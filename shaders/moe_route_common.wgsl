
// Shared by moe_route.wgsl and moe_route_backward.wgsl (spliced in after each kernel's
// bindings): one invocation per token of the [N, E] router logits, K experts chosen per token,
// E <= 32 (the chosen set is a bit mask). `info[0]` is N.

const E: u32 = {{ e }}u;
const K: u32 = {{ k }}u;

// The token an invocation owns (x: 64 tokens per workgroup), and whether it is one of the N.
fn token(gid: vec3<u32>) -> vec2<u32> {
    return vec2<u32>(gid.x, select(0u, 1u, gid.x < info[0]));
}
