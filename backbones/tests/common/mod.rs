//! Helpers shared by the backbone tests: fixture paths, reference files, comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use peftspace_core::backbone::Batch;

/// `tests/fixtures/<name>` at the workspace root.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// The tensors of a safetensors file on the CPU.
pub fn load_tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reference batch written by `gen_fixtures.py` (ids, mask and token types as u32).
pub fn reference_batch(reference: &HashMap<String, Tensor>) -> Batch {
    let u32_of = |name: &str| {
        reference
            .get(name)
            .map(|t| t.to_dtype(DType::U32).expect("u32 conversion"))
    };
    Batch {
        input_ids: u32_of("input_ids").expect("reference has input_ids"),
        attention_mask: u32_of("attention_mask").expect("reference has attention_mask"),
        token_type_ids: u32_of("token_type_ids"),
        decoder_input_ids: None,
    }
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("difference")
}

/// Copies a fixture folder into a fresh temporary folder that tests may break.
pub fn scratch_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(fixture(name)).expect("fixture folder") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    dir
}

/// Where the real models and data live: `PEFTSPACE_SHARED`, else `<workspace>/../shared`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("PEFTSPACE_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("..")
            .join("shared"),
    }
}
