//! Mixture-of-Experts feed-forward block (LLaVA-MoD, docs/METHODS.md section 4) on plain burn ops:
//! a linear router, top-k experts per token with renormalised weights, a per-expert capacity
//! (tokens over it are dropped to the residual path and counted), the GShard/Switch
//! load-balancing loss and the router z-loss. The fused WGSL routing kernels of the kernels
//! issue implement the same contract; this file is their reference.
//!
//! Routing decisions (which experts, which tokens are dropped) are discrete, so they are made on
//! the host from the router probabilities; the gradient flows through the probabilities of the
//! chosen experts and through the experts themselves, as in every MoE implementation.

use burn::module::{ModuleMapper, Param};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::{silu, softmax};

use crate::backend::kernels::{self, Kernels};
#[cfg(test)]
use crate::config::KernelPolicy;

use super::init::linear;
use super::mlp::Mlp;
use crate::rng::Rng;

pub use crate::config::MoeConfig;

/// Training routes at the training capacity factor, evaluation and generation at the
/// evaluation one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Train,
    Eval,
}

/// Which tokens of a `[B, T]` batch (flattened row-major) the routers see.
#[derive(Debug, Clone)]
pub struct Route {
    /// Tokens that take part; padding does not.
    pub routed: Vec<bool>,
    /// Tokens that are visual, for the telemetry's visual / text split (empty: all text).
    pub visual: Vec<bool>,
    pub phase: Phase,
}

impl Route {
    /// Every one of `n` tokens, as text, in `phase`.
    pub fn all(n: usize, phase: Phase) -> Route {
        Route {
            routed: vec![true; n],
            visual: Vec::new(),
            phase,
        }
    }
}

/// The auxiliary router losses of one block, or summed over blocks.
#[derive(Debug, Clone)]
pub struct RouterLosses {
    /// GShard/Switch load balance `E * sum_i f_i P_i` (f: share of routed tokens whose top-1
    /// is expert i, before capacity; P: mean router probability of expert i). 1 when uniform.
    pub aux: Tensor<1>,
    /// Router z-loss: mean over routed tokens of `logsumexp(logits)^2`.
    pub z: Tensor<1>,
}

impl std::ops::Add for RouterLosses {
    type Output = RouterLosses;
    fn add(self, other: RouterLosses) -> RouterLosses {
        RouterLosses {
            aux: self.aux + other.aux,
            z: self.z + other.z,
        }
    }
}

/// One MoE layer's routing in one forward, for `events.jsonl` and the heatmap.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerRouting {
    pub layer: usize,
    /// Per expert: visual-token assignments it took (after capacity).
    pub visual: Vec<usize>,
    /// Per expert: text-token assignments it took (after capacity).
    pub text: Vec<usize>,
    /// Assignments dropped by the capacity limit (those tokens skip the expert).
    pub dropped: usize,
    /// Mean router entropy over routed tokens, nats.
    pub entropy: f64,
}

impl LayerRouting {
    pub fn new(layer: usize, r: &Routing, route: &Route) -> LayerRouting {
        let e = r.tokens.len();
        let (mut visual, mut text) = (vec![0; e], vec![0; e]);
        let rows = route.routed.iter().enumerate().filter(|(_, on)| **on);
        for ((i, _), slots) in rows.zip(&r.chosen) {
            let is_visual = route.visual.get(i).copied().unwrap_or(false);
            for ex in slots.iter().flatten() {
                if is_visual {
                    visual[*ex] += 1;
                } else {
                    text[*ex] += 1;
                }
            }
        }
        LayerRouting {
            layer,
            visual,
            text,
            dropped: r.dropped,
            entropy: r.entropy,
        }
    }

    /// Share of all kept assignments each expert took.
    pub fn shares(&self) -> Vec<f64> {
        let total: usize = self.visual.iter().chain(&self.text).sum();
        self.visual
            .iter()
            .zip(&self.text)
            .map(|(v, t)| (v + t) as f64 / total.max(1) as f64)
            .collect()
    }
}

/// A copy of `m` whose parameters have new ids. `Module::clone` shares ids, and the optimiser
/// keys its state and gradients by id, so cloned experts would be updated as one parameter.
pub fn independent_copy<M: Module>(m: &M) -> M {
    struct Fresh;
    impl ModuleMapper for Fresh {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let v = p.val();
            let copy = Param::from_tensor(v.clone().detach());
            if v.is_require_grad() {
                copy
            } else {
                copy.set_require_grad(false)
            }
        }
    }
    m.clone().map(&mut Fresh)
}

/// Router + experts, each expert a SwiGLU FFN like the dense layer's.
#[derive(Module, Debug)]
pub struct MoeMlp {
    /// `[D] -> [experts]`, no bias.
    pub router: Linear,
    pub experts: Vec<Mlp>,
    #[module(skip)]
    pub config: MoeConfig,
}

/// What one MoE forward did, for the losses and the routing telemetry.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// Per expert: tokens dispatched to it (after capacity), over all k slots.
    pub tokens: Vec<usize>,
    /// Token-expert assignments dropped by the capacity limit.
    pub dropped: usize,
    /// Per token (routed tokens only), per slot: the chosen expert, or `None` when dropped.
    pub chosen: Vec<Vec<Option<usize>>>,
    /// Mean entropy (nats) of the router distribution over routed tokens.
    pub entropy: f64,
}

/// The block's output and auxiliary losses.
pub struct MoeOutput {
    /// `[B, T, D]`; zero rows for unrouted (padding) tokens and fully dropped tokens.
    pub y: Tensor<3>,
    pub losses: RouterLosses,
    pub routing: Routing,
}

impl MoeMlp {
    /// Fresh experts and router, seeded.
    pub fn new(
        hidden: usize,
        intermediate: usize,
        config: MoeConfig,
        rng: &mut Rng,
        device: &Device,
    ) -> Self {
        let experts = (0..config.experts)
            .map(|_| Mlp {
                gate_proj: linear(rng, hidden, intermediate, false, device),
                up_proj: linear(rng, hidden, intermediate, false, device),
                down_proj: linear(rng, intermediate, hidden, false, device),
            })
            .collect();
        MoeMlp {
            router: linear(rng, hidden, config.experts, false, device),
            experts,
            config,
        }
    }

    /// Sparse upcycling: every expert is a copy of the dense FFN, the router is fresh. Right
    /// after, the block computes exactly the dense FFN (the renormalised weights sum to 1) as
    /// long as no token is dropped.
    pub fn upcycle(dense: &Mlp, config: MoeConfig, rng: &mut Rng, device: &Device) -> Self {
        let hidden = dense.gate_proj.weight.dims()[0];
        MoeMlp {
            router: linear(rng, hidden, config.experts, false, device),
            experts: (0..config.experts)
                .map(|_| independent_copy(dense))
                .collect(),
            config,
        }
    }

    /// `x [B, T, D]`; `routed [B*T]` says which tokens take part (padding does not); the
    /// capacity factor is the configuration's for `phase`. `kernels` picks the routing kernels
    /// on wgpu or this file's plain burn-ops reference.
    pub fn forward(
        &self,
        x: Tensor<3>,
        routed: &[bool],
        phase: Phase,
        kernels: Kernels,
    ) -> MoeOutput {
        let factor = match phase {
            Phase::Train => self.config.capacity_train,
            Phase::Eval => self.config.capacity_eval,
        };
        self.forward_at(x, routed, factor, kernels)
    }

    /// [`MoeMlp::forward`] at an explicit capacity factor.
    pub fn forward_at(
        &self,
        x: Tensor<3>,
        routed: &[bool],
        capacity_factor: f64,
        kernels: Kernels,
    ) -> MoeOutput {
        let [b, t, d] = x.dims();
        let n = b * t;
        let e = self.config.experts;
        let k = self.config.top_k.min(e);
        assert_eq!(routed.len(), n, "one routing flag per token");
        let device = x.device();
        let x2 = x.reshape([n, d]);
        let logits = self.router.forward(x2.clone());
        let probs = softmax(logits.clone(), 1);
        let rows: Vec<usize> = (0..n).filter(|&i| routed[i]).collect();
        let m = rows.len();
        let capacity = ((capacity_factor * (m * k) as f64) / e as f64).ceil() as usize;
        let use_kernels = m > 0 && e <= kernels::MOE_MAX_EXPERTS && kernels.fused();
        let (y, decided) = if use_kernels {
            self.experts_kernels(x2, logits.clone(), &probs, routed, &rows, k, capacity)
        } else {
            self.experts_reference(x2, &probs, &rows, k, capacity)
        };

        // losses over routed tokens
        let (aux, z) = if m == 0 {
            let zero = Tensor::<1>::zeros([1], &device);
            (zero.clone(), zero)
        } else {
            let ridx = int1(rows.iter().map(|&i| i as i64).collect(), &device);
            let p = probs.select(0, ridx.clone());
            let mean_p = p.mean_dim(0).reshape([e]);
            let mut top1 = vec![0.0f32; e];
            for c in &decided.top1 {
                top1[*c] += 1.0 / m as f32;
            }
            let f = Tensor::<1>::from_data(TensorData::new(top1, [e]), &device);
            let aux = (f * mean_p).sum() * e as f64;
            let l = logits.select(0, ridx);
            let mx = l.clone().max_dim(1);
            let lse = (l - mx.clone()).exp().sum_dim(1).log() + mx;
            let z = lse.powi_scalar(2).mean().reshape([1]);
            (aux.reshape([1]), z)
        };
        MoeOutput {
            y: y.reshape([b, t, d]),
            losses: RouterLosses { aux, z },
            routing: decided.routing,
        }
    }

    /// Every expert's weights stacked (differentiably): `(gate | up [E, D, 2I], down [E, I, D])`,
    /// the layout the expert GEMM kernels take.
    pub fn stacked_weights(&self) -> (Tensor<3>, Tensor<3>) {
        let stack = |f: &dyn Fn(&Mlp) -> Tensor<2>| {
            Tensor::stack::<3>(self.experts.iter().map(f).collect(), 0)
        };
        let gate_up = Tensor::cat(
            vec![
                stack(&|x: &Mlp| x.gate_proj.weight.val()),
                stack(&|x: &Mlp| x.up_proj.weight.val()),
            ],
            2,
        );
        (gate_up, stack(&|x: &Mlp| x.down_proj.weight.val()))
    }

    /// The reference: routing decided on the host from the probabilities (top-k, capacity
    /// filled slot by slot in token order), then per expert a select of its tokens, the FFN and
    /// a scatter-add of the weighted outputs.
    fn experts_reference(
        &self,
        x2: Tensor<2>,
        probs: &Tensor<2>,
        rows: &[usize],
        k: usize,
        capacity: usize,
    ) -> (Tensor<2>, Decided) {
        let [n, d] = x2.dims();
        let e = self.config.experts;
        let device = x2.device();
        let m = rows.len();
        let host: Vec<f32> = probs
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 probabilities");
        // top-k per routed token, ties to the lower expert index
        let choice: Vec<Vec<usize>> = rows
            .iter()
            .map(|&i| {
                let p = &host[i * e..(i + 1) * e];
                let mut order: Vec<usize> = (0..e).collect();
                order.sort_by(|&a, &c| p[c].total_cmp(&p[a]).then(a.cmp(&c)));
                order.truncate(k);
                order
            })
            .collect();
        // capacity, filled slot by slot (every token's first choice before any second choice)
        let mut load = vec![0usize; e];
        let mut chosen = vec![vec![None; k]; m];
        let mut dropped = 0;
        for slot in 0..k {
            for (r, c) in choice.iter().enumerate() {
                let ex = c[slot];
                if load[ex] < capacity {
                    load[ex] += 1;
                    chosen[r][slot] = Some(ex);
                } else {
                    dropped += 1;
                }
            }
        }

        // renormalised weights of the chosen experts (gradient flows through the probabilities)
        let mut y = Tensor::<2>::zeros([n, d], &device);
        if m > 0 {
            let flat: Vec<i64> = rows
                .iter()
                .zip(&choice)
                .flat_map(|(&i, c)| c.iter().map(move |&ex| (i * e + ex) as i64))
                .collect();
            let sel = probs
                .clone()
                .reshape([n * e])
                .select(0, int1(flat, &device))
                .reshape([m, k]);
            let weights = sel.clone() / sel.sum_dim(1);
            let weights = weights.reshape([m * k]);
            for ex in 0..e {
                let mut toks = Vec::new();
                let mut wpos = Vec::new();
                for (r, c) in chosen.iter().enumerate() {
                    for (slot, got) in c.iter().enumerate() {
                        if *got == Some(ex) {
                            toks.push(rows[r] as i64);
                            wpos.push((r * k + slot) as i64);
                        }
                    }
                }
                if toks.is_empty() {
                    continue;
                }
                let cnt = toks.len();
                let idx = int1(toks, &device);
                let xe = x2.clone().select(0, idx.clone()).reshape([1, cnt, d]);
                let ye = self.experts[ex].forward(xe).reshape([cnt, d]);
                let we = weights
                    .clone()
                    .select(0, int1(wpos, &device))
                    .reshape([cnt, 1]);
                y = y.select_assign(0, idx, ye * we, IndexingUpdateOp::Add);
            }
        }
        let entropy = rows
            .iter()
            .map(|&i| {
                -host[i * e..(i + 1) * e]
                    .iter()
                    .filter(|q| **q > 0.0)
                    .map(|q| (*q as f64) * (*q as f64).ln())
                    .sum::<f64>()
            })
            .sum::<f64>()
            / m.max(1) as f64;
        let top1 = choice.iter().map(|c| c[0]).collect();
        let routing = Routing {
            tokens: load,
            dropped,
            chosen,
            entropy,
        };
        (y, Decided { routing, top1 })
    }

    /// The routing kernels (`backend::kernels::moe`): top-k and renormalised weights, the
    /// counting sort by expert with the capacity, and the expert FFN as two gather GEMMs over
    /// the sorted rows with the weighted outputs gathered back per token. The same decisions as
    /// the reference; one readback of the small routing tensors feeds the telemetry.
    #[allow(clippy::too_many_arguments)]
    fn experts_kernels(
        &self,
        x2: Tensor<2>,
        logits: Tensor<2>,
        probs: &Tensor<2>,
        routed: &[bool],
        rows: &[usize],
        k: usize,
        capacity: usize,
    ) -> (Tensor<2>, Decided) {
        let [n, d] = x2.dims();
        let e = self.config.experts;
        let device = x2.device();
        let mask: Vec<f32> = routed.iter().map(|&r| r as u8 as f32).collect();
        let mask = Tensor::<1>::from_data(TensorData::new(mask, [n]), &device);
        let plan = kernels::moe_dispatch(logits, mask, k, capacity);

        let (gate_up, down) = self.stacked_weights();
        let inter = down.dims()[1];
        let h = kernels::moe_gather_matmul(
            x2,
            plan.sorted_rows.clone(),
            gate_up,
            plan.offsets.clone(),
            true,
        );
        let act = silu(h.clone().narrow(1, 0, inter)) * h.narrow(1, inter, inter);
        let out =
            kernels::moe_gather_matmul(act, plan.sorted_rows, down, plan.offsets.clone(), false);
        let y = out
            .select(0, plan.slot_pos.clone().reshape([n * k]))
            .reshape([n, k, d])
            * plan.weights.reshape([n, k, 1]);
        let y = y.sum_dim(1).reshape([n, d]);

        // telemetry: one readback of the choices, their sorted positions, the segment starts
        // and the per-token entropy (integers below 2^24 are exact in f32)
        let p = probs.clone().detach();
        let ent = -(p.clone() * p.clamp_min(1e-30).log())
            .sum_dim(1)
            .reshape([n]);
        let host: Vec<f32> = Tensor::cat(
            vec![
                plan.experts.reshape([n * k]).float(),
                plan.slot_pos.reshape([n * k]).float(),
                plan.offsets.float(),
                ent,
            ],
            0,
        )
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 routing readback");
        let (ex_h, rest) = host.split_at(n * k);
        let (pos_h, rest) = rest.split_at(n * k);
        let (off_h, ent_h) = rest.split_at(e + 1);
        let kept_total = off_h[e] as usize;
        let tokens: Vec<usize> = (0..e).map(|i| (off_h[i + 1] - off_h[i]) as usize).collect();
        let chosen: Vec<Vec<Option<usize>>> = rows
            .iter()
            .map(|&i| {
                (0..k)
                    .map(|slot| {
                        ((pos_h[i * k + slot] as usize) < kept_total)
                            .then_some(ex_h[i * k + slot] as usize)
                    })
                    .collect()
            })
            .collect();
        let m = rows.len();
        let routing = Routing {
            tokens,
            dropped: m * k - kept_total,
            chosen,
            entropy: rows.iter().map(|&i| ent_h[i] as f64).sum::<f64>() / m.max(1) as f64,
        };
        let top1 = rows.iter().map(|&i| ex_h[i * k] as usize).collect();
        (y, Decided { routing, top1 })
    }
}

/// What a forward decided: the telemetry, and each routed token's top-1 expert (before the
/// capacity) for the load-balancing loss.
struct Decided {
    routing: Routing,
    top1: Vec<usize>,
}

fn int1(v: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let len = v.len();
    Tensor::<1, Int>::from_data(TensorData::new(v, [len]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
