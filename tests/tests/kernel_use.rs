//! A wgpu training step really runs Condenser's kernels. Every A/B test compares a kernel run
//! with a reference run, so a trainer that silently took the burn-ops path everywhere would pass
//! them all; the launch counters (`backend::kernels::kernel_launches`) cannot be fooled that way.
//! One test in this binary: the counters are process-wide, and another test training beside it
//! would add to them.

use condenser_engine::backend::kernels::kernel_launches;
use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::config::{KernelPolicy, parse_recipe};
use condenser_engine::train::{RunOptions, Silent, run_recipe};
use condenser_tests::{repo, scratch, smoke_teacher};

#[test]
fn a_wgpu_step_runs_attention_moe_and_distillation_kernels_and_reference_runs_none() {
    let dir = scratch("kernel-use");
    // the teacher trains on the CPU: only the student's step is counted
    let (data, runs) = smoke_teacher(&dir, None);
    let (device, info) = select(BackendChoice::Wgpu)
        .expect("a wgpu adapter (scripts/setup.sh installs Mesa lavapipe)");
    // the smoke KD student with MoE layers: one DFT step exercises every kernel family
    let path = repo().join("assets/recipes/smoke-kd.toml");
    let text = std::fs::read_to_string(&path).unwrap()
        + "\n[model.llm.moe]\nexperts = 4\ntop_k = 2\nplacement = \"all\"\n";
    let mut recipe = parse_recipe(&text, &path).expect("smoke-kd with MoE parses");
    recipe.data = data;
    recipe.stages.retain(|s| s.name == "dft");
    assert_eq!(recipe.stages.len(), 1);
    let opts = RunOptions {
        runs_dir: runs,
        eval: false,
        stop_after_steps: Some(1),
        ..RunOptions::default()
    };

    let before = kernel_launches();
    run_recipe(&recipe, &device, &info, &opts, &mut Silent).expect("one fused step");
    let fused = kernel_launches().since(before);
    eprintln!("kernel launches in one fused step: {fused:?}");
    assert!(
        fused.attention > 0,
        "attention kernels never ran: {fused:?}"
    );
    assert!(fused.moe > 0, "MoE kernels never ran: {fused:?}");
    assert!(
        fused.distill > 0,
        "distillation kernels never ran: {fused:?}"
    );
    assert!(
        fused.cross_entropy > 0,
        "cross-entropy kernels never ran: {fused:?}"
    );

    recipe.name = "smoke-kd-reference".into();
    recipe.kernels = KernelPolicy::Reference;
    let before = kernel_launches();
    run_recipe(&recipe, &device, &info, &opts, &mut Silent).expect("one reference step");
    let reference = kernel_launches().since(before);
    assert_eq!(
        reference.total(),
        0,
        "--kernels reference launched kernels: {reference:?}"
    );
}
