//! The recipes that ship with the binary (the same files as `assets/recipes/`), so the main job
//! works from any working directory.

use std::path::Path;

use condenser_engine::config::{Recipe, parse_recipe};

pub const VISION: (&str, &str) = (
    "assets/recipes/shapes-vision.toml",
    include_str!("../../../assets/recipes/shapes-vision.toml"),
);
pub const TEACHER: (&str, &str) = (
    "assets/recipes/shapes-teacher.toml",
    include_str!("../../../assets/recipes/shapes-teacher.toml"),
);
pub const STUDENT: (&str, &str) = (
    "assets/recipes/shapes-student.toml",
    include_str!("../../../assets/recipes/shapes-student.toml"),
);

pub const KD: (&str, &str) = (
    "assets/recipes/shapes-kd.toml",
    include_str!("../../../assets/recipes/shapes-kd.toml"),
);

pub fn load((path, text): (&str, &str)) -> anyhow::Result<Recipe> {
    Ok(parse_recipe(text, Path::new(path))?)
}
