use std::path::{Path, PathBuf};

use super::*;
use crate::evaluator::{Evaluator, EvaluatorEntry, Metrics};
use crate::experiment::parse_str;
use crate::test_doubles::{minilm, registries};

/// A stand-in evaluator: `rouge` and `bleu` score texts, `accuracy` labels.
struct Stand(&'static str);

impl Evaluator for Stand {
    fn name(&self) -> &str {
        self.0
    }
    fn score(&self, _: &[f64], _: &[f64]) -> Result<Metrics> {
        Ok(Metrics {
            values: Default::default(),
            primary: 0.0,
        })
    }
    fn scores_texts(&self) -> bool {
        self.0 != "accuracy"
    }
}

/// The test registries with the evaluators the checks look up.
fn with_evaluators() -> Registries {
    let mut reg = registries();
    let entries = [
        EvaluatorEntry {
            name: "rouge",
            summary: "",
            create: || Box::new(Stand("rouge")),
        },
        EvaluatorEntry {
            name: "bleu",
            summary: "",
            create: || Box::new(Stand("bleu")),
        },
        EvaluatorEntry {
            name: "accuracy",
            summary: "",
            create: || Box::new(Stand("accuracy")),
        },
    ];
    for entry in entries {
        reg.add_evaluator(entry, "test")
            .expect("distinct evaluators");
    }
    reg
}

/// The workspace's generation fixtures; experiments placed there find them by relative path.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/generation")
}

/// An experiment with one generation task whose fields after `train` and `eval` are `extra`.
fn experiment(extra: &str) -> String {
    format!(
        r#"ExperimentSpec(
    name: "t",
    backbone: (path: "m"),
    tasks: [(id: "reverse", generation: (
        train: "train.jsonl", eval: "dev.jsonl",{extra}
    ))],
)"#
    )
}

fn check(text: &str) -> Result<Experiment> {
    parse_str(text, fixtures().join("x.ron"))?.validate(&with_evaluators())
}

fn error(text: &str) -> String {
    match check(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// `error` without the fixture folder in front (`x.ron:4:5: …`).
fn placed(text: &str) -> String {
    let e = error(text);
    let folder = format!("{}/", fixtures().display());
    e.strip_prefix(&folder).map(str::to_string).unwrap_or(e)
}

#[test]
fn a_generation_task_passes_and_its_files_are_read() -> Result<()> {
    let e = check(&experiment(" source_prefix: \"w0 \", metric: \"bleu\","))?;
    e.check_data()?;
    let g = e.spec.tasks[0].generation.as_ref().expect("generation");
    assert_eq!((g.metric_name(), g.max_target_tokens), ("bleu", 64));
    Ok(())
}

#[test]
fn a_task_with_both_custom_and_generation_is_refused_at_generation() {
    let text = experiment("").replace(
        "tasks: [(id: \"reverse\", ",
        "tasks: [(id: \"reverse\", custom: (train: \"a.tsv\", eval: \"a.tsv\", text: \"t\", label: \"l\", \
         labels: [\"a\", \"b\"]), ",
    );
    let e = placed(&text);
    assert!(
        e.starts_with("x.ron:4:") && e.contains("tasks[0].generation: a task is a GLUE task"),
        "{e}"
    );
}

#[test]
fn a_label_metric_on_a_generation_task_is_refused_at_the_metric() {
    let e = placed(&experiment(" metric: \"accuracy\","));
    assert!(
        e.starts_with("x.ron:5:50: tasks[0].generation.metric: evaluator `accuracy` scores labels"),
        "{e}"
    );
    assert!(
        e.contains("`rouge`") && e.contains("known: bleu, rouge"),
        "{e}"
    );
    let e = placed(&experiment(" metric: \"meteor\","));
    assert!(e.contains("unknown evaluator `meteor`"), "{e}");
    // Without the plugins a plugin's text evaluator may be the one named: listed, not refused.
    let parsed = parse_str(&experiment(" metric: \"meteor\","), "x.ron").expect("parses");
    let unresolved = parsed
        .validate_without_plugins(&with_evaluators())
        .expect("only unresolved");
    assert_eq!(unresolved[0].at, "tasks[0].generation.metric");
    // The default `rouge` must be registered too; the message is placed at the task's `generation`.
    let parsed = parse_str(&experiment(""), "x.ron").expect("parses");
    let e = parsed.validate(&registries()).unwrap_err().to_string();
    assert!(
        e.starts_with("x.ron:4:29: tasks[0].generation: unknown evaluator `rouge`"),
        "{e}"
    );
}

#[test]
fn a_text_metric_on_a_classification_task_is_refused_at_the_metric() {
    let text = r#"ExperimentSpec(name: "t", backbone: (path: "m"),
    tasks: [(id: "toy", custom: (train: "a.tsv", eval: "a.tsv", text: "t", label: "l", labels: ["a", "b"],
        metric: "rouge"))],
)"#;
    let e = placed(text);
    assert!(
        e.starts_with("x.ron:3:9: tasks[0].custom.metric: evaluator `rouge` scores generated text"),
        "{e}"
    );
}

#[test]
fn lengths_of_zero_tokens_and_one_column_for_both_texts_are_refused() {
    let e = placed(&experiment(" max_target_tokens: 0,"));
    assert!(
        e.starts_with("x.ron:5:50: tasks[0].generation.max_target_tokens: must be at least 1"),
        "{e}"
    );
    let e = placed(&experiment(" max_source_tokens: 0,"));
    assert!(e.contains("tasks[0].generation.max_source_tokens"), "{e}");
    let e = placed(&experiment(" source: \"text\", target: \"text\","));
    assert!(
        e.contains("tasks[0].generation.target: `source` and `target` both"),
        "{e}"
    );
}

#[test]
fn decoding_settings_are_checked_at_their_place() {
    let e = placed(&experiment(" decoding: (num_beams: 0),"));
    assert!(
        e.contains("tasks[0].generation.decoding.num_beams: must be at least 1"),
        "{e}"
    );
    let e = placed(&experiment(
        " max_target_tokens: 8, decoding: (min_target_tokens: 9),",
    ));
    assert!(
        e.contains("tasks[0].generation.decoding.min_target_tokens: 9 is more than"),
        "{e}"
    );
    let e = placed(&experiment(" decoding: (beams: 2),"));
    assert!(e.contains("beams"), "{e}");
}

#[test]
fn an_encoder_only_backbone_is_refused_at_the_generation_task() -> Result<()> {
    let e = check(&experiment(""))?;
    let bert = minilm();
    let err = e.check_backbone(&bert).unwrap_err().to_string();
    let err = err
        .strip_prefix(&format!("{}/", fixtures().display()))
        .unwrap_or(&err);
    assert!(
        err.starts_with("x.ron:4:29: tasks[0].generation: task `reverse` generates text"),
        "{err}"
    );
    assert!(
        err.contains("`bert` model") && err.contains("T5 or BART"),
        "{err}"
    );
    // Every command that pairs the experiment with its backbone builds S0, which refuses it too.
    assert!(e.space(&bert).is_err());
    let t5_like = BackboneInfo {
        model_type: "t5".into(),
        decoder_layers: 2,
        ..bert
    };
    e.check_backbone(&t5_like)?;
    Ok(())
}

#[test]
fn the_data_check_reports_an_empty_target_at_its_line() -> Result<()> {
    let e = check(&experiment("").replace("dev.jsonl", "empty_target.jsonl"))?;
    let err = e.check_data().unwrap_err().to_string();
    assert!(err.ends_with(&format!(
        "{}: empty target: every example needs a reference output (the text the model should generate); fill it \
         in or remove the row",
        fixtures().join("empty_target.jsonl:3").display()
    )), "{err}");
    let e = check(&experiment("").replace("dev.jsonl", "missing.jsonl"))?;
    let err = e.check_data().unwrap_err().to_string();
    assert!(err.contains("tasks[0].generation.eval: no file"), "{err}");
    Ok(())
}
