//! A fuzz corpus replayed as tests: every kind of input a user or a download hands to peftspace, mutated at
//! random (1,000 cases per kind, seeded so a failure reproduces), must end in an error value, never a panic or an
//! abort. The kinds: RON experiments, design texts, GLUE and custom TSV/CSV/JSONL files, `config.json`,
//! safetensors headers, `tokenizer.json`, and plugin files. A few cases go through the binary for exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use peftspace_core::backbone::Weights;
use peftspace_core::data::{glue_task, load_custom, load_glue, GLUE_TASKS};
use peftspace_core::design::{Design, StrategyCodes};
use peftspace_core::model::{ModelFolder, Tokenizer};
use peftspace_core::registry::{registries, Registries};
use peftspace_core::spec::CustomTaskSpec;
use peftspace_core::{budget, experiment};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

// The built-in entries must be in the registries, as in the binary.
use peftspace_backbones as _;
use peftspace_plugins as _;

const CASES: u32 = 1000;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Tokens that break parsers: numbers at and beyond integer limits, non-finite floats, delimiters, odd characters.
const DICTIONARY: &[&str] = &[
    "18446744073709551615",
    "18446744073709551616",
    "4294967296",
    "9223372036854775808",
    "99999999999999999999999999",
    "-1",
    "0",
    "-0",
    "1e309",
    "NaN",
    "inf",
    "\"",
    "'",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "=",
    "|",
    "\t",
    "\n",
    "\r\n",
    "\u{feff}",
    "\u{0}",
    "é",
    "\\",
    "..",
    "/",
    "Some(",
    "None",
    "null",
];

/// One edit: where, what kind, which dictionary token, which character.
type Edit = (Index, u8, Index, char);

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        (any::<Index>(), 0u8..5, any::<Index>(), any::<char>()),
        0..12,
    )
}

/// Applies edits to a seed text: delete a character, insert a character, insert a dictionary token, replace a run
/// of digits by a dictionary token, or cut the text short (an interrupted download).
fn mutate(seed: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for (at, kind, token, c) in edits {
        let len = chars.len();
        let i = if len == 0 { 0 } else { at.index(len) };
        let token: Vec<char> = token.get(DICTIONARY).chars().collect();
        match kind {
            0 if len > 0 => {
                chars.remove(i);
            }
            1 => chars.insert(i, *c),
            2 => {
                chars.splice(i..i, token);
            }
            3 => {
                let end = (i..len)
                    .find(|&j| !chars[j].is_ascii_digit())
                    .unwrap_or(len);
                chars.splice(i..end, token);
            }
            _ => chars.truncate(i),
        }
    }
    chars.into_iter().collect()
}

/// A fixed seed, so the corpus is the same on every run (a failure reproduces); `PEFTSPACE_FUZZ_SEED=N` explores
/// another corpus of the same size.
fn runner() -> TestRunner {
    let seed = std::env::var("PEFTSPACE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0017);
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    })
}

/// Runs `test` on `CASES` generated values; a panic inside fails the test with the minimal input that caused it.
fn fuzz<S: Strategy>(strategy: &S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let count = std::cell::Cell::new(0u32);
    runner()
        .run(strategy, |value| {
            count.set(count.get() + 1);
            test(value)
        })
        .expect("no panic");
    assert!(count.get() >= CASES, "only {} cases ran", count.get());
}

fn reg() -> Registries {
    registries().expect("registries")
}

const EXPERIMENT: &str = r#"ExperimentSpec(
    name: "fuzz",
    backbone: (path: Some("model")),
    tasks: [(id: "sst2", max_train: 64), (id: "mine", custom: Some((train: "t.tsv", eval: "e.tsv", text: "text", label: "label", labels: ["a", "b"])))],
    budget: 0.005,
    groups: 4,
    seeds: [1, 2],
    strategies: [(name: "adapter"), (name: "lora"), (name: "prefix"), (name: "bitfit")],
    training: (epochs: 2, batch_size: 16, learning_rate: 5e-4, max_seq_len: 128),
    stages: [
        (name: "S1", dimension: Grouping, candidates: ["spindle", "uniform"]),
        (name: "S3", dimension: TunedGroups, candidates: ["0111", "1111"]),
        (name: "S4", dimension: Strategies(1), candidates: ["adapter+lora", "bitfit"]),
    ],
    final_runs: Some((top: 1, seeds: Some([3, 4, 5]), epochs: Some(5), baselines: ["lora", "full", "g=1,1 a=0.5,0.5 t=11 s=L|AL"])),
)"#;

#[test]
fn ron_experiments() {
    let reg = &reg();
    let info = ModelFolder::open(fixtures().join("tiny-bert"))
        .and_then(|m| m.describe(reg))
        .expect("tiny-bert");
    experiment::parse_str(EXPERIMENT, "fuzz.ron")
        .and_then(|p| p.validate(reg))
        .expect("the seed experiment is valid");
    fuzz(&edits(), |e| {
        let text = mutate(EXPERIMENT, &e);
        if let Ok(parsed) = experiment::parse_str(&text, "fuzz.ron") {
            if let Ok(exp) = parsed.validate(reg) {
                let _ = peftspace_core::refine::ExperimentSpace::for_experiment(
                    &exp,
                    info.clone(),
                    reg,
                );
            }
        }
        Ok(())
    });
}

#[test]
fn design_texts() {
    let reg = &reg();
    let info = ModelFolder::open(fixtures().join("tiny-bert"))
        .and_then(|m| m.describe(reg))
        .expect("tiny-bert");
    let exp = experiment::parse_str(EXPERIMENT, "fuzz.ron")
        .and_then(|p| p.validate(reg))
        .expect("valid");
    let strategies = exp.strategies(reg).expect("strategies");
    let codes = StrategyCodes::from_registries(reg);
    let seeds = [
        "g=1,1 a=0.5,0.5 t=11 s=AL|P",
        "g=2 s=L",
        "g=18446744073709551615,1 s=L|L",
        "g=1,1 a=1e308,1e308 t=11 s=B|ALPB",
    ];
    fuzz(&(any::<Index>(), edits()), |(seed, e)| {
        let text = mutate(seed.get::<&str>(&seeds), &e);
        if let Ok(design) = Design::parse(&text, &codes) {
            let _ = budget::solve(&info, &design, &strategies, 0.005);
            let _ = budget::solve_unchecked(&info, &design, &strategies, 0.5);
        }
        Ok(())
    });
}

fn custom_spec(ext: &str, text: &str, label: &str, labels: &[&str]) -> CustomTaskSpec {
    CustomTaskSpec {
        train: format!("train.{ext}").into(),
        eval: format!("eval.{ext}").into(),
        text: text.into(),
        text_pair: None,
        label: label.into(),
        labels: Some(labels.iter().map(|s| s.to_string()).collect()),
        kind: None,
        header: true,
        metric: None,
    }
}

/// Each custom format gets its own `CASES` mutations (they once shared one budget, about a third each).
fn fuzz_custom(ext: &str, spec: CustomTaskSpec) {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = read(&fixtures().join("custom").join(format!("train.{ext}")));
    fuzz(&(edits(), edits()), |(e1, e2)| {
        std::fs::write(dir.path().join(format!("train.{ext}")), mutate(&seed, &e1)).expect("write");
        std::fs::write(dir.path().join(format!("eval.{ext}")), mutate(&seed, &e2)).expect("write");
        let _ = load_custom("fuzz", &spec, dir.path());
        Ok(())
    });
}

#[test]
fn custom_tsv() {
    fuzz_custom("tsv", custom_spec("tsv", "text", "label", &["neg", "pos"]));
}

#[test]
fn custom_csv() {
    fuzz_custom(
        "csv",
        custom_spec("csv", "review", "stars", &["bad", "good"]),
    );
}

#[test]
fn custom_jsonl() {
    fuzz_custom("jsonl", custom_spec("jsonl", "q", "score", &[]));
}

#[test]
fn glue_tsv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let glue = fixtures().join("glue");
    fuzz(&(any::<Index>(), edits(), edits()), |(task, e1, e2)| {
        let task = glue_task(task.get(GLUE_TASKS).id).expect("task");
        let folder = dir.path().join(task.folder);
        std::fs::create_dir_all(&folder).expect("folder");
        for (file, e) in [(task.train_file, &e1), (task.eval_file, &e2)] {
            let seed =
                std::fs::read_to_string(glue.join(task.folder).join(file)).unwrap_or_default();
            std::fs::write(folder.join(file), mutate(&seed, e)).expect("write");
        }
        let _ = load_glue(task, dir.path());
        Ok(())
    });
}

#[test]
fn config_json() {
    let reg = &reg();
    let dir = tempfile::tempdir().expect("tempdir");
    let models = ["tiny-bert", "tiny-roberta", "t5-tiny-gated", "bart-tiny"];
    let seeds: Vec<String> = models
        .iter()
        .map(|m| read(&fixtures().join(m).join("config.json")))
        .collect();
    fuzz(&(any::<Index>(), edits()), |(model, e)| {
        let text = mutate(model.get::<String>(&seeds), &e);
        std::fs::write(dir.path().join("config.json"), text).expect("write");
        if let Ok(folder) = ModelFolder::open(dir.path()) {
            let _ = folder.describe(reg);
        }
        Ok(())
    });
}

#[test]
fn safetensors_headers() {
    let reg = &reg();
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(
            fixtures().join("tiny-bert").join(file),
            dir.path().join(file),
        )
        .expect("copy");
    }
    let original = std::fs::read(fixtures().join("tiny-bert/model.safetensors")).expect("weights");
    let header_len = u64::from_le_bytes(original[..8].try_into().expect("8 bytes")) as usize;
    let header = String::from_utf8(original[8..8 + header_len].to_vec()).expect("utf-8 header");
    let data = original[8 + header_len..].to_vec();
    let path = dir.path().join("model.safetensors");
    // The length field: the true one, a random one, or the true one of the mutated header.
    let length = prop_oneof![Just(None), any::<u64>().prop_map(Some)];
    fuzz(&(edits(), length, any::<Index>()), |(e, length, cut)| {
        let header = mutate(&header, &e);
        let len = length.unwrap_or(header.len() as u64);
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&data[..cut.index(data.len() + 1)]);
        std::fs::write(&path, &bytes).expect("write");
        if peftspace_backbones::checkpoint::check_safetensors_file(&path).is_ok() {
            let _ = ModelFolder::open(dir.path())
                .and_then(|m| m.load(reg, &Device::Cpu, Weights::Frozen));
        }
        Ok(())
    });
}

#[test]
fn tokenizer_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seeds: Vec<String> = ["tiny-bert", "tiny-roberta", "t5-tiny-gated", "bart-tiny"]
        .iter()
        .map(|m| read(&fixtures().join(m).join("tokenizer.json")))
        .collect();
    let path = dir.path().join("tokenizer.json");
    fuzz(&(any::<Index>(), edits()), |(seed, e)| {
        std::fs::write(&path, mutate(seed.get::<String>(&seeds), &e)).expect("write");
        if let Ok(tokenizer) = Tokenizer::from_file(&path, Some(0)) {
            let _ = tokenizer.batch(
                &[("hello world", None), ("a b", Some("c d"))],
                16,
                &Device::Cpu,
            );
        }
        Ok(())
    });
}

#[test]
fn plugin_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Random bytes, never an ELF/Mach-O/PE header: the dynamic loader is not built to survive crafted libraries,
    // and a plugin is trusted native code anyway (docs/PLUGINS.md); what must not crash is our side of the check.
    fuzz(
        &(prop::collection::vec(any::<u8>(), 0..4096), any::<u32>()),
        |(mut bytes, n)| {
            if bytes.len() >= 2 && (bytes[0] == 0x7f || bytes[0] == b'M' || bytes[0] >= 0xca) {
                bytes[0] = b'#';
            }
            let path = dir.path().join(format!("libfuzz{n}.so"));
            std::fs::write(&path, &bytes).expect("write");
            let result = peftspace_core::plugin_loader::load_plugin(&path);
            prop_assert!(result.is_err(), "random bytes loaded as a plugin");
            let _ = std::fs::remove_file(&path);
            Ok(())
        },
    );
    // A real library without the plugin symbol.
    for candidate in [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib/libSystem.B.dylib",
    ] {
        if Path::new(candidate).is_file() {
            let e = peftspace_core::plugin_loader::load_plugin(Path::new(candidate))
                .expect_err("libm is no plugin")
                .to_string();
            assert!(e.contains("PEFTSPACE_PLUGIN"), "{e}");
            break;
        }
    }
}

fn peftspace(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .args(args)
        .current_dir(dir)
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .env("PEFTSPACE_CACHE", dir.join("cache"))
        .output()
        .expect("runs")
}

#[test]
fn cli_bad_inputs_exit_with_2_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let model = d.join("model");
    std::fs::create_dir_all(&model).expect("model dir");
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("tiny-bert").join(file), model.join(file)).expect("copy");
    }
    let glue_only = EXPERIMENT.replace(
        r#", (id: "mine", custom: Some((train: "t.tsv", eval: "e.tsv", text: "text", label: "label", labels: ["a", "b"])))"#,
        "",
    );
    assert_ne!(glue_only, EXPERIMENT);
    std::fs::write(d.join("exp.ron"), glue_only).expect("write");
    std::fs::write(d.join("bytes.ron"), [0xff, 0xfe, 0x00, 0x28, 0x5b]).expect("write");
    std::fs::write(d.join("dots.ron"), EXPERIMENT.replace("\"fuzz\"", "\"..\"")).expect("write");
    let cases: Vec<Vec<&str>> = vec![
        vec!["validate", "bytes.ron"],
        vec!["validate", "dots.ron"],
        vec![
            "sample",
            "exp.ron",
            "--offline",
            "--design",
            "g=18446744073709551615,1 s=L|L",
        ],
        vec![
            "sample",
            "exp.ron",
            "--offline",
            "--design",
            "g=1,1 a=1e309,1 s=L|L",
        ],
        vec!["report", "no-such-dir"],
    ];
    for args in cases {
        let out = peftspace(d, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // A config.json claiming a 2^32-wide model.
    let config = read(&model.join("config.json"));
    let wide = regex_free_replace(
        &config,
        "\"hidden_size\"",
        "\"hidden_size\": 4294967296, \"_was_hidden\"",
    );
    std::fs::write(model.join("config.json"), wide).expect("write");
    let out = peftspace(d, &["sample", "exp.ron", "--offline", "-n", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("hidden_size"), "{stderr}");
}

/// Replaces the first occurrence (the fixtures' JSON is simple enough for plain text edits).
fn regex_free_replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from}");
    text.replacen(from, to, 1)
}
