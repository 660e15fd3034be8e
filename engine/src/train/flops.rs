//! Model FLOPs of a training step, for model-FLOPs utilisation (MFU): the FLOPs the step's
//! model work needs over the device's measured matmul peak (`backend::peak`), nanoGPT's
//! `estimate_mfu` extended to a vision tower, a projector, GQA, SwiGLU, MoE and frozen parts.
//!
//! Counted: every matmul of the forward (2 FLOPs per multiply-add), attention's two products
//! over each token's causal context, the LM head at the rows the loss reads (Condenser never
//! forms the other rows' logits), and the backward as 2x the forward of a part that trains
//! (input and weight gradients) or 1x for a frozen part that gradients flow through (input
//! gradients only). A frozen tower whose features come from the cache costs nothing that step.
//! Not counted: norms, activations, softmax, the optimiser, a teacher's forward (distillation
//! stages therefore report a lower bound).

use crate::config::{LlmConfig, MllmConfig, StageFreeze, VisionConfig};
use crate::data::HostBatch;

/// Forward FLOPs of the vision tower on one image.
pub fn vision_forward(v: &VisionConfig) -> f64 {
    let (c, m, t) = (
        v.hidden as f64,
        v.mlp_hidden as f64,
        v.num_positions() as f64,
    );
    let patch = 2.0 * (3 * v.patch_size * v.patch_size) as f64 * c * v.num_patches() as f64;
    let per_layer = t * (2.0 * 4.0 * c * c + 2.0 * 2.0 * c * m) + 2.0 * 2.0 * t * t * c;
    patch + v.layers as f64 * per_layer
}

/// Forward FLOPs of the projector per visual token.
fn projector_forward(cv: usize, d: usize) -> f64 {
    2.0 * (cv * d + d * d) as f64
}

/// Forward FLOPs of the decoder's layers per token, without attention's context term.
fn llm_layer_token(l: &LlmConfig, i: usize) -> f64 {
    let d = l.hidden as f64;
    let kv = (l.kv_heads * l.head_dim()) as f64;
    let proj = 2.0 * (2.0 * d * d + 2.0 * d * kv);
    let ffn = 2.0 * 3.0 * d * l.intermediate as f64;
    let ffn = match &l.moe {
        Some(moe) if l.is_moe_layer(i) => ffn * moe.top_k as f64 + 2.0 * d * moe.experts as f64,
        _ => ffn,
    };
    proj + ffn
}

/// Multiplier of a part's forward FLOPs: forward, plus input and weight gradients when it
/// trains, plus input gradients when something before it trains.
fn passes(trains: bool, upstream_trains: bool) -> f64 {
    if trains {
        3.0
    } else if upstream_trains {
        2.0
    } else {
        1.0
    }
}

/// Model FLOPs of one step of a stage over batch `hb`, in which `images_encoded` images went
/// through the vision tower (all of them when it trains; the cache misses when frozen).
pub fn step_flops(
    cfg: &MllmConfig,
    freeze: &StageFreeze,
    hb: &HostBatch,
    images_encoded: usize,
) -> f64 {
    let (v, l) = (&cfg.vision, &cfg.llm);
    let vision_trains = freeze.vision.trains();
    let projector_trains = freeze.projector.trains();
    let llm_trains = freeze.llm.trains();
    let vision = images_encoded as f64 * vision_forward(v) * passes(vision_trains, false);
    // real (unmasked) tokens per row, and the causal context they attend over
    let mut tokens = 0.0;
    let mut context = 0.0;
    for r in 0..hb.b {
        let n = hb.attention_mask[r * hb.t..(r + 1) * hb.t]
            .iter()
            .filter(|m| **m > 0.0)
            .count() as f64;
        tokens += n;
        context += n * (n + 1.0) / 2.0;
    }
    let visual_tokens = hb.visual_mask().iter().filter(|m| **m > 0.0).count() as f64;
    let projector = visual_tokens
        * projector_forward(v.hidden, l.hidden)
        * passes(projector_trains, vision_trains);
    let upstream = vision_trains || projector_trains;
    let d = l.hidden as f64;
    let body: f64 = (0..l.layers)
        .map(|i| {
            let trains = freeze.llm.trains_layer(i);
            let per = tokens * llm_layer_token(l, i) + 2.0 * 2.0 * context * d;
            per * passes(trains, upstream || llm_trains)
        })
        .sum();
    let labelled = hb.loss_mask.iter().filter(|m| **m > 0.0).count() as f64;
    let head = labelled * 2.0 * d * l.vocab_size as f64 * passes(llm_trains, true);
    vision + projector + body + head
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nanoGPT's rule for a plain decoder: 6 N FLOPs per token for N matmul parameters, plus
    /// attention. With a one-row batch, no image and every token labelled, the estimate must
    /// equal 6 * (N_layers * T + head) + the causal attention term, computed by hand here.
    #[test]
    fn a_text_only_decoder_step_is_six_n_per_token_plus_attention() {
        let cfg: MllmConfig = toml::from_str(
            r#"
            [vision]
            image_size = 8
            patch_size = 4
            hidden = 8
            layers = 1
            heads = 1
            mlp_hidden = 8
            [llm]
            vocab_size = 100
            hidden = 16
            layers = 2
            heads = 4
            kv_heads = 2
            intermediate = 32
            max_positions = 64
            "#,
        )
        .unwrap();
        let freeze: StageFreeze = toml::from_str(
            r#"vision = "frozen"
            projector = "full"
            llm = "full""#,
        )
        .unwrap();
        let t = 5;
        let hb = HostBatch {
            b: 1,
            t,
            input_ids: vec![1; t],
            gather: (0..t as i64).collect(),
            positions: (0..t as i64).collect(),
            attention_mask: vec![1.0; t],
            targets: vec![1; t],
            loss_mask: vec![1.0; t],
        };
        // per layer: q, o 16x16; k, v 16x8 (2 kv heads of 4); gate, up, down 16x32
        let n_layer = (2 * 16 * 16 + 2 * 16 * 8 + 3 * 16 * 32) as f64;
        let head = (16 * 100) as f64;
        let attention = 2.0 * 2.0 * (5.0 * 6.0 / 2.0) * 16.0;
        let want = 3.0 * (2.0 * 2.0 * n_layer * t as f64 + 2.0 * attention + 2.0 * head * t as f64);
        let got = step_flops(&cfg, &freeze, &hb, 0);
        assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
    }
}
