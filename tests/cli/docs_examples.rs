//! The documentation's examples work as written: every experiment in `docs/EXPERIMENTS.md` parses and validates
//! (the worked custom task against its documented files, the generation tasks against fixtures in their layouts,
//! the strategy options against the real option structs), and the build-and-load commands of `docs/PLUGINS.md`
//! build a binary and a plugin that load together.

// Links the built-in strategies, evaluators and backbones into this test binary.
use peftspace_backbones as _;
use peftspace_plugins as _;

use crate::cargo_support;

use std::path::Path;
use std::process::Command;

use peftspace_core::experiment;
use peftspace_core::registry::registries;

fn doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced blocks of a Markdown text with the given language tag, in order.
fn blocks(text: &str, language: &str) -> Vec<String> {
    let fence = format!("```{language}");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_end() == fence => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => out.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    out
}

#[test]
fn every_experiment_in_experiments_md_validates_with_its_data() {
    let text = doc("EXPERIMENTS.md");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("reviews");
    std::fs::create_dir_all(&data).expect("mkdir");
    let tsv = blocks(&text, "tsv");
    let jsonl = blocks(&text, "jsonl");
    assert_eq!(
        (tsv.len(), jsonl.len()),
        (1, 1),
        "the worked task's two files"
    );
    for split in ["train", "eval"] {
        std::fs::write(data.join(format!("{split}.tsv")), &tsv[0]).expect("write");
        std::fs::write(data.join(format!("{split}.jsonl")), &jsonl[0]).expect("write");
    }
    // The generation examples' exported datasets: the fixtures in XSum's and WMT's layouts.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generation");
    for (folder, fixture) in [("xsum", "xsum.jsonl"), ("wmt16", "wmt.jsonl")] {
        std::fs::create_dir_all(dir.path().join(folder)).expect("mkdir");
        for split in ["train", "validation"] {
            std::fs::copy(
                fixtures.join(fixture),
                dir.path().join(folder).join(format!("{split}.jsonl")),
            )
            .expect("copy fixture");
        }
    }
    let experiments: Vec<String> = blocks(&text, "ron")
        .into_iter()
        .filter(|b| b.trim_start().starts_with("ExperimentSpec("))
        .collect();
    assert!(experiments.len() >= 3, "{experiments:?}");
    let registries = registries().expect("registries");
    for (i, source) in experiments.iter().enumerate() {
        let file = dir.path().join(format!("example{i}.ron"));
        std::fs::write(&file, source).expect("write");
        let checked = experiment::parse(&file)
            .and_then(|p| p.validate(&registries))
            .unwrap_or_else(|e| panic!("example {i}: {e}\n{source}"));
        checked
            .strategies(&registries)
            .unwrap_or_else(|e| panic!("example {i} options: {e}\n{source}"));
        checked
            .check_data()
            .unwrap_or_else(|e| panic!("example {i} data: {e}\n{source}"));
    }
}

#[test]
fn the_lora_options_once_documented_in_spec_rs_are_refused_and_the_real_ones_accepted() {
    let registries = registries().expect("registries");
    let wrong: ron::Value = ron::from_str(r#"(rank_sites: ["q", "v"], alpha: 16.0)"#).expect("ron");
    let e = registries.strategy("lora", &wrong).err().expect("refused");
    assert!(e.to_string().contains("rank_sites"), "{e}");
    let right: ron::Value = ron::from_str(r#"(targets: ["q", "v"], alpha: 16.0)"#).expect("ron");
    assert!(registries.strategy("lora", &right).is_ok());
}

#[test]
fn the_plugin_commands_of_plugins_md_build_and_load_the_plugin() {
    let text = doc("PLUGINS.md");
    let commands = blocks(&text, "sh")
        .into_iter()
        .find(|b| b.contains("peftspace-ia3"))
        .expect("the build commands");
    let lines: Vec<&str> = commands.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{commands}");
    // The README builds the release binary; the plugin must be built and found in the same profile.
    assert_eq!(
        lines[0],
        "cargo build --release -p peftspace -p peftspace-ia3"
    );
    assert!(
        lines[1].starts_with("target/release/peftspace --plugin target/release/libpeftspace_ia3.")
            && lines[1].ends_with(" list"),
        "{}",
        lines[1]
    );
    // The same commands in the profile this test suite is built with (a release build here would double the
    // suite's build time): `--release` → `--profile test`, whose outputs are under `target/debug`.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = Path::new(env!("CARGO_BIN_EXE_peftspace"));
    let profile_dir = bin.parent().expect("target/debug");
    let mut build = Command::new(env!("CARGO"));
    cargo_support::as_from_a_shell(&mut build);
    let args: Vec<&str> = lines[0].split_whitespace().skip(1).collect();
    let args: Vec<&str> = args
        .iter()
        .flat_map(|a| {
            if *a == "--release" {
                vec!["--profile", "test"]
            } else {
                vec![*a]
            }
        })
        .collect();
    let built = build.args(&args).current_dir(root).output().expect("cargo");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let load: Vec<String> = lines[1]
        .split_whitespace()
        .map(|w| w.replace("target/release/", &format!("{}/", profile_dir.display())))
        .collect();
    let library = Path::new(&load[2]);
    let library = if cfg!(target_os = "macos") {
        library.with_extension("dylib")
    } else if cfg!(windows) {
        profile_dir.join("peftspace_ia3.dll")
    } else {
        library.to_path_buf()
    };
    let out = Command::new(&load[0])
        .arg(&load[1])
        .arg(&library)
        .args(&load[3..])
        .output()
        .expect("run peftspace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ia3"), "{stdout}");
}

/// `docs/RESULTS.md` quotes a results folder kept in the repository; `report` must still re-render every table and
/// plot in it byte for byte, or the report's numbers no longer come from the code that describes them.
#[test]
fn the_results_folder_of_results_md_re_renders_byte_for_byte() {
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results/reproduction_minilm");
    let work = tempfile::tempdir().expect("tempdir");
    let copy = work.path().join("reproduction_minilm");
    std::fs::create_dir(&copy).expect("create the copy");
    let mut names: Vec<String> = std::fs::read_dir(&kept)
        .unwrap_or_else(|e| panic!("{}: {e}", kept.display()))
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    for name in &names {
        std::fs::copy(kept.join(name), copy.join(name)).expect("copy");
    }
    // The rendered files are removed, so that `report` has to write each of them again.
    for rendered in ["stages.csv", "final.csv", "edf_S1.svg", "edf_S4a.svg"] {
        assert!(
            names.iter().any(|n| n == rendered),
            "{rendered} is missing from {}",
            kept.display()
        );
        std::fs::remove_file(copy.join(rendered)).expect("remove");
    }
    let report = Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .arg("--offline")
        .arg("report")
        .arg(&copy)
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .output()
        .expect("run report");
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    for name in &names {
        let before = std::fs::read(kept.join(name)).expect("read kept");
        let after =
            std::fs::read(copy.join(name)).unwrap_or_else(|e| panic!("{name} after report: {e}"));
        assert!(before == after, "{name} differs after `peftspace report`");
    }
}
