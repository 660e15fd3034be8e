//! The teacher cache as a cluster uses it (docs/scale-out.md): a smoke teacher trained by
//! `condenser run`, its cache built as two shards (`teacher-cache build --shard I/2`, as two
//! array tasks would) in two folders and in one shared folder, merged, described by `teacher-cache info`, and read by a
//! distillation recipe (`[teacher] cache = ...`) whose run trains without the teacher. Bad
//! input (a shard spec out of range, an unfinished shard set) gets a clear error, no panic.

mod common;

use std::path::Path;

use common::{bin, scratch, smoke_recipe, world};

fn ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

fn fails(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "should have failed");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn shard(dir: &Path, data: &Path, runs: &Path, spec: &str, out: &Path) -> std::process::Command {
    let mut c = bin();
    c.current_dir(dir)
        .args(["teacher-cache", "build"])
        .arg(runs.join("smoke"))
        .arg("--data")
        .arg(data)
        .args(["--top-k", "8", "--part-size", "5", "--backend", "cpu"])
        .args(["--shard", spec, "-o"])
        .arg(out);
    c
}

#[test]
fn sharded_cache_built_merged_and_distilled_from() {
    let dir = scratch("cli-teacher-cache");
    let data = world(&dir);
    let runs = dir.join("runs");
    let teacher = smoke_recipe(&dir, &data, |t| t);
    ok(bin()
        .args([
            "run",
            teacher.to_str().unwrap(),
            "--backend",
            "cpu",
            "--no-eval",
        ])
        .arg("--runs-dir")
        .arg(&runs));

    let err = fails(&mut shard(&dir, &data, &runs, "2/2", &dir.join("s2")));
    assert!(err.contains("below the count"), "{err}");
    for i in 0..2 {
        let out = ok(&mut shard(
            &dir,
            &data,
            &runs,
            &format!("{i}/2"),
            &dir.join(format!("s{i}")),
        ));
        assert!(out.contains(&format!("shard {i}/2 done")), "{out}");
    }
    // one shard alone is not a cache
    let err = fails(
        bin()
            .args(["teacher-cache", "merge", "-o"])
            .arg(dir.join("cache"))
            .arg(dir.join("s0")),
    );
    assert!(err.contains("missing: [1]"), "{err}");
    let merged = ok(bin()
        .args(["teacher-cache", "merge", "-o"])
        .arg(dir.join("cache"))
        .arg(dir.join("s0"))
        .arg(dir.join("s1")));
    assert!(merged.contains("top-8 of 64 tokens"), "{merged}");
    let info = ok(bin().args(["teacher-cache", "info"]).arg(dir.join("cache")));
    assert!(info.contains("bytes per position"), "{info}");

    // the cluster layout of docs/scale-out.md: every task writes into one shared folder, and
    // the merge completes that folder in place; it equals the merge of separate folders
    let shared = dir.join("shared");
    for i in [1, 0] {
        ok(&mut shard(&dir, &data, &runs, &format!("{i}/2"), &shared));
    }
    ok(bin()
        .args(["teacher-cache", "merge", "-o"])
        .arg(&shared)
        .arg(&shared));
    let manifest = |d: &Path| {
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
        m.as_object_mut().unwrap().remove("build_seconds");
        m
    };
    assert_eq!(manifest(&shared), manifest(&dir.join("cache")));

    // a KD recipe on the cache: the smoke-kd student with T = 1 everywhere, no hidden term
    let kd = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/recipes/smoke-kd.toml"),
    )
    .unwrap()
    .replace(
        "data = \"data/smoke\"",
        &format!("data = {:?}", data.display().to_string()),
    )
    .replace(
        "[teacher]\nfrom = \"smoke\"\n",
        &format!(
            "[teacher]\nfrom = \"smoke\"\ncache = {:?}\n",
            dir.join("cache").display().to_string()
        ),
    )
    .replace(", hidden = 0.5", "")
    .replace(", temperature = 2.0, zscore = true", "");
    let recipe = dir.join("kd.toml");
    std::fs::write(&recipe, kd).unwrap();
    let out = ok(bin()
        .args([
            "run",
            recipe.to_str().unwrap(),
            "--backend",
            "cpu",
            "--no-eval",
        ])
        .arg("--runs-dir")
        .arg(&runs));
    assert!(
        out.contains("finished") || runs.join("smoke-kd/checkpoints/final").exists(),
        "{out}"
    );
    assert!(runs.join("smoke-kd/checkpoints/final/model.bpk").exists());
}
