//! The language-model objective (TinyLLaVA's pre-training and SFT, LLaVA-KD's SFT): next-token
//! cross-entropy on the response tokens, plus the router losses of a sparse student.

use std::collections::BTreeMap;

use super::{StepInput, StepLoss, router};
use crate::model::moe::Phase;
use crate::model::{Mllm, masked_cross_entropy};

pub fn loss(model: &Mllm, input: StepInput) -> StepLoss {
    let batch = input.hb.to_device(input.visual, input.device);
    let (h, trace) = model.hidden_routed(&batch, Phase::Train);
    let ce = masked_cross_entropy(
        model.llm.logits(h),
        batch.targets.clone(),
        batch.loss_mask.clone(),
    );
    let mut terms = BTreeMap::new();
    let total = if trace.losses.is_some() {
        terms.insert("ce".into(), ce.clone().into_scalar::<f32>());
        router::add_router_losses(model, &trace, ce, &mut terms)
    } else {
        ce
    };
    StepLoss {
        total,
        terms,
        routing: trace.layers,
        relation: None,
    }
}
