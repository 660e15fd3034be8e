//! The pre-flight memory plan: before a run touches its folder, each stage's largest single
//! buffer and peak memory are estimated from the model, the batch and the data's longest
//! sequence, and a stage whose buffer exceeds what the device can allocate is refused with a
//! message that names the tensor, its size, the limit and what to change. `condenser run
//! --plan` prints the plan without training.
//!
//! Everything that scales with the vocabulary and the batch at once is chunked by the losses
//! (`model::head_loss`, `distill::divergence`, `distill::relation`), so what is left to check
//! are the tensors that cannot be chunked: weights and their optimiser state, activations of
//! one layer, attention scores where the burn-ops attention runs, and one chunk of logits.
//! The peak is an estimate (parameters, gradients and AdamW moments of what trains, the saved
//! activations of every layer, the largest transient); the largest buffer is exact for the
//! tensors listed.

use burn::prelude::Device;

use crate::backend::kernels::Kernels;
use crate::config::{FreezePolicy, FreezeSpec, MllmConfig, Objective, Recipe, StageSpec};
use crate::data::Dataset;
use crate::model::{cross_entropy_chunk_rows, head_chunk_rows};
use crate::{Error, Result};

/// What a tensor of the plan scales with: it decides what a user changes when it is too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BufferKind {
    /// A weight: its size is fixed by the model.
    Weight,
    /// The vision tower's activations: batch times image positions.
    VisionActivation,
    /// The decoder's activations and logit chunks: batch times sequence length.
    Activation,
}

/// One tensor of the plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Buffer {
    /// What it is, in words ("the student's token embedding").
    pub what: String,
    pub shape: Vec<usize>,
    pub kind: BufferKind,
}

impl Buffer {
    fn new(kind: BufferKind, what: impl Into<String>, shape: &[usize]) -> Buffer {
        Buffer {
            what: what.into(),
            shape: shape.to_vec(),
            kind,
        }
    }

    fn weight(what: impl Into<String>, shape: &[usize]) -> Buffer {
        Buffer::new(BufferKind::Weight, what, shape)
    }

    fn vision(what: impl Into<String>, shape: &[usize]) -> Buffer {
        Buffer::new(BufferKind::VisionActivation, what, shape)
    }

    fn activation(what: impl Into<String>, shape: &[usize]) -> Buffer {
        Buffer::new(BufferKind::Activation, what, shape)
    }

    /// f32 bytes.
    pub fn bytes(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product::<u64>() * 4
    }
}

impl std::fmt::Display for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        write!(
            f,
            "{} [{}] ({})",
            self.what,
            dims.join(", "),
            mib(self.bytes())
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One stage's estimate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StagePlan {
    pub stage: usize,
    pub name: String,
    /// Sequences per step (chosen and rejected answers count twice in a preference stage).
    pub sequences: usize,
    /// The longest sequence of the stage's data, visual tokens included.
    pub seq_len: usize,
    /// The largest single buffers, largest first.
    pub largest: Vec<Buffer>,
    pub peak_bytes: u64,
}

/// The plan of a whole run on one device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryPlan {
    pub device: String,
    /// The largest buffer the device can allocate; `None` on the CPU backend.
    pub max_buffer: Option<u64>,
    /// Memory the peak is checked against, where it is known: host memory available, on the
    /// CPU backend and on a CPU Vulkan device (lavapipe). A GPU does not report its own.
    pub memory: Option<u64>,
    pub stages: Vec<StagePlan>,
}

/// The shapes of one model's tensors, as the plan needs them.
struct ModelShapes<'a>(&'a MllmConfig);

impl ModelShapes<'_> {
    /// Every weight (and whether `freeze` trains it), one entry per distinct shape and role.
    fn weights(
        &self,
        who: &str,
        freeze: Option<&crate::config::StageFreeze>,
    ) -> Vec<(Buffer, usize, bool)> {
        let (v, l) = (&self.0.vision, &self.0.llm);
        let trains = |spec: Option<&FreezeSpec>| match spec {
            None => false,
            Some(FreezeSpec::Named(FreezePolicy::Frozen)) => false,
            Some(_) => true,
        };
        let vis = trains(freeze.map(|f| &f.vision));
        let proj = trains(freeze.map(|f| &f.projector));
        let llm = trains(freeze.map(|f| &f.llm));
        let hd = l.hidden / l.heads.max(1);
        let mut out = vec![
            (
                Buffer::weight(
                    format!("{who}'s vision MLP weight"),
                    &[v.hidden, v.mlp_hidden],
                ),
                2 * v.layers,
                vis,
            ),
            (
                Buffer::weight(
                    format!("{who}'s vision attention weights"),
                    &[v.hidden, v.hidden],
                ),
                4 * v.layers,
                vis,
            ),
            (
                Buffer::weight(format!("{who}'s projector"), &[v.hidden, l.hidden]),
                1,
                proj,
            ),
            (
                Buffer::weight(
                    format!("{who}'s projector output layer"),
                    &[l.hidden, l.hidden],
                ),
                1,
                proj,
            ),
            (
                Buffer::weight(
                    format!("{who}'s token embedding"),
                    &[l.vocab_size, l.hidden],
                ),
                1,
                llm,
            ),
            (
                Buffer::weight(format!("{who}'s attention weights"), &[l.hidden, l.hidden]),
                2 * l.layers,
                llm,
            ),
            (
                Buffer::weight(
                    format!("{who}'s key/value weights"),
                    &[l.hidden, l.kv_heads * hd],
                ),
                2 * l.layers,
                llm,
            ),
        ];
        match &l.moe {
            // an upper bound: every layer counted as sparse
            Some(m) => out.push((
                Buffer::weight(
                    format!("{who}'s expert weights"),
                    &[m.experts, l.hidden, l.intermediate],
                ),
                3 * l.layers,
                llm,
            )),
            None => out.push((
                Buffer::weight(format!("{who}'s MLP weights"), &[l.hidden, l.intermediate]),
                3 * l.layers,
                llm,
            )),
        }
        if !l.tie_embeddings {
            out.push((
                Buffer::weight(format!("{who}'s LM head"), &[l.hidden, l.vocab_size]),
                1,
                llm,
            ));
        }
        out
    }

    /// Activations one layer forms for `b` sequences of `t` tokens, and what each layer keeps
    /// for the backward pass (floats).
    fn activations(&self, who: &str, b: usize, t: usize, kernels: Kernels) -> (Vec<Buffer>, u64) {
        let (v, l) = (&self.0.vision, &self.0.llm);
        let p = v.num_positions();
        let n = b * t;
        let mut big = vec![
            Buffer::activation(format!("{who}'s MLP activations"), &[n, l.intermediate]),
            Buffer::vision(
                format!("{who}'s vision MLP activations"),
                &[b * p, v.mlp_hidden],
            ),
        ];
        let mut kept = l.layers as u64 * n as u64 * (8 * l.hidden + 3 * l.intermediate) as u64
            + v.layers as u64 * (b * p) as u64 * (8 * v.hidden + 2 * v.mlp_hidden) as u64;
        if !kernels.fused() {
            // the burn-ops attention forms the scores and their softmax
            big.push(Buffer::activation(
                format!("{who}'s attention scores"),
                &[b, l.heads, t, t],
            ));
            big.push(Buffer::vision(
                format!("{who}'s vision attention scores"),
                &[b, v.heads, p, p],
            ));
            kept += l.layers as u64 * 2 * (b * l.heads * t * t) as u64
                + v.layers as u64 * 2 * (b * v.heads * p * p) as u64;
        }
        (big, kept * 4)
    }
}

/// The longest sequence (visual tokens included) of `data`.
fn longest(data: &Dataset) -> usize {
    data.encoded.iter().map(|e| e.ids.len()).max().unwrap_or(1)
}

/// Rows of one chunk of `[rows, vocab]` logits as the cross-entropy forms them, rounded down to
/// the kernels' 64-row unit (at least one unit) where they run.
fn chunk_rows(vocab: usize, kernels: Kernels) -> usize {
    let rows = cross_entropy_chunk_rows(vocab, kernels);
    if kernels.fused() {
        (rows / 64).max(1) * 64
    } else {
        rows
    }
}

impl MemoryPlan {
    /// The plan of `recipe` over its loaded data, with the teacher's config where the recipe has
    /// one, on `device` (whose kernels are `kernels`).
    pub fn build(
        recipe: &Recipe,
        data: &std::collections::BTreeMap<crate::config::DataKind, Dataset>,
        teacher: Option<&MllmConfig>,
        kernels: Kernels,
        device: &Device,
        info: &crate::backend::DeviceInfo,
    ) -> MemoryPlan {
        let stages = recipe
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| stage_plan(i, s, &recipe.model, teacher, &data[&s.data], kernels))
            .collect();
        let max_buffer = crate::backend::max_buffer_bytes(device);
        let host = max_buffer.is_none() || info.host_memory;
        MemoryPlan {
            device: format!("{} ({})", info.name, info.backend),
            max_buffer,
            memory: host.then(available_memory).flatten(),
            stages,
        }
    }

    /// `Err` naming the first stage whose largest buffer exceeds the device's, or whose peak
    /// exceeds the memory available, with what to change.
    pub fn check(&self) -> Result<()> {
        for s in &self.stages {
            let top = &s.largest[0];
            if let Some(limit) = self.max_buffer
                && top.bytes() > limit
            {
                return Err(Error::TooLarge(format!(
                    "stage {} {:?}: {top} exceeds the largest buffer {} can allocate ({}). {}",
                    s.stage + 1,
                    s.name,
                    self.device,
                    mib(limit),
                    advice(top)
                )));
            }
            if let Some(memory) = self.memory
                && s.peak_bytes > memory
            {
                return Err(Error::TooLarge(format!(
                    "stage {} {:?}: an estimated peak of {} exceeds the {} of memory available \
                     on {} (largest tensor: {top}); lower the stage's batch_size",
                    s.stage + 1,
                    s.name,
                    mib(s.peak_bytes),
                    mib(memory),
                    self.device
                )));
            }
        }
        Ok(())
    }

    /// The plan as text, one block per stage.
    pub fn render(&self) -> String {
        let mut out = format!(
            "memory plan on {}: largest buffer {}, memory {}\n",
            self.device,
            self.max_buffer.map_or("unbounded (CPU)".into(), mib),
            self.memory.map_or("not reported by the device".into(), mib)
        );
        for s in &self.stages {
            let fits = self.max_buffer.is_none_or(|m| s.largest[0].bytes() <= m)
                && self.memory.is_none_or(|m| s.peak_bytes <= m);
            out.push_str(&format!(
                "stage {} {:?}: {} sequences x {} tokens, estimated peak {}{}\n",
                s.stage + 1,
                s.name,
                s.sequences,
                s.seq_len,
                mib(s.peak_bytes),
                if fits { "" } else { "  <- does not fit" }
            ));
            for b in s.largest.iter().take(4) {
                out.push_str(&format!("    {b}\n"));
            }
        }
        out
    }
}

/// What to change when `top` is too large.
fn advice(top: &Buffer) -> &'static str {
    match top.kind {
        BufferKind::Weight => {
            "It is a weight: its size is fixed by the model; use a smaller model or a device \
             with larger buffers (e.g. a GPU whose driver indexes buffers with 64 bits)"
        }
        BufferKind::VisionActivation => {
            "Lower the stage's batch_size or the vision tower's image_size"
        }
        BufferKind::Activation => {
            "Lower the stage's batch_size (or the data's longest conversation)"
        }
    }
}

fn stage_plan(
    i: usize,
    s: &StageSpec,
    student: &MllmConfig,
    teacher: Option<&MllmConfig>,
    data: &Dataset,
    kernels: Kernels,
) -> StagePlan {
    let b = if matches!(s.objective, Objective::Preference(_)) {
        2 * s.batch_size
    } else {
        s.batch_size
    };
    let t = longest(data);
    let shapes = ModelShapes(student);
    let mut buffers = Vec::new();
    let mut peak = 0u64;
    for (w, count, trains) in shapes.weights("the student", Some(&s.freeze)) {
        // the weight, and where it trains its gradient and two AdamW moments
        let copies = if trains { 4 } else { 1 };
        peak += w.bytes() * (count * copies) as u64;
        buffers.push(w);
    }
    let (acts, kept) = shapes.activations("the student", b, t, kernels);
    peak += kept;
    buffers.extend(acts);
    let vocab = student.llm.vocab_size;
    let rows = chunk_rows(vocab, kernels).min(b * t);
    buffers.push(Buffer::activation(
        "one chunk of the student's logits",
        &[rows, vocab],
    ));
    let mut transient = 3 * Buffer::activation("", &[rows, vocab]).bytes();
    if let (Objective::Distill(_) | Objective::Preference(_), Some(tc)) = (&s.objective, teacher) {
        let tshapes = ModelShapes(tc);
        for (w, count, _) in tshapes.weights("the teacher", None) {
            peak += w.bytes() * count as u64;
            buffers.push(w);
        }
        // the teacher runs without a graph: one layer's activations at a time
        let (acts, _) = tshapes.activations("the teacher", b.max(64), t, kernels);
        transient += acts.iter().map(Buffer::bytes).max().unwrap_or(0);
        buffers.extend(acts);
        buffers.push(Buffer::activation(
            "the teacher's hidden states",
            &[b, t, tc.llm.hidden],
        ));
        // the divergences take both models' logits a 32 MiB chunk at a time
        let shared = tc.llm.vocab_size.min(vocab);
        let div_rows = match kernels.fused() {
            true => (head_chunk_rows(shared) / 64).max(1) * 64,
            false => head_chunk_rows(shared),
        }
        .min(b * t);
        buffers.push(Buffer::activation(
            "one chunk of the teacher's logits",
            &[div_rows, shared],
        ));
    }
    peak += transient;
    buffers.sort_by_key(|b| std::cmp::Reverse(b.bytes()));
    buffers.dedup();
    StagePlan {
        stage: i,
        name: s.name.clone(),
        sequences: b,
        seq_len: t,
        largest: buffers.into_iter().take(6).collect(),
        peak_bytes: peak,
    }
}

/// `MemAvailable` of `/proc/meminfo`, bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The plan of `recipe` from its checked inputs (the teacher's config read from its
/// checkpoint, without loading its weights).
pub(super) fn plan_inputs(
    recipe: &Recipe,
    runs: &crate::run::Runs,
    inputs: &super::inputs::Inputs,
    kernels: Kernels,
    device: &Device,
    info: &crate::backend::DeviceInfo,
) -> Result<MemoryPlan> {
    // a teacher that only builds a cache is gone before the first stage starts
    let from = recipe.teacher.as_ref().and_then(|t| t.from.as_ref());
    let teacher = match from.filter(|_| super::inputs::needs_live_teacher(recipe)) {
        Some(from) => Some(crate::run::checkpoint::load_config(
            &runs.resolve_checkpoint(from)?,
        )?),
        None => None,
    };
    Ok(MemoryPlan::build(
        recipe,
        &inputs.data,
        teacher.as_ref(),
        kernels,
        device,
        info,
    ))
}

/// `condenser run --plan`: the plan of `recipe` on `device`, its inputs loaded and checked as a
/// run would, nothing written.
pub fn plan_recipe(
    recipe: &Recipe,
    device: &Device,
    info: &crate::backend::DeviceInfo,
    opts: &super::RunOptions,
) -> Result<MemoryPlan> {
    let runs = opts.runs();
    let inputs = super::inputs::Inputs::load(recipe, &runs)?;
    let kernels = Kernels::resolve(recipe.kernels, device);
    plan_inputs(recipe, &runs, &inputs, kernels, device, info)
}
