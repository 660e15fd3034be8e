//! Preference distillation (LLaVA-MoD, docs/METHODS.md section 4): a DPO-family loss on
//! (prompt, chosen, rejected) triples where the reference model is the TEACHER, not a frozen copy
//! of the student. With `pi` the student's and `ref` the teacher's summed response log-probs,
//! `m = (pi(y+) - ref(y+)) - (pi(y-) - ref(y-))` is how much more than the teacher the student
//! prefers the chosen answer; each variant turns `beta * m` into a loss.

use crate::config::PreferenceLoss;
use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, relu, sigmoid};

/// Summed log-probs of the response under the policy and the reference, `[B]` each.
pub struct PairLogps {
    pub policy_chosen: Tensor<1>,
    pub policy_rejected: Tensor<1>,
    pub reference_chosen: Tensor<1>,
    pub reference_rejected: Tensor<1>,
}

/// Mean preference loss over the batch (`[1]`). The reference log-probs are constants.
pub fn preference_loss(lp: PairLogps, kind: PreferenceLoss, beta: f64) -> Tensor<1> {
    let rc = lp.reference_chosen.detach();
    let rr = lp.reference_rejected.detach();
    let chosen = lp.policy_chosen - rc;
    let rejected = lp.policy_rejected - rr;
    match kind {
        PreferenceLoss::Sigmoid => log_sigmoid((chosen - rejected) * beta).neg().mean(),
        PreferenceLoss::Hinge => relu(((chosen - rejected) * beta).neg() + 1.0).mean(),
        PreferenceLoss::Ipo => ((chosen - rejected) - 1.0 / (2.0 * beta))
            .powi_scalar(2)
            .mean(),
        PreferenceLoss::KtoPair => {
            let kl_chosen = chosen.clone().mean().clamp_min(0.0).detach();
            let kl_rejected = rejected.clone().mean().clamp_min(0.0).detach();
            let b = chosen.dims()[0];
            let lc = sigmoid((chosen - kl_rejected.expand([b])) * beta).neg() + 1.0;
            let lr = sigmoid((rejected.neg() + kl_chosen.expand([b])) * beta).neg() + 1.0;
            Tensor::cat(vec![lc, lr], 0).mean()
        }
    }
}

/// Summed log-probability of each row's counted tokens: `logits [B, T, V]`, `targets [B, T]`,
/// `mask [B, T]` (1 on response tokens) to `[B]`.
pub fn sequence_logps(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let logp = burn::tensor::activation::log_softmax(logits, 2);
    let picked = logp.gather(2, targets.reshape([b, t, 1])).reshape([b, t]);
    (picked * mask).sum_dim(1).reshape([b])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t1(v: &[f64], device: &Device) -> Tensor<1> {
        let v: Vec<f32> = v.iter().map(|x| *x as f32).collect();
        let n = v.len();
        Tensor::from_data(TensorData::new(v, [n]), device)
    }

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// The loss on the host in f64, straight from the formulas.
    fn reference(
        pc: &[f64],
        pr: &[f64],
        rc: &[f64],
        rr: &[f64],
        k: PreferenceLoss,
        beta: f64,
    ) -> f64 {
        let n = pc.len() as f64;
        let c: Vec<f64> = pc.iter().zip(rc).map(|(a, b)| a - b).collect();
        let r: Vec<f64> = pr.iter().zip(rr).map(|(a, b)| a - b).collect();
        let m: Vec<f64> = c.iter().zip(&r).map(|(a, b)| a - b).collect();
        match k {
            PreferenceLoss::Sigmoid => m.iter().map(|x| -sig(beta * x).ln()).sum::<f64>() / n,
            PreferenceLoss::Hinge => m.iter().map(|x| (1.0 - beta * x).max(0.0)).sum::<f64>() / n,
            PreferenceLoss::Ipo => {
                m.iter()
                    .map(|x| (x - 1.0 / (2.0 * beta)).powi(2))
                    .sum::<f64>()
                    / n
            }
            PreferenceLoss::KtoPair => {
                let klc = (c.iter().sum::<f64>() / n).max(0.0);
                let klr = (r.iter().sum::<f64>() / n).max(0.0);
                let a: f64 = c.iter().map(|x| 1.0 - sig(beta * (x - klr))).sum();
                let b: f64 = r.iter().map(|x| 1.0 - sig(beta * (klc - x))).sum();
                (a + b) / (2.0 * n)
            }
        }
    }

    #[test]
    fn every_variant_matches_its_formula_forward_and_backward() {
        variants_match_on(Device::flex().autodiff());
    }

    /// The same on the wgpu device (lavapipe in CI); fails without an adapter.
    #[test]
    fn every_variant_matches_its_formula_on_wgpu() {
        let (device, _) = crate::backend::select(crate::backend::BackendChoice::Wgpu)
            .expect("a wgpu adapter (scripts/setup.sh installs lavapipe)");
        variants_match_on(device.autodiff());
    }

    fn variants_match_on(device: Device) {
        let pc = [-3.0, -1.5, -7.0, -0.4];
        let pr = [-2.0, -4.0, -6.5, -9.0];
        let rc = [-2.5, -2.0, -5.0, -1.0];
        let rr = [-3.0, -3.0, -8.0, -2.0];
        for kind in [
            PreferenceLoss::Sigmoid,
            PreferenceLoss::Hinge,
            PreferenceLoss::Ipo,
            PreferenceLoss::KtoPair,
        ] {
            for beta in [0.1, 2.0] {
                let c = t1(&pc, &device).require_grad();
                let r = t1(&pr, &device).require_grad();
                let loss = preference_loss(
                    PairLogps {
                        policy_chosen: c.clone(),
                        policy_rejected: r.clone(),
                        reference_chosen: t1(&rc, &device),
                        reference_rejected: t1(&rr, &device),
                    },
                    kind,
                    beta,
                );
                let got = loss.clone().into_scalar::<f32>() as f64;
                let want = reference(&pc, &pr, &rc, &rr, kind, beta);
                assert!(
                    (got - want).abs() < 1e-4 * want.abs().max(1.0),
                    "{kind:?} b{beta}: {got} vs {want}"
                );
                // gradient by central differences of the f64 reference (the KTO baseline is a
                // constant in the loss, so it is held fixed there too)
                let g = loss.backward();
                let gc: Vec<f32> = c
                    .grad(&g)
                    .unwrap()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap();
                let gr: Vec<f32> = r
                    .grad(&g)
                    .unwrap()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap();
                let h = 1e-5;
                for i in 0..4 {
                    for (which, got) in [(0, gc[i]), (1, gr[i])] {
                        let bump = |d: f64| {
                            let (mut a, mut b) = (pc, pr);
                            if which == 0 {
                                a[i] += d
                            } else {
                                b[i] += d
                            }
                            if kind == PreferenceLoss::KtoPair {
                                kto_fixed_baseline(&a, &b, &rc, &rr, &pc, &pr, beta)
                            } else {
                                reference(&a, &b, &rc, &rr, kind, beta)
                            }
                        };
                        let num = (bump(h) - bump(-h)) / (2.0 * h);
                        assert!(
                            (got as f64 - num).abs() < 1e-3 * num.abs().max(0.05),
                            "{kind:?} b{beta} d{which}[{i}]: {got} vs {num}"
                        );
                    }
                }
            }
        }
    }

    /// KTO-pair with the KL baselines taken from the unperturbed batch (they are detached).
    fn kto_fixed_baseline(
        pc: &[f64],
        pr: &[f64],
        rc: &[f64],
        rr: &[f64],
        pc0: &[f64],
        pr0: &[f64],
        beta: f64,
    ) -> f64 {
        let n = pc.len() as f64;
        let klc = (pc0.iter().zip(rc).map(|(a, b)| a - b).sum::<f64>() / n).max(0.0);
        let klr = (pr0.iter().zip(rr).map(|(a, b)| a - b).sum::<f64>() / n).max(0.0);
        let a: f64 = pc
            .iter()
            .zip(rc)
            .map(|(x, y)| 1.0 - sig(beta * (x - y - klr)))
            .sum();
        let b: f64 = pr
            .iter()
            .zip(rr)
            .map(|(x, y)| 1.0 - sig(beta * (klc - (x - y))))
            .sum();
        (a + b) / (2.0 * n)
    }

    #[test]
    fn sequence_logps_sum_the_counted_tokens() {
        let device = Device::flex();
        let logits = Tensor::<3>::from_data(
            TensorData::new(vec![0.0f32, 1.0, 2.0, 0.5, 0.5, 0.5], [1, 2, 3]),
            &device,
        );
        let targets = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 0], [1, 2]), &device);
        let mask = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 1.0], [1, 2]), &device);
        let got = sequence_logps(logits, targets, mask).into_scalar::<f32>() as f64;
        let lse = (1.0f64 + 1f64.exp() + 2f64.exp()).ln();
        let want = (2.0 - lse) + (1.0f64 / 3.0).ln();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
