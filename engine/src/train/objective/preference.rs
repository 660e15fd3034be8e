//! The preference objective (LLaVA-MoD's preference distillation): the student's summed
//! response log-probs of the chosen and rejected answers against a reference model's, through a
//! DPO-family loss. The reference (the teacher, or the student as it enters the stage) is
//! frozen and the pairs fixed, so its log-probs are computed once per stage.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::prelude::*;

use super::super::visual::VisualSource;
use super::{StageSetup, StepInput, StepLoss, router};
use crate::Result;
use crate::config::{PreferenceReference, PreferenceSpec};
use crate::data::{Dataset, Encoded, HostBatch, Padding, host_batch};
use crate::distill::{PairLogps, preference_loss};
use crate::model::moe::Phase;
use crate::model::{
    LabelledRows, Mllm, Visual, cross_entropy_chunk_rows, head_chunk_rows, labelled_cross_entropy,
    sequence_log_probs,
};

/// A preference stage: its loss settings and the reference log-probs of every record.
pub struct Preference {
    spec: PreferenceSpec,
    reference: Vec<f32>,
}

impl Preference {
    pub fn prepare(setup: &StageSetup, spec: PreferenceSpec) -> Result<Self> {
        let teacher = setup.teacher()?;
        let data = setup.data;
        let inner = setup.device.clone().inner();
        let pad = setup.tokenizer.special.pad;
        let t0 = Instant::now();
        let (who, reference) = match spec.reference {
            PreferenceReference::Teacher => {
                let tvis = VisualSource::frozen(&teacher.model.vision, setup.feature_cache_bytes);
                let r = reference_logps(
                    &teacher.model,
                    data,
                    pad,
                    &|idx| tvis.for_records(data, idx, &inner),
                    &inner,
                )?;
                ("teacher", r)
            }
            PreferenceReference::Student => {
                let frozen = setup.model.valid();
                let svis = VisualSource::frozen(&frozen.vision, setup.feature_cache_bytes);
                let r = reference_logps(
                    &frozen,
                    data,
                    pad,
                    &|idx| svis.for_records(data, idx, &inner),
                    &inner,
                )?;
                ("initial student", r)
            }
        };
        log::info!(
            "stage {:?}: {who} log-probs of {} answers in {:.1} s",
            setup.spec.name,
            reference.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(Preference { spec, reference })
    }

    pub fn loss(&self, model: &Mllm, input: StepInput) -> StepLoss {
        preference_step(
            model,
            &self.spec,
            &self.reference,
            input.hb,
            input.idx,
            input.visual,
            input.device,
        )
    }
}

/// The reference model's (the teacher's, or the frozen student's) summed log-probability of
/// every record's response, in record order.
pub fn reference_logps(
    reference: &Mllm,
    data: &Dataset,
    pad: u32,
    visual: &dyn Fn(&[usize]) -> Result<Visual>,
    inner: &Device,
) -> Result<Vec<f32>> {
    let nv = reference.config.vision.num_visual_tokens();
    let all: Vec<usize> = (0..data.len()).collect();
    let mut out = Vec::with_capacity(data.len());
    for chunk in all.chunks(64) {
        let examples: Vec<&Encoded> = chunk.iter().map(|&i| &data.encoded[i]).collect();
        let hb = host_batch(&examples, nv, pad, Padding::Right);
        let batch = hb.to_device(visual(chunk)?, inner);
        let lp = response_log_probs(reference, reference.hidden(&batch), &hb);
        out.extend(
            lp.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32"),
        );
    }
    Ok(out)
}

/// Each example's summed log-probability of its response `[B]` under `model`, from its last
/// hidden states `h [B, T, D]`: the head runs only at the labelled positions, a chunk at a
/// time, so the `[B, T, V]` logits never exist.
fn response_log_probs(model: &Mllm, h: Tensor<3>, hb: &HostBatch) -> Tensor<1> {
    let head = model.llm.head_weight();
    let chunk = head_chunk_rows(head.dims()[1]);
    let at = LabelledRows::from_mask(&hb.loss_mask, &hb.targets);
    sequence_log_probs(h, head, &at, chunk)
}

/// One step's loss: `hb` holds `B` chosen records then their `B` rejected twins (see
/// [`Dataset::unit_records`]), `idx` their record indices, `reference` the reference log-probs.
fn preference_step(
    student: &Mllm,
    spec: &PreferenceSpec,
    reference: &[f32],
    hb: &HostBatch,
    idx: &[usize],
    visual: Visual,
    ad: &Device,
) -> StepLoss {
    let b = hb.b / 2;
    let batch = hb.to_device(visual, ad);
    let (h, trace) = student.hidden_routed(&batch, Phase::Train);
    let lp = response_log_probs(student, h.clone(), hb);
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
        let chosen = b * hb.t;
        let at = LabelledRows::from_mask(&hb.loss_mask[..chosen], &hb.targets[..chosen]);
        let head = student.llm.head_weight();
        let chunk = cross_entropy_chunk_rows(head.dims()[1], student.llm.kernels);
        let ce = labelled_cross_entropy(h, head, &at, chunk, student.llm.kernels);
        terms.insert("ce".into(), ce.clone().into_scalar::<f32>());
        total = total + ce * spec.ce;
    }
    let total = router::add_router_losses(student, &trace, total, &mut terms);
    StepLoss {
        total,
        terms,
        routing: trace.layers,
        relation: None,
    }
}
