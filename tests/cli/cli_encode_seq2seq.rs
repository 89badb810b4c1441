//! `peftspace encode` on the tiny encoder-decoder fixtures: `encoder_hidden` and `decoder_hidden` equal transformers',
//! with the decoder input derived (input shifted right) or given with `--decoder-ids`.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, IndexOp, Tensor};

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

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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

fn comma_list(t: &Tensor) -> String {
    let ids = t.to_dtype(DType::U32).unwrap().to_vec1::<u32>().unwrap();
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Runs `encode` and returns the written (encoder_hidden, decoder_hidden).
fn run(args: &[&str], out: &Path) -> (Tensor, Tensor) {
    let mut all = args.to_vec();
    all.extend(["--out", out.to_str().unwrap()]);
    let o = encode(&all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let written = candle_core::safetensors::load(out, &Device::Cpu).unwrap();
    (
        written["encoder_hidden"].clone(),
        written["decoder_hidden"].clone(),
    )
}

#[test]
fn encode_writes_encoder_and_decoder_hidden_states() {
    let tmp = tempfile::tempdir().unwrap();
    // Row 0 of each reference batch has no padding.
    let cases = [
        ("t5-tiny-relu", "w3 w7 w1 w12 w30 w5 w9 w22 w17 w2 w8"),
        ("bart-tiny", "w3 w7 w1 w12 w30 w5 w9"),
    ];
    for (name, text) in cases {
        let model = fixture(name);
        let model = model.to_str().unwrap();
        let r = candle_core::safetensors::load(
            fixture(name).join("reference.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let ids = comma_list(&r["input_ids"].i(0).unwrap());
        let encoder = r["encoder_hidden"].i(0).unwrap();
        let decoder = r["decoder_hidden"].i(0).unwrap();

        let (enc, dec) = run(
            &["--model", model, "--ids", &ids],
            &tmp.path().join(format!("{name}-ids.st")),
        );
        assert!(
            max_abs_diff(&enc, &encoder) <= 1e-4,
            "{name}: encoder_hidden"
        );
        assert!(
            max_abs_diff(&dec, &decoder) <= 1e-4,
            "{name}: decoder_hidden (derived decoder input)"
        );

        let (enc, dec) = run(
            &["--model", model, "--text", text],
            &tmp.path().join(format!("{name}-text.st")),
        );
        assert!(
            max_abs_diff(&enc, &encoder) <= 1e-4,
            "{name}: --text encoder_hidden"
        );
        assert!(
            max_abs_diff(&dec, &decoder) <= 1e-4,
            "{name}: --text decoder_hidden"
        );

        let decoder_ids = comma_list(&r["explicit_decoder_input_ids"].i(0).unwrap());
        let out = tmp.path().join(format!("{name}-dec.st"));
        let (_, dec) = run(
            &[
                "--model",
                model,
                "--ids",
                &ids,
                "--decoder-ids",
                &decoder_ids,
            ],
            &out,
        );
        let expected = r["explicit_decoder_hidden"].i(0).unwrap();
        assert!(
            max_abs_diff(&dec, &expected) <= 1e-4,
            "{name}: --decoder-ids"
        );
    }
}

#[test]
fn out_of_vocabulary_decoder_ids_are_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("t5-tiny-relu");
    let out = tmp.path().join("bad.st");
    let o = encode(&[
        "--model",
        model.to_str().unwrap(),
        "--ids",
        "5,6,1",
        "--decoder-ids",
        "0,999",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("token id 999 is outside the vocabulary"),
        "{stderr}"
    );
}
