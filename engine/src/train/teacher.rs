//! The frozen teacher of a distillation or preference stage: loaded once per run and checked
//! against the student, run on the inner (non-autodiff) device so no graph is ever built
//! through it, and, when its outputs for a stage fit in memory, run once per example instead of
//! once per step ([`TeacherCache`]).

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::backend::kernels::Kernels;
use crate::config::MllmConfig;
use crate::data::{HostBatch, TextTokenizer};
use crate::distill::VocabAlignment;
use crate::model::{Mllm, Visual};
use crate::run::checkpoint;
use crate::{Error, Result};

/// The loaded teacher and how its vocabulary lines up with the student's.
pub struct Teacher {
    pub model: Mllm,
    pub checkpoint: PathBuf,
    pub vocab: VocabAlignment,
}

impl Teacher {
    /// Loads the teacher from `ckpt` onto `device` (an inner, non-autodiff device) and checks it
    /// against the student: same vision encoder shape (LLaVA-KD shares the frozen encoder, and
    /// RDist compares visual tokens one to one), same tokenizer, compatible vocabularies.
    pub fn load(
        ckpt: &Path,
        student: &MllmConfig,
        tokenizer: &TextTokenizer,
        kernels: Kernels,
        device: &Device,
    ) -> Result<Teacher> {
        let config = checkpoint::load_config(ckpt)?;
        let bad = |message: String| Error::Checkpoint {
            path: ckpt.to_path_buf(),
            message,
        };
        if config.vision.num_visual_tokens() != student.vision.num_visual_tokens()
            || config.vision.image_size != student.vision.image_size
        {
            return Err(bad(format!(
                "the teacher sees {} visual tokens of {} px images, the student {} of {} px: \
                 teacher and student must share the vision encoder",
                config.vision.num_visual_tokens(),
                config.vision.image_size,
                student.vision.num_visual_tokens(),
                student.vision.image_size
            )));
        }
        let tok = crate::run::checkpoint_tokenizer(ckpt).ok_or_else(|| {
            bad(
                "no tokenizer.json beside the teacher checkpoint: cannot check that teacher \
                 and student share a tokenizer"
                    .into(),
            )
        })?;
        let theirs = std::fs::read(&tok).map_err(|e| Error::io(&tok, e))?;
        let ours = std::fs::read(&tokenizer.path).map_err(|e| Error::io(&tokenizer.path, e))?;
        if theirs != ours {
            return Err(bad(format!(
                "the teacher's tokenizer ({}) differs from the student's ({}): distillation \
                 compares distributions over the same token ids, so both must use one tokenizer",
                tok.display(),
                tokenizer.path.display()
            )));
        }
        let vocab = VocabAlignment::new(
            student.llm.vocab_size,
            config.llm.vocab_size,
            tokenizer.vocab_size(),
        )
        .map_err(bad)?;
        let mut model = checkpoint::load_full(ckpt, device)?;
        model.set_kernels(kernels);
        Ok(Teacher {
            model,
            checkpoint: ckpt.to_path_buf(),
            vocab,
        })
    }
}

impl Teacher {
    /// Last hidden states `[B, T, D]` of one batch, on the inner device. The logits are not
    /// formed here: a distillation term reads them only at the positions it compares, through
    /// the head a chunk at a time (`objective::distill`), so a `[B, T, V]` tensor never exists.
    pub(super) fn hidden(&self, hb: &HostBatch, visual: Visual, inner: &Device) -> Tensor<3> {
        let batch = hb.to_device(visual, inner);
        self.model.hidden(&batch)
    }
}

/// The teacher's last hidden states `[B, T, D_teacher]` on one batch, as constants on the
/// autodiff device `ad`.
pub fn teacher_forward(
    teacher: &Teacher,
    hb: &HostBatch,
    visual: Visual,
    ad: &Device,
) -> Tensor<3> {
    teacher.hidden(hb, visual, &ad.clone().inner()).autodiff()
}

/// The teacher's last hidden states per example, kept as the stage first meets them. The teacher
/// and its encoder are frozen and the examples do not change, so over a many-epoch stage the
/// first epoch runs the teacher and later ones copy from here, with nothing computed before the
/// first step. The logits are not cached: they are the hidden states through the teacher's
/// head, formed per step at the positions the loss reads, so the cache holds `D` floats per
/// token instead of `D + V` (576 against 49k for SmolLM2). Right padding and the causal mask
/// make an example's outputs independent of what it is batched with, so the cached values are
/// the live ones up to float rounding. Filled until [`TEACHER_CACHE_MAX_BYTES`]; examples past
/// it are computed live each time.
pub struct TeacherCache {
    hidden: std::sync::Mutex<(std::collections::HashMap<usize, Vec<f32>>, usize)>,
    width: usize,
    budget: usize,
}

/// Largest cache kept; past it the teacher runs live for the examples not cached.
pub const TEACHER_CACHE_MAX_BYTES: usize = 4 << 30;

impl TeacherCache {
    pub fn new(teacher: &Teacher, budget: usize) -> Self {
        TeacherCache {
            hidden: Default::default(),
            width: teacher.model.config.llm.hidden,
            budget,
        }
    }

    /// Examples cached so far.
    pub fn len(&self) -> usize {
        self.hidden.lock().expect("teacher cache").0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The teacher's hidden states of examples `idx` laid out like `hb` (right padding, zeros
    /// beyond each example's end, where every mask is 0), on the autodiff device `ad`: from
    /// the cache when every example is there, else from the teacher on the whole batch
    /// (`visual()` gives its visual input), keeping what the budget allows.
    pub fn batch(
        &self,
        teacher: &Teacher,
        idx: &[usize],
        hb: &HostBatch,
        visual: impl FnOnce() -> Visual,
        ad: &Device,
    ) -> Tensor<3> {
        let (b, t, w) = (hb.b, hb.t, self.width);
        let mut guard = self.hidden.lock().expect("teacher cache");
        let (rows, bytes) = &mut *guard;
        if idx.iter().all(|i| rows.contains_key(i)) {
            let mut h = vec![0.0f32; b * t * w];
            for (r, i) in idx.iter().enumerate() {
                let src = &rows[i];
                h[r * t * w..r * t * w + src.len()].copy_from_slice(src);
            }
            return Tensor::from_data(TensorData::new(h, [b, t, w]), ad);
        }
        let live = teacher.hidden(hb, visual(), &ad.clone().inner());
        let host: Vec<f32> = live
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32");
        for (r, &i) in idx.iter().enumerate() {
            let n = hb.attention_mask[r * t..(r + 1) * t]
                .iter()
                .filter(|m| **m > 0.0)
                .count();
            let size = n * w * 4;
            if !rows.contains_key(&i) && *bytes + size <= self.budget {
                *bytes += size;
                rows.insert(i, host[r * t * w..(r * t + n) * w].to_vec());
            }
        }
        live.autodiff()
    }
}
