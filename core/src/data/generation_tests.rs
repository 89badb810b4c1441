use std::path::PathBuf;

use super::*;

/// The workspace's generation fixtures (a word-reversal task in the tiny T5 fixture's words `w0`…`w39`).
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/generation")
}

fn spec(train: &str, eval: &str) -> GenerationTaskSpec {
    ron::from_str(&format!(r#"(train: "{train}", eval: "{eval}")"#)).expect("spec parses")
}

fn load(spec: &GenerationTaskSpec) -> Result<TaskData> {
    load_generation("reverse", spec, &fixtures())
}

fn error(spec: &GenerationTaskSpec) -> String {
    match load(spec) {
        Ok(_) => panic!("{spec:?} loads"),
        Err(e) => e.to_string(),
    }
}

/// `text` written as `name` in a fresh folder; the folder is returned to keep it alive.
fn file(name: &str, text: &str) -> (tempfile::TempDir, GenerationTaskSpec) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(name), text).expect("write");
    (dir, spec(name, name))
}

fn load_in(dir: &tempfile::TempDir, spec: &GenerationTaskSpec) -> Result<TaskData> {
    load_generation("t", spec, dir.path())
}

#[test]
fn jsonl_tsv_and_csv_give_the_same_examples() -> Result<()> {
    let jsonl = load(&spec("train.jsonl", "dev.jsonl"))?;
    assert_eq!((jsonl.train.len(), jsonl.eval.len()), (24, 8));
    assert_eq!(
        jsonl.kind,
        TaskKind::Generation {
            max_source_tokens: None,
            max_target_tokens: 64,
            decoding: Default::default(),
        }
    );
    assert_eq!(jsonl.evaluator, "rouge");
    let first = &jsonl.train[0];
    assert_eq!(first.text, "w10 w26 w4 w5 w35");
    assert_eq!(first.target.as_deref(), Some("w35 w5 w4 w26 w10"));
    assert_eq!((first.pair.as_ref(), first.label), (None, 0.0));
    // The CSV file has an extra `id` column before the two texts.
    for other in [("train.tsv", "dev.tsv"), ("train.csv", "dev.csv")] {
        let data = load(&spec(other.0, other.1))?;
        assert_eq!(
            (&data.train, &data.eval),
            (&jsonl.train, &jsonl.eval),
            "{other:?}"
        );
    }
    Ok(())
}

#[test]
fn the_prefix_metric_and_target_length_come_from_the_task() -> Result<()> {
    let spec: GenerationTaskSpec = ron::from_str(
        r#"(train: "train.tsv", eval: "dev.tsv", source_prefix: Some("w0 "), max_target_tokens: 12,
            metric: Some("bleu"))"#,
    )
    .expect("parses");
    let data = load(&spec)?;
    assert_eq!(data.train[0].text, "w0 w10 w26 w4 w5 w35");
    assert_eq!(data.train[0].target.as_deref(), Some("w35 w5 w4 w26 w10"));
    assert_eq!(
        data.kind,
        TaskKind::Generation {
            max_source_tokens: None,
            max_target_tokens: 12,
            decoding: Default::default(),
        }
    );
    assert_eq!(data.evaluator, "bleu");
    assert_eq!(
        data.sources,
        vec![fixtures().join("train.tsv"), fixtures().join("dev.tsv")]
    );
    Ok(())
}

#[test]
fn xsum_and_wmt_layouts_are_recognised_by_name() -> Result<()> {
    let xsum = load(&spec("xsum.jsonl", "xsum.jsonl"))?;
    assert_eq!(xsum.eval[0].text, "w15 w15 w1 w32");
    assert_eq!(xsum.eval[0].target.as_deref(), Some("w15 w15"));
    let wmt: GenerationTaskSpec =
        ron::from_str(r#"(train: "wmt.jsonl", eval: "wmt.jsonl", source: "en", target: "ro")"#)
            .expect("parses");
    let wmt = load(&wmt)?;
    assert_eq!(wmt.eval.len(), 8);
    assert_eq!(wmt.eval[0].text, "w15 w15 w1 w32");
    assert_eq!(wmt.eval[0].target.as_deref(), Some("w35 w35 w21 w32"));
    // The other direction reads the same file the other way round.
    let back: GenerationTaskSpec =
        ron::from_str(r#"(train: "wmt.jsonl", eval: "wmt.jsonl", source: "ro", target: "en")"#)
            .expect("parses");
    assert_eq!(load(&back)?.eval[0].text, "w35 w35 w21 w32");
    Ok(())
}

#[test]
fn a_missing_target_key_names_the_file_line_keys_and_layouts() {
    let e = error(&spec("train.jsonl", "missing_target.jsonl"));
    assert!(e.contains("missing_target.jsonl:1: key `target`"), "{e}");
    assert!(
        e.contains("keys found: source, output") || e.contains("keys found: output, source"),
        "{e}"
    );
    assert!(
        e.contains("set the task's `target`") && e.contains("XSum") && e.contains("WMT"),
        "{e}"
    );
    // No recognised key at all: the layouts are listed.
    let wmt_without_languages = error(&spec("wmt.jsonl", "wmt.jsonl"));
    assert!(
        wmt_without_languages.contains("wmt.jsonl:1: no key `source` or `target`")
            && wmt_without_languages.contains("translation: {en, ro}"),
        "{wmt_without_languages}"
    );
}

#[test]
fn an_empty_target_or_source_is_refused_at_its_line() {
    let e = error(&spec("train.jsonl", "empty_target.jsonl"));
    assert!(e.contains("empty_target.jsonl:3: empty target"), "{e}");
    let (dir, s) = file("x.tsv", "source\ttarget\nw1 w2\tw2 w1\n \tw3\n");
    let e = load_in(&dir, &s).unwrap_err().to_string();
    assert!(e.contains("x.tsv:3: empty source"), "{e}");
}

#[test]
fn non_string_values_missing_columns_and_empty_files_are_explained() {
    let (dir, s) = file("x.jsonl", "{\"source\": \"w1\", \"target\": 3}\n");
    let e = load_in(&dir, &s).unwrap_err().to_string();
    assert!(
        e.contains("x.jsonl:1: key `target` (the target) holds 3, expected a string"),
        "{e}"
    );
    let (dir, s) = file("x.csv", "text,summary_text\nw1,w2\n");
    let e = load_in(&dir, &s).unwrap_err().to_string();
    assert!(
        e.contains("x.csv:1: no column `source`") && e.contains("columns: text, summary_text"),
        "{e}"
    );
    let (dir, s) = file("x.tsv", "source\ttarget\n");
    let e = load_in(&dir, &s).unwrap_err().to_string();
    assert!(e.contains("x.tsv:2: no examples"), "{e}");
    let (dir, s) = file("x.jsonl", "\n\n");
    let e = load_in(&dir, &s).unwrap_err().to_string();
    assert!(e.contains("x.jsonl:1: the file is empty"), "{e}");
    let (dir, s) = file("x.parquet", "");
    let e = load_in(&dir, &s).unwrap_err().to_string();
    assert!(e.contains("must end in .tsv, .csv or .jsonl"), "{e}");
}

#[test]
fn headerless_files_take_columns_by_position() -> Result<()> {
    let (dir, mut s) = file("x.tsv", "w1 w2\tw2 w1\nw3 w4\tw4 w3\n");
    s.header = false;
    let data = load_in(&dir, &s)?;
    assert_eq!(data.train[1].target.as_deref(), Some("w4 w3"));
    s.source = "1".into();
    s.target = "0".into();
    assert_eq!(load_in(&dir, &s)?.train[1].text, "w4 w3");
    s.target = "summary".into();
    let e = load_in(&dir, &s).unwrap_err().to_string();
    assert!(e.contains("named by position"), "{e}");
    Ok(())
}

#[test]
fn a_generation_task_keeps_a_small_evaluation_set_unless_told_otherwise() -> Result<()> {
    let task: crate::spec::TaskSpec = ron::from_str(
        r#"(id: "reverse", max_train: Some(5), generation: Some((train: "train.jsonl", eval: "train.jsonl")))"#,
    )
    .expect("parses");
    let data = super::super::load_task(&task, None, &fixtures(), 1)?;
    // 24 rows are under the default cap of 200; the training subsample applies as for other tasks.
    assert_eq!((data.train.len(), data.eval.len()), (5, 24));
    let capped = crate::spec::TaskSpec {
        max_eval: Some(3),
        ..task
    };
    assert_eq!(
        super::super::load_task(&capped, None, &fixtures(), 1)?
            .eval
            .len(),
        3
    );
    Ok(())
}
