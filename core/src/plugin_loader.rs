//! Loads dynamic plugins (`cdylib`s exporting a [`PluginHeader`]) into the global registries.
//!
//! Checks, in order, each failing with an error that names the library: the file exists and is a loadable library;
//! it exports `PEFTSPACE_PLUGIN`; the header's magic bytes and layout version; the ABI string equals the host's
//! (crate, rustc, target, candle, features — shown expected vs found); then `register` runs (panics are caught on the
//! plugin's side) and its entries join the registries, tagged with the plugin's path, all or none. A loaded library
//! is never unloaded: its code backs the registered entries for the life of the process.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::plugin_abi::{self, PluginHeader, Registrar, HEADER_VERSION, MAGIC};
use crate::registry::with_registries_mut;
use crate::{Error, Result};

/// What one plugin added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub strategies: Vec<String>,
    pub evaluators: Vec<String>,
    pub groupings: Vec<String>,
    pub allocations: Vec<String>,
    pub architectures: Vec<String>,
}

/// An error with its causes: libloading's `dlopen failed` keeps the loader's own reason (a missing symbol, a wrong
/// ELF class, …) in its source, which is what the user needs to read.
fn with_reason(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let reason = c.to_string();
        if !text.contains(&reason) {
            text = format!("{text}: {reason}");
        }
        cause = c.source();
    }
    text
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Plugin {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Libraries already loaded (by canonical path): loading the same one twice is a no-op.
fn loaded() -> &'static Mutex<BTreeSet<PathBuf>> {
    static LOADED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    &LOADED
}

/// Loads one plugin library and adds its entries to the global registries.
/// Returns `None` when this library was already loaded in this process.
pub fn load_plugin(path: &Path) -> Result<Option<LoadedPlugin>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| err(path, format!("cannot read the plugin library: {e}")))?;
    if !meta.is_file() {
        return Err(err(
            path,
            "not a file; give the path of the plugin's shared library (.so, .dylib or .dll)",
        ));
    }
    let canonical = path.canonicalize().map_err(|e| Error::io(path, e))?;
    let mut seen = loaded().lock().unwrap_or_else(|e| e.into_inner());
    if seen.contains(&canonical) {
        return Ok(None);
    }

    // SAFETY: loading runs the library's initialisers. That is the point of a plugin; the user named this file.
    let library = unsafe { libloading::Library::new(&canonical) }.map_err(|e| {
        err(
            path,
            format!("not a loadable shared library: {}", with_reason(&e)),
        )
    })?;
    let header: &PluginHeader = {
        // SAFETY: the symbol's address is read as a pointer to the header; its contents are checked field by field
        // (magic, then layout version) before anything else in it is trusted.
        let symbol = unsafe { library.get::<*const PluginHeader>(plugin_abi::SYMBOL.as_bytes()) }.map_err(|_| {
            err(
                path,
                format!(
                    "not a peftspace plugin: no {} symbol (a plugin declares one with `peftspace_core::declare_plugin!`)",
                    plugin_abi::SYMBOL
                ),
            )
        })?;
        let ptr: *const PluginHeader = *symbol;
        // SAFETY: non-null symbol address of a static that lives as long as the library, which is never unloaded.
        unsafe { ptr.as_ref() }.ok_or_else(|| err(path, "PEFTSPACE_PLUGIN symbol is null"))?
    };
    if header.magic != MAGIC {
        return Err(err(path, "not a peftspace plugin: PEFTSPACE_PLUGIN does not start with the peftspace magic bytes"));
    }
    if header.header_version != HEADER_VERSION {
        return Err(err(
            path,
            format!(
                "plugin header version mismatch: expected {HEADER_VERSION}, found {}; rebuild the plugin against this peftspace",
                header.header_version
            ),
        ));
    }
    if header.abi.is_null() {
        return Err(err(path, "plugin header has no ABI string"));
    }
    // SAFETY: checked non-null; the header version promises a NUL-terminated string.
    let found = unsafe { CStr::from_ptr(header.abi) }
        .to_string_lossy()
        .into_owned();
    let expected = plugin_abi::abi();
    if found != expected {
        return Err(err(
            path,
            format!(
                "ABI mismatch: the plugin must be built with the same peftspace, rustc, target, candle and features as \
                 this program.\n  expected: {expected}\n  found:    {found}\nRebuild the plugin in this workspace (cargo build -p <plugin>)."
            ),
        ));
    }

    let mut registrar = Registrar::new();
    let register = header.register;
    // SAFETY: the ABI check passed, so the plugin's Registrar layout is ours; `declare_plugin!` catches panics on
    // its side. Ours catches what an unexpected unwind might still bring.
    let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        register(&mut registrar)
    }))
    .map_err(|_| err(path, "register panicked"))?;
    if status != 0 || registrar.error.is_some() {
        let why = registrar
            .error
            .take()
            .unwrap_or_else(|| format!("register returned status {status}"));
        return Err(err(path, format!("registration failed: {why}")));
    }

    let source = path.display().to_string();
    let report = with_registries_mut(|r| {
        let mut report = LoadedPlugin {
            path: path.to_path_buf(),
            ..Default::default()
        };
        for e in &registrar.strategies {
            r.add_strategy(*e, &source)?;
            report.strategies.push(e.name.to_string());
        }
        for e in &registrar.evaluators {
            r.add_evaluator(*e, &source)?;
            report.evaluators.push(e.name.to_string());
        }
        for e in &registrar.groupings {
            r.add_grouping(*e, &source)?;
            report.groupings.push(e.name.to_string());
        }
        for e in &registrar.allocations {
            r.add_allocation(*e, &source)?;
            report.allocations.push(e.name.to_string());
        }
        for e in &registrar.architectures {
            r.add_architecture(*e, &source)?;
            report.architectures.push(e.name.to_string());
        }
        Ok(report)
    })
    .map_err(|e| err(path, e.to_string()))?;

    // Registered entries point into the library's code and data: keep it loaded for the life of the process.
    std::mem::forget(library);
    seen.insert(canonical);
    Ok(Some(report))
}

/// The libraries loaded into this process so far (canonical paths, sorted): what the result store records the
/// hashes of.
pub fn loaded_libraries() -> Vec<PathBuf> {
    let seen = loaded().lock().unwrap_or_else(|e| e.into_inner());
    seen.iter().cloned().collect()
}

/// Loads several plugins in order, stopping at the first failure.
pub fn load_plugins<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<LoadedPlugin>> {
    let mut out = Vec::new();
    for p in paths {
        if let Some(l) = load_plugin(p.as_ref())? {
            out.push(l);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_non_library_files_are_refused_with_their_path() {
        let e = load_plugin(Path::new("/nonexistent/libnothing.so"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/libnothing.so") && e.contains("cannot read"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.so");
        std::fs::write(&text, "not a library").unwrap();
        let e = load_plugin(&text).unwrap_err().to_string();
        assert!(
            e.contains("notes.so") && e.contains("not a loadable shared library"),
            "{e}"
        );
        let e = load_plugin(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a file"), "{e}");
    }
}
