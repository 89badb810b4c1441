//! `run`, `sample`, `train` and `encode` find a model named only by its hub id through one resolver: from the cache
//! (a local stand-in of the Hugging Face cache layout, so no network is needed), and with `--offline` and an empty
//! cache they fail with exit code 2 and the list of missing files.

use crate::refine_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HUB_ID: &str = "peftspace-test/tiny-bert";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The Hugging Face cache layout `hf-hub` reads: `models--ORG--NAME/refs/main` names a snapshot folder that holds
/// the files.
fn fill_hub_cache(cache: &Path, files: &[&str]) {
    let repo = cache
        .join("hub")
        .join(format!("models--{}", HUB_ID.replace('/', "--")));
    let snapshot = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snapshot).expect("snapshot folder");
    std::fs::create_dir_all(repo.join("refs")).expect("refs folder");
    std::fs::write(repo.join("refs").join("main"), "0123abcd").expect("ref");
    for file in files {
        std::fs::copy(fixture("tiny-bert").join(file), snapshot.join(file)).expect("copy");
    }
}

/// An experiment over custom tasks whose backbone is given by hub id only.
fn write_experiment(dir: &Path) -> PathBuf {
    let train = refine_support::toy_tsv(16);
    std::fs::write(dir.join("train.tsv"), &train).expect("write train");
    std::fs::write(dir.join("eval.tsv"), &train).expect("write eval");
    let spec = format!(
        r#"ExperimentSpec(
    name: "hub-only",
    backbone: (hub_id: Some("{HUB_ID}")),
    tasks: [(id: "toy", custom: Some((train: "train.tsv", eval: "eval.tsv", text: "text", label: "label",
             labels: ["neg", "pos"])))],
    budget: 0.05,
    groups: 2,
    samples: 1,
    seeds: [1],
    training: (epochs: 1, batch_size: 8, max_seq_len: 16, eval_batch_size: 8),
    stages: [(name: "S1", dimension: Grouping, candidates: ["s0", "uniform"])],
)
"#
    );
    let path = dir.join("experiment.ron");
    std::fs::write(&path, spec).expect("write experiment");
    path
}

fn peftspace(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .env_remove("PEFTSPACE_EXECUTOR")
        .env_remove("PEFTSPACE_DEVICE")
        .env("PEFTSPACE_CACHE", cache)
        .args(args)
        .output()
        .expect("run peftspace")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn offline_without_the_model_lists_what_is_missing_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let experiment = write_experiment(dir.path());
    let exp = experiment.to_str().expect("utf-8 path");
    let cache = dir.path().join("cache");
    let results = dir.path().join("results");
    let res = results.to_str().expect("utf-8 path");

    let run = peftspace(&cache, &["--offline", "run", exp, "--out", res]);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("offline") && err.contains(HUB_ID), "{err}");
    assert!(
        err.contains("config.json")
            && err.contains("tokenizer.json")
            && err.contains("model.safetensors"),
        "{err}"
    );
    assert!(!results.join("trials.jsonl").exists());

    // Sampling needs config.json alone, so that is all it asks for.
    let sample = peftspace(&cache, &["--offline", "sample", exp, "-n", "2"]);
    let err = stderr(&sample);
    assert_eq!(sample.status.code(), Some(2), "{err}");
    assert!(err.contains("missing: config.json)"), "{err}");

    let train = peftspace(
        &cache,
        &["--offline", "train", exp, "--baseline", "lora", "--quiet"],
    );
    assert_eq!(train.status.code(), Some(2), "{}", stderr(&train));

    let encode_out = dir.path().join("hidden.safetensors");
    let encode = peftspace(
        &cache,
        &[
            "--offline",
            "encode",
            "--hub-id",
            HUB_ID,
            "--text",
            "the cat",
            "--out",
            encode_out.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(encode.status.code(), Some(2), "{}", stderr(&encode));
}

#[test]
fn a_partial_cache_names_only_the_missing_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let experiment = write_experiment(dir.path());
    let cache = dir.path().join("cache");
    fill_hub_cache(&cache, &["config.json"]);
    let exp = experiment.to_str().expect("utf-8 path");

    let sample = peftspace(&cache, &["--offline", "sample", exp, "-n", "2"]);
    assert!(sample.status.success(), "{}", stderr(&sample));

    let run = peftspace(
        &cache,
        &["--offline", "train", exp, "--baseline", "lora", "--quiet"],
    );
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(
        err.contains("missing: tokenizer.json, model.safetensors"),
        "{err}"
    );
    assert!(!err.contains("missing: config.json"), "{err}");
}

#[test]
fn run_and_sample_use_the_cached_hub_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let experiment = write_experiment(dir.path());
    let cache = dir.path().join("cache");
    fill_hub_cache(
        &cache,
        &["config.json", "tokenizer.json", "model.safetensors"],
    );
    let exp = experiment.to_str().expect("utf-8 path");

    let sample = peftspace(&cache, &["--offline", "sample", exp, "-n", "2"]);
    assert!(sample.status.success(), "{}", stderr(&sample));
    let table = String::from_utf8_lossy(&sample.stdout);
    assert!(table.contains("backbone bert"), "{table}");

    let results = dir.path().join("results");
    let run = peftspace(
        &cache,
        &[
            "--offline",
            "run",
            exp,
            "--out",
            results.to_str().expect("utf-8 path"),
        ],
    );
    let err = stderr(&run);
    assert!(run.status.success(), "{err}");
    assert!(err.contains("device: cpu"), "{err}");
    let trials = refine_support::read_csv(&results.join("trials.csv"));
    assert_eq!(trials.len(), 2, "{trials:?}");
    assert!(trials.iter().all(|t| t["status"] == "ok"), "{trials:?}");
}

#[test]
fn cuda_in_a_cpu_build_is_one_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let experiment = write_experiment(dir.path());
    let cache = dir.path().join("cache");
    fill_hub_cache(
        &cache,
        &["config.json", "tokenizer.json", "model.safetensors"],
    );
    let exp = experiment.to_str().expect("utf-8 path");
    for device in ["cuda", "cuda:1"] {
        let out = peftspace(
            &cache,
            &[
                "--offline",
                "--device",
                device,
                "train",
                exp,
                "--baseline",
                "lora",
            ],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("built without CUDA"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let out = peftspace(
        &cache,
        &[
            "--offline",
            "--device",
            "tpu",
            "train",
            exp,
            "--baseline",
            "lora",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
