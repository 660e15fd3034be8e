//! Typed configuration: model shapes and TOML recipes. Unknown keys are rejected everywhere
//! (`deny_unknown_fields`), and errors name the file, the key and the position. This is the
//! ground floor of the engine: it imports nothing of the engine but its error type, and every
//! other folder reads its types.

mod ablation;
mod kernels;
mod model;
mod moe;
mod objective;
mod preprocess;
mod recipe;

pub use ablation::{AblationRow, AblationSet, ROW_REF, load_ablation, run_name, slug};
pub use kernels::KernelPolicy;
pub use model::{LlmConfig, MllmConfig, ProjectorConfig, VisionAct, VisionConfig};
pub use moe::{MoeConfig, MoeSpec, Placement};
pub use objective::{
    DistillSpec, Divergence, DivergenceSpec, KdTokens, Objective, PreferenceLoss,
    PreferenceReference, PreferenceSpec, RelationFeatures,
};
pub use preprocess::{Preprocess, Resample, Resize};
pub use recipe::{
    CacheBuildSpec, DataKind, DataOrder, FreezePolicy, FreezeSpec, InitSpec, Recipe, StageFreeze,
    StageKind, StageSpec, TeacherCacheSpec, TeacherSpec, load_recipe, parse_recipe,
    parse_recipe_with,
};
