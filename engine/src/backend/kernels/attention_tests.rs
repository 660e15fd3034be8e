//! The flash-attention kernels against `attention_reference` (plain burn ops, full score
//! matrix) on the wgpu device: outputs and the gradients of q, k and v, over sizes that are not
//! multiples of the workgroup or tile, grouped-query heads, causal masks with and without a KV
//! cache offset, key padding, and head dimensions up to 128. Rows whose query sees no key are
//! left out of the comparison (the reference averages all values there, the kernel writes 0;
//! neither reaches a loss).

use burn::prelude::*;
use burn::tensor::FloatDType;

use super::flash_attention;
use super::tests::{host, wgpu};
use crate::model::attention::{attention_reference, causal_bias, padding_bias};

fn normal<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let mut rng = crate::rng::Rng::new(seed);
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}[{i}] is {g}");
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}[{i}]: kernel {g} vs reference {w} (tolerance {tol} x {scale})"
        );
    }
}

/// One attention forward: the kernel, or the burn-ops reference with the padding and causal
/// biases built in f32 and cast to `dtype` (the inputs' type).
fn attend(
    kernel: bool,
    (q, k, v): (Tensor<4>, Tensor<4>, Tensor<4>),
    mask: Tensor<2>,
    causal: bool,
    dtype: FloatDType,
) -> Tensor<4> {
    let [_, _, tq, d] = q.dims();
    let tk = k.dims()[2];
    if kernel {
        return flash_attention(q, k, v, mask, causal, 1.0 / (d as f32).sqrt());
    }
    let mut bias = padding_bias(mask.cast(FloatDType::F32));
    if causal {
        bias = bias + causal_bias(tq, tk, &q.device());
    }
    attention_reference(q, k, v, bias.cast(dtype))
}

#[derive(Debug, Clone, Copy)]
struct Case {
    b: usize,
    h: usize,
    hk: usize,
    tq: usize,
    tk: usize,
    d: usize,
    causal: bool,
    /// Left-padded keys per batch row (row r has `pad * r` padding keys).
    pad: usize,
}

fn check(c: Case) {
    let device = wgpu();
    let ad = device.clone().autodiff();
    let seed = (c.tq * 31 + c.tk * 7 + c.d) as u64;
    let q0 = normal([c.b, c.h, c.tq, c.d], seed, &ad);
    let k0 = normal([c.b, c.hk, c.tk, c.d], seed + 1, &ad);
    let v0 = normal([c.b, c.hk, c.tk, c.d], seed + 2, &ad);
    let mask_host: Vec<f32> = (0..c.b)
        .flat_map(|r| (0..c.tk).map(move |j| if j < c.pad * r { 0.0 } else { 1.0 }))
        .collect();
    let mask = Tensor::<2>::from_data(TensorData::new(mask_host.clone(), [c.b, c.tk]), &ad);
    // which query rows see at least one key (causal: keys pad..=i + offset)
    let offset = c.tk - c.tq;
    let seen: Vec<f32> = (0..c.b * c.h * c.tq)
        .map(|idx| {
            let (r, i) = (idx / (c.h * c.tq), idx % c.tq);
            let last = if c.causal { i + offset } else { c.tk - 1 };
            if c.pad * r <= last { 1.0 } else { 0.0 }
        })
        .collect();
    let seen_t = Tensor::<4>::from_data(TensorData::new(seen.clone(), [c.b, c.h, c.tq, 1]), &ad);
    // upstream gradient, zero on rows that see nothing
    let up = normal([c.b, c.h, c.tq, c.d], seed + 3, &ad) * seen_t.clone();
    let run = |kernel: bool| {
        let (q, k, v) = (
            q0.clone().detach().require_grad(),
            k0.clone().detach().require_grad(),
            v0.clone().detach().require_grad(),
        );
        let qkv = (q.clone(), k.clone(), v.clone());
        let out = attend(kernel, qkv, mask.clone(), c.causal, FloatDType::F32);
        let out = out * seen_t.clone();
        let grads = (out.clone() * up.clone()).sum().backward();
        (
            host(out),
            host(q.grad(&grads).expect("dq")),
            host(k.grad(&grads).expect("dk")),
            host(v.grad(&grads).expect("dv")),
        )
    };
    let (ko, kq, kk, kv) = run(true);
    let (ro, rq, rk, rv) = run(false);
    let label = format!("{c:?}");
    close(&format!("{label} out"), &ko, &ro, 2e-5);
    close(&format!("{label} dq"), &kq, &rq, 1e-4);
    close(&format!("{label} dk"), &kk, &rk, 1e-4);
    close(&format!("{label} dv"), &kv, &rv, 1e-4);
}

#[test]
fn attention_kernel_matches_reference_causal_gqa_padding() {
    // grouped-query heads, causal self-attention, left padding, sizes off the 64-row block
    check(Case {
        b: 3,
        h: 4,
        hk: 2,
        tq: 37,
        tk: 37,
        d: 16,
        causal: true,
        pad: 5,
    });
    // one query row, one key
    check(Case {
        b: 1,
        h: 1,
        hk: 1,
        tq: 1,
        tk: 1,
        d: 4,
        causal: true,
        pad: 0,
    });
}

#[test]
fn attention_kernel_matches_reference_with_kv_cache_offset() {
    // a few new queries against a longer cache (query i sits at tk - tq + i)
    check(Case {
        b: 2,
        h: 2,
        hk: 1,
        tq: 3,
        tk: 70,
        d: 32,
        causal: true,
        pad: 4,
    });
}

#[test]
fn attention_kernel_matches_reference_bidirectional_wide_heads() {
    // vision-style: no causal mask, more rows than two workgroups, head dims 80 and 128
    check(Case {
        b: 2,
        h: 3,
        hk: 3,
        tq: 130,
        tk: 130,
        d: 80,
        causal: false,
        pad: 9,
    });
    check(Case {
        b: 1,
        h: 2,
        hk: 1,
        tq: 65,
        tk: 65,
        d: 128,
        causal: false,
        pad: 0,
    });
}

#[test]
fn kernels_resolve_to_fused_on_autodiff_wgpu_devices() {
    let device = wgpu();
    assert!(super::Kernels::for_device(&device).fused());
    let ad = device.autodiff();
    let x = Tensor::<2>::zeros([1, 1], &ad);
    assert!(super::Kernels::for_device(&x.device()).fused());
}

/// The f16 variants (q, k, v, output and gradients stored in f16, arithmetic in f32) against
/// the f32 reference on the same f16-rounded inputs, and against burn's own ops run in f16:
/// the kernel's error must be of the order of f16 storage rounding (2^-11 relative) and no
/// larger than the all-f16 composition's. The key mask is passed in f16 too (it is read as f32).
fn check_half(c: Case) {
    let device = wgpu();
    let ad = device.clone().autodiff();
    let seed = (c.tq * 31 + c.tk * 7 + c.d) as u64;
    let half = |t: Tensor<4>| t.cast(FloatDType::F16);
    let q0 = half(normal([c.b, c.h, c.tq, c.d], seed, &ad));
    let k0 = half(normal([c.b, c.hk, c.tk, c.d], seed + 1, &ad));
    let v0 = half(normal([c.b, c.hk, c.tk, c.d], seed + 2, &ad));
    let up = half(normal([c.b, c.h, c.tq, c.d], seed + 3, &ad));
    // no padding here: every query row sees at least its own key
    let mask = Tensor::<2>::ones([c.b, c.tk], &ad).cast(FloatDType::F16);
    let run = |how: u8| {
        let dtype = if how == 2 {
            FloatDType::F32
        } else {
            FloatDType::F16
        };
        let (q, k, v) = (
            q0.clone().cast(dtype).detach().require_grad(),
            k0.clone().cast(dtype).detach().require_grad(),
            v0.clone().cast(dtype).detach().require_grad(),
        );
        let qkv = (q.clone(), k.clone(), v.clone());
        let out = attend(how == 0, qkv, mask.clone(), c.causal, dtype);
        assert_eq!(out.dtype(), dtype.into(), "output dtype");
        let grads = (out.clone() * up.clone().cast(dtype)).sum().backward();
        [
            host(out),
            host(q.grad(&grads).expect("dq")),
            host(k.grad(&grads).expect("dk")),
            host(v.grad(&grads).expect("dv")),
        ]
    };
    let kernel = run(0);
    let burn_half = run(1);
    let truth = run(2);
    for (n, name) in ["out", "dq", "dk", "dv"].iter().enumerate() {
        let err = |got: &[f32]| {
            let scale = truth[n].iter().fold(1e-3f32, |m, x| m.max(x.abs()));
            got.iter()
                .zip(&truth[n])
                .map(|(g, w)| (g - w).abs() / scale)
                .fold(0.0f32, f32::max)
        };
        let (ek, eb) = (err(&kernel[n]), err(&burn_half[n]));
        eprintln!("{c:?} {name}: f16 kernel {ek:.2e}, f16 burn ops {eb:.2e} (of max |f32|)");
        assert!(
            kernel[n].iter().all(|x| x.is_finite()),
            "{name}: non-finite"
        );
        // measured on lavapipe: 2.3e-4..3.4e-4 (f16 rounding of the stored result), burn ops
        // in f16 2e-3..6e-4
        assert!(
            ek <= 1e-3,
            "{c:?} {name}: f16 kernel {ek:.2e} off the f32 reference"
        );
        assert!(
            ek <= eb,
            "{c:?} {name}: f16 kernel {ek:.2e} worse than f16 burn ops {eb:.2e}"
        );
    }
}

#[test]
fn attention_kernel_in_f16_matches_f32_reference() {
    assert!(
        crate::backend::adapters()
            .first()
            .is_some_and(|a| a.shader_f16),
        "this test needs an adapter with shader-f16 (lavapipe offers it)"
    );
    check_half(Case {
        b: 2,
        h: 4,
        hk: 2,
        tq: 37,
        tk: 37,
        d: 16,
        causal: true,
        pad: 0,
    });
    check_half(Case {
        b: 1,
        h: 2,
        hk: 1,
        tq: 130,
        tk: 130,
        d: 128,
        causal: false,
        pad: 0,
    });
}
