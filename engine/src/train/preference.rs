//! A preference-distillation step (LLaVA-MoD): the student's summed response log-probs of the
//! chosen and rejected answers against the teacher's, through a DPO-family loss. The teacher is
//! frozen and the pairs fixed, so its log-probs are computed once per stage.

use std::collections::BTreeMap;

use burn::prelude::*;

use crate::config::PreferenceSpec;
use crate::data::{Dataset, Encoded, HostBatch, Padding, host_batch};
use crate::distill::{PairLogps, preference_loss, sequence_logps};
use crate::model::moe::{LayerRouting, Phase};
use crate::model::{Mllm, Visual, masked_cross_entropy};

/// The reference model's (the teacher's, or the frozen student's) summed log-probability of
/// every record's response, in record order.
pub fn reference_logps(
    reference: &Mllm,
    data: &Dataset,
    pad: u32,
    visual: &dyn Fn(&[usize]) -> Visual,
    inner: &Device,
) -> Vec<f32> {
    let nv = reference.config.vision.num_visual_tokens();
    let all: Vec<usize> = (0..data.len()).collect();
    let mut out = Vec::with_capacity(data.len());
    for chunk in all.chunks(64) {
        let examples: Vec<&Encoded> = chunk.iter().map(|&i| &data.encoded[i]).collect();
        let hb = host_batch(&examples, nv, pad, Padding::Right);
        let batch = hb.to_device(visual(chunk), inner);
        let logits = reference.logits(&batch);
        let lp = sequence_logps(logits, batch.targets.clone(), batch.loss_mask.clone());
        out.extend(
            lp.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32"),
        );
    }
    out
}

/// One step's loss: `hb` holds `B` chosen records then their `B` rejected twins (see
/// [`Dataset::unit_records`]), `idx` their record indices, `reference` the teacher's log-probs.
pub struct PreferenceStep {
    pub total: Tensor<1>,
    pub terms: BTreeMap<String, f32>,
    pub routing: Vec<LayerRouting>,
}

pub fn preference_step(
    student: &Mllm,
    spec: &PreferenceSpec,
    reference: &[f32],
    hb: &HostBatch,
    idx: &[usize],
    visual: Visual,
    ad: &Device,
) -> PreferenceStep {
    let b = hb.b / 2;
    let batch = hb.to_device(visual, ad);
    let (h, trace) = student.hidden_routed(&batch, Phase::Train);
    let logits = student.llm.logits(h);
    let lp = sequence_logps(
        logits.clone(),
        batch.targets.clone(),
        batch.loss_mask.clone(),
    );
    let refs: Vec<f32> = idx.iter().map(|&i| reference[i]).collect();
    let refs = Tensor::<1>::from_data(TensorData::new(refs, [2 * b]), ad);
    let pairs = PairLogps {
        policy_chosen: lp.clone().narrow(0, 0, b),
        policy_rejected: lp.narrow(0, b, b),
        reference_chosen: refs.clone().narrow(0, 0, b),
        reference_rejected: refs.narrow(0, b, b),
    };
    let margins = (pairs.policy_chosen.clone() - pairs.reference_chosen.clone())
        - (pairs.policy_rejected.clone() - pairs.reference_rejected.clone());
    let m: Vec<f32> = margins
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32");
    let pref = preference_loss(pairs, spec.loss, spec.beta);
    let mut terms = BTreeMap::new();
    terms.insert("pref".into(), pref.clone().into_scalar::<f32>());
    terms.insert("margin".into(), m.iter().sum::<f32>() / b.max(1) as f32);
    terms.insert(
        "pref_acc".into(),
        m.iter().filter(|x| **x > 0.0).count() as f32 / b.max(1) as f32,
    );
    let mut total = pref;
    if spec.ce > 0.0 {
        // cross-entropy on the chosen answers only (the first half of the batch)
        let ce = masked_cross_entropy(
            logits.narrow(0, 0, b),
            batch.targets.clone().narrow(0, 0, b),
            batch.loss_mask.clone().narrow(0, 0, b),
        );
        terms.insert("ce".into(), ce.clone().into_scalar::<f32>());
        total = total + ce * spec.ce;
    }
    let total = super::router::add_router_losses(student, &trace, total, &mut terms);
    PreferenceStep {
        total,
        terms,
        routing: trace.layers,
    }
}
