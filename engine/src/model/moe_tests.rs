use super::*;
use crate::config::KernelPolicy;

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn input(b: usize, t: usize, d: usize, seed: u64, device: &Device) -> Tensor<3> {
    let mut rng = Rng::new(seed);
    let v: Vec<f32> = (0..b * t * d).map(|_| rng.normal() as f32).collect();
    Tensor::from_data(TensorData::new(v, [b, t, d]), device)
}

/// Routing decided independently on the host in f64 from the router weights: top-k by
/// probability, then capacity filled slot by slot in token order.
fn host_routing(
    moe: &MoeMlp,
    x: &[f32],
    d: usize,
    routed: &[bool],
    factor: f64,
) -> Vec<Option<Vec<Option<usize>>>> {
    let e = moe.config.experts;
    let k = moe.config.top_k;
    let w = host(moe.router.weight.val()); // [d, e]
    let n = routed.len();
    let mut picks = Vec::new();
    for i in 0..n {
        if !routed[i] {
            picks.push(None);
            continue;
        }
        let logits: Vec<f64> = (0..e)
            .map(|j| {
                (0..d)
                    .map(|c| x[i * d + c] as f64 * w[c * e + j] as f64)
                    .sum()
            })
            .collect();
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        picks.push(Some(order[..k].to_vec()));
    }
    let m = routed.iter().filter(|r| **r).count();
    let cap = (factor * (m * k) as f64 / e as f64).ceil() as usize;
    let mut load = vec![0; e];
    let mut out: Vec<Option<Vec<Option<usize>>>> = picks
        .iter()
        .map(|p| p.as_ref().map(|_| vec![None; k]))
        .collect();
    for slot in 0..k {
        for i in 0..n {
            if let Some(p) = &picks[i]
                && load[p[slot]] < cap
            {
                load[p[slot]] += 1;
                out[i].as_mut().unwrap()[slot] = Some(p[slot]);
            }
        }
    }
    out
}

/// Every token through its chosen experts one at a time, weights renormalised over the top-k
/// (dropped slots contribute nothing): the dense per-token reference.
fn per_token(
    moe: &MoeMlp,
    x: Tensor<3>,
    routing: &[Option<Vec<Option<usize>>>],
    top: &[Option<Vec<usize>>],
) -> Tensor<2> {
    let [b, t, d] = x.dims();
    let x2 = x.reshape([b * t, d]);
    let rows: Vec<Tensor<2>> = (0..b * t)
        .map(|i| {
            let xi = x2.clone().narrow(0, i, 1);
            let mut yi = Tensor::<2>::zeros([1, d], &xi.device());
            if let (Some(kept), Some(top)) = (&routing[i], &top[i]) {
                let p = softmax(moe.router.forward(xi.clone()), 1);
                let sel: Vec<Tensor<2>> =
                    top.iter().map(|&ex| p.clone().narrow(1, ex, 1)).collect();
                let total = Tensor::cat(sel.clone(), 1).sum_dim(1);
                for (slot, got) in kept.iter().enumerate() {
                    if let Some(ex) = got {
                        let f = moe.experts[*ex]
                            .forward(xi.clone().reshape([1, 1, d]))
                            .reshape([1, d]);
                        yi = yi + f * (sel[slot].clone() / total.clone());
                    }
                }
            }
            yi
        })
        .collect();
    Tensor::cat(rows, 0)
}

#[test]
fn forward_and_backward_match_the_per_token_reference_with_drops() {
    matches_reference_on(Device::flex().autodiff(), KernelPolicy::Auto);
}

/// The same on the wgpu device (lavapipe in CI), through the routing kernels and through
/// the burn-ops reference; fails without an adapter.
#[test]
fn matches_the_per_token_reference_on_wgpu() {
    let (device, _) = crate::backend::select(crate::backend::BackendChoice::Wgpu)
        .expect("a wgpu adapter (scripts/setup.sh installs lavapipe)");
    let device = device.autodiff();
    assert_eq!(
        Kernels::resolve(KernelPolicy::Auto, &device),
        Kernels::Fused
    );
    matches_reference_on(device.clone(), KernelPolicy::Auto);
    matches_reference_on(device, KernelPolicy::Reference);
}

fn matches_reference_on(device: Device, policy: KernelPolicy) {
    let policy = Kernels::resolve(policy, &device);
    let (b, t, d) = (2, 7, 8);
    let config = MoeConfig {
        experts: 4,
        top_k: 2,
        capacity_train: 0.75,
        capacity_eval: 2.0,
    };
    let moe = MoeMlp::new(d, 12, config, &mut Rng::new(3), &device);
    let mut routed = vec![true; b * t];
    routed[6] = false; // padding
    routed[13] = false;
    let xv = host(input(b, t, d, 4, &device));
    let want = host_routing(&moe, &xv, d, &routed, config.capacity_train);
    let top: Vec<Option<Vec<usize>>> = {
        let all = host_routing(&moe, &xv, d, &routed, 1e9);
        all.into_iter()
            .map(|r| r.map(|s| s.into_iter().map(|e| e.unwrap()).collect()))
            .collect()
    };
    let r = Tensor::<2>::from_data(
        TensorData::new(
            (0..b * t * d)
                .map(|i| ((i * 7 % 11) as f32) / 5.0 - 1.0)
                .collect::<Vec<_>>(),
            [b * t, d],
        ),
        &device,
    );

    let x = input(b, t, d, 4, &device).require_grad();
    let out = moe.forward(x.clone(), &routed, Phase::Train, policy);
    assert!(
        out.routing.dropped > 0,
        "the fixture must overflow a capacity"
    );
    let got_routing: Vec<Vec<Option<usize>>> = want.iter().flatten().cloned().collect();
    assert_eq!(out.routing.chosen, got_routing);
    let y = out.y.reshape([b * t, d]);
    let loss = (y.clone() * r.clone()).sum();
    let g = loss.backward();
    let gx = host(x.grad(&g).unwrap());
    let grouter = host(moe.router.weight.grad(&g).unwrap());
    let gexp = host(moe.experts[1].down_proj.weight.grad(&g).unwrap());

    let x2 = input(b, t, d, 4, &device).require_grad();
    let y_ref = per_token(&moe, x2.clone(), &want, &top);
    let loss_ref = (y_ref.clone() * r).sum();
    let g2 = loss_ref.backward();
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len());
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            assert!(
                (p - q).abs() < 1e-5 + 1e-4 * q.abs(),
                "{what}[{i}]: {p} vs {q}"
            );
        }
    };
    close(&host(y), &host(y_ref), "y");
    close(&gx, &host(x2.grad(&g2).unwrap()), "dx");
    close(
        &grouter,
        &host(moe.router.weight.grad(&g2).unwrap()),
        "d router",
    );
    close(
        &gexp,
        &host(moe.experts[1].down_proj.weight.grad(&g2).unwrap()),
        "d expert",
    );
    // padding rows are untouched
    let yv = host(
        moe.forward_at(input(b, t, d, 4, &device), &routed, 0.75, policy)
            .y,
    );
    assert!(yv[6 * d..7 * d].iter().all(|v| *v == 0.0));
}

#[test]
fn load_balance_and_z_loss_match_their_formulas() {
    let device = Device::flex();
    let (b, t, d) = (1, 9, 6);
    let moe = MoeMlp::new(d, 8, MoeConfig::default(), &mut Rng::new(8), &device);
    let routed = vec![true; b * t];
    let x = input(b, t, d, 9, &device);
    let xv = host(x.clone());
    let out = moe.forward(x, &routed, Phase::Eval, Kernels::for_device(&device));
    let e = 4;
    let w = host(moe.router.weight.val());
    let mut f = vec![0.0f64; e];
    let mut p = vec![0.0f64; e];
    let mut z = 0.0;
    for i in 0..b * t {
        let l: Vec<f64> = (0..e)
            .map(|j| {
                (0..d)
                    .map(|c| xv[i * d + c] as f64 * w[c * e + j] as f64)
                    .sum()
            })
            .collect();
        let mx = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = l.iter().map(|v| (v - mx).exp()).sum();
        let lse = mx + s.ln();
        z += lse * lse;
        let top = (0..e)
            .max_by(|&a, &c| l[a].total_cmp(&l[c]).then(c.cmp(&a)))
            .unwrap();
        f[top] += 1.0;
        for j in 0..e {
            p[j] += (l[j] - lse).exp();
        }
    }
    let n = (b * t) as f64;
    let aux: f64 = e as f64 * (0..e).map(|j| f[j] / n * p[j] / n).sum::<f64>();
    assert!((host(out.losses.aux)[0] as f64 - aux).abs() < 1e-5, "aux");
    assert!((host(out.losses.z)[0] as f64 - z / n).abs() < 1e-5, "z");
    assert_eq!(out.routing.dropped, 0);
    assert_eq!(out.routing.tokens.iter().sum::<usize>(), b * t * 2);
    assert!(out.routing.entropy > 0.0 && out.routing.entropy <= (e as f64).ln() + 1e-9);
}

#[test]
fn upcycled_block_equals_the_dense_ffn() {
    let device = Device::flex();
    let d = 8;
    let mut rng = Rng::new(5);
    let dense = Mlp {
        gate_proj: linear(&mut rng, d, 16, false, &device),
        up_proj: linear(&mut rng, d, 16, false, &device),
        down_proj: linear(&mut rng, 16, d, false, &device),
    };
    let moe = MoeMlp::upcycle(&dense, MoeConfig::default(), &mut rng, &device);
    let ids: std::collections::HashSet<_> =
        moe.experts.iter().map(|e| e.gate_proj.weight.id).collect();
    assert_eq!(ids.len(), 4, "experts must not share parameter ids");
    let x = input(2, 5, d, 6, &device);
    let want = host(dense.forward(x.clone()));
    let got = host(
        moe.forward(x, &[true; 10], Phase::Eval, Kernels::for_device(&device))
            .y,
    );
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}
