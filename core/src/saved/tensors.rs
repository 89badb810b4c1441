//! Reading and writing the tensor files of saved designs and adapters.
//!
//! A file is checked before anything is built from it: the header length and every tensor's byte range must lie
//! inside the file (a truncated download is named by its first tensor that is cut off), so a bad file never asks
//! for more memory than its own size.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::params::Tensors;
use crate::{Error, Result};

/// A problem with a tensor file, placed at the file.
pub fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Model {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Every tensor of a safetensors file, converted to f32 on `device`.
pub fn read_tensors(path: &Path, device: &Device) -> Result<Tensors> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    check_layout(path, &bytes)?;
    let parsed = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        file_error(
            path,
            format!("not a valid safetensors file ({e}); write it again"),
        )
    })?;
    let mut out = Tensors::new();
    for (name, view) in parsed.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            other => {
                return Err(file_error(
                    path,
                    format!("tensor `{name}` has dtype {other:?}; only float tensors are read"),
                ))
            }
        };
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| file_error(path, format!("tensor `{name}`: {e}")))?;
        out.insert(name, tensor);
    }
    Ok(out)
}

/// The header length and every tensor's byte range fit in the file; names the first tensor that does not.
fn check_layout(path: &Path, bytes: &[u8]) -> Result<()> {
    let size = bytes.len();
    let Some(head) = bytes.get(..8) else {
        return Err(file_error(
            path,
            format!("{size} bytes is too short for a safetensors file (truncated?)"),
        ));
    };
    let mut len = [0u8; 8];
    len.copy_from_slice(head);
    let header_len = u64::from_le_bytes(len);
    if header_len > (size as u64).saturating_sub(8) {
        return Err(file_error(
            path,
            format!(
                "the header claims {header_len} bytes but the file has {size}; the file is truncated or not safetensors"
            ),
        ));
    }
    let header_end = 8 + header_len as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..header_end]).map_err(|e| {
            file_error(
                path,
                format!("the safetensors header is not valid JSON: {e}"),
            )
        })?;
    let data = (size - header_end) as u64;
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let end = info
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(serde_json::Value::as_u64);
        match end {
            Some(end) if end <= data => {}
            Some(end) => {
                return Err(file_error(
                    path,
                    format!(
                        "tensor `{name}` ends at data byte {end} but the file holds {data}; the file is truncated"
                    ),
                ))
            }
            None => {
                return Err(file_error(
                    path,
                    format!("tensor `{name}` has no valid data_offsets in the header"),
                ))
            }
        }
    }
    Ok(())
}

/// Writes `tensors` (as f32) to a safetensors file.
pub fn write_tensors(path: &Path, tensors: &Tensors) -> Result<()> {
    let map: HashMap<&str, Tensor> = tensors
        .iter()
        .map(|(n, t)| Ok((n.as_str(), t.to_dtype(DType::F32)?.contiguous()?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&map, path)
        .map_err(|e| file_error(path, format!("cannot write: {e}")))
}
