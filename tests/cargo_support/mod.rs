//! Running cargo from inside a test (to build the example plugin).

use std::process::Command;

/// Removes the `CARGO_*` variables cargo sets to describe the running test, so that a nested cargo builds as it
/// would from a shell: some dependencies' build scripts track them (ring: `CARGO_MANIFEST_DIR`), and passing them on
/// would rebuild half the workspace.
pub fn as_from_a_shell(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let described = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_TARGET_TMPDIR",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
                // Set for the tests of a package with a build script. ring's build script declares
                // `rerun-if-env-changed=OUT_DIR`, so a nested cargo that inherits it rebuilds ring and everything
                // above it (the whole workspace), and the next outer build rebuilds them back.
                "OUT_DIR",
            ]
            .contains(&key.as_str());
        if described {
            command.env_remove(&key);
        }
    }
}
