//! Records `git describe` of the checkout the binary is built from, so the code version in a results directory's
//! manifest names the commit (and `-dirty` when the tree had changes). Outside a checkout (a crate download) the
//! crate version alone is used.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let described = git(&["describe", "--always", "--dirty", "--tags"]);
    // Describe again when HEAD moves (a commit, a checkout). Not on index changes: `git describe --dirty` itself
    // refreshes the index, so watching it would rebuild this crate at every other cargo invocation.
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        println!("cargo:rerun-if-changed={common}/refs/heads");
    }
    println!(
        "cargo:rustc-env=PEFTSPACE_GIT_DESCRIBE={}",
        described.unwrap_or_default()
    );
}
