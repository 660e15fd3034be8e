//! Llama/Qwen2-style decoder: token embedding, pre-norm blocks (RMSNorm, RoPE attention with
//! grouped-query heads, SwiGLU feed-forward), final RMSNorm and a tied or untied head.
//! The model takes input *embeddings* so that the multimodal wrapper can splice in visual
//! tokens; [`Llm::embed`] maps token ids.

use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm, RmsNormConfig};
use burn::prelude::*;

use super::attention::{AttnMask, attention};
use super::init::{INIT_STD, embedding, linear, normal_tensor};
use super::mlp::Mlp;
use super::moe::{LayerRouting, MoeMlp, Phase, Route, RouterLosses};
use super::rope::Rope;
use crate::backend::kernels::Kernels;
use crate::config::LlmConfig;
use crate::rng::Rng;

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    kv_heads: usize,
}

/// A layer's feed-forward block: dense SwiGLU, or a Mixture of SwiGLU experts.
// The dense variant is the larger handle (three Linears inline, the experts sit in a Vec); a
// layer is built once and never moved in a hot path, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Ffn {
    Dense(Mlp),
    Moe(MoeMlp),
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Ffn,
}

/// What the MoE layers of one forward did: the router losses (summed over layers) and each
/// layer's routing, in layer order. Empty for a dense decoder.
#[derive(Debug, Clone)]
pub struct MoeTrace {
    pub losses: Option<RouterLosses>,
    pub layers: Vec<LayerRouting>,
}

/// The decoder.
#[derive(Module, Debug)]
pub struct Llm {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<Param<Tensor<2>>>,
    #[module(skip)]
    pub config: LlmConfig,
    #[module(skip)]
    rope: Rope,
    /// Whether attention runs the flash kernels on wgpu (see [`super::Mllm::set_kernels`]).
    #[module(skip)]
    pub kernels: Kernels,
}

/// Per-layer cached keys and values `[B, Hkv, T, d]` for incremental decoding.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dims()[2])
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Attention {
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        pos: Tensor<2, Int>,
        mask: &AttnMask,
        kernels: Kernels,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let split = |y: Tensor<3>, h: usize| {
            let d = y.dims()[2] / h;
            y.reshape([b, t, h, d]).swap_dims(1, 2)
        };
        let q = rope.apply(
            split(self.q_proj.forward(x.clone()), self.heads),
            pos.clone(),
        );
        let mut k = rope.apply(split(self.k_proj.forward(x.clone()), self.kv_heads), pos);
        let mut v = split(self.v_proj.forward(x), self.kv_heads);
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.take() {
                k = Tensor::cat(vec![pk, k], 2);
                v = Tensor::cat(vec![pv, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let out = attention(q, k, v, mask, kernels);
        let [_, h, _, d] = out.dims();
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, t, h * d]))
    }
}

impl Llm {
    /// Builds a decoder with seeded N(0, 0.02) weights.
    pub fn new(config: &LlmConfig, rng: &mut Rng, device: &Device) -> Self {
        let c = config;
        let hd = c.head_dim();
        let norm = || {
            RmsNormConfig::new(c.hidden)
                .with_epsilon(c.rms_eps)
                .init(device)
        };
        let layers = (0..c.layers)
            .map(|_| DecoderLayer {
                input_layernorm: norm(),
                self_attn: Attention {
                    q_proj: linear(rng, c.hidden, c.heads * hd, c.qkv_bias, device),
                    k_proj: linear(rng, c.hidden, c.kv_heads * hd, c.qkv_bias, device),
                    v_proj: linear(rng, c.hidden, c.kv_heads * hd, c.qkv_bias, device),
                    o_proj: linear(rng, c.heads * hd, c.hidden, false, device),
                    heads: c.heads,
                    kv_heads: c.kv_heads,
                },
                post_attention_layernorm: norm(),
                mlp: Ffn::Dense(Mlp {
                    gate_proj: linear(rng, c.hidden, c.intermediate, false, device),
                    up_proj: linear(rng, c.hidden, c.intermediate, false, device),
                    down_proj: linear(rng, c.intermediate, c.hidden, false, device),
                }),
            })
            .collect::<Vec<_>>();
        // MoE layers are built after every dense weight is drawn, from their own stream, so a
        // sparse model's shared weights equal those of the dense model with the same seed
        let mut moe_rng = rng.fork(0x4d6f45);
        let layers = layers
            .into_iter()
            .enumerate()
            .map(|(i, mut l)| {
                if let (true, Some(m)) = (c.is_moe_layer(i), &c.moe) {
                    l.mlp = Ffn::Moe(MoeMlp::new(
                        c.hidden,
                        c.intermediate,
                        m.routing(),
                        &mut moe_rng,
                        device,
                    ));
                }
                l
            })
            .collect();
        let embed_tokens = embedding(rng, c.vocab_size, c.hidden, device);
        let lm_head = (!c.tie_embeddings).then(|| {
            Param::from_tensor(normal_tensor(
                rng,
                [c.hidden, c.vocab_size],
                INIT_STD,
                device,
            ))
        });
        Llm {
            embed_tokens,
            layers,
            norm: norm(),
            lm_head,
            config: c.clone(),
            rope: Rope::new(hd, c.max_positions, c.rope_theta, device),
            kernels: Kernels::for_device(device),
        }
    }

    /// Token ids `[B, T]` to embeddings `[B, T, D]`.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.embed_tokens.forward(ids)
    }

    /// Runs the decoder stack on embeddings `[B, T, D]` and returns the final-norm hidden
    /// states `[B, T, D]`. `pos [B, T]` are RoPE positions; `mask` says which of the
    /// `Tcache + T` keys each position sees. MoE layers route every token at the
    /// evaluation capacity; training goes through [`Llm::hidden_routed`].
    pub fn hidden(
        &self,
        x: Tensor<3>,
        pos: Tensor<2, Int>,
        mask: AttnMask,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        self.hidden_routed(x, pos, mask, cache, None).0
    }

    /// [`Llm::hidden`] with the MoE layers' inputs spelled out (`route`: which tokens take part,
    /// which are visual, and the capacity factor; `None` routes every token at the evaluation
    /// capacity), returning what the routers did.
    pub fn hidden_routed(
        &self,
        x: Tensor<3>,
        pos: Tensor<2, Int>,
        mask: AttnMask,
        mut cache: Option<&mut KvCache>,
        route: Option<&Route>,
    ) -> (Tensor<3>, MoeTrace) {
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize(self.layers.len(), None);
        }
        let [b, t, _] = x.dims();
        let mut trace = MoeTrace {
            losses: None,
            layers: Vec::new(),
        };
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let a = layer.self_attn.forward(
                layer.input_layernorm.forward(h.clone()),
                &self.rope,
                pos.clone(),
                &mask,
                self.kernels,
                slot,
            );
            h = h + a;
            let normed = layer.post_attention_layernorm.forward(h.clone());
            let f = match &layer.mlp {
                Ffn::Dense(mlp) => mlp.forward(normed),
                Ffn::Moe(moe) => {
                    let all;
                    let r = match route {
                        Some(r) => r,
                        None => {
                            all = Route::all(b * t, Phase::Eval);
                            &all
                        }
                    };
                    let out = moe.forward(normed, &r.routed, r.phase, self.kernels);
                    trace.layers.push(LayerRouting::new(i, &out.routing, r));
                    trace.losses = Some(match trace.losses.take() {
                        None => out.losses,
                        Some(acc) => acc + out.losses,
                    });
                    out.y
                }
            };
            h = h + f;
        }
        (self.norm.forward(h), trace)
    }

    /// Hidden states `[B, T, D]` to logits `[B, T, V]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = hidden.dims();
        let w = self.head_weight();
        let v = w.dims()[1];
        hidden.reshape([b * t, d]).matmul(w).reshape([b, t, v])
    }

    /// The output head as `[D, V]` (the embedding table, transposed, when tied): logits are
    /// `hidden @ head_weight()`.
    pub fn head_weight(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed_tokens.weight.val().transpose(),
        }
    }

    /// Longest sequence the RoPE tables cover.
    pub fn max_positions(&self) -> usize {
        self.rope.max_positions()
    }

    /// The decoder with room for `vocab` tokens (at least its own): new embedding rows (and
    /// untied head columns) are the mean of the existing ones, the usual start for tokens
    /// added to a trained model (LLaVA's `<image>`), so the new ids begin as an average token
    /// instead of noise that would dominate the first logits.
    pub fn grow_vocab(mut self, vocab: usize) -> Self {
        let old = self.config.vocab_size;
        if vocab <= old {
            return self;
        }
        let extra = vocab - old;
        self.embed_tokens.weight = self.embed_tokens.weight.map(|w| {
            let mean = w.clone().mean_dim(0);
            Tensor::cat(vec![w, mean.repeat_dim(0, extra)], 0)
        });
        self.lm_head = self.lm_head.map(|head| {
            head.map(|w| {
                let mean = w.clone().mean_dim(1);
                Tensor::cat(vec![w, mean.repeat_dim(1, extra)], 1)
            })
        });
        self.config.vocab_size = vocab;
        self
    }
}
