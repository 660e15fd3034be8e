//! The language-model objective (TinyLLaVA's pre-training and SFT, LLaVA-KD's SFT): next-token
//! cross-entropy on the response tokens, plus the router losses of a sparse student. The head
//! runs only at the labelled positions (`model::labelled_cross_entropy`): the batch's visual
//! and prompt tokens carry no label, and their logits would be most of the step's memory.

use std::collections::BTreeMap;

use super::{StepInput, StepLoss, router};
use crate::model::moe::Phase;
use crate::model::{LabelledRows, Mllm, cross_entropy_chunk_rows, labelled_cross_entropy};

pub fn loss(model: &Mllm, input: StepInput) -> StepLoss {
    let batch = input.hb.to_device(input.visual, input.device);
    let (h, trace) = model.hidden_routed(&batch, Phase::Train);
    let at = LabelledRows::from_mask(&input.hb.loss_mask, &input.hb.targets);
    let head = model.llm.head_weight();
    let chunk = cross_entropy_chunk_rows(head.dims()[1], model.llm.kernels);
    let ce = labelled_cross_entropy(h, head, &at, chunk, model.llm.kernels);
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
