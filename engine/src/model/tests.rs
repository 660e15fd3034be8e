//! Model checks against independent computations on tiny configs (CPU backend).

use burn::prelude::*;

use super::*;
use crate::config::{LlmConfig, MllmConfig, ProjectorConfig, VisionConfig};
use crate::data::{Encoded, Padding, host_batch};

pub(crate) fn tiny_config() -> MllmConfig {
    MllmConfig {
        vision: VisionConfig {
            image_size: 16,
            patch_size: 8,
            hidden: 16,
            layers: 1,
            heads: 2,
            mlp_hidden: 32,
            mean: [0.5; 3],
            std: [0.5; 3],
            preprocess: Default::default(),
            drop_cls: true,
            layer_norm_eps: 1e-5,
            class_token: true,
            patch_bias: true,
            pre_norm: false,
            post_norm: true,
            act: crate::config::VisionAct::Gelu,
            layer_scale: false,
        },
        projector: ProjectorConfig::Mlp2xGelu,
        llm: LlmConfig {
            vocab_size: 32,
            hidden: 16,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            intermediate: 32,
            rope_theta: 10_000.0,
            rms_eps: 1e-6,
            tie_embeddings: false,
            qkv_bias: true,
            max_positions: 64,
            moe: None,
        },
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

fn image(device: &Device, b: usize) -> Tensor<4> {
    let n = b * 3 * 16 * 16;
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(v, [b, 3, 16, 16]), device)
}

fn example(ids: &[u32]) -> Encoded {
    // bos user IMG IMG IMG IMG then text
    let mut all = vec![1, 2, 3, 3, 3, 3];
    all.extend_from_slice(ids);
    Encoded {
        assistant: vec![true; all.len()],
        ids: all,
        image_start: Some(2),
    }
}

#[test]
fn prefix_logits_do_not_see_later_tokens() {
    let device = Device::flex();
    let model = Mllm::new(&tiny_config(), 5, &device);
    let nv = 4;
    let long = example(&[7, 8, 9, 10, 11]);
    let short = example(&[7, 8]);
    let l_long = model.logits(
        &host_batch(&[&long], nv, 0, Padding::Right)
            .to_device(Visual::Pixels(image(&device, 1)), &device),
    );
    let l_short = model.logits(
        &host_batch(&[&short], nv, 0, Padding::Right)
            .to_device(Visual::Pixels(image(&device, 1)), &device),
    );
    let t = short.ids.len();
    let a = host(l_long.narrow(1, 0, t));
    let b = host(l_short);
    assert!(
        max_abs_diff(&a, &b) < 1e-5,
        "causal leak: {}",
        max_abs_diff(&a, &b)
    );
}

#[test]
fn kv_cached_decoding_matches_full_forward() {
    let device = Device::flex();
    let model = Mllm::new(&tiny_config(), 6, &device);
    let nv = 4;
    let full = example(&[7, 8, 9]);
    let prompt = example(&[7, 8]);
    let img = image(&device, 1);
    let want = host(
        model.logits(
            &host_batch(&[&full], nv, 0, Padding::Right)
                .to_device(Visual::Pixels(img.clone()), &device),
        ),
    );
    let v = 32;
    let t = full.ids.len();
    let mut cache = KvCache::default();
    let hb = host_batch(&[&prompt], nv, 0, Padding::Left);
    let first = host(model.prefill(&hb.to_device(Visual::Pixels(img), &device), &mut cache));
    assert!(max_abs_diff(&first, &want[(t - 2) * v..(t - 1) * v]) < 1e-5);
    // one decode step with the cache
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![9i64], [1, 1]), &device);
    let pos = Tensor::<2, Int>::from_data(TensorData::new(vec![(t - 1) as i64], [1, 1]), &device);
    let h = model.llm.hidden(
        model.llm.embed(ids),
        pos,
        AttnMask::full(),
        Some(&mut cache),
    );
    let step = host(model.llm.logits(h));
    assert!(max_abs_diff(&step, &want[(t - 1) * v..t * v]) < 1e-5);
    assert_eq!(cache.len(), t);
}

#[test]
fn left_padding_does_not_change_a_rows_logits() {
    let device = Device::flex();
    let model = Mllm::new(&tiny_config(), 7, &device);
    let nv = 4;
    let a = example(&[7, 8, 9, 10]);
    let b = example(&[7]);
    let alone = host(
        model.prefill(
            &host_batch(&[&b], nv, 0, Padding::Left)
                .to_device(Visual::Pixels(image(&device, 1)), &device),
            &mut KvCache::default(),
        ),
    );
    let both = host(
        model.prefill(
            &host_batch(&[&a, &b], nv, 0, Padding::Left)
                .to_device(Visual::Pixels(image(&device, 2)), &device),
            &mut KvCache::default(),
        ),
    );
    // second row of the batch used the second image; recompute alone with that image
    let img2 = image(&device, 2).narrow(0, 1, 1);
    let alone2 = host(model.prefill(
        &host_batch(&[&b], nv, 0, Padding::Left).to_device(Visual::Pixels(img2), &device),
        &mut KvCache::default(),
    ));
    assert!(max_abs_diff(&both[32..], &alone2) < 1e-5);
    assert_eq!(alone.len(), 32);
}

#[test]
fn grouped_query_attention_equals_repeated_heads() {
    let device = Device::flex();
    let mut rng = Rng::new(1);
    let mk = |rng: &mut Rng, h: usize| {
        let v: Vec<f32> = (0..2 * h * 5 * 4).map(|_| rng.normal() as f32).collect();
        Tensor::<4>::from_data(TensorData::new(v, [2, h, 5, 4]), &device)
    };
    let q = mk(&mut rng, 4);
    let k = mk(&mut rng, 2);
    let v = mk(&mut rng, 2);
    let bias = causal_bias(5, 5, &device);
    let gqa = host(attention_reference(
        q.clone(),
        k.clone(),
        v.clone(),
        bias.clone(),
    ));
    // heads 0,1 use kv head 0; heads 2,3 use kv head 1
    let rep = |t: Tensor<4>| {
        let h0 = t.clone().narrow(1, 0, 1);
        let h1 = t.narrow(1, 1, 1);
        Tensor::cat(vec![h0.clone(), h0, h1.clone(), h1], 1)
    };
    let mha = host(attention_reference(q, rep(k), rep(v), bias));
    assert!(max_abs_diff(&gqa, &mha) < 1e-6);
}

#[test]
fn causal_bias_masks_exactly_the_future() {
    let device = Device::flex();
    let b = host(causal_bias(2, 4, &device));
    // queries at absolute positions 2 and 3 of 4 keys
    let m = attention::MASKED;
    assert_eq!(b, vec![0.0, 0.0, 0.0, m, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn patchify_matches_direct_indexing() {
    let device = Device::flex();
    let enc = VisionEncoder::new(&tiny_config().vision, &mut Rng::new(1), &device);
    let img = image(&device, 1);
    let raw = host(img.clone());
    let p = host(enc.patchify(img));
    // patch n = (gy, gx); element (c, y, x) inside it
    for n in 0..4 {
        let (gy, gx) = (n / 2, n % 2);
        for c in 0..3 {
            for y in 0..8 {
                for x in 0..8 {
                    let want = raw[c * 256 + (gy * 8 + y) * 16 + gx * 8 + x];
                    let got = p[n * 192 + c * 64 + y * 8 + x];
                    assert_eq!(want, got);
                }
            }
        }
    }
}

#[test]
fn same_seed_same_weights() {
    let device = Device::flex();
    let a = Mllm::new(&tiny_config(), 3, &device);
    let b = Mllm::new(&tiny_config(), 3, &device);
    let c = Mllm::new(&tiny_config(), 4, &device);
    let w = |m: &Mllm| host(m.llm.layers[0].self_attn.q_proj.weight.val());
    assert_eq!(w(&a), w(&b));
    assert_ne!(w(&a), w(&c));
}

/// Attention's backward against central finite differences, w.r.t. queries and keys (the
/// parameters that learn *where* to look), with a causal mask.
#[test]
fn attention_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    let (b, h, t, d) = (1, 2, 4, 3);
    let mut rng = Rng::new(17);
    let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
    let (q, k, v, w) = (
        draw(b * h * t * d),
        draw(b * h * t * d),
        draw(b * h * t * d),
        draw(b * h * t * d),
    );
    let loss = |q: &[f32], k: &[f32], grad: bool| {
        let mk =
            |x: &[f32]| Tensor::<4>::from_data(TensorData::new(x.to_vec(), [b, h, t, d]), &device);
        let (tq, tk) = (mk(q), mk(k));
        let (tq, tk) = if grad {
            (tq.require_grad(), tk.require_grad())
        } else {
            (tq, tk)
        };
        let out = attention_reference(tq.clone(), tk.clone(), mk(&v), causal_bias(t, t, &device));
        ((out * mk(&w)).sum(), tq, tk)
    };
    let (l, tq, tk) = loss(&q, &k, true);
    let grads = l.backward();
    let gq = host(tq.grad(&grads).unwrap());
    let gk = host(tk.grad(&grads).unwrap());
    let eps = 1e-2;
    for (which, base, g) in [("q", &q, &gq), ("k", &k, &gk)] {
        for i in 0..base.len() {
            let (mut up, mut dn) = (base.clone(), base.clone());
            up[i] += eps;
            dn[i] -= eps;
            let f = |x: &Vec<f32>| -> f32 {
                let (l, _, _) = if which == "q" {
                    loss(x, &k, false)
                } else {
                    loss(&q, x, false)
                };
                l.into_scalar()
            };
            let fd = (f(&up) - f(&dn)) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < 2e-2,
                "d/d{which}[{i}]: autodiff {} vs fd {fd}",
                g[i]
            );
        }
    }
}

/// The whole MLLM's loss gradient w.r.t. a query and a key projection (through RoPE, GQA,
/// the causal + padding mask and the `<image>` splice) against a directional finite difference.
#[test]
fn mllm_gradients_reach_query_and_key_projections() {
    let device = Device::flex().autodiff();
    let model = Mllm::new(&tiny_config(), 5, &device);
    let batch = host_batch(
        &[&example(&[7, 8, 9, 10, 11]), &example(&[12, 8])],
        4,
        0,
        Padding::Right,
    )
    .to_device(Visual::Pixels(image(&device, 2)), &device);
    let grads = model.loss(&batch).backward();
    let mut rng = Rng::new(23);
    for layer in 0..2 {
        for which in ["q", "k"] {
            let lin = |m: &Mllm| {
                let a = &m.llm.layers[layer].self_attn;
                if which == "q" {
                    a.q_proj.clone()
                } else {
                    a.k_proj.clone()
                }
            };
            let w = lin(&model).weight.val();
            let g = w.grad(&grads).expect("projection receives a gradient");
            let dims = w.dims();
            let dir: Vec<f32> = (0..dims[0] * dims[1])
                .map(|_| rng.normal() as f32)
                .collect();
            let dir = Tensor::<2>::from_data(TensorData::new(dir, dims), &device);
            let analytic: f32 = (Tensor::<2>::from_inner(g) * dir.clone())
                .sum()
                .into_scalar();
            let eps = 1e-2;
            let at = |s: f32| -> f32 {
                let mut m = model.clone();
                let base = lin(&model).weight.val().inner();
                let moved = Tensor::<2>::from_inner(base) + dir.clone().mul_scalar(s);
                let mut l = lin(&model);
                l.weight = burn::module::Param::from_tensor(moved);
                let a = &mut m.llm.layers[layer].self_attn;
                if which == "q" {
                    a.q_proj = l
                } else {
                    a.k_proj = l
                }
                m.loss(&batch).into_scalar()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (fd - analytic).abs() < 2e-3 + 0.05 * fd.abs(),
                "layer {layer} {which}_proj: autodiff {analytic} vs fd {fd}"
            );
            assert!(
                analytic.abs() > 1e-6,
                "layer {layer} {which}_proj gradient vanishes"
            );
        }
    }
}
