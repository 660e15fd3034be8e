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
#[path = "moe_tests.rs"]
mod tests;
