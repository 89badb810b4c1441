//! ROUGE and BLEU against the packages papers report them with: `rouge_score` (no stemming) and `sacrebleu`
//! (defaults), on the committed pairs of `tests/fixtures/gen_text_metrics.py`, to 1e-6.

use std::path::Path;

use peftspace_core::registry::registries;
use peftspace_plugins::text_metrics::{
    corpus_bleu, rouge_l, rouge_lsum, rouge_n, tokenize_13a, RougeScore,
};
use serde_json::Value;

fn reference() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text_metrics/reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("reference.json")).expect("json")
}

fn close(what: &str, ours: f64, theirs: f64) {
    assert!(
        (ours - theirs).abs() <= 1e-6,
        "{what}: ours {ours}, reference {theirs}"
    );
}

fn texts(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("text").to_string())
        .collect()
}

#[test]
fn rouge_and_13a_tokens_equal_the_reference_packages_on_every_pair() {
    let r = reference();
    for pair in r["pairs"].as_array().expect("pairs") {
        let (p, t) = (
            pair["prediction"].as_str().unwrap(),
            pair["reference"].as_str().unwrap(),
        );
        let ours: [(&str, RougeScore); 4] = [
            ("rouge1", rouge_n(t, p, 1)),
            ("rouge2", rouge_n(t, p, 2)),
            ("rougeL", rouge_l(t, p)),
            ("rougeLsum", rouge_lsum(t, p)),
        ];
        for (name, score) in ours {
            let theirs = &pair["rouge"][name];
            let what = format!("{name} of {p:?}");
            close(
                &format!("{what} precision"),
                score.precision,
                theirs[0].as_f64().unwrap(),
            );
            close(
                &format!("{what} recall"),
                score.recall,
                theirs[1].as_f64().unwrap(),
            );
            close(
                &format!("{what} F"),
                score.fmeasure,
                theirs[2].as_f64().unwrap(),
            );
        }
        assert_eq!(
            tokenize_13a(p.trim_end()),
            pair["tokens_13a"].as_str().unwrap(),
            "13a tokens of {p:?}"
        );
    }
}

#[test]
fn corpus_bleu_equals_sacrebleu_with_its_parts_and_edge_cases() {
    let r = reference();
    let pairs = r["pairs"].as_array().expect("pairs");
    let hyps: Vec<String> = pairs
        .iter()
        .map(|p| p["prediction"].as_str().unwrap().to_string())
        .collect();
    let refs: Vec<String> = pairs
        .iter()
        .map(|p| p["reference"].as_str().unwrap().to_string())
        .collect();
    let b = corpus_bleu(&hyps, &refs).expect("bleu");
    let theirs = &r["corpus_bleu"];
    close(
        "bleu",
        b.score / 100.0,
        theirs["score"].as_f64().unwrap() / 100.0,
    );
    close(
        "brevity penalty",
        b.brevity_penalty,
        theirs["bp"].as_f64().unwrap(),
    );
    for n in 0..4 {
        close(
            &format!("precision {}", n + 1),
            b.precisions[n] / 100.0,
            theirs["precisions"][n].as_f64().unwrap() / 100.0,
        );
    }
    assert_eq!(
        b.hypothesis_length as u64,
        theirs["sys_len"].as_u64().unwrap()
    );
    assert_eq!(
        b.reference_length as u64,
        theirs["ref_len"].as_u64().unwrap()
    );
    for corpus in r["small_corpora"].as_array().expect("corpora") {
        let b = corpus_bleu(
            &texts(&corpus["predictions"]),
            &texts(&corpus["references"]),
        )
        .expect("bleu");
        close(
            "small corpus bleu",
            b.score / 100.0,
            corpus["score"].as_f64().unwrap() / 100.0,
        );
    }
}

#[test]
fn the_text_evaluators_are_registered_and_refuse_labels() {
    let reg = registries().expect("registries");
    for name in ["rouge", "bleu", "exact_match"] {
        let e = reg.evaluator(name).expect("registered");
        assert!(e.scores_texts());
        let err = e.score(&[1.0], &[1.0]).unwrap_err().to_string();
        assert!(err.contains("generated texts"), "{err}");
    }
    let rouge = reg.evaluator("rouge").unwrap();
    let m = rouge
        .score_texts(
            &["the cat sat".to_string()],
            &["the cat sat down".to_string()],
        )
        .expect("scores");
    close("primary is ROUGE-2", m.primary, m.values["rouge2"]);
    assert!(reg.evaluator("accuracy").is_ok_and(|e| !e.scores_texts()));
}

#[test]
fn exact_match_is_the_share_of_outputs_equal_to_their_reference() {
    let exact = registries()
        .expect("registries")
        .evaluator("exact_match")
        .expect("registered");
    let texts = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let m = exact
        .score_texts(
            &texts(&["w1 w2", " w3  w4 ", "w5", "w6 w7"]),
            &texts(&["w1 w2", "w3 w4", "w5 w5", "w7 w6"]),
        )
        .expect("scores");
    close("exact match", m.primary, 0.5);
    assert!(exact.score_texts(&texts(&["a"]), &texts(&[])).is_err());
}
