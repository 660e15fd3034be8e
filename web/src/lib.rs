//! Condenser in the browser: the distilled student answers a question about an image, with the
//! engine's own model, tokenizer and generation loop compiled to wasm. [`session`] is the glue
//! every target shares (a bundle's bytes in, a streamed answer out); the `wasm` module binds it to
//! JavaScript and picks the backend: burn's wgpu over WebGPU when the browser offers an adapter,
//! burn's CPU backend otherwise.

pub mod session;
#[cfg(target_family = "wasm")]
mod wasm;

pub use session::{Answer, Session};
