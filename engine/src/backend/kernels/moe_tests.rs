//! The MoE routing kernels against independent references on a real wgpu device (lavapipe in
//! CI): routing and sorting against host code written from the definitions, the expert GEMM
//! (values and both gradients) against plain burn ops, over sizes that are not multiples of the
//! 64-row tiles, experts that get no rows, padding and capacity drops.

use burn::prelude::*;

use super::{moe_dispatch, moe_gather_matmul};
use crate::rng::Rng;

fn wgpu() -> Device {
    let (device, _) = crate::backend::select(crate::backend::BackendChoice::Wgpu)
        .expect("a wgpu adapter (scripts/setup.sh installs lavapipe)");
    device
}

fn normal<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn host_int<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
}

fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

/// Top-k by logit (ties to the lower index), weights softmax over the chosen, in f64.
fn host_route(l: &[f32], e: usize, k: usize, routed: &[bool]) -> (Vec<i64>, Vec<f32>) {
    let mut ex = Vec::new();
    let mut w = Vec::new();
    for (t, on) in routed.iter().enumerate() {
        if !on {
            ex.extend(std::iter::repeat_n(e as i64, k));
            w.extend(std::iter::repeat_n(0.0, k));
            continue;
        }
        let row = &l[t * e..(t + 1) * e];
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let top = &order[..k];
        let mx = row[top[0]] as f64;
        let s: f64 = top.iter().map(|&j| (row[j] as f64 - mx).exp()).sum();
        for &j in top {
            ex.push(j as i64);
            w.push(((row[j] as f64 - mx).exp() / s) as f32);
        }
    }
    (ex, w)
}

/// Routing: the chosen experts exactly, the weights, and the logit gradient against burn's
/// autodiff of the same weights written with plain ops (softmax, gather, renormalise).
#[test]
fn routing_matches_host_top_k_and_autodiff_reference() {
    let device = wgpu();
    let ad = device.autodiff();
    for &(n, e, k) in &[
        (77usize, 8usize, 2usize),
        (130, 5, 1),
        (9, 32, 4),
        (3, 1, 1),
    ] {
        let logits = normal([n, e], 1 + n as u64, &ad);
        // ties: token 1 has all logits equal
        let mut lv = host(logits.clone());
        if n > 1 {
            for j in 0..e {
                lv[e + j] = 0.5;
            }
        }
        let logits = Tensor::<2>::from_data(TensorData::new(lv.clone(), [n, e]), &ad);
        let routed: Vec<bool> = (0..n).map(|t| t % 7 != 3).collect();
        let mask = Tensor::<1>::from_data(
            TensorData::new(
                routed.iter().map(|&r| r as u8 as f32).collect::<Vec<_>>(),
                [n],
            ),
            &ad,
        );
        let (want_ex, want_w) = host_route(&lv, e, k, &routed);
        let l = logits.clone().require_grad();
        let plan = moe_dispatch(l.clone(), mask, k, n * k);
        assert_eq!(
            host_int(plan.experts.clone()),
            want_ex,
            "experts ({n}, {e}, {k})"
        );
        close(&host(plan.weights.clone()), &want_w, 1e-5, "weights");

        let r = normal([n, k], 7, &ad);
        let g = (plan.weights * r.clone()).sum().backward();
        let got = host(l.grad(&g).unwrap());

        let l2 = logits.require_grad();
        let p = burn::tensor::activation::softmax(l2.clone(), 1);
        let flat: Vec<i64> = want_ex
            .iter()
            .enumerate()
            .map(|(i, &x)| ((i / k) * e) as i64 + x.min(e as i64 - 1))
            .collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(flat, [n * k]), &ad);
        let sel = p.reshape([n * e]).select(0, idx).reshape([n, k]);
        let on: Vec<f32> = routed
            .iter()
            .flat_map(|&r| std::iter::repeat_n(r as u8 as f32, k))
            .collect();
        let on = Tensor::<2>::from_data(TensorData::new(on, [n, k]), &ad);
        let w = sel.clone() / sel.sum_dim(1) * on;
        let g2 = (w * r).sum().backward();
        close(&got, &host(l2.grad(&g2).unwrap()), 1e-5, "d logits");
    }
}

/// The host statement of the dispatch: slot-major, capacity per expert, stable.
struct HostSort {
    sorted: Vec<i64>,
    pos: Vec<i64>,
    offsets: Vec<i64>,
    counts: Vec<i64>,
}

fn host_sort(ex: &[i64], n: usize, k: usize, e: usize, cap: usize) -> HostSort {
    let s = n * k;
    let mut lists = vec![Vec::new(); e];
    let mut counts = vec![0i64; e];
    let mut pos = vec![(s - 1) as i64; s];
    for slot in 0..k {
        for t in 0..n {
            let x = ex[t * k + slot] as usize;
            if x >= e {
                continue;
            }
            counts[x] += 1;
            if lists[x].len() < cap {
                lists[x].push((t, slot));
            }
        }
    }
    let mut offsets = vec![0i64];
    let mut sorted = Vec::new();
    for list in &lists {
        for &(t, slot) in list {
            pos[t * k + slot] = sorted.len() as i64;
            sorted.push(t as i64);
        }
        offsets.push(sorted.len() as i64);
    }
    sorted.resize(s, 0);
    HostSort {
        sorted,
        pos,
        offsets,
        counts,
    }
}

/// The counting sort against the host statement, with drops, padding and runs of several
/// assignments per invocation (n k > 64).
#[test]
fn sort_matches_the_host_dispatch() {
    let device = wgpu();
    for &(n, e, k, cap) in &[
        (300usize, 8usize, 2usize, 60usize),
        (5000, 8, 2, 1400),
        (40, 32, 4, 3),
        (10, 4, 2, 100),
    ] {
        let logits = normal([n, e], 3 + n as u64, &device);
        let routed: Vec<bool> = (0..n).map(|t| t % 11 != 5).collect();
        let mask = Tensor::<1>::from_data(
            TensorData::new(
                routed.iter().map(|&r| r as u8 as f32).collect::<Vec<_>>(),
                [n],
            ),
            &device,
        );
        let plan = moe_dispatch(logits, mask, k, cap);
        let ex = host_int(plan.experts);
        let want = host_sort(&ex, n, k, e, cap);
        let what = format!("({n}, {e}, {k}, cap {cap})");
        assert_eq!(host_int(plan.offsets), want.offsets, "offsets {what}");
        assert_eq!(host_int(plan.counts), want.counts, "counts {what}");
        assert_eq!(
            host_int(plan.sorted_rows),
            want.sorted,
            "sorted rows {what}"
        );
        assert_eq!(
            host_int(plan.slot_pos.reshape([n * k])),
            want.pos,
            "slot positions {what}"
        );
    }
}

/// The expert GEMM, gathered and not, against plain burn ops per expert segment: values, the
/// input gradient (summed over a token's slots) and the weight gradient.
#[test]
fn gather_matmul_matches_per_expert_matmuls() {
    let device = wgpu();
    let ad = device.autodiff();
    for &(n, e, k, kd, nd, cap) in &[
        (50usize, 5usize, 2usize, 37usize, 70usize, 14usize),
        (150, 8, 2, 64, 128, 1000),
        (7, 3, 1, 5, 3, 2),
    ] {
        let logits = normal([n, e], 11 + n as u64, &ad);
        // expert e-1 is never chosen: its weight gradient must be 0
        let mut lv = host(logits);
        for t in 0..n {
            lv[t * e + e - 1] = -50.0;
        }
        let logits = Tensor::<2>::from_data(TensorData::new(lv, [n, e]), &ad);
        let routed: Vec<f32> = (0..n).map(|t| (t % 9 != 4) as u8 as f32).collect();
        let mask = Tensor::<1>::from_data(TensorData::new(routed, [n]), &ad);
        let plan = moe_dispatch(logits, mask, k, cap);
        let s = n * k;
        let offsets = host_int(plan.offsets.clone());
        let sorted = host_int(plan.sorted_rows.clone());

        for gather in [true, false] {
            let rows_in = if gather { n } else { s };
            let a0 = normal([rows_in, kd], 21, &ad);
            let w0 = normal([e, kd, nd], 22, &ad);
            let r = normal([s, nd], 23, &ad);
            let (a, w) = (a0.clone().require_grad(), w0.clone().require_grad());
            let c = moe_gather_matmul(
                a.clone(),
                plan.sorted_rows.clone(),
                w.clone(),
                plan.offsets.clone(),
                gather,
            );
            let g = (c.clone() * r.clone()).sum().backward();

            // reference: per expert, select its rows and multiply; zero rows past the total
            let (a2, w2) = (a0.require_grad(), w0.require_grad());
            let mut parts = Vec::new();
            for x in 0..e {
                let (lo, hi) = (offsets[x] as usize, offsets[x + 1] as usize);
                if lo == hi {
                    continue;
                }
                let src: Vec<i64> = if gather {
                    sorted[lo..hi].to_vec()
                } else {
                    (lo as i64..hi as i64).collect()
                };
                let idx = Tensor::<1, Int>::from_data(TensorData::new(src, [hi - lo]), &ad);
                let we = w2.clone().narrow(0, x, 1).reshape([kd, nd]);
                parts.push(a2.clone().select(0, idx).matmul(we));
            }
            let total = offsets[e] as usize;
            if total < s {
                parts.push(Tensor::zeros([s - total, nd], &ad));
            }
            let c2 = Tensor::cat(parts, 0);
            let g2 = (c2.clone() * r).sum().backward();
            let what = format!("({n}, {e}, {k}, {kd}, {nd}, gather {gather})");
            close(&host(c), &host(c2), 1e-4, &format!("c {what}"));
            close(
                &host(a.grad(&g).unwrap()),
                &host(a2.grad(&g2).unwrap()),
                1e-4,
                &format!("da {what}"),
            );
            let dw = host(w.grad(&g).unwrap());
            close(
                &dw,
                &host(w2.grad(&g2).unwrap()),
                1e-4,
                &format!("dw {what}"),
            );
            assert!(
                dw[(e - 1) * kd * nd..].iter().all(|v| *v == 0.0),
                "an expert without rows gets a zero gradient {what}"
            );
        }
    }
}
