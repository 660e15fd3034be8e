//! Condenser engine: builds multimodal LLMs (ViT -> projector -> decoder), feeds them
//! LLaVA-format data, trains them stage by stage from TOML recipes, evaluates them and writes
//! reports. The faces (CLI, desktop app, browser) only call into this crate.
//!
//! Everything is generic over burn's run-time [`burn::prelude::Device`]: the same model code runs on
//! wgpu (any Vulkan/Metal/DX12 adapter, lavapipe on GPU-less machines) and on burn's CPU
//! backend `flex`.

pub mod backend;
pub mod bench;
pub mod cache;
pub mod config;
pub mod data;
pub mod distill;
pub mod error;
pub mod eval;
pub mod io;
pub mod model;
pub mod rng;
pub mod run;
pub mod train;

/// The burn version the engine is built on, for the faces.
pub use burn;
pub use error::{Error, Result};
