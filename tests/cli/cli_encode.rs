//! `peftspace encode` end to end on the tiny fixtures: the written hidden states equal transformers', and bad inputs
//! give one clear error and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, IndexOp};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn encode(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .arg("encode")
        .args(args)
        .output()
        .expect("run peftspace")
}

fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Row `row` of the reference batch, without its padding: (ids as a comma list, hidden [n, hidden]).
fn reference_row(name: &str, row: usize) -> (String, candle_core::Tensor) {
    let reference =
        candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    let mask = reference["attention_mask"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let n = mask[row].iter().filter(|&&m| m == 1).count();
    let ids = reference["input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let list: Vec<String> = ids[row][..n].iter().map(u32::to_string).collect();
    let hidden = reference["last_hidden_state"].i((row, 0..n, ..)).unwrap();
    (list.join(","), hidden)
}

fn written_hidden(path: &Path) -> candle_core::Tensor {
    let out = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let hidden = out["encoder_hidden"].clone();
    assert_eq!(hidden.dtype(), DType::F32);
    hidden
}

#[test]
fn encode_text_and_ids_match_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["tiny-bert", "tiny-roberta"] {
        let model = fixture(name);
        let model = model.to_str().unwrap();
        let (ids, expected) = reference_row(name, 0);
        let out = tmp.path().join(format!("{name}-ids.safetensors"));
        let o = encode(&[
            "--model",
            model,
            "--ids",
            &ids,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            max_abs_diff(&written_hidden(&out), &expected) <= 1e-4,
            "{name} --ids"
        );

        let out = tmp.path().join(format!("{name}-text.safetensors"));
        let o = encode(&[
            "--model",
            model,
            "--text",
            "the cat sat on the mat",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            max_abs_diff(&written_hidden(&out), &expected) <= 1e-4,
            "{name} --text"
        );
    }
    // A pair (row 1 of the BERT reference has no padding; its token types come from the tokenizer).
    let (_, expected) = reference_row("tiny-bert", 1);
    let out = tmp.path().join("pair.safetensors");
    let model = fixture("tiny-bert");
    let o = encode(&[
        "--model",
        model.to_str().unwrap(),
        "--text",
        "a dog runs",
        "--pair",
        "the dog is fast !",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        max_abs_diff(&written_hidden(&out), &expected) <= 1e-4,
        "pair"
    );
}

#[test]
fn encode_reports_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.safetensors");
    let out = out.to_str().unwrap();
    let model = fixture("tiny-bert");
    let model = model.to_str().unwrap();
    let missing = tmp.path().join("no-such-model");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--model",
                missing.to_str().unwrap(),
                "--ids",
                "1,2",
                "--out",
                out,
            ],
            "no-such-model",
        ),
        (
            vec!["--model", model, "--ids", "2,99999,3", "--out", out],
            "99999",
        ),
        (vec!["--model", model, "--ids", "2,x,3", "--out", out], "x"),
        (vec!["--model", model, "--out", out], "--text"),
    ];
    for (args, needle) in cases {
        let o = encode(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
