//! The router losses of an MoE student inside any objective: the load-balancing and
//! z-losses of every MoE layer, weighted by the model's `[model.llm.moe]` coefficients.

use std::collections::BTreeMap;

use burn::prelude::*;

use crate::model::{Mllm, MoeTrace};

/// `total` plus the weighted router losses of `trace`; the unweighted values go into `terms`
/// as `moe_aux` (summed over layers, 1 per layer when balanced) and `moe_z`.
pub fn add_router_losses(
    model: &Mllm,
    trace: &MoeTrace,
    total: Tensor<1>,
    terms: &mut BTreeMap<String, f32>,
) -> Tensor<1> {
    let (Some(spec), Some(l)) = (&model.config.llm.moe, &trace.losses) else {
        return total;
    };
    terms.insert("moe_aux".into(), l.aux.clone().into_scalar::<f32>());
    let mut total = total + l.aux.clone() * spec.aux_loss;
    if spec.z_loss > 0.0 {
        terms.insert("moe_z".into(), l.z.clone().into_scalar::<f32>());
        total = total + l.z.clone() * spec.z_loss;
    }
    total
}
