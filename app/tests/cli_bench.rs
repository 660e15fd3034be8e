//! `condenser bench` end to end at toy sizes on the wgpu device (lavapipe in CI): every sweep
//! runs, every memory probe round-trips through its fresh process, and the generated file has
//! one section per kernel with the kernel-vs-reference figures. (Timings at these sizes mean
//! nothing; the committed docs/results/kernels.md is generated at real sizes.)

use std::path::Path;
use std::process::Command;

#[test]
fn bench_writes_every_section() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("kernels.md");
    let run = Command::new(env!("CARGO_BIN_EXE_condenser"))
        .env("RUST_LOG", "warn")
        .args([
            "bench",
            "--distill",
            "8x100",
            "--attention",
            "1x2x1x8x4,1x2x1x8x4:f16",
            "--fused-linear",
            "8x4x100",
            "--head-loss",
            "16x4x8x100",
            "--moe",
            "16x8x12x4x2",
            "--repeats",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    let md = std::fs::read_to_string(&out).unwrap();
    for section in [
        "## Distillation loss",
        "## Fused-linear distillation loss",
        "## Language-model head loss",
        "## Attention",
        "## MoE expert layer",
    ] {
        assert!(md.contains(section), "missing {section:?} in\n{md}");
    }
    // the head-loss row: sizes, the kernel's chunk (100-token rows: 64 MiB holds them all)
    assert!(md.contains("| 16 | 4 | 8 | 100 |"), "{md}");
    // the MoE row: sizes, then three timings and the ratio against dense
    assert!(md.contains("| 16 | 8 | 12 | 4 | 2 |"), "{md}");
    // both attention precisions (lavapipe offers shader-f16)
    assert!(md.contains("| 1 | 2 (1) | 8 | 4 | f32 |"), "{md}");
    assert!(md.contains("| 1 | 2 (1) | 8 | 4 | f16 |"), "{md}");
    assert!(!md.contains("NaN"), "{md}");
}
