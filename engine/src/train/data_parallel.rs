//! Data parallelism inside one run, through burn's own multi-device support (no collective of
//! our own): a step's batch is split into contiguous shards, one per worker; each worker forks
//! the model onto its device (`Module::fork`: the same parameters and ids, its own autodiff
//! graph), runs forward and backward on its shard on its own thread, and moves its gradients to
//! the main device (`GradientsParams::to_device`). The gradients are summed there and the
//! stage's one optimiser takes one step, so the weights every worker forks next step are the
//! main device's: checkpoints, resume and the optimiser state are those of a one-device run.
//!
//! Each shard's loss is scaled by its share of the batch's labelled tokens, so the sum of the
//! shards' gradients is the gradient of the whole batch's mean: the update equals the
//! one-device update with the same global batch, up to float rounding
//! (`tests/tests/data_parallel.rs`). That holds for the language-model objective of a dense
//! model, a mean over labelled tokens; contrastive, distillation and preference losses and MoE
//! router losses are not sums over a batch's examples, and those stages run on the main device.
//!
//! burn's Flex (CPU) backend has one device identity, so on the CPU the workers are threads
//! sharing it; on wgpu they may be different adapters.

use std::ops::Range;

use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use super::objective::{StageObjective, StepInput, language_model_loss};
use super::visual::{PixelBatch, VisualSource};
use crate::data::{Dataset, Padding, host_batch};
use crate::model::Mllm;

/// Steps split over more than one worker since the process started (tests read it to know the
/// split ran).
static SPLIT_STEPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Steps split over more than one worker so far.
pub fn split_steps() -> u64 {
    SPLIT_STEPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The workers of a data-parallel run: autodiff devices, the first being the main one.
#[derive(Debug, Clone)]
pub struct Workers {
    pub devices: Vec<Device>,
}

impl Workers {
    /// `n` workers sharing one device (the CPU backend's one device, or one adapter).
    pub fn on(device: &Device, n: usize) -> Self {
        Workers {
            devices: vec![device.clone(); n.max(1)],
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// Whether a stage's steps can be split over workers with an exact result: the
/// language-model objective of a dense model.
pub fn splittable(objective: &StageObjective, model: &Mllm) -> bool {
    matches!(objective, StageObjective::LanguageModel) && model.config.llm.moe.is_none()
}

/// `n` contiguous shards of `len` items, as even as can be, none empty.
pub fn shards(len: usize, n: usize) -> Vec<Range<usize>> {
    let n = n.clamp(1, len.max(1));
    (0..n).map(|k| k * len / n..(k + 1) * len / n).collect()
}

/// The batch `idx` of `data` split over `workers`: the loss of the whole batch (its mean over
/// labelled tokens) and the summed gradients of `model`'s parameters on the main device.
pub fn loss_and_grads(
    model: &Mllm,
    workers: &Workers,
    data: &Dataset,
    idx: &[usize],
    pixels: &PixelBatch,
    visual: &VisualSource,
    pad: u32,
) -> (f32, GradientsParams) {
    let main = &workers.devices[0];
    let nv = model.config.vision.num_visual_tokens();
    let parts = shards(idx.len(), workers.len());
    // each shard laid out as its own batch; its labelled tokens weigh its loss
    let batches: Vec<_> = parts
        .iter()
        .map(|r| {
            let examples: Vec<_> = idx[r.clone()].iter().map(|&i| &data.encoded[i]).collect();
            host_batch(&examples, nv, pad, Padding::Right)
        })
        .collect();
    let total: usize = batches.iter().map(|hb| hb.counted()).sum::<usize>().max(1);
    if parts.len() > 1 {
        SPLIT_STEPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let results: Vec<(f32, GradientsParams)> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .iter()
            .zip(&batches)
            .zip(&workers.devices)
            .map(|((range, hb), device)| {
                let share = hb.counted() as f64 / total as f64;
                s.spawn(move || {
                    let sub = &idx[range.clone()];
                    let px = pixels.rows(range.clone());
                    let replica = model.clone().fork(device);
                    let out = language_model_loss(
                        &replica,
                        StepInput {
                            hb,
                            idx: sub,
                            visual: visual.for_pixels(&px, device),
                            pixels: &px,
                            want_relation: false,
                            device,
                        },
                    );
                    let scaled = out.total * share;
                    let value = scaled.clone().into_scalar::<f32>();
                    let grads = GradientsParams::from_grads(scaled.backward(), &replica)
                        .to_device(main, &replica);
                    (value, grads)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut loss = 0.0f32;
    let mut sum: Option<GradientsParams> = None;
    for (value, grads) in results {
        loss += value;
        sum = Some(match sum {
            None => grads,
            Some(mut acc) => {
                model.visit(&mut AddGrads {
                    into: &mut acc,
                    from: grads,
                });
                acc
            }
        });
    }
    (loss, sum.unwrap_or_default())
}

/// Adds `from`'s gradient of every parameter into `into`.
struct AddGrads<'a> {
    into: &'a mut GradientsParams,
    from: GradientsParams,
}

impl ModuleVisitor for AddGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let id = param.id;
        if let Some(g) = self.from.remove::<D>(id) {
            let sum = match self.into.remove::<D>(id) {
                Some(acc) => acc + g,
                None => g,
            };
            self.into.register(id, sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TextTokenizer;
    use crate::data::shapes::{WorldConfig, generate};

    /// Every parameter's gradient in `g`, by parameter id, as host vectors.
    fn flat(model: &Mllm, g: &GradientsParams) -> Vec<(String, Vec<f32>)> {
        struct Collect<'a> {
            g: &'a GradientsParams,
            out: Vec<(String, Vec<f32>)>,
        }
        impl ModuleVisitor for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(t) = self.g.get::<D>(param.id) {
                    let v = t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
                    self.out.push((param.id.to_string(), v));
                }
            }
        }
        let mut c = Collect { g, out: Vec::new() };
        model.visit(&mut c);
        c.out
    }

    /// The property the module exists for: split over 1, 2 or 3 workers, a batch's loss and
    /// summed gradients are the whole batch's on one device (shards of unequal labelled counts
    /// included, which a plain average of shard means would get wrong).
    #[test]
    fn split_gradients_equal_the_whole_batch_gradients() {
        let dir = std::env::temp_dir().join(format!("condenser-dp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data_dir = dir.join("data");
        generate(
            &data_dir,
            &WorldConfig {
                train_images: 8,
                val_images: 1,
                test_images: 1,
                ..WorldConfig::default()
            },
        )
        .unwrap();
        let recipe = crate::config::load_recipe(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/recipes/smoke.toml"),
        )
        .unwrap();
        let tok = TextTokenizer::load(&data_dir.join("tokenizer.json")).unwrap();
        let data = Dataset::load(
            &data_dir,
            "train.json",
            &data_dir,
            &tok,
            &recipe.model.vision,
            recipe.model.llm.max_positions,
            true,
        )
        .unwrap();
        let device = Device::flex().autodiff();
        let model = Mllm::new(&recipe.model, 7, &device);
        let idx: Vec<usize> = (0..7).map(|i| i * 3 % data.len()).collect();
        let pixels = PixelBatch::decode(&data, &idx).unwrap();
        let visual = VisualSource::Pixels;
        let pad = tok.special.pad;

        // one device, the whole batch
        let examples: Vec<_> = idx.iter().map(|&i| &data.encoded[i]).collect();
        let hb = host_batch(
            &examples,
            recipe.model.vision.num_visual_tokens(),
            pad,
            Padding::Right,
        );
        let out = language_model_loss(
            &model,
            StepInput {
                hb: &hb,
                idx: &idx,
                visual: visual.for_pixels(&pixels, &device),
                pixels: &pixels,
                want_relation: false,
                device: &device,
            },
        );
        let whole_loss = out.total.clone().into_scalar::<f32>();
        let whole = flat(
            &model,
            &GradientsParams::from_grads(out.total.backward(), &model),
        );
        assert!(whole.len() > 10, "the model has trainable parameters");

        for n in [1, 2, 3] {
            let (loss, grads) = loss_and_grads(
                &model,
                &Workers::on(&device, n),
                &data,
                &idx,
                &pixels,
                &visual,
                pad,
            );
            assert!(
                (loss - whole_loss).abs() <= 1e-5 * whole_loss.abs().max(1.0),
                "{n} workers: loss {loss} vs {whole_loss}"
            );
            let split = flat(&model, &grads);
            assert_eq!(
                split.len(),
                whole.len(),
                "{n} workers: parameters with a gradient"
            );
            for ((id, a), (_, b)) in whole.iter().zip(&split) {
                let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
                let diff = a
                    .iter()
                    .zip(b)
                    .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    diff <= 1e-4 * scale + 1e-7,
                    "{n} workers, parameter {id}: gradients differ by {diff} (scale {scale})"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shards_cover_the_batch_in_order() {
        assert_eq!(shards(10, 3), vec![0..3, 3..6, 6..10]);
        assert_eq!(shards(2, 4), vec![0..1, 1..2]);
        assert_eq!(shards(5, 1), vec![0..5]);
    }
}
