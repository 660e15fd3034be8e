//! Samples: evaluated test questions with their image, the expected answer, the teacher's
//! answer (from the teacher run's report) and the student's, wrong answers marked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use eframe::egui::{self, Color32, ColorImage, RichText, TextureHandle, TextureOptions, Ui, vec2};

use crate::gui::OpenRun;

/// Decoded sample images, kept between frames.
#[derive(Default)]
pub struct SampleView {
    textures: HashMap<PathBuf, Result<TextureHandle, String>>,
}

impl SampleView {
    fn texture(&mut self, ui: &Ui, path: &Path) -> &Result<TextureHandle, String> {
        self.textures.entry(path.to_path_buf()).or_insert_with(|| {
            let img = image::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let rgba = img.to_rgba8();
            let size = [rgba.width() as usize, rgba.height() as usize];
            let color = ColorImage::from_rgba_unmultiplied(size, rgba.as_raw());
            Ok(ui
                .ctx()
                .load_texture(path.display().to_string(), color, TextureOptions::NEAREST))
        })
    }
}

fn answer(ui: &mut Ui, text: &str, correct: bool) {
    let color = if correct {
        Color32::from_rgb(110, 200, 110)
    } else {
        Color32::from_rgb(230, 90, 70)
    };
    let text = if correct {
        text.to_string()
    } else {
        format!("{text} (wrong)")
    };
    ui.label(RichText::new(text).color(color));
}

pub fn show(ui: &mut Ui, run: &OpenRun, view: &mut SampleView) {
    ui.heading("Samples");
    super::warnings(ui, run);
    if run.samples.is_empty() {
        ui.label(if run.report.is_none() {
            "No report yet: samples appear when the run has been evaluated."
        } else {
            "The report holds no samples."
        });
        return;
    }
    let has_teacher = run.samples.iter().any(|s| s.teacher.is_some());
    if !has_teacher {
        ui.label("No teacher answers: the recipe has no teacher, or its run has no report.");
    }
    egui::ScrollArea::vertical().show(ui, |ui| {
        egui::Grid::new("samples")
            .striped(true)
            .num_columns(5)
            .spacing(vec2(12.0, 6.0))
            .show(ui, |ui| {
                for head in ["image", "question", "expected", "teacher", "student"] {
                    ui.label(RichText::new(head).strong());
                }
                ui.end_row();
                for s in &run.samples {
                    match &s.image {
                        Some(p) => match view.texture(ui, p) {
                            Ok(t) => {
                                ui.add(egui::Image::new(t).fit_to_exact_size(vec2(72.0, 72.0)));
                            }
                            Err(e) => {
                                ui.label("(unreadable)").on_hover_text(e.clone());
                            }
                        },
                        None => {
                            ui.label("(no image)");
                        }
                    }
                    ui.label(&s.question);
                    ui.label(RichText::new(&s.expected).strong());
                    match &s.teacher {
                        Some(t) => answer(ui, t, *t == s.expected),
                        None => {
                            ui.label("—");
                        }
                    }
                    answer(ui, &s.student, s.student_correct);
                    ui.end_row();
                }
            });
    });
}
