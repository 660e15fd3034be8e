//! Reading the tensors of a safetensors folder: `model.safetensors`, or the shards listed by
//! `model.safetensors.index.json`. Values are converted to f32 on the host (F32, F16, BF16, F64);
//! other dtypes are refused with the tensor's name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

/// One tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl HostTensor {
    /// A `[rows, cols]` matrix as `[cols, rows]` (PyTorch's `Linear` layout and burn's differ
    /// by this; so do an ONNX `MatMul` weight and PyTorch's).
    pub fn transposed(&self) -> HostTensor {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut values = vec![0.0; self.values.len()];
        for i in 0..r {
            for j in 0..c {
                values[j * r + i] = self.values[i * c + j];
            }
        }
        HostTensor {
            shape: vec![c, r],
            values,
        }
    }
}

/// Every tensor of a folder, by name, with the file it came from.
#[derive(Debug, Default)]
pub struct TensorFolder {
    pub dir: PathBuf,
    pub tensors: BTreeMap<String, (HostTensor, PathBuf)>,
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.into(),
        message: message.into(),
    }
}

impl TensorFolder {
    /// Reads `dir/model.safetensors`, or every shard named by `dir/model.safetensors.index.json`.
    pub fn read(dir: &Path) -> Result<TensorFolder> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let files: Vec<PathBuf> = if index.exists() {
            let text = crate::error::read_to_string(&index)?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::json(&index, e))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| bad(&index, "no `weight_map` object"))?;
            let mut shards: Vec<PathBuf> = map
                .values()
                .filter_map(|f| f.as_str())
                .map(|f| dir.join(f))
                .collect();
            shards.sort();
            shards.dedup();
            shards
        } else if single.exists() {
            vec![single]
        } else {
            return Err(bad(
                dir,
                "no model.safetensors or model.safetensors.index.json in this folder",
            ));
        };
        let mut out = TensorFolder {
            dir: dir.into(),
            tensors: BTreeMap::new(),
        };
        for f in files {
            let bytes = std::fs::read(&f).map_err(|e| Error::io(&f, e))?;
            let st = SafeTensors::deserialize(&bytes)
                .map_err(|e| bad(&f, format!("not a safetensors file: {e}")))?;
            for (name, view) in st.tensors() {
                let values = to_f32(view.dtype(), view.data()).ok_or_else(|| {
                    bad(&f, format!("{name}: unsupported dtype {:?}", view.dtype()))
                })?;
                let shape = view.shape().to_vec();
                out.tensors
                    .insert(name, (HostTensor { shape, values }, f.clone()));
            }
        }
        Ok(out)
    }

    /// Removes and returns a tensor.
    pub fn take(&mut self, name: &str) -> Option<HostTensor> {
        self.tensors.remove(name).map(|t| t.0)
    }
}

/// Serialises `(name, dtype, shape, little-endian bytes)` tensors as one safetensors file with
/// `format` in its metadata.
pub(crate) fn serialize(
    tensors: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    format: &str,
) -> std::result::Result<Vec<u8>, String> {
    let views = tensors
        .iter()
        .map(|(k, (dtype, shape, b))| {
            TensorView::new(*dtype, shape.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("{k}: {e}"))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        format.to_string(),
    )]));
    safetensors::serialize(views, metadata).map_err(|e| e.to_string())
}

/// Host f32 values of a tensor's little-endian bytes (F32, F16, BF16, F64; else `None`).
pub(crate) fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let words = |n: usize| data.chunks_exact(n);
    Some(match dtype {
        Dtype::F32 => words(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => words(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::F16 => words(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => words(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        _ => return None,
    })
}

/// IEEE half to single precision (subnormals, infinities and NaN included).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: renormalise
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        let bf = to_f32(Dtype::BF16, &[0x80, 0x3f]).unwrap();
        assert_eq!(bf, vec![1.0]);
    }
}
