//! JavaScript bindings: `Student.load(...)` picks the backend and loads a bundle, `ask` streams an
//! answer into a callback, `shapesImage` draws a Shapes scene. Errors reach JavaScript as
//! `Error`s carrying the engine's message (file and what was expected), never as a panic.

use std::cell::Cell;
use std::rc::Rc;

use condenser_engine::burn::prelude::Device;
use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};

use crate::session::{Session, shapes_png};

#[wasm_bindgen(start)]
fn start() {
    // a panic would otherwise show as "unreachable executed" with no message
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&JsValue::from_str(&format!("condenser: {info}")));
    }));
}

/// A loaded student.
#[wasm_bindgen]
pub struct Student {
    session: Rc<Session>,
    backend: String,
    note: String,
}

/// How long the page may go without a chance to paint while the CPU backend generates.
const PAINT_EVERY_MS: f64 = 30.0;

/// A macrotask boundary (`setTimeout(0)`): lets the browser paint the streamed text.
async fn next_task() {
    let promise = Promise::new(&mut |resolve, _| {
        let set_timeout = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("setTimeout"))
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok());
        match set_timeout {
            Some(f) => {
                let _ = f.call2(&JsValue::NULL, &resolve, &JsValue::from(0));
            }
            None => {
                let _ = resolve.call0(&JsValue::NULL);
            }
        }
    });
    let _ = JsFuture::from(promise).await;
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

#[wasm_bindgen]
impl Student {
    /// Loads a bundle (`bundle.json` may be null) on `backend`: `"auto"` (WebGPU when the
    /// browser gives an adapter, else the CPU), `"webgpu"` (fail without one) or `"cpu"`.
    pub async fn load(
        manifest: Option<Vec<u8>>,
        config: Vec<u8>,
        weights: Vec<u8>,
        tokenizer: Vec<u8>,
        backend: String,
    ) -> Result<Student, JsValue> {
        let (device, backend, note) = match backend.as_str() {
            "cpu" => (
                Device::flex(),
                "cpu".to_string(),
                "CPU backend asked for".to_string(),
            ),
            "auto" | "webgpu" => {
                let forced = backend == "webgpu";
                let gpu = if Session::routes_on_host(&config) {
                    Err(
                        "this student has Mixture-of-Experts layers, whose routing reads the \
                         router back synchronously: only the CPU backend can do that in a browser"
                            .to_string(),
                    )
                } else {
                    Device::wgpu_options()
                        .init_async()
                        .await
                        .map_err(|e| format!("WebGPU unavailable: {e}"))
                };
                match gpu {
                    Ok(d) => (d, "webgpu".to_string(), "WebGPU adapter found".to_string()),
                    Err(why) if forced => return Err(js_error(why)),
                    Err(why) => (Device::flex(), "cpu".to_string(), why),
                }
            }
            other => {
                return Err(js_error(format!(
                    "unknown backend {other:?}: expected auto, webgpu or cpu"
                )));
            }
        };
        let session =
            Session::from_bundle(manifest.as_deref(), &config, &weights, &tokenizer, device)
                .map_err(js_error)?;
        Ok(Student {
            session: Rc::new(session),
            backend,
            note,
        })
    }

    /// `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    /// Why this backend runs (e.g. the reason WebGPU was not used).
    #[wasm_bindgen(getter)]
    pub fn note(&self) -> String {
        self.note.clone()
    }

    #[wasm_bindgen(getter, js_name = imageSize)]
    pub fn image_size(&self) -> u32 {
        self.session.model.config.vision.image_size as u32
    }

    #[wasm_bindgen(getter)]
    pub fn params(&self) -> u32 {
        use condenser_engine::burn::module::Module;
        self.session.model.num_params() as u32
    }

    /// The weights' precision from `bundle.json` (`"f16"`, `"f32"`, `"f16 vision, f32
    /// projector+llm"`, or `"unknown"` without one).
    #[wasm_bindgen(getter)]
    pub fn dtype(&self) -> String {
        self.session
            .manifest
            .as_ref()
            .map_or("unknown".into(), |m| m.precision.label())
    }

    /// Answers `question` about `image` (PNG, JPEG or WebP bytes) greedily; `onText(text, tokens)` is
    /// called with the whole answer so far after every token. Resolves to the final answer.
    pub fn ask(
        &self,
        image: Vec<u8>,
        question: String,
        max_tokens: usize,
        on_text: Function,
    ) -> Promise {
        let session = self.session.clone();
        future_to_promise(async move {
            let last_paint = Cell::new(js_sys::Date::now());
            let answer = session
                .ask(&image, &question, max_tokens, |text, n| {
                    let _ = on_text.call2(
                        &JsValue::NULL,
                        &JsValue::from_str(text),
                        &JsValue::from(n as u32),
                    );
                    let due = js_sys::Date::now() - last_paint.get() >= PAINT_EVERY_MS;
                    let last_paint = &last_paint;
                    async move {
                        if due {
                            next_task().await;
                            last_paint.set(js_sys::Date::now());
                        }
                    }
                })
                .await
                .map_err(js_error)?;
            Ok(JsValue::from_str(&answer.text))
        })
    }
}

/// A Shapes scene drawn from a seed.
#[wasm_bindgen]
pub struct ShapesImage {
    png: Vec<u8>,
    caption: String,
}

#[wasm_bindgen]
impl ShapesImage {
    #[wasm_bindgen(getter)]
    pub fn png(&self) -> Vec<u8> {
        self.png.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn caption(&self) -> String {
        self.caption.clone()
    }
}

/// Draws the Shapes scene of `seed` at `size` pixels with the world's own generator.
#[wasm_bindgen(js_name = shapesImage)]
pub fn shapes_image(seed: u32, size: u32) -> ShapesImage {
    let (png, caption) = shapes_png(seed as u64, size);
    ShapesImage { png, caption }
}
