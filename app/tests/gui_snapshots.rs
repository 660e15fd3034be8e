//! Snapshot tests of the desktop app: each panel drawn alone from the committed fixture runs
//! (app/tests/fixtures/runs, made by scripts/gui-fixture.sh), rendered with wgpu (lavapipe in
//! CI) and compared with the committed PNGs in app/tests/snapshots. A changed label, colour or
//! layout fails the test and leaves `.new.png` / `.diff.png` beside the snapshot; refresh them
//! on purpose with `UPDATE_SNAPSHOTS=1 cargo test -p condenser --test gui_snapshots`.

use std::path::{Path, PathBuf};

use condenser_app::gui::panels::{compare, experts, losses, pipeline, relations, runs, samples};
use condenser_app::gui::{CondenserApp, OpenRun, Tab};
use condenser_engine::run::list_runs;
use condenser_engine::train::RunStatus;
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

/// Relative to the crate (cargo runs integration tests there), so the path drawn in the runs
/// panel is the same on every machine.
fn fixtures() -> PathBuf {
    let dir = PathBuf::from("tests/fixtures/runs");
    assert!(
        dir.is_dir(),
        "run from the app crate's folder (cargo test does): {} missing",
        Path::new(env!("CARGO_MANIFEST_DIR")).join(&dir).display()
    );
    dir
}

fn open(name: &str) -> OpenRun {
    OpenRun::open(&fixtures().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn harness<'a>(size: [f32; 2], ui: impl FnMut(&mut egui::Ui) + 'a) -> Harness<'a> {
    let mut h = Harness::builder()
        .with_size(egui::vec2(size[0], size[1]))
        .wgpu()
        .build_ui(ui);
    h.run();
    h
}

/// Draws `ui` inside a central panel (the panels expect one, as in the app).
fn panel<'a>(size: [f32; 2], mut draw: impl FnMut(&mut egui::Ui) + 'a) -> Harness<'a> {
    harness(size, move |ui| {
        egui::CentralPanel::default().show(ui, |ui| draw(ui));
    })
}

#[test]
fn pipeline_panel_shows_every_stage() {
    let run = open("smoke-kd");
    assert_eq!(run.history.status, RunStatus::Finished);
    assert_eq!(run.history.stages.len(), 3, "dpt, sft, dft");
    let mut h = panel([1100.0, 420.0], |ui| pipeline::show(ui, &run));
    h.get_by_label_contains("finished");
    h.get_by_label_contains("Evaluation on test");
    h.snapshot("pipeline");
}

#[test]
fn pipeline_panel_of_a_stopped_run_shows_progress_and_the_stages_to_come() {
    let run = open("smoke-kd-stopped");
    assert_eq!(run.history.status, RunStatus::Stopped);
    let mut h = panel([1100.0, 420.0], |ui| pipeline::show(ui, &run));
    h.get_by_label_contains("stopped (resumable)");
    // the recipe's third stage has not started; it shows anyway
    h.get_by_label("not started");
    h.snapshot("pipeline_stopped");
}

#[test]
fn losses_panel_plots_every_term() {
    let run = open("smoke-kd");
    let terms = run.history.loss_terms();
    for t in ["loss", "ce", "res", "vis", "rel", "hidden"] {
        assert!(terms.contains(&t), "{t} missing from {terms:?}");
    }
    let mut view = losses::LossView::default();
    let mut h = panel([1100.0, 700.0], |ui| losses::show(ui, &run, &mut view));
    assert!(h.query_all_by_label("rel").count() >= 1);
    h.snapshot("losses");
}

#[test]
fn losses_panel_of_a_preference_run_has_the_reward_margin() {
    let run = open("smoke-mod-pref");
    assert!(run.history.loss_terms().contains(&"margin"));
    let mut view = losses::LossView {
        log_scale: false,
        ..Default::default()
    };
    let mut h = panel([1100.0, 700.0], |ui| losses::show(ui, &run, &mut view));
    h.snapshot("losses_preference");
}

#[test]
fn experts_panel_draws_the_routing_heatmap() {
    let run = open("smoke-mod");
    assert!(!run.history.routing.is_empty(), "MoE fixture has routing");
    let mut view = experts::ExpertView::default();
    let mut h = panel([1100.0, 500.0], |ui| experts::show(ui, &run, &mut view));
    h.get_by_label_contains("global steps");
    h.snapshot("experts");
}

#[test]
fn experts_panel_of_a_dense_run_says_so() {
    let run = open("smoke-kd");
    let mut view = experts::ExpertView::default();
    let h = panel([800.0, 200.0], |ui| experts::show(ui, &run, &mut view));
    h.get_by_label_contains("the student is dense");
}

#[test]
fn relations_panel_shows_teacher_and_student_matrices() {
    let run = open("smoke-kd");
    let rel = &run.history.relations;
    assert!(rel.len() >= 2, "relation snapshots logged");
    assert_eq!(rel[0].teacher.len(), rel[0].n * rel[0].n);
    let mut view = relations::RelationView::default();
    let mut h = panel([1100.0, 600.0], |ui| relations::show(ui, &run, &mut view));
    h.get_by_label("teacher");
    h.get_by_label("student");
    h.snapshot("relations");
}

#[test]
fn samples_panel_shows_images_and_both_answers() {
    let run = open("smoke-kd");
    assert!(!run.samples.is_empty());
    assert!(
        run.samples.iter().all(|s| s.teacher.is_some()),
        "teacher answers joined"
    );
    assert!(
        run.samples.iter().all(|s| s.image.is_some()),
        "images found in the fixture"
    );
    let mut view = samples::SampleView::default();
    let mut h = panel([1100.0, 700.0], |ui| samples::show(ui, &run, &mut view));
    h.snapshot("samples");
}

#[test]
fn compare_panel_shows_deltas() {
    let a = open("smoke-mod");
    let b = open("smoke-mod-pref");
    let mut h = panel([1000.0, 600.0], |ui| compare::show(ui, &a, Some(&b)));
    h.get_by_label("B - A");
    assert!(h.get_all_by_label_contains("POPE").count() >= 2);
    h.snapshot("compare");
}

#[test]
fn runs_panel_lists_the_fixture_runs() {
    let mut listed = list_runs(&fixtures()).unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed.len(), 6);
    let open_run = open("smoke-kd");
    let dir = PathBuf::from("runs");
    let mut view = runs::RunsView::default();
    let mut h = harness([320.0, 420.0], |ui| {
        egui::Panel::left("runs").show(ui, |ui| {
            runs::show(
                ui,
                &runs::RunsPanel {
                    runs_dir: &dir,
                    runs: &listed,
                    listing_error: None,
                    open: Some(&open_run),
                    open_error: None,
                    compare: Some("smoke"),
                    busy: false,
                },
                &mut view,
            );
        });
    });
    h.get_by_label_contains("smoke-mod-pref");
    h.snapshot("runs");
}

/// A copy of a fixture run whose events.jsonl has a garbage line and a line cut short (as a
/// disk that filled up leaves it).
fn damaged_copy() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("condenser-gui-damaged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixtures().join("smoke-kd");
    for f in ["recipe.toml", "report.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(src.join("events.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(3, "not json at all");
    let cut = lines[10];
    lines[10] = &cut[..cut.len() / 2];
    std::fs::write(dir.join("events.jsonl"), lines.join("\n") + "\n").unwrap();
    dir
}

#[test]
fn corrupt_event_lines_are_skipped_with_a_visible_warning() {
    let dir = damaged_copy();
    let run = OpenRun::open(&dir).expect("a damaged run still opens");
    assert_eq!(run.warnings.len(), 2, "{:?}", run.warnings);
    assert!(run.warnings[0].contains("line 4"), "{:?}", run.warnings);
    assert!(run.warnings[1].contains("line 11"), "{:?}", run.warnings);
    assert_eq!(
        run.history.status,
        RunStatus::Finished,
        "later lines still read"
    );
    assert!(!run.history.series["loss"].points.is_empty());
    let h = panel([1100.0, 420.0], |ui| pipeline::show(ui, &run));
    h.get_by_label_contains("line 4");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_run_folder_is_an_error_message_not_a_crash() {
    let mut app = CondenserApp::new(fixtures(), None);
    app.open_run(&fixtures().join("no-such-run"));
    assert!(app.open.is_none());
    let mut h = Harness::builder()
        .with_size(egui::vec2(1000.0, 400.0))
        .build_ui(|ui| app.ui(ui));
    h.run();
    h.get_by_label_contains("no such run folder");
    // and a runs folder that does not exist lists nothing, with a message
    let mut app = CondenserApp::new(PathBuf::from("/nonexistent/runs"), None);
    let mut h = Harness::builder()
        .with_size(egui::vec2(1000.0, 400.0))
        .build_ui(|ui| app.ui(ui));
    h.run();
    h.get_by_label_contains("cannot list runs");
}

#[test]
fn whole_window_on_the_experts_tab() {
    let mut app = CondenserApp::new(fixtures(), None);
    app.runs.sort_by(|a, b| a.name.cmp(&b.name));
    app.open_run(&fixtures().join("smoke-mod-pref"));
    app.tab = Tab::Experts;
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .wgpu()
        .build_ui(|ui| {
            app.runs.sort_by(|a, b| a.name.cmp(&b.name));
            app.ui(ui)
        });
    h.run();
    h.snapshot("window_experts");
}
