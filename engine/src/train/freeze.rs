//! Per-module freeze policy (TinyLLaVA's tuning types): each of vision, projector and LLM is
//! frozen, fully trained, or trained from layer k on. Frozen parameters get no gradient, so the
//! optimiser never touches them and no autodiff graph is built through them.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

use crate::config::{FreezeSpec, StageFreeze};
use crate::model::{Ffn, Mllm};

fn set<M: Module>(m: M, on: bool) -> M {
    if on {
        m.set_require_grad(true)
    } else {
        m.no_grad()
    }
}

/// Applies a stage's freeze policy to every parameter of the model.
pub fn apply(model: Mllm, policy: &StageFreeze) -> Mllm {
    let Mllm {
        vision,
        projector,
        llm,
        config,
    } = model;
    let v = policy.vision;
    let mut vision = vision;
    vision.patch_embedding = set(vision.patch_embedding, v.trains_non_layer());
    vision.class_embedding = vision
        .class_embedding
        .map(|p| set_param(p, v.trains_non_layer()));
    vision.pre_layrnorm = set(vision.pre_layrnorm, v.trains_non_layer());
    vision.position_embedding = set_param(vision.position_embedding, v.trains_non_layer());
    vision.post_layernorm = set(vision.post_layernorm, v.trains_non_layer());
    vision.layers = layers(vision.layers, v);

    let projector = set(projector, policy.projector.trains());

    let l = policy.llm;
    let mut llm = llm;
    llm.embed_tokens = set(llm.embed_tokens, l.trains_non_layer());
    llm.norm = set(llm.norm, l.trains_non_layer());
    llm.lm_head = llm.lm_head.map(|p| set_param(p, l.trains_non_layer()));
    llm.layers = layers(llm.layers, l);
    if l.experts_only() {
        llm.layers = llm
            .layers
            .into_iter()
            .map(|mut layer| {
                if let Ffn::Moe(m) = layer.mlp {
                    layer.mlp = Ffn::Moe(m.set_require_grad(true));
                }
                layer
            })
            .collect();
    }
    Mllm {
        vision,
        projector,
        llm,
        config,
    }
}

fn layers<M: Module>(layers: Vec<M>, spec: FreezeSpec) -> Vec<M> {
    layers
        .into_iter()
        .enumerate()
        .map(|(i, l)| set(l, spec.trains_layer(i)))
        .collect()
}

fn set_param<const D: usize>(p: Param<Tensor<D>>, on: bool) -> Param<Tensor<D>> {
    p.set_require_grad(on)
}

/// Ids of the parameters that require a gradient (what the optimiser will update).
pub fn trainable_ids<M: Module>(m: &M) -> Vec<ParamId> {
    struct Collect(Vec<ParamId>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if p.val().is_require_grad() {
                self.0.push(p.id);
            }
        }
    }
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

/// Number of trainable scalars.
pub fn trainable_count<M: Module>(m: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if p.val().is_require_grad() {
                self.0 += p.val().shape().num_elements();
            }
        }
    }
    let mut c = Count(0);
    m.visit(&mut c);
    c.0
}
