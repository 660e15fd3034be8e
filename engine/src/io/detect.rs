//! Which format a model path holds. Commands that accept several (`export`, `generate`,
//! `import`) ask here, so "a file is GGUF, a folder with `model.bpk` is a Condenser checkpoint, a
//! folder with `config.json` is a Hugging Face folder" is written once.

use std::path::Path;

use crate::run::checkpoint;

/// The formats a model path can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A llama-architecture GGUF file.
    Gguf,
    /// An ONNX file (a DINOv2 backbone).
    Onnx,
    /// A Condenser checkpoint folder (`model.bpk` + `config.json`).
    Checkpoint,
    /// A Hugging Face folder (`config.json` + safetensors).
    HfFolder,
}

/// The format of `path`, or `None` when it is none of them (missing, or a folder without
/// `model.bpk` or `config.json`): the caller says what it expected.
pub fn detect(path: &Path) -> Option<ModelFormat> {
    if path.is_file() {
        let onnx = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        return Some(if onnx {
            ModelFormat::Onnx
        } else {
            ModelFormat::Gguf
        });
    }
    if checkpoint::is_checkpoint(path) {
        Some(ModelFormat::Checkpoint)
    } else if path.join("config.json").is_file() {
        Some(ModelFormat::HfFolder)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layout_is_told_apart() {
        let dir = std::env::temp_dir().join(format!("condenser-detect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["ck", "hf", "empty"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("ck").join(checkpoint::MODEL_FILE), b"x").unwrap();
        std::fs::write(dir.join("hf/config.json"), b"{}").unwrap();
        std::fs::write(dir.join("m.gguf"), b"GGUF").unwrap();
        std::fs::write(dir.join("t.ONNX"), b"x").unwrap();
        assert_eq!(detect(&dir.join("ck")), Some(ModelFormat::Checkpoint));
        assert_eq!(detect(&dir.join("hf")), Some(ModelFormat::HfFolder));
        assert_eq!(detect(&dir.join("m.gguf")), Some(ModelFormat::Gguf));
        assert_eq!(detect(&dir.join("t.ONNX")), Some(ModelFormat::Onnx));
        assert_eq!(detect(&dir.join("empty")), None);
        assert_eq!(detect(&dir.join("missing")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
