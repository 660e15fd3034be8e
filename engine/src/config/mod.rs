//! Typed configuration: model shapes and TOML recipes. Unknown keys are rejected everywhere
//! (`deny_unknown_fields`), and errors name the file, the key and the position.

mod ablation;
mod model;
mod moe;
mod recipe;

pub use ablation::{AblationRow, AblationSet, ROW_REF, load_ablation, run_name, slug};
pub use model::{LlmConfig, MllmConfig, ProjectorConfig, VisionAct, VisionConfig};
pub use moe::{MoeConfig, MoeSpec, Placement};
pub use recipe::{
    DataKind, DataOrder, DistillSpec, FreezePolicy, FreezeSpec, InitSpec, KdTokens, Objective,
    PreferenceReference, PreferenceSpec, Recipe, RelationFeatures, StageFreeze, StageKind,
    StageSpec, TeacherSpec, load_recipe, parse_recipe,
};
