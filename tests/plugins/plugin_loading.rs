//! Dynamic plugins end to end: build the IA3 example (and two broken variants), load them through the CLI and
//! in-process, and train the loaded strategy one step.

use crate::cargo_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use peftspace_core::hooks::{DesignHooks, LayerHooks};
use peftspace_core::params::ParamStore;
use peftspace_core::plugin_loader::load_plugin;
use peftspace_core::registry::registries;
use peftspace_core::shapes::{LayerShape, SiteKind};

/// The built plugin libraries.
struct Libraries {
    ia3: PathBuf,
    abi_mismatch: PathBuf,
    wrong_version: PathBuf,
    no_header: PathBuf,
}

/// Builds the example plugin and its broken variants once per test run (a no-op when the workspace build already
/// made them) and returns their paths, taken from cargo's own artifact messages.
fn libraries() -> &'static Libraries {
    static LIBS: OnceLock<Libraries> = OnceLock::new();
    LIBS.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let mut cargo = Command::new(env!("CARGO"));
        cargo_support::as_from_a_shell(&mut cargo);
        // Same profile and the same package selection as `cargo test --workspace` (which builds every example too),
        // so the build is a no-op: `-p peftspace-ia3` alone resolved other features and rebuilt half the workspace.
        let out = cargo
            .args([
                "build",
                "--profile",
                "test",
                "--workspace",
                "--lib",
                "--examples",
                "--message-format=json",
                "--manifest-path",
            ])
            .arg(&manifest)
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building the plugin failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut found = std::collections::BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            let name = msg["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .replace('-', "_");
            for file in msg["filenames"].as_array().into_iter().flatten() {
                let file = file.as_str().unwrap_or_default();
                if [".so", ".dylib", ".dll"]
                    .iter()
                    .any(|ext| file.ends_with(ext))
                {
                    found.insert(name.clone(), PathBuf::from(file));
                }
            }
        }
        let take = |name: &str| {
            found
                .get(name)
                .cloned()
                .unwrap_or_else(|| panic!("no library for {name}: {found:?}"))
        };
        Libraries {
            ia3: take("peftspace_ia3"),
            abi_mismatch: take("ia3_abi_mismatch"),
            wrong_version: take("ia3_wrong_version"),
            no_header: take("ia3_no_header"),
        }
    })
}

fn peftspace(plugin: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .arg("--plugin")
        .arg(plugin)
        .arg("list")
        .output()
        .expect("run peftspace")
}

fn bert_base_layer(index: usize) -> LayerShape {
    LayerShape::bert_encoder_layer(index, 768, 12, 3072)
}

/// A BERT-like layer small enough for the gradient check: width 8, FFN 20.
fn small_layer(index: usize) -> LayerShape {
    LayerShape::bert_encoder_layer(index, 8, 2, 20)
}

fn data(shape: &[usize], salt: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.61 + salt).cos()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn the_example_plugin_loads_registers_ia3_and_trains() {
    let libs = libraries();
    let loaded = load_plugin(&libs.ia3).unwrap().expect("first load");
    assert_eq!(loaded.strategies, ["ia3"]);
    assert!(
        load_plugin(&libs.ia3).unwrap().is_none(),
        "loading the same library again is a no-op"
    );

    let r = registries().unwrap();
    assert_eq!(r.strategies["ia3"].source, libs.ia3.display().to_string());
    assert_eq!(r.strategy_entry("ia3").unwrap().code, "I");
    let ia3 = r.strategy("ia3", &ron::Value::Unit).unwrap();
    assert!(ia3.fixed_size());
    // BERT-base layer: keys 768 + values 768 + FFN 3072.
    assert_eq!(ia3.params(&bert_base_layer(0), 0), 4_608);
    let bad: ron::Value = ron::from_str("(scale: 2.0)").unwrap();
    assert!(
        r.strategy("ia3", &bad).is_err(),
        "unknown options are refused"
    );

    // Many host tensors first, so a tensor numbered by the plugin's own candle would collide with one of ours.
    let _host_tensors: Vec<Tensor> = (0..500).map(|i| data(&[2], i as f32)).collect();
    let mut store = ParamStore::new(&Device::Cpu, 3);
    let mut hooks = DesignHooks::new(2);
    for i in 0..2 {
        let layer = small_layer(i);
        hooks
            .push(i, ia3.build(&layer, 0, &mut store).unwrap())
            .unwrap();
    }
    assert_eq!(store.num_scalars(), 2 * ia3.params(&small_layer(0), 0));
    let names: Vec<&str> = store.named_vars().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..3],
        [
            "layer.0.ia3.k.scale",
            "layer.0.ia3.v.scale",
            "layer.0.ia3.ffn_in.scale"
        ]
    );

    // Scales start at one: the model is unchanged. Then one synthetic step: loss = Σ w·out, so
    // d loss / d scale = Σ_{batch, seq} w·y exactly; every scale must get exactly that gradient.
    let mut loss = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut expected = Vec::new();
    for i in 0..2 {
        for site in small_layer(i).linear {
            let x = data(&[3, 4, site.d_in], 0.3);
            let y = data(&[3, 4, site.d_out], 1.7 + i as f32);
            let out = hooks.linear(i, site.kind, &x, y.clone()).unwrap();
            let diff = (&out - &y)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(diff, 0.0, "IA3 starts at the identity");
            let w = data(&[3, 4, site.d_out], 0.9 + site.d_out as f32);
            loss = (loss + (out * &w).unwrap().sum_all().unwrap()).unwrap();
            if matches!(site.kind, SiteKind::Key | SiteKind::Value | SiteKind::FfnIn) {
                expected.push((y * w).unwrap().sum((0, 1)).unwrap());
            }
        }
    }
    let grads = loss.backward().unwrap();
    assert_eq!(expected.len(), store.named_vars().len());
    for ((name, var), want) in store.named_vars().iter().zip(&expected) {
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let err = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let mass = got
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(mass > 0.0 && err < 1e-4, "{name}: gradient off by {err}");
    }
}

#[test]
fn broken_plugins_are_refused_in_process_with_clear_errors() {
    let libs = libraries();
    let e = load_plugin(&libs.abi_mismatch).unwrap_err().to_string();
    assert!(
        e.contains("ABI mismatch")
            && e.contains("expected: peftspace-core")
            && e.contains("found:    peftspace-core 0.0.0"),
        "{e}"
    );
    assert!(
        e.contains("ia3_abi_mismatch"),
        "the error names the file: {e}"
    );
    let e = load_plugin(&libs.wrong_version).unwrap_err().to_string();
    assert!(
        e.contains("plugin header version mismatch") && e.contains("ia3_wrong_version"),
        "{e}"
    );
    let e = load_plugin(&libs.no_header).unwrap_err().to_string();
    assert!(
        e.contains("not a peftspace plugin: no PEFTSPACE_PLUGIN symbol"),
        "{e}"
    );
    assert!(registries()
        .unwrap()
        .strategies
        .values()
        .all(|s| !s.source.contains("ia3_")));
}

#[test]
fn the_cli_loads_the_plugin_and_refuses_broken_ones() {
    let libs = libraries();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("libnot_a_plugin.so");
    std::fs::write(&text, "plain text, not a library").unwrap();
    let cases = [
        (libs.abi_mismatch.clone(), "ABI mismatch"),
        (libs.wrong_version.clone(), "plugin header version mismatch"),
        (libs.no_header.clone(), "no PEFTSPACE_PLUGIN symbol"),
        // The loader's own reason follows libloading's "dlopen failed".
        (
            text.clone(),
            "not a loadable shared library: dlopen failed: ",
        ),
        (
            dir.path().join("missing.so"),
            "cannot read the plugin library",
        ),
    ];
    for (path, message) in cases {
        let out = peftspace(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} was accepted", path.display());
        assert!(
            stderr.contains(message) && stderr.contains(&*path.display().to_string()),
            "{stderr}"
        );
    }

    let out = peftspace(&libs.ia3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("plugin"),
        "loading the example failed: {stderr}"
    );
    assert!(
        out.status.success(),
        "`peftspace --plugin … list` failed: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ia3"),
        "`peftspace list` does not show the loaded strategy:\n{stdout}"
    );
}

/// An experiment naming the IA3 plugin, with the trust file at `trust_file`.
fn with_trust_file(trust_file: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env("PEFTSPACE_TRUSTED_PLUGINS", trust_file)
        .args(args)
        .output()
        .expect("run peftspace")
}

#[test]
fn a_plugin_named_only_in_an_experiment_loads_only_once_trusted() {
    let libs = libraries();
    let dir = tempfile::tempdir().unwrap();
    // A copy, so that "rebuilding" it below does not touch the library other tests load.
    let lib = dir.path().join("libia3_copy.so");
    std::fs::copy(&libs.ia3, &lib).unwrap();
    let exp = dir.path().join("exp.ron");
    std::fs::write(
        &exp,
        format!(
            r#"ExperimentSpec(
    name: "trust",
    backbone: (path: Some("{}")),
    plugins: ["{}"],
    tasks: [(id: "sst2")],
    strategies: [(name: "ia3"), (name: "lora")],
    stages: [(name: "S4", dimension: Strategies(0), candidates: ["ia3", "lora", "ia3+lora"])],
)
"#,
            // A real config folder: validate refuses a backbone folder that does not exist.
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/configs/all-MiniLM-L6-v2")
                .display(),
            lib.display()
        ),
    )
    .unwrap();
    let trust_file = dir.path().join("config").join("trusted-plugins");
    let exp_arg = exp.to_str().unwrap();

    // Untrusted: refused before loading, exit 2, with the way out.
    let out = with_trust_file(&trust_file, &["validate", exp_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not trusted")
            && stderr.contains("libia3_copy.so")
            && stderr.contains("peftspace trust")
            && stderr.contains("exp.ron:"),
        "{stderr}"
    );

    // Checked without its plugins: ok, and `ia3` is reported as a name only the plugin could provide.
    let out = with_trust_file(&trust_file, &["validate", "--no-plugins", exp_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("unresolved strategy `ia3` at strategies[0].name")
            && stdout.contains("not loaded"),
        "{stdout}"
    );

    // Given on the command line: loads.
    let out = with_trust_file(
        &trust_file,
        &["--plugin", lib.to_str().unwrap(), "validate", exp_arg],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Trusted through the trust file: loads.
    let out = with_trust_file(&trust_file, &["trust", lib.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = with_trust_file(&trust_file, &["validate", exp_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Rebuilt (other bytes at the same path): untrusted again, with both hashes.
    let mut bytes = std::fs::read(&lib).unwrap();
    bytes.extend_from_slice(b"appended");
    std::fs::write(&lib, bytes).unwrap();
    let out = with_trust_file(&trust_file, &["validate", exp_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("changed since it was trusted"), "{stderr}");
    let out = with_trust_file(&trust_file, &["trust", "--list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("changed since trusted"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
