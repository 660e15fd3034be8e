//! ViT vision encoder in the CLIP/SigLIP/DINOv2 layout: patch embedding (a strided convolution
//! written as a linear map over unfolded patches), learned positions, pre-norm transformer
//! blocks. The parts the towers differ in are switches of [`VisionConfig`]: a CLS token (CLIP,
//! DINOv2) or none (SigLIP), a bias on the patch embedding, CLIP's LayerNorm before the first
//! block, DINOv2's layer scale, the final LayerNorm (absent when a tower is cut at LLaVA's
//! penultimate layer), the MLP activation. Optionally drops CLS from the output (LLaVA).

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid};

use super::attention::{AttnMask, attention};
use super::init::{INIT_STD, linear, normal_tensor};
use crate::backend::kernels::Kernels;
use crate::config::{VisionAct, VisionConfig};
use crate::rng::Rng;

#[derive(Module, Debug)]
pub struct VisionAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    #[module(skip)]
    heads: usize,
}

#[derive(Module, Debug)]
pub struct VisionMlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

#[derive(Module, Debug)]
pub struct VisionLayer {
    pub layer_norm1: LayerNorm,
    pub self_attn: VisionAttention,
    pub layer_norm2: LayerNorm,
    pub mlp: VisionMlp,
    /// `[C]` scale on the attention output before the residual add (DINOv2's `layer_scale1`).
    pub layer_scale1: Option<Param<Tensor<1>>>,
    /// `[C]` scale on the MLP output (DINOv2's `layer_scale2`).
    pub layer_scale2: Option<Param<Tensor<1>>>,
}

impl VisionLayer {
    fn forward(&self, x: Tensor<3>, act: VisionAct, kernels: Kernels) -> Tensor<3> {
        let scaled = |y: Tensor<3>, scale: &Option<Param<Tensor<1>>>| match scale {
            Some(s) => y * s.val().unsqueeze::<3>(),
            None => y,
        };
        let attn = self
            .self_attn
            .forward(self.layer_norm1.forward(x.clone()), kernels);
        let x = x + scaled(attn, &self.layer_scale1);
        let hidden = self.mlp.fc1.forward(self.layer_norm2.forward(x.clone()));
        let y = self.mlp.fc2.forward(activate(hidden, act));
        x + scaled(y, &self.layer_scale2)
    }
}

/// The encoder.
#[derive(Module, Debug)]
pub struct VisionEncoder {
    pub patch_embedding: Linear,
    /// `[1, 1, C]`, when the tower has a CLS token.
    pub class_embedding: Option<Param<Tensor<3>>>,
    /// `[1, positions, C]`.
    pub position_embedding: Param<Tensor<3>>,
    /// CLIP's LayerNorm over the embeddings (HF's spelling, so the paths map one to one).
    pub pre_layrnorm: Option<LayerNorm>,
    pub layers: Vec<VisionLayer>,
    pub post_layernorm: Option<LayerNorm>,
    #[module(skip)]
    pub config: VisionConfig,
    /// Whether attention runs the flash kernels on wgpu (see [`super::Mllm::set_kernels`]).
    #[module(skip)]
    pub kernels: Kernels,
}

impl VisionAttention {
    fn forward(&self, x: Tensor<3>, kernels: Kernels) -> Tensor<3> {
        let [b, t, c] = x.dims();
        let h = self.heads;
        let split = |y: Tensor<3>| y.reshape([b, t, h, c / h]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let o = attention(q, k, v, &AttnMask::full(), kernels);
        self.out_proj.forward(o.swap_dims(1, 2).reshape([b, t, c]))
    }
}

impl VisionEncoder {
    pub fn new(config: &VisionConfig, rng: &mut Rng, device: &Device) -> Self {
        let c = config;
        let ln = || {
            LayerNormConfig::new(c.hidden)
                .with_epsilon(c.layer_norm_eps)
                .init(device)
        };
        let patch_dim = 3 * c.patch_size * c.patch_size;
        let n = c.num_positions();
        let layers = (0..c.layers)
            .map(|_| VisionLayer {
                layer_norm1: ln(),
                self_attn: VisionAttention {
                    q_proj: linear(rng, c.hidden, c.hidden, true, device),
                    k_proj: linear(rng, c.hidden, c.hidden, true, device),
                    v_proj: linear(rng, c.hidden, c.hidden, true, device),
                    out_proj: linear(rng, c.hidden, c.hidden, true, device),
                    heads: c.heads,
                },
                layer_norm2: ln(),
                mlp: VisionMlp {
                    fc1: linear(rng, c.hidden, c.mlp_hidden, true, device),
                    fc2: linear(rng, c.mlp_hidden, c.hidden, true, device),
                },
                // DINOv2 starts its scales at 1e-5; ours start at one, so a fresh tower with
                // the switch on computes what one without it does
                layer_scale1: c
                    .layer_scale
                    .then(|| Param::from_tensor(Tensor::ones([c.hidden], device))),
                layer_scale2: c
                    .layer_scale
                    .then(|| Param::from_tensor(Tensor::ones([c.hidden], device))),
            })
            .collect();
        VisionEncoder {
            patch_embedding: linear(rng, patch_dim, c.hidden, c.patch_bias, device),
            class_embedding: c.class_token.then(|| {
                Param::from_tensor(
                    normal_tensor(rng, [1, c.hidden], INIT_STD, device).reshape([1, 1, c.hidden]),
                )
            }),
            position_embedding: Param::from_tensor(
                normal_tensor(rng, [n, c.hidden], INIT_STD, device).reshape([1, n, c.hidden]),
            ),
            pre_layrnorm: c.pre_norm.then(ln),
            layers,
            post_layernorm: c.post_norm.then(ln),
            config: c.clone(),
            kernels: Kernels::for_device(device),
        }
    }

    /// Cuts normalised images `[B, 3, H, W]` into flattened patches `[B, N, 3*p*p]`
    /// (channel-major inside a patch, as a conv kernel `[C_out, 3, p, p]` is laid out).
    pub fn patchify(&self, images: Tensor<4>) -> Tensor<3> {
        let [b, ch, hgt, wid] = images.dims();
        let p = self.config.patch_size;
        let (gh, gw) = (hgt / p, wid / p);
        images
            .reshape([b * ch * gh, p, gw, p])
            .swap_dims(1, 2) // [b*ch*gh, gw, p, p]
            .reshape([b, ch, gh * gw, p * p])
            .swap_dims(1, 2) // [b, n, ch, p*p]
            .reshape([b, gh * gw, ch * p * p])
    }

    /// Images `[B, 3, H, W]` (normalised) to visual features `[B, Nv, C]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<3> {
        let b = images.dims()[0];
        let c = self.config.hidden;
        let patches = self.patch_embedding.forward(self.patchify(images));
        let tokens = match &self.class_embedding {
            Some(cls) => Tensor::cat(vec![cls.val().expand([b, 1, c]), patches], 1),
            None => patches,
        };
        let mut x = tokens + self.position_embedding.val();
        if let Some(norm) = &self.pre_layrnorm {
            x = norm.forward(x);
        }
        for layer in &self.layers {
            x = layer.forward(x, self.config.act, self.kernels);
        }
        if let Some(norm) = &self.post_layernorm {
            x = norm.forward(x);
        }
        if self.config.drop_cls {
            let n = x.dims()[1];
            x.narrow(1, 1, n - 1)
        } else {
            x
        }
    }
}

/// The vision MLP's activation, written as transformers defines it.
fn activate(x: Tensor<3>, act: VisionAct) -> Tensor<3> {
    match act {
        VisionAct::Gelu => gelu(x),
        VisionAct::GeluTanh => {
            // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
                .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
            x.mul_scalar(0.5) * (inner.tanh() + 1.0)
        }
        VisionAct::QuickGelu => x.clone() * sigmoid(x.mul_scalar(1.702)),
    }
}
