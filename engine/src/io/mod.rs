//! Weights in the ecosystem's formats: Hugging Face safetensors folders (config.json plus one
//! or several `*.safetensors` files) read by their HF tensor names, so a checkpoint trained with
//! transformers loads here and gives the same numbers.

pub mod hf_llm;
pub mod safetensors;

pub use hf_llm::{hf_llm_config, load_hf_llm};
pub use safetensors::{HostTensor, TensorFolder};
