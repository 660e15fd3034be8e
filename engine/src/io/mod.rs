//! Weights in the ecosystem's formats: Hugging Face safetensors folders (config.json plus one
//! or several `*.safetensors` files) of decoders, CLIP/SigLIP towers and LLaVA/TinyLLaVA
//! compositions, read by their HF tensor names, so a checkpoint trained with transformers
//! loads here and gives the same numbers; llama-architecture GGUF files (quantised,
//! dequantised to f32 on import) through the same name mapping; and the browser bundle, the
//! whole model in one safetensors file by module path, f16 or f32; and a DINOv2 backbone from
//! an ONNX graph, its anonymous weights named by walking the graph.

pub mod bundle;
mod detect;
pub mod export;
#[cfg(not(target_family = "wasm"))]
pub mod gguf;
#[cfg(not(target_family = "wasm"))]
pub mod gguf_export;
pub mod hf_llm;
pub mod hf_mllm;
pub mod hf_vision;
#[cfg(not(target_family = "wasm"))]
pub mod import;
pub mod llava_export;
pub mod onnx;
mod onnx_dinov2;
mod params;
mod positions;
pub mod safetensors;

pub use detect::{ModelFormat, detect};
pub use export::export_hf_llm;
#[cfg(not(target_family = "wasm"))]
pub use gguf::{GgufLlm, read_gguf};
#[cfg(not(target_family = "wasm"))]
pub use gguf_export::{GgufType, export_gguf};
pub use hf_llm::{hf_llm_config, llm_from_tensors, load_hf_llm};
pub use hf_mllm::{HfMllm, MllmFormat, hf_mllm_config, load_hf_mllm};
pub use hf_vision::{FeatureSelect, Tower, hf_vision_config, is_onnx, load_hf_vision};
#[cfg(not(target_family = "wasm"))]
pub use import::{ImportOptions, ImportSource, Imported, import_model, write_imported};
pub use llava_export::{export_hf_llava, llava_tower};
pub use safetensors::{HostTensor, TensorFolder};
