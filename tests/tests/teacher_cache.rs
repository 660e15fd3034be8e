//! The teacher cache end to end on the smoke world: a cache built by the engine's builder serves
//! the `smoke-kd` student's distillation stages like the live teacher (the same loss terms,
//! step for step, when top-k covers the vocabulary); shards merge into the whole cache byte for
//! byte and an interrupted build resumes; a cache that does not match the stage is refused; a
//! recipe can build its own cache and then drops the teacher.

use std::path::{Path, PathBuf};

use condenser_engine::backend::{BackendChoice, select};
use condenser_engine::config::{CacheBuildSpec, Objective, Recipe, TeacherCacheSpec, load_recipe};
use condenser_engine::train::teacher_cache::{
    self, BuildOptions, CachePositions, MANIFEST_FILE, Manifest, Shard,
};
use condenser_engine::train::{RunOptions, Silent, run_recipe};
use condenser_tests::{StepTerms, repo, scratch, smoke_teacher};

/// smoke-kd with one divergence setting for both distillation stages (T = 1, no z-scoring, so
/// one cache serves both) and without LLaVADI's hidden term (a cache does not hold hidden
/// states); the DFT stage keeps JSD and RDist on hidden states.
fn kd_recipe(data: &Path) -> Recipe {
    let mut r = load_recipe(repo().join("assets/recipes/smoke-kd.toml")).expect("smoke-kd parses");
    r.data = data.to_path_buf();
    for s in &mut r.stages {
        if let Objective::Distill(d) = &mut s.objective {
            d.hidden = 0.0;
            d.divergence.temperature = 1.0;
            d.divergence.zscore = false;
        }
    }
    r
}

fn options(data: &Path, runs: &Path, out: &Path, top_k: usize, shard: Shard) -> BuildOptions {
    BuildOptions {
        teacher: runs.join("smoke/checkpoints/final"),
        data: data.to_path_buf(),
        files: vec!["train.json".into(), "captions.json".into()],
        image_folder: None,
        out: out.to_path_buf(),
        top_k,
        temperature: 1.0,
        zscore: false,
        positions: CachePositions::Responses,
        shard,
        batch_size: 8,
        max_positions: None,
        require_image: true,
        // 48 examples per file: five parts each, so three shards split them unevenly
        part_size: 10,
    }
}

fn build(opts: &BuildOptions) -> Manifest {
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    teacher_cache::build(opts, &device, &mut |_| {}).expect("cache builds")
}

fn run_opts(runs: &Path) -> RunOptions {
    RunOptions {
        runs_dir: runs.to_path_buf(),
        eval: false,
        ..RunOptions::default()
    }
}

fn with_cache(mut r: Recipe, cache: &Path, name: &str) -> Recipe {
    r.name = name.into();
    r.teacher.as_mut().unwrap().cache = Some(TeacherCacheSpec::Path(cache.display().to_string()));
    r
}

fn part_bytes(dir: &Path, m: &Manifest) -> Vec<(String, Vec<u8>)> {
    m.files
        .iter()
        .flat_map(|f| &f.parts)
        .map(|p| (p.file.clone(), std::fs::read(dir.join(&p.file)).unwrap()))
        .collect()
}

#[test]
fn a_full_cache_distils_like_the_live_teacher() {
    let dir = scratch("teacher-cache-live");
    let (data, runs) = smoke_teacher(&dir, None);
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let cache = dir.join("cache-full");
    let m = build(&options(&data, &runs, &cache, 64, Shard::WHOLE));
    assert_eq!(m.key.top_k, 64, "the smoke vocabulary is 64 tokens");

    let mut live = StepTerms::default();
    let recipe = kd_recipe(&data);
    run_recipe(&recipe, &device, &info, &run_opts(&runs), &mut live).unwrap();
    let mut cached = StepTerms::default();
    let out = run_recipe(
        &with_cache(recipe.clone(), &cache, "smoke-kd-cached"),
        &device,
        &info,
        &run_opts(&runs),
        &mut cached,
    )
    .unwrap();
    assert!(out.finished);
    assert_eq!(live.0.len(), cached.0.len());
    let mut compared = 0;
    for ((stage, a), (_, b)) in live.0.iter().zip(&cached.0) {
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (term, x) in a {
            let y = b[term];
            // f16 log-probs and f16 relation matrices, compounded over a few steps
            assert!(
                (x - y).abs() <= 2e-3 + 2e-2 * x.abs(),
                "{stage} {term}: live {x} vs cached {y}"
            );
            compared += 1;
        }
    }
    assert!(compared > 10, "only {compared} terms compared");

    // a lossy cache (top-4 of 64 tokens) still trains the student, with finite terms
    let small = dir.join("cache-4");
    let m4 = build(&options(&data, &runs, &small, 4, Shard::WHOLE));
    let (b64, p64) = m.size();
    let (b4, p4) = m4.size();
    assert_eq!(p4, p64, "both caches hold the same positions");
    assert!(
        b4 * 3 < b64,
        "top-4 ({b4} B) should be far smaller than top-64 ({b64} B)"
    );
    let mut terms = StepTerms::default();
    run_recipe(
        &with_cache(recipe, &small, "smoke-kd-top4"),
        &device,
        &info,
        &run_opts(&runs),
        &mut terms,
    )
    .unwrap();
    assert!(
        terms
            .0
            .iter()
            .all(|(_, t)| t.values().all(|v| v.is_finite()))
    );
}

#[test]
fn shards_merge_into_the_whole_cache_and_an_interrupted_build_resumes() {
    let dir = scratch("teacher-cache-shards");
    let (data, runs) = smoke_teacher(&dir, Some(1));
    let whole_dir = dir.join("whole");
    let whole = build(&options(&data, &runs, &whole_dir, 8, Shard::WHOLE));
    let parts: usize = whole.files.iter().map(|f| f.parts.len()).sum();
    assert!(
        parts >= 2,
        "the smoke world should need parts of both files"
    );

    // three shards on three "machines", merged into a fourth folder
    let shard_dirs: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("shard{i}"))).collect();
    for (i, d) in shard_dirs.iter().enumerate() {
        let m = build(&options(&data, &runs, d, 8, Shard { index: i, count: 3 }));
        assert!(d.join(Shard { index: i, count: 3 }.file_name()).exists());
        assert!(
            !d.join(MANIFEST_FILE).exists(),
            "a shard is not a complete cache"
        );
        assert_eq!(m.shard.index, i);
    }
    // a shard missing is refused
    let merged_dir = dir.join("merged");
    let err = teacher_cache::merge(&shard_dirs[..2], &merged_dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing: [2]"), "{err}");
    let merged = teacher_cache::merge(&shard_dirs, &merged_dir).unwrap();
    assert_eq!(
        merged.files, whole.files,
        "merged parts differ from the whole build's"
    );
    assert_eq!(
        part_bytes(&merged_dir, &merged),
        part_bytes(&whole_dir, &whole)
    );
    teacher_cache::CachedTeacher::open(&merged_dir).expect("the merged cache opens");

    // an interrupted build: the last part and the manifest are gone, the rest is kept
    let last = &whole.files.last().unwrap().parts.last().unwrap().file;
    std::fs::remove_file(whole_dir.join(last)).unwrap();
    std::fs::remove_file(whole_dir.join(MANIFEST_FILE)).unwrap();
    let (device, _) = select(BackendChoice::Cpu).unwrap();
    let mut resumed = 0;
    let again = teacher_cache::build(
        &options(&data, &runs, &whole_dir, 8, Shard::WHOLE),
        &device,
        &mut |p| resumed = p.resumed,
    )
    .unwrap();
    assert!(resumed > 0, "the parts on disk were built again");
    assert_eq!(again.files, whole.files);
    // resuming with other settings is refused
    let err = teacher_cache::build(
        &options(&data, &runs, &whole_dir, 5, Shard::WHOLE),
        &device,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("top-k 8 vs 5"), "{err}");
    // a part changed after the build is caught by its hash
    let first = whole_dir.join(&whole.files[0].parts[0].file);
    let mut bytes = std::fs::read(&first).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let err = teacher_cache::CachedTeacher::open(&whole_dir)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("SHA-256"), "{err}");
}

#[test]
fn a_cache_that_does_not_match_the_stage_is_refused() {
    let dir = scratch("teacher-cache-refuse");
    let (data, runs) = smoke_teacher(&dir, Some(1));
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let cache = dir.join("cache");
    build(&options(&data, &runs, &cache, 8, Shard::WHOLE));
    let recipe = kd_recipe(&data);
    let refuse = |r: Recipe| -> String {
        let name = r.name.clone();
        let err = run_recipe(&r, &device, &info, &run_opts(&runs), &mut Silent)
            .err()
            .unwrap_or_else(|| panic!("{name}: a mismatched cache was accepted"))
            .to_string();
        assert!(
            !runs.join(&name).exists(),
            "{name}: a refused run left a folder"
        );
        err
    };

    // the stage divides by another temperature
    let mut r = with_cache(recipe.clone(), &cache, "t2");
    if let Objective::Distill(d) = &mut r.stages[2].objective {
        d.divergence.temperature = 2.0;
    }
    let err = refuse(r);
    assert!(err.contains("--temperature 2"), "{err}");

    // another teacher (a second smoke run with another seed)
    let mut other = condenser_tests::smoke_recipe(&data);
    other.name = "smoke-b".into();
    other.seed += 1;
    other.stages.truncate(1);
    run_recipe(&other, &device, &info, &run_opts(&runs), &mut Silent).unwrap();
    let mut r = with_cache(recipe.clone(), &cache, "other-teacher");
    r.teacher.as_mut().unwrap().from = Some("smoke-b".into());
    let err = refuse(r);
    assert!(err.contains("other teacher weights"), "{err}");

    // the data changed: one answer reworded, so that record tokenises otherwise
    let changed = dir.join("changed");
    condenser_tests::copy_dir(&data, &changed);
    let train = changed.join("train.json");
    let text = std::fs::read_to_string(&train).unwrap();
    let mut records: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let turns = records[3]["conversations"].as_array_mut().unwrap();
    let last = turns.last_mut().unwrap();
    last["value"] = serde_json::Value::String("yes yes".into());
    std::fs::write(&train, serde_json::to_string(&records).unwrap()).unwrap();
    let mut r = with_cache(recipe.clone(), &cache, "changed-data");
    r.data = changed.clone();
    let err = refuse(r);
    assert!(
        err.contains("record 3") && err.contains("tokenised this record otherwise"),
        "{err}"
    );

    // one record fewer
    records.remove(0);
    std::fs::write(&train, serde_json::to_string(&records).unwrap()).unwrap();
    let mut r = with_cache(recipe.clone(), &cache, "fewer");
    r.data = changed;
    let err = refuse(r);
    assert!(err.contains("the data file changed"), "{err}");

    // no cache at all in the folder
    let err = refuse(with_cache(recipe, &dir.join("nothing"), "no-cache"));
    assert!(err.contains("no teacher cache here"), "{err}");
}

#[test]
fn a_recipe_builds_its_own_cache_and_trains_without_the_teacher() {
    let dir = scratch("teacher-cache-own");
    let (data, runs) = smoke_teacher(&dir, Some(1));
    let (device, info) = select(BackendChoice::Cpu).unwrap();
    let mut r = kd_recipe(&data);
    r.name = "smoke-kd-own".into();
    r.teacher.as_mut().unwrap().cache = Some(TeacherCacheSpec::Build(CacheBuildSpec { top_k: 16 }));
    let mut terms = StepTerms::default();
    let out = run_recipe(&r, &device, &info, &run_opts(&runs), &mut terms).unwrap();
    assert!(out.finished);
    let m = Manifest::read(&runs.join("smoke-kd-own/teacher-cache").join(MANIFEST_FILE)).unwrap();
    assert_eq!(m.key.top_k, 16);
    assert_eq!(
        m.files.iter().map(|f| f.file.as_str()).collect::<Vec<_>>(),
        ["captions.json", "train.json"]
    );
    let dft: Vec<_> = terms.0.iter().filter(|(s, _)| s == "dft").collect();
    assert!(
        !dft.is_empty()
            && dft
                .iter()
                .all(|(_, t)| t.contains_key("res") && t.contains_key("rel"))
    );
    // the recipe as saved names the cache it built
    let saved = std::fs::read_to_string(runs.join("smoke-kd-own/recipe.toml")).unwrap();
    assert!(saved.contains("top_k = 16"), "{saved}");
}
