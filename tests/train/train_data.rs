//! GLUE and custom task loaders on small hand-written files in GLUE's layout.

use std::path::{Path, PathBuf};

use peftspace_core::data::{
    glue_task, load_custom, load_glue, load_task, TaskData, TaskKind, GLUE_TASKS,
};
use peftspace_core::spec::{CustomTaskSpec, TaskSpec};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn glue(id: &str) -> TaskData {
    load_glue(glue_task(id).expect("known task"), &fixtures().join("glue")).expect("loads")
}

fn error_of(id: &str) -> String {
    match load_glue(
        glue_task(id).expect("known task"),
        &fixtures().join("glue_bad"),
    ) {
        Ok(_) => panic!("{id}: bad file accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_glue_task_loads_with_its_labels() {
    let counts = [
        ("cola", 3, 2),
        ("sst2", 3, 2),
        ("mrpc", 2, 1),
        ("qqp", 2, 1),
        ("stsb", 2, 1),
        ("mnli", 3, 1),
        ("mnli_mm", 3, 2),
        ("qnli", 2, 1),
        ("rte", 2, 1),
        ("wnli", 2, 1),
    ];
    assert_eq!(counts.len(), GLUE_TASKS.len());
    for (id, train, eval) in counts {
        let t = glue(id);
        assert_eq!((t.train.len(), t.eval.len()), (train, eval), "{id}");
        let pair = !matches!(id, "cola" | "sst2");
        assert!(
            t.train.iter().all(|e| e.pair.is_some() == pair),
            "{id}: pair texts"
        );
    }
}

#[test]
fn columns_and_labels_are_read_from_the_right_places() {
    let cola = glue("cola");
    assert_eq!(cola.train[1].text, "They drank the pub.");
    assert_eq!(cola.train[1].label, 0.0);
    assert_eq!(
        cola.eval[1].text, "Rope the over stretched.",
        "last line without newline"
    );
    assert_eq!(cola.evaluator, "cola");
    assert_eq!(glue("mnli_mm").evaluator, "mnli");

    let sst = glue("sst2");
    assert_eq!(
        sst.eval[0].text,
        "it 's a charming and often affecting journey . "
    );
    assert_eq!(sst.eval[0].label, 1.0, "CRLF line endings are stripped");

    let mrpc = glue("mrpc");
    assert_eq!(
        mrpc.train[0].text,
        "Amrozi accused his brother, \"the witness\"."
    );
    assert_eq!(
        mrpc.train[0].pair.as_deref(),
        Some("Amrozi accused his brother of distorting evidence.")
    );
    assert_eq!(mrpc.train[1].label, 0.0);

    let qqp = glue("qqp");
    assert_eq!(
        qqp.train[0].pair.as_deref(),
        Some("What is the best way to learn Rust?")
    );

    let stsb = glue("stsb");
    assert_eq!(stsb.kind, TaskKind::Regression);
    assert_eq!(stsb.train[1].label, 3.8);
    assert_eq!(stsb.train[1].text, "A man is playing a flute.");

    let mnli = glue("mnli");
    let classes = |t: &TaskData| t.train.iter().map(|e| e.label).collect::<Vec<_>>();
    assert_eq!(
        classes(&mnli),
        vec![2.0, 1.0, 0.0],
        "contradiction, entailment, neutral"
    );
    assert_eq!(mnli.eval[0].label, 2.0);
    let mm = glue("mnli_mm");
    assert_eq!(mm.eval.len(), 2);
    assert_eq!(mm.eval[1].pair.as_deref(), Some("The answer is no."));

    assert_eq!(
        glue("qnli").train[0].label,
        1.0,
        "not_entailment is class 1"
    );
    assert_eq!(glue("rte").train[1].label, 0.0);
    assert_eq!(glue("wnli").train[1].label, 0.0);
}

#[test]
fn task_ids_accept_common_spellings() {
    assert_eq!(glue_task("SST-2").expect("sst-2").id, "sst2");
    assert_eq!(glue_task("sts-b").expect("sts-b").id, "stsb");
    assert_eq!(glue_task("MNLI-MM").expect("mnli-mm").id, "mnli_mm");
    let err = glue_task("imdb").expect_err("unknown").to_string();
    assert!(err.contains("cola") && err.contains("custom"), "{err}");
}

#[test]
fn bad_label_names_file_line_and_allowed_values() {
    let e = error_of("sst2");
    assert!(e.contains("glue_bad/SST-2/train.tsv:3:"), "{e}");
    assert!(e.contains("`positive`") && e.contains("0, 1"), "{e}");
}

#[test]
fn wrong_column_count_names_file_and_line() {
    let e = error_of("rte");
    assert!(e.contains("glue_bad/RTE/train.tsv:3:"), "{e}");
    assert!(e.contains("expected 4") && e.contains("found 3"), "{e}");
    let e = error_of("cola");
    assert!(e.contains("glue_bad/CoLA/train.tsv:2:"), "{e}");
}

#[test]
fn missing_folder_says_how_to_point_at_the_data() {
    let e =
        load_glue(glue_task("qqp").expect("qqp"), Path::new("/nonexistent")).expect_err("missing");
    let e = e.to_string();
    assert!(e.contains("QQP") && e.contains("PEFTSPACE_DATA"), "{e}");
}

fn custom(
    train: &str,
    eval: &str,
    text: &str,
    pair: Option<&str>,
    label: &str,
    labels: &[&str],
) -> CustomTaskSpec {
    CustomTaskSpec {
        train: train.into(),
        eval: eval.into(),
        text: text.into(),
        text_pair: pair.map(str::to_string),
        label: label.into(),
        labels: Some(labels.iter().map(|s| s.to_string()).collect()),
        kind: None,
        header: true,
        metric: None,
    }
}

#[test]
fn custom_csv_with_quotes_and_label_set() {
    let spec = custom(
        "train.csv",
        "eval.csv",
        "review",
        None,
        "stars",
        &["bad", "good"],
    );
    let t = load_custom("reviews", &spec, &fixtures().join("custom")).expect("loads");
    assert_eq!(t.train.len(), 3);
    assert_eq!(t.train[0].text, "Great, really great");
    assert_eq!(t.train[1].text, "Awful \"movie\"");
    assert_eq!(t.train[1].label, 0.0);
    assert_eq!(t.evaluator, "accuracy");
}

#[test]
fn custom_jsonl_regression_with_pairs() {
    let spec = custom("train.jsonl", "eval.jsonl", "q", Some("a"), "score", &[]);
    let t = load_custom("qa", &spec, &fixtures().join("custom")).expect("loads");
    assert_eq!(t.kind, TaskKind::Regression);
    assert_eq!(t.evaluator, "pearson_spearman");
    assert_eq!(t.train.len(), 2, "blank lines are skipped");
    assert_eq!(t.train[1].label, 2.0);
    assert_eq!(t.eval[0].pair.as_deref(), Some("so"));

    let bad = custom(
        "missing_key.jsonl",
        "eval.jsonl",
        "q",
        Some("a"),
        "score",
        &[],
    );
    let e = load_custom("qa", &bad, &fixtures().join("custom"))
        .expect_err("missing key")
        .to_string();
    assert!(
        e.contains("missing_key.jsonl:1:") && e.contains("`score`"),
        "{e}"
    );
}

#[test]
fn custom_tsv_unknown_column_lists_the_columns() {
    let spec = custom(
        "train.tsv",
        "eval.tsv",
        "sentence",
        None,
        "label",
        &["neg", "pos"],
    );
    let e = load_custom("x", &spec, &fixtures().join("custom"))
        .expect_err("no such column")
        .to_string();
    assert!(e.contains("`sentence`") && e.contains("text, label"), "{e}");
}

#[test]
fn subsampling_is_seeded_and_bounded() {
    let task = TaskSpec {
        id: "mnli_mm".into(),
        max_train: Some(2),
        max_eval: Some(1),
        custom: None,
        generation: None,
    };
    let dir = fixtures().join("glue");
    let a = load_task(&task, Some(&dir), Path::new("."), 7).expect("loads");
    let b = load_task(&task, Some(&dir), Path::new("."), 7).expect("loads");
    assert_eq!((a.train.len(), a.eval.len()), (2, 1));
    assert_eq!(a, b);
    let picks: std::collections::BTreeSet<String> = (0..20u64)
        .map(|s| {
            load_task(&task, Some(&dir), Path::new("."), s)
                .expect("loads")
                .train[0]
                .text
                .clone()
        })
        .collect();
    assert!(picks.len() > 1, "different seeds choose different subsets");
    let e = load_task(&task, None, Path::new("."), 1)
        .expect_err("no data dir")
        .to_string();
    assert!(e.contains("--data-dir"), "{e}");
}
