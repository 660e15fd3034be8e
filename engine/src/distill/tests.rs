//! Distillation losses against direct f64 evaluations of the formulas of docs/METHODS.md sections 2-3
//! (written from probabilities, not log-softmaxes, so they share no code with the engine), and
//! their gradients against central finite differences of those evaluations.

use burn::prelude::*;

use super::*;
use crate::backend::kernels::Kernels;
use crate::config::KernelPolicy;

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

/// Deterministic pseudo-random logits with a spread like a real model's.
fn logits(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut rng = crate::rng::Rng::new(seed);
    (0..n).map(|_| rng.normal() * scale).collect()
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| a * (a / b).ln())
        .sum()
}

fn mix(a: f64, p: &[f64], q: &[f64]) -> Vec<f64> {
    p.iter()
        .zip(q)
        .map(|(x, y)| a * x + (1.0 - a) * y)
        .collect()
}

fn zscore_host(z: &[f64]) -> Vec<f64> {
    let n = z.len() as f64;
    let mean = z.iter().sum::<f64>() / n;
    let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let std = (var + 1e-6).sqrt();
    z.iter().map(|x| (x - mean) / std).collect()
}

/// One token's divergence, scaled by T^2, straight from the definitions.
fn reference(zs: &[f64], zt: &[f64], spec: &DivergenceSpec) -> f64 {
    let (zs, zt) = if spec.zscore {
        (zscore_host(zs), zscore_host(zt))
    } else {
        (zs.to_vec(), zt.to_vec())
    };
    let t = spec.temperature;
    let ps = softmax(&zs.iter().map(|x| x / t).collect::<Vec<_>>());
    let pt = softmax(&zt.iter().map(|x| x / t).collect::<Vec<_>>());
    let d = match spec.divergence {
        Divergence::ForwardKl => kl(&pt, &ps),
        Divergence::ReverseKl => kl(&ps, &pt),
        Divergence::Jsd { beta } => {
            let m = mix(beta, &pt, &ps);
            beta * kl(&pt, &m) + (1.0 - beta) * kl(&ps, &m)
        }
        Divergence::SkewForwardKl { alpha } => kl(&pt, &mix(alpha, &pt, &ps)),
        Divergence::SkewReverseKl { alpha } => kl(&ps, &mix(alpha, &ps, &pt)),
        Divergence::Tvd => 0.5 * pt.iter().zip(&ps).map(|(a, b)| (a - b).abs()).sum::<f64>(),
    };
    d * t * t
}

/// Masked mean of the reference over rows of `[rows, v]`.
fn reference_masked(zs: &[f64], zt: &[f64], mask: &[f64], v: usize, spec: &DivergenceSpec) -> f64 {
    let mut total = 0.0;
    let mut count = 0.0;
    for (r, m) in mask.iter().enumerate() {
        if *m > 0.0 {
            total += reference(&zs[r * v..(r + 1) * v], &zt[r * v..(r + 1) * v], spec);
            count += 1.0;
        }
    }
    if count > 0.0 { total / count } else { 0.0 }
}

fn all_specs() -> Vec<DivergenceSpec> {
    let kinds = [
        Divergence::ForwardKl,
        Divergence::ReverseKl,
        Divergence::Jsd { beta: 0.5 },
        Divergence::Jsd { beta: 0.2 },
        Divergence::SkewForwardKl { alpha: 0.1 },
        Divergence::SkewReverseKl { alpha: 0.1 },
        Divergence::Tvd,
    ];
    let mut specs = Vec::new();
    for divergence in kinds {
        for (temperature, zscore) in [(1.0, false), (2.0, false), (0.7, true)] {
            specs.push(DivergenceSpec {
                divergence,
                temperature,
                zscore,
            });
        }
    }
    specs
}

fn tensor3(v: &[f64], shape: [usize; 3], device: &Device) -> Tensor<3> {
    let f: Vec<f32> = v.iter().map(|x| *x as f32).collect();
    Tensor::from_data(TensorData::new(f, shape), device)
}

fn tensor2(v: &[f64], shape: [usize; 2], device: &Device) -> Tensor<2> {
    let f: Vec<f32> = v.iter().map(|x| *x as f32).collect();
    Tensor::from_data(TensorData::new(f, shape), device)
}

#[test]
fn identical_distributions_give_zero() {
    let device = Device::flex();
    let z = logits(3 * 11, 1, 3.0);
    for spec in all_specs() {
        let a = tensor2(&z, [3, 11], &device);
        let d = host(token_divergence(a.clone(), a, &spec, Kernels::Reference));
        for x in d {
            assert!(x.abs() < 1e-5, "{}: {x}", spec.divergence.label());
        }
    }
}

#[test]
fn masked_values_match_the_formulas() {
    masked_values_match_on(Device::flex());
}

#[test]
fn gradients_match_finite_differences_and_skip_masked_tokens() {
    gradients_match_on(Device::flex().autodiff());
}

/// The same checks on the wgpu device (lavapipe where there is no GPU), once through the fused
/// WGSL kernel and once through the burn-ops reference. There must be an adapter: CI installs
/// lavapipe, and this test fails rather than skip without one.
#[test]
fn divergences_match_the_formulas_on_wgpu() {
    let (device, _) = crate::backend::select(crate::backend::BackendChoice::Wgpu)
        .expect("a wgpu adapter (scripts/setup.sh installs lavapipe)");
    for policy in [KernelPolicy::Auto, KernelPolicy::Reference] {
        masked_values_match_on_with(device.clone(), policy);
        gradients_match_on_with(device.clone().autodiff(), policy);
    }
}

fn masked_values_match_on(device: Device) {
    masked_values_match_on_with(device, KernelPolicy::Auto)
}

fn masked_values_match_on_with(device: Device, policy: KernelPolicy) {
    let kernels = Kernels::resolve(policy, &device);
    let (b, t, v) = (2, 3, 13);
    let zs = logits(b * t * v, 2, 2.5);
    let zt = logits(b * t * v, 3, 4.0);
    let mask = [1.0, 0.0, 1.0, 1.0, 1.0, 0.0];
    for spec in all_specs() {
        let got = host(masked_divergence(
            tensor3(&zs, [b, t, v], &device),
            tensor3(&zt, [b, t, v], &device),
            tensor2(&mask, [b, t], &device),
            &spec,
            kernels,
        ))[0] as f64;
        let want = reference_masked(&zs, &zt, &mask, v, &spec);
        assert!(
            (got - want).abs() < 1e-4 * want.abs().max(1.0),
            "{} T={} z={}: {got} vs {want}",
            spec.divergence.label(),
            spec.temperature,
            spec.zscore
        );
        assert!(want > 0.0, "the fixture must have distinct distributions");
    }
    // nothing counted: 0, not NaN
    let zero = host(masked_divergence(
        tensor3(&zs, [b, t, v], &device),
        tensor3(&zt, [b, t, v], &device),
        tensor2(&[0.0; 6], [b, t], &device),
        &DivergenceSpec::default(),
        kernels,
    ))[0];
    assert_eq!(zero, 0.0);
}

fn gradients_match_on(device: Device) {
    gradients_match_on_with(device, KernelPolicy::Auto)
}

fn gradients_match_on_with(device: Device, policy: KernelPolicy) {
    let kernels = Kernels::resolve(policy, &device);
    let (b, t, v) = (1, 3, 7);
    let zs = logits(b * t * v, 4, 1.5);
    let zt = logits(b * t * v, 5, 2.0);
    let mask = [1.0, 0.0, 1.0];
    for spec in all_specs() {
        let student = tensor3(&zs, [b, t, v], &device).require_grad();
        let teacher = tensor3(&zt, [b, t, v], &device).require_grad();
        let loss = masked_divergence(
            student.clone(),
            teacher.clone(),
            tensor2(&mask, [b, t], &device),
            &spec,
            kernels,
        );
        let grads = loss.backward();
        let g = host(student.grad(&grads).expect("student gradient"));
        // the teacher is a fixed target: no gradient flows into it
        if let Some(gt) = teacher.grad(&grads) {
            assert!(host(gt).iter().all(|x| *x == 0.0), "teacher got a gradient");
        }
        let h = 1e-5;
        for i in 0..zs.len() {
            let mut up = zs.clone();
            up[i] += h;
            let mut down = zs.clone();
            down[i] -= h;
            let fd = (reference_masked(&up, &zt, &mask, v, &spec)
                - reference_masked(&down, &zt, &mask, v, &spec))
                / (2.0 * h);
            let tol = 2e-4 + 2e-3 * fd.abs();
            assert!(
                (g[i] as f64 - fd).abs() < tol,
                "{} T={} z={} d/dz[{i}]: autodiff {} vs fd {fd}",
                spec.divergence.label(),
                spec.temperature,
                spec.zscore,
                g[i]
            );
            if mask[i / v] == 0.0 {
                assert_eq!(g[i], 0.0, "masked token {} got a gradient", i / v);
            }
        }
    }
}

#[test]
fn invalid_specs_are_rejected() {
    let bad = [
        DivergenceSpec {
            temperature: 0.0,
            ..Default::default()
        },
        DivergenceSpec {
            divergence: Divergence::Jsd { beta: 1.0 },
            ..Default::default()
        },
        DivergenceSpec {
            divergence: Divergence::SkewReverseKl { alpha: 1.0 },
            ..Default::default()
        },
    ];
    for spec in bad {
        assert!(spec.validate().is_err(), "{spec:?} accepted");
    }
    for spec in all_specs() {
        spec.validate().unwrap();
    }
}

/// RDist on the host: normalise rows, R = y y^T, 1 - cos(vec R_s, vec R_t), batch mean.
fn relation_reference(ys: &[f64], yt: &[f64], b: usize, n: usize, ds: usize, dt: usize) -> f64 {
    let corr = |y: &[f64], d: usize| -> Vec<f64> {
        let rows: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let r = &y[i * d..(i + 1) * d];
                let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt();
                r.iter().map(|x| x / norm).collect()
            })
            .collect();
        let mut out = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                out.push(rows[i].iter().zip(&rows[j]).map(|(a, c)| a * c).sum());
            }
        }
        out
    };
    let mut total = 0.0;
    for s in 0..b {
        let rs = corr(&ys[s * n * ds..(s + 1) * n * ds], ds);
        let rt = corr(&yt[s * n * dt..(s + 1) * n * dt], dt);
        let dot: f64 = rs.iter().zip(&rt).map(|(a, c)| a * c).sum();
        let na = rs.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb = rt.iter().map(|x| x * x).sum::<f64>().sqrt();
        total += 1.0 - dot / (na * nb);
    }
    total / b as f64
}

#[test]
fn relation_loss_matches_formula_and_gradient() {
    let device = Device::flex().autodiff();
    let (b, n, ds, dt) = (2, 5, 4, 6);
    let ys = logits(b * n * ds, 6, 1.0);
    let yt = logits(b * n * dt, 7, 1.0);
    let student = tensor3(&ys, [b, n, ds], &device).require_grad();
    let loss = relation_loss(student.clone(), tensor3(&yt, [b, n, dt], &device));
    let got = host(loss.clone())[0] as f64;
    let want = relation_reference(&ys, &yt, b, n, ds, dt);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    assert!(want > 0.01);
    let g = host(student.grad(&loss.backward()).unwrap());
    let h = 1e-5;
    for i in 0..ys.len() {
        let mut up = ys.clone();
        up[i] += h;
        let mut down = ys.clone();
        down[i] -= h;
        let fd = (relation_reference(&up, &yt, b, n, ds, dt)
            - relation_reference(&down, &yt, b, n, ds, dt))
            / (2.0 * h);
        assert!(
            (g[i] as f64 - fd).abs() < 1e-4 + 2e-3 * fd.abs(),
            "d/dy[{i}]: {} vs {fd}",
            g[i]
        );
    }
    // the same features related the same way: zero loss
    let same = relation_loss(
        tensor3(&ys, [b, n, ds], &device),
        tensor3(&ys, [b, n, ds], &device),
    );
    assert!(host(same)[0].abs() < 1e-6);
}

/// RDist over logits formed a vocabulary chunk at a time against the logits formed whole:
/// the correlation matrices and the loss's gradients with respect to the hidden states and the
/// head, for column chunks that split the vocabulary unevenly (and one that holds it all).
#[test]
fn chunked_logit_correlation_matches_the_whole_logits() {
    let device = Device::flex().autodiff();
    let (b, n, d, v) = (2, 5, 4, 37);
    let hs = logits(b * n * d, 11, 1.0);
    let ws = logits(d * v, 12, 1.0);
    let yt = tensor3(&logits(b * n * v, 13, 2.0), [b, n, v], &device);
    let run = |cols: Option<usize>| {
        let h = tensor3(&hs, [b, n, d], &device).require_grad();
        let w = tensor2(&ws, [d, v], &device).require_grad();
        let rs = match cols {
            Some(c) => linear_self_correlation(h.clone(), w.clone(), c),
            None => self_correlation(h.clone().matmul(w.clone().unsqueeze_dim(0))),
        };
        let loss = correlation_loss(rs.clone(), self_correlation(yt.clone()));
        let g = loss.backward();
        (
            host(rs),
            host(h.grad(&g).unwrap()),
            host(w.grad(&g).unwrap()),
        )
    };
    let (r0, h0, w0) = run(None);
    for cols in [5, 16, 37, 100] {
        let (r, h, w) = run(Some(cols));
        for (what, got, want) in [("R", &r, &r0), ("d hidden", &h, &h0), ("d head", &w, &w0)] {
            for (i, (a, e)) in got.iter().zip(want.iter()).enumerate() {
                assert!(
                    (a - e).abs() <= 1e-5 + 1e-4 * e.abs(),
                    "cols {cols}, {what}[{i}]: {a} vs {e}"
                );
            }
        }
    }
}

#[test]
fn hidden_mse_counts_only_masked_tokens() {
    let device = Device::flex();
    let a = tensor3(
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        [1, 4, 2],
        &device,
    );
    let t = tensor3(&[0.0; 8], [1, 4, 2], &device);
    let mask = tensor2(&[1.0, 0.0, 1.0, 0.0], [1, 4], &device);
    // tokens 0 and 2: (1+4)/2 = 2.5 and (25+36)/2 = 30.5, mean 16.5
    assert!((host(hidden_mse(a, t, mask))[0] - 16.5).abs() < 1e-5);
}

#[test]
fn vocabulary_policy() {
    let same = VocabAlignment::new(64, 64, 51).unwrap();
    assert_eq!(same.shared, 64);
    assert!(same.warning().is_none());
    let padded = VocabAlignment::new(151_936, 152_064, 151_646).unwrap();
    assert_eq!(padded.shared, 151_936);
    assert!(padded.warning().unwrap().contains("151936"));
    let err = VocabAlignment::new(100, 152_064, 151_646).unwrap_err();
    assert!(err.contains("student"), "{err}");
    let device = Device::flex();
    let z = Tensor::<3>::zeros([1, 2, 70], &device);
    assert_eq!(
        VocabAlignment::new(64, 70, 51).unwrap().narrow(z).dims(),
        [1, 2, 64]
    );
}

/// A teacher row's top-k from its logits, straight from the definition (f64, sorting the
/// probabilities): ids, log-probs, tail log-mass, at the spec's temperature and z-scoring.
fn top_k_host(zt: &[f64], k: usize, spec: &DivergenceSpec) -> (Vec<usize>, Vec<f64>, f64) {
    let z = if spec.zscore {
        zscore_host(zt)
    } else {
        zt.to_vec()
    };
    let p = softmax(&z.iter().map(|x| x / spec.temperature).collect::<Vec<_>>());
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
    order.truncate(k);
    let top: f64 = order.iter().map(|&i| p[i]).sum();
    let lp = order.iter().map(|&i| p[i].ln()).collect();
    (order, lp, (1.0 - top).max(1e-300).ln())
}

/// The binned divergence of one row from probabilities: the student's bins are its
/// probabilities of the teacher's top-k tokens and the sum of the rest.
fn binned_reference(
    zs: &[f64],
    ids: &[usize],
    lp: &[f64],
    tail: f64,
    spec: &DivergenceSpec,
) -> f64 {
    let z = if spec.zscore {
        zscore_host(zs)
    } else {
        zs.to_vec()
    };
    let t = spec.temperature;
    let ps = softmax(&z.iter().map(|x| x / t).collect::<Vec<_>>());
    let mut sb: Vec<f64> = ids.iter().map(|&i| ps[i]).collect();
    sb.push(1.0 - sb.iter().sum::<f64>());
    let mut tb: Vec<f64> = lp.iter().map(|l| l.exp()).collect();
    tb.push(tail.exp());
    let norm: f64 = tb.iter().sum();
    let tb: Vec<f64> = tb.iter().map(|x| x / norm).collect();
    match spec.divergence {
        Divergence::ForwardKl => kl(&tb, &sb),
        Divergence::ReverseKl => kl(&sb, &tb),
        Divergence::Jsd { beta } => {
            let m = mix(beta, &tb, &sb);
            beta * kl(&tb, &m) + (1.0 - beta) * kl(&sb, &m)
        }
        Divergence::SkewForwardKl { alpha } => kl(&tb, &mix(alpha, &tb, &sb)),
        Divergence::SkewReverseKl { alpha } => kl(&sb, &mix(alpha, &sb, &tb)),
        Divergence::Tvd => 0.5 * tb.iter().zip(&sb).map(|(a, b)| (a - b).abs()).sum::<f64>(),
    }
}

/// One row's top-k as the host sees it: ids, log-probs, tail log-mass.
type HostTopK = (Vec<usize>, Vec<f64>, f64);

/// Sparse rows for the teacher logits `zt` (`n` rows of `v`), from the engine's own top-k.
fn sparse_rows(
    zt: &[f64],
    n: usize,
    v: usize,
    k: usize,
    spec: &DivergenceSpec,
    device: &Device,
) -> (sparse::SparseRows, Vec<HostTopK>) {
    let (mut ids, mut logp, mut tail, mut host_rows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..n {
        let row = &zt[r * v..(r + 1) * v];
        let z = if spec.zscore {
            zscore_host(row)
        } else {
            row.to_vec()
        };
        let scaled: Vec<f32> = z.iter().map(|x| (x / spec.temperature) as f32).collect();
        let (i, l, t) = sparse::top_k_row(&scaled, k);
        host_rows.push((
            i.iter().map(|x| *x as usize).collect(),
            l.iter().map(|x| *x as f64).collect(),
            t as f64,
        ));
        ids.extend(i.iter().map(|x| *x as i64));
        logp.extend(l);
        tail.push(t);
    }
    let kk = k.min(v);
    (
        sparse::SparseRows {
            ids: Tensor::from_data(TensorData::new(ids, [n, kk]), device),
            logp: Tensor::from_data(TensorData::new(logp, [n, kk]), device),
            tail: Tensor::from_data(TensorData::new(tail, [n]), device),
        },
        host_rows,
    )
}

#[test]
fn the_engines_top_k_is_the_definitions() {
    let spec = DivergenceSpec::default();
    let (v, k) = (29, 5);
    let z = logits(v, 41, 3.0);
    let (ids, lp, tail) = top_k_host(&z, k, &spec);
    let zf: Vec<f32> = z.iter().map(|x| *x as f32).collect();
    let (gi, gl, gt) = sparse::top_k_row(&zf, k);
    assert_eq!(gi.iter().map(|x| *x as usize).collect::<Vec<_>>(), ids);
    for (a, b) in gl.iter().zip(&lp) {
        assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
    }
    assert!((gt as f64 - tail).abs() < 1e-4, "{gt} vs {tail}");
    // k covering the row: an empty tail, kept finite
    let (all, _, empty) = sparse::top_k_row(&zf, v + 3);
    assert_eq!(all.len(), v);
    assert_eq!(empty, sparse::EMPTY_TAIL_LOGP);
}

fn sparse_matches_binned_on(device: Device, policy: KernelPolicy) {
    let kernels = Kernels::resolve(policy, &device);
    let (n, v, k) = (3, 11, 4);
    let zs = logits(n * v, 6, 1.5);
    let zt = logits(n * v, 7, 2.5);
    for spec in all_specs() {
        let (rows, host_rows) = sparse_rows(&zt, n, v, k, &spec, &device);
        let student = tensor2(&zs, [n, v], &device).require_grad();
        let got = sparse::sparse_token_divergence(student.clone(), &rows, &spec, kernels);
        let values = host(got.clone());
        let g = host(
            student
                .grad(&got.sum().backward())
                .expect("student gradient"),
        );
        let binned = |zs: &[f64], r: usize| {
            let (ids, lp, tail) = &host_rows[r];
            binned_reference(&zs[r * v..(r + 1) * v], ids, lp, *tail, &spec)
        };
        for (r, value) in values.iter().enumerate() {
            let want = binned(&zs, r);
            assert!(
                (*value as f64 - want).abs() < 2e-5 + 1e-4 * want.abs(),
                "{} T={} z={} row {r}: {} vs {want}",
                spec.divergence.label(),
                spec.temperature,
                spec.zscore,
                value
            );
        }
        let h = 1e-5;
        for i in 0..zs.len() {
            let (mut up, mut down) = (zs.clone(), zs.clone());
            up[i] += h;
            down[i] -= h;
            let r = i / v;
            let fd = (binned(&up, r) - binned(&down, r)) / (2.0 * h);
            assert!(
                (g[i] as f64 - fd).abs() < 2e-4 + 2e-3 * fd.abs(),
                "{} T={} z={} d/dz[{i}]: autodiff {} vs fd {fd}",
                spec.divergence.label(),
                spec.temperature,
                spec.zscore,
                g[i]
            );
        }
        // the oracle written in burn ops from the bins agrees too
        let direct = host(sparse::binned_token_divergence(
            tensor2(&zs, [n, v], &device),
            &rows,
            &spec,
        ));
        for r in 0..n {
            assert!((direct[r] - values[r]).abs() < 2e-5 + 1e-4 * direct[r].abs());
        }
    }
}

#[test]
fn the_sparse_divergence_is_the_binned_divergence_value_and_gradient() {
    sparse_matches_binned_on(Device::flex().autodiff(), KernelPolicy::Reference);
}

#[test]
fn the_sparse_divergence_runs_the_kernel_on_wgpu_and_matches() {
    let (device, _) = crate::backend::select(crate::backend::BackendChoice::Wgpu)
        .expect("a wgpu adapter (scripts/setup.sh installs lavapipe)");
    let before = crate::backend::kernels::kernel_launches();
    sparse_matches_binned_on(device.clone().autodiff(), KernelPolicy::Auto);
    let ran = crate::backend::kernels::kernel_launches().since(before);
    assert!(ran.distill > 0, "the distillation kernel never ran");
}

#[test]
fn a_top_k_over_the_whole_vocabulary_is_the_dense_divergence() {
    let device: Device = Default::default();
    let (n, v) = (2, 9);
    let zs = logits(n * v, 8, 2.0);
    let zt = logits(n * v, 9, 3.0);
    for spec in all_specs() {
        let (rows, _) = sparse_rows(&zt, n, v, v, &spec, &device);
        let sparse = host(sparse::sparse_token_divergence(
            tensor2(&zs, [n, v], &device),
            &rows,
            &spec,
            Kernels::Reference,
        ));
        for r in 0..n {
            let dense = reference(&zs[r * v..(r + 1) * v], &zt[r * v..(r + 1) * v], &spec)
                / (spec.temperature * spec.temperature);
            assert!(
                (sparse[r] as f64 - dense).abs() < 2e-5 + 1e-4 * dense.abs(),
                "{}: {} vs {dense}",
                spec.divergence.label(),
                sparse[r]
            );
        }
    }
}
