//! Hugging Face model folders: `config.json` and the weights (`model.safetensors`, or shards listed in
//! `model.safetensors.index.json`), shared by every architecture.
//!
//! Weights are memory-mapped and converted to f32 tensor by tensor as a model asks for them through a
//! [`VarBuilder`]. Every failure names the file and, for a tensor, its name and both shapes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;

use peftspace_core::backbone::Weights;
use peftspace_core::model::{weight_files, CONFIG_FILE};
use peftspace_core::{Error, Result};

/// An error about `config.json` raised where its full path is not known yet; `peftspace_core::model::with_config_path` completes it.
pub fn config_error(message: impl Into<String>) -> Error {
    Error::Model {
        path: PathBuf::from(CONFIG_FILE),
        message: message.into(),
    }
}

/// Largest width accepted from a `config.json` (hidden size, FFN size, heads, head size, positions, buckets): far
/// above real models, and small enough that every parameter count computed from the config fits in 64 bits.
pub const MAX_CONFIG_WIDTH: usize = 1 << 20;
/// Largest number of layers per stack accepted from a `config.json`.
pub const MAX_CONFIG_LAYERS: usize = 1 << 12;
/// Largest vocabulary accepted from a `config.json`.
pub const MAX_CONFIG_VOCAB: usize = 1 << 24;

/// Refuses config values beyond those limits, naming the field: an absurd `hidden_size` (say 2^32) would overflow
/// the parameter arithmetic (a panic in debug builds) or ask for an impossible allocation.
pub fn check_config_limits(fields: &[(&str, usize, usize)]) -> std::result::Result<(), String> {
    for &(name, value, max) in fields {
        if value > max {
            return Err(format!(
                "`{name}` = {value} is beyond what peftspace supports (at most {max})"
            ));
        }
    }
    Ok(())
}

/// Deserialises `config.json` text into an architecture's config struct; syntax and type errors carry line:col.
pub fn parse_config<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Spec {
        file: CONFIG_FILE.to_string(),
        line: e.line(),
        col: e.column(),
        message: format!("{e} (line {}, column {})", e.line(), e.column()),
    })
}

/// The memory-mapped weights of a model folder.
pub struct Checkpoint {
    files: Vec<PathBuf>,
    tensors: Arc<Tensors>,
}

struct Tensors {
    mmap: MmapedSafetensors,
    /// Tensor name → index into `files` (for messages).
    origin: BTreeMap<String, usize>,
    files: Vec<PathBuf>,
}

impl Checkpoint {
    /// Opens `model.safetensors`, or every shard named by `model.safetensors.index.json`, checking that no file is
    /// truncated.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let files = weight_files(dir)?;
        let mut origin = BTreeMap::new();
        for (index, file) in files.iter().enumerate() {
            for name in check_safetensors_file(file)? {
                origin.insert(name, index);
            }
        }
        // SAFETY: the files are mapped read-only; like every safetensors reader we rely on them not being rewritten
        // while the model is loading. Their headers and sizes were checked just above.
        let mmap = unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| Error::Model {
            path: dir.to_path_buf(),
            message: format!("cannot read the weights: {e}"),
        })?;
        Ok(Checkpoint {
            tensors: Arc::new(Tensors {
                mmap,
                origin,
                files: files.clone(),
            }),
            files,
        })
    }

    /// The weight files, in the order they were opened.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.origin.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.origin.contains_key(name)
    }

    /// Whether some tensor name starts with `prefix.` (e.g. `bert.` in task checkpoints).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let dotted = format!("{prefix}.");
        self.names().any(|n| n.starts_with(&dotted))
    }

    /// The shape of a tensor as stored.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.mmap.get(name).ok().map(|v| v.shape().to_vec())
    }

    /// Scalars in the floating-point tensors whose names `keep` accepts (integer buffers such as `position_ids`
    /// are not parameters and are skipped).
    pub fn float_scalars(&self, keep: impl Fn(&str) -> bool) -> usize {
        self.tensors
            .mmap
            .tensors()
            .iter()
            .filter(|(name, view)| keep(name) && is_float(view.dtype()))
            .map(|(_, view)| view.shape().iter().product::<usize>())
            .sum()
    }

    /// A builder for `weights` that hands out the tensors as f32 on `device`, checking each shape. When trainable, it
    /// turns every tensor it hands out into a `Var` (the same `Var` each time a name is asked for again, so tied
    /// weights stay tied) and records it in the returned [`TrainableWeights`]. The model code is the same either way.
    pub fn var_builder_for(
        &self,
        device: &Device,
        weights: Weights,
    ) -> (VarBuilder<'static>, TrainableWeights) {
        let recorded = TrainableWeights::default();
        let frozen = F32Backend {
            tensors: Arc::clone(&self.tensors),
        };
        let backend: Box<dyn SimpleBackend> = match weights {
            Weights::Frozen => Box::new(frozen),
            Weights::Trainable => Box::new(TrainableBackend {
                frozen,
                vars: recorded.clone(),
            }),
        };
        (
            VarBuilder::from_backend(backend, DType::F32, device.clone()),
            recorded,
        )
    }
}

/// The variables a trainable builder handed out, by tensor name (empty for frozen weights).
#[derive(Clone, Default)]
pub struct TrainableWeights {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
}

impl TrainableWeights {
    /// The variables in name order.
    pub fn vars(&self) -> Vec<Var> {
        self.vars
            .lock()
            .map(|v| v.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Hands out checkpoint tensors as `Var`s and records them.
struct TrainableBackend {
    frozen: F32Backend,
    vars: TrainableWeights,
}

impl TrainableBackend {
    fn var(
        &self,
        name: &str,
        load: impl FnOnce() -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        let mut vars = self
            .vars
            .vars
            .lock()
            .map_err(|_| candle_core::Error::Msg("trainable weight table poisoned".into()))?;
        if let Some(var) = vars.get(name) {
            return Ok(var.as_tensor().clone());
        }
        let var = Var::from_tensor(&load()?)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }
}

impl SimpleBackend for TrainableBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        hints: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.var(name, || {
            self.frozen.get(shape.clone(), name, hints, dtype, dev)
        })?;
        if tensor.dims() != shape.dims() || tensor.dtype() != dtype {
            return Err(candle_core::Error::Msg(format!(
                "tensor `{name}` asked for again as {:?} {dtype:?}, first as {:?} {:?}",
                shape.dims(),
                tensor.dims(),
                tensor.dtype()
            )));
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.var(name, || self.frozen.get_unchecked(name, dtype, dev))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.frozen.contains_tensor(name)
    }
}

fn is_float(dtype: safetensors::Dtype) -> bool {
    use safetensors::Dtype::*;
    matches!(dtype, F16 | BF16 | F32 | F64)
}

/// Largest safetensors header accepted (the safetensors crate's own limit): the length field is read from the file,
/// and a header is read into memory whole, so an absurd length must not become an absurd allocation.
pub const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Reads a safetensors header and checks that the file holds every byte it announces; returns the tensor names.
///
/// The safetensors reader would also reject a short file, but with a message that does not say "truncated"; an
/// interrupted download is the usual cause, so we say so.
pub fn check_safetensors_file(path: &Path) -> Result<Vec<String>> {
    let bad = |message: String| Error::Model {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(|_| {
        bad(format!(
            "truncated safetensors file ({file_len} bytes, not even a header); download it again"
        ))
    })?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_SAFETENSORS_HEADER {
        return Err(bad(format!(
            "not a safetensors file: the header announces {header_len} bytes (at most {MAX_SAFETENSORS_HEADER})"
        )));
    }
    if header_len > file_len.saturating_sub(8) {
        return Err(bad(format!(
            "truncated or not a safetensors file: the header announces {header_len} bytes but the file has {file_len}; \
             download it again"
        )));
    }
    let header_len_usize = usize::try_from(header_len)
        .map_err(|_| bad(format!("the header announces {header_len} bytes")))?;
    let mut header = vec![0u8; header_len_usize];
    file.read_exact(&mut header)
        .map_err(|e| Error::io(path, e))?;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("not a safetensors file (header: {e})")))?;
    let mut data_end = 0u64;
    let mut names = Vec::new();
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let end = entry
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad(format!("tensor `{name}` has no data_offsets in the header")))?;
        data_end = data_end.max(end);
        names.push(name);
    }
    // Offsets come from the file: add without overflowing (an absurd offset is a short file, not a panic).
    let needed = (8 + header_len).saturating_add(data_end);
    if file_len < needed {
        return Err(bad(format!(
            "truncated safetensors file: the header announces {needed} bytes but the file has {file_len}; download it \
             again"
        )));
    }
    Ok(names)
}

/// Hands out checkpoint tensors converted to the requested dtype, with errors that name tensor, file and shapes.
struct F32Backend {
    tensors: Arc<Tensors>,
}

impl F32Backend {
    fn file_of(&self, name: &str) -> String {
        match self.tensors.origin.get(name) {
            Some(&i) => self.tensors.files[i].display().to_string(),
            None => self.all_files(),
        }
    }

    fn all_files(&self) -> String {
        let names: Vec<String> = self
            .tensors
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        names.join(", ")
    }
}

impl SimpleBackend for F32Backend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(view) = self.tensors.mmap.get(name) {
            if view.shape() != shape.dims() {
                return Err(candle_core::Error::Msg(format!(
                    "{}: tensor `{name}` has shape {:?} but the config implies {:?}; the config.json does not belong to \
                     these weights",
                    self.file_of(name),
                    view.shape(),
                    shape.dims()
                )));
            }
        }
        self.get_unchecked(name, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if !self.tensors.origin.contains_key(name) {
            return Err(candle_core::Error::Msg(format!(
                "{}: tensor `{name}` is missing; the weights do not match config.json's architecture",
                self.all_files()
            )));
        }
        let tensor = self.tensors.mmap.load(name, dev).map_err(|e| {
            candle_core::Error::Msg(format!("{}: tensor `{name}`: {e}", self.file_of(name)))
        })?;
        tensor.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.origin.contains_key(name)
    }
}
