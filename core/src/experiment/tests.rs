use super::*;
use crate::spec::Dimension;
use crate::test_doubles::{minilm, registries};

const GOOD: &str = r#"ExperimentSpec(
    name: "t",
    backbone: (path: "models/m", hub_id: "org/m"),
    data_dir: "../data",
    tasks: [(id: "sst2", max_train: 100)],
    budget: 0.005,
    stages: [
        (name: "S1", dimension: Grouping, candidates: ["first_largest", "s0"]),
        (name: "S3", dimension: TunedGroups, candidates: ["0111", "1111"]),
        (name: "S4a", dimension: Strategies(1), candidates: ["adapter+lora", "bitfit"]),
    ],
)"#;

fn check(text: &str) -> Result<Experiment> {
    parse_str(text, "exp/x.ron")?.validate(&registries())
}

fn error(text: &str) -> String {
    check(text).unwrap_err().to_string()
}

/// `GOOD` with one piece of text replaced.
fn good_with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn a_good_file_passes_and_resolves_paths_against_its_folder() {
    let e = check(GOOD).unwrap();
    assert_eq!(e.base_dir(), PathBuf::from("exp"));
    assert_eq!(
        e.resolve(Path::new("models/m")),
        PathBuf::from("exp/models/m")
    );
    assert_eq!(e.resolve(Path::new("/m")), PathBuf::from("/m"));
    assert_eq!(e.stage("S3").unwrap().0, 1);
    assert!(e
        .stage("S9")
        .unwrap_err()
        .to_string()
        .contains("S1, S3, S4a"));
}

#[test]
fn syntax_unknown_field_and_type_errors_have_line_and_column() {
    let e = error(&good_with("budget: 0.005,", "budget: 0.005"));
    assert!(e.starts_with("exp/x.ron:7:5: "), "{e}");
    let e = error(&good_with("budget:", "budgte:"));
    assert!(
        e.starts_with("exp/x.ron:6:5: ") && e.contains("budgte"),
        "{e}"
    );
    let e = error(&good_with("budget: 0.005", "budget: \"half\""));
    assert!(
        e.starts_with("exp/x.ron:6:12: ") && e.contains("Expected float"),
        "{e}"
    );
}

#[test]
fn pass_two_errors_point_at_the_offending_field() {
    let e = error(&good_with("budget: 0.005", "budget: 0.0"));
    assert!(
        e.starts_with("exp/x.ron:6:5: budget: 0 is not a fraction"),
        "{e}"
    );
    let e = error(&good_with("\"first_largest\"", "\"spindel\""));
    assert!(
        e.starts_with("exp/x.ron:8:56: stages[0].candidates[0]: unknown grouping rule `spindel`"),
        "{e}"
    );
    assert!(e.contains("known: first_largest, s0"), "{e}");
    let e = error(&good_with("\"adapter+lora\"", "\"adapter+lorra\""));
    assert!(
        e.contains("stages[2].candidates[0]") && e.contains("`lorra`"),
        "{e}"
    );
    let e = error(&good_with("\"0111\"", "\"011\""));
    assert!(
        e.starts_with("exp/x.ron:9:59: stages[1].candidates[0]"),
        "{e}"
    );
    let e = error(&good_with("Strategies(1)", "Strategies(4)"));
    assert!(
        e.contains("stages[2].dimension") && e.contains("4 groups"),
        "{e}"
    );
    let e = error(&good_with("id: \"sst2\"", "id: \"sst3\""));
    assert!(
        e.starts_with("exp/x.ron:5:14: tasks[0].id: unknown GLUE task `sst3`"),
        "{e}"
    );
}

#[test]
fn strategies_must_be_registered_and_their_options_accepted() {
    let e = error(&good_with(
        "budget: 0.005,",
        "budget: 0.005, strategies: [(name: \"lora\"), (name: \"dora\")],",
    ));
    assert!(
        e.contains(
            "strategies[1].name: unknown strategy `dora`; known: adapter, bitfit, lora, prefix"
        ),
        "{e}"
    );
    let e = error(&good_with(
        "budget: 0.005,",
        "budget: 0.005, strategies: [(name: \"lora\", options: (r: 3))],",
    ));
    assert!(
        e.contains("strategies[0].options: lora takes no options here"),
        "{e}"
    );
}

#[test]
fn stage_space_applies_first_candidates_in_order() {
    let e = check(GOOD).unwrap();
    let info = minilm();
    assert_eq!(
        e.space(&info).unwrap().describe(),
        "grouping=s0 allocation=s0 tuned=any"
    );
    let s = e.stage_space(&info, 2).unwrap();
    assert_eq!(
        s.describe(),
        "grouping=first_largest allocation=s0 tuned=0111 G2=adapter+lora"
    );
    assert_eq!(
        s,
        e.space(&info)
            .unwrap()
            .constrain(Dimension::Grouping, "first_largest")
            .unwrap()
            .constrain(Dimension::TunedGroups, "0111")
            .unwrap()
            .constrain(Dimension::Strategies(1), "adapter+lora")
            .unwrap()
    );
}

#[test]
fn too_many_groups_for_the_backbone_is_placed_at_groups() {
    let text = good_with("budget: 0.005,", "budget: 0.005, groups: 7,")
        .replace("\"0111\", \"1111\"", "\"0111111\"");
    let e = check(&text).unwrap();
    let err = e.space(&minilm()).unwrap_err().to_string();
    assert!(err.contains("groups") && err.contains("6 layers"), "{err}");
}

#[test]
fn names_that_would_leave_the_results_folder_are_refused() {
    for bad in ["..", ".", "a/b", "a\\\\b", "x y", "caf\u{e9}", ""] {
        let e = error(&good_with("name: \"t\"", &format!("name: \"{bad}\"")));
        assert!(e.contains(": name: "), "{bad}: {e}");
    }
    let long = "n".repeat(crate::spec::MAX_NAME_LEN + 1);
    let e = error(&good_with("name: \"t\"", &format!("name: \"{long}\"")));
    assert!(e.contains("at most"), "{e}");
    for good in ["t", "glue-v1.2_bert", "..x", "a.b"] {
        check(&good_with("name: \"t\"", &format!("name: \"{good}\""))).expect(good);
    }
}

#[test]
fn race_settings_are_checked_where_they_are_written() {
    let ok = good_with(
        "budget: 0.005,",
        "budget: 0.005, race: (min_samples: 10, batch: 5),",
    );
    let e = check(&ok).unwrap();
    assert_eq!(e.spec.race.map(|r| r.alpha), Some(0.05));
    let e = error(&good_with(
        "budget: 0.005,",
        "budget: 0.005, race: (batch: 0),",
    ));
    assert!(
        e.starts_with("exp/x.ron:6:") && e.contains("race.batch"),
        "{e}"
    );
    let e = error(&good_with(
        "budget: 0.005,",
        "budget: 0.005, race: (alpha: 1.5),",
    ));
    assert!(e.contains("race.alpha") && e.contains("(0, 1)"), "{e}");
    let e = error(&good_with(
        "budget: 0.005,",
        "budget: 0.005, samples: 8, race: (min_samples: 10),",
    ));
    assert!(
        e.contains("race.min_samples") && e.contains("`samples` (8)"),
        "{e}"
    );
    let e = error(&good_with(
        "budget: 0.005,",
        "budget: 0.005, race: (min_samples: 1),",
    ));
    assert!(e.contains("at least 2"), "{e}");
}

#[test]
fn pruning_settings_are_checked_where_they_are_written() {
    use crate::spec::{PruneSpec, PruneThreshold};
    let ok = good_with(
        "budget: 0.005,",
        "budget: 0.005, training: (epochs: 3, prune: (after_epoch: 1, below: ReferencePlus(0.02))),",
    );
    let e = check(&ok).unwrap();
    assert_eq!(
        e.spec.training.prune,
        Some(PruneSpec {
            after_epoch: 1,
            below: PruneThreshold::ReferencePlus(0.02)
        })
    );
    // Pruning after the last epoch would stop nothing.
    let e = error(&good_with(
        "budget: 0.005,",
        "budget: 0.005, training: (epochs: 1, prune: (after_epoch: 1, below: Score(0.6))),",
    ));
    assert!(
        e.starts_with("exp/x.ron:6:")
            && e.contains("training.prune.after_epoch")
            && e.contains("epochs: 2"),
        "{e}"
    );
    let e = error(&good_with(
        "budget: 0.005,",
        "budget: 0.005, training: (epochs: 3, prune: (after_epoch: 0, below: Score(0.6))),",
    ));
    assert!(e.contains("1 to 2"), "{e}");
    let e = error(&good_with(
        "budget: 0.005,",
        "budget: 0.005, training: (epochs: 3, prune: (after_epoch: 1, below: Fraction(0.6))),",
    ));
    assert!(e.starts_with("exp/x.ron:6:"), "{e}");
}

#[test]
fn pruning_off_leaves_the_serialised_training_settings_and_so_trial_ids_unchanged() {
    let text = serde_json::to_string(&crate::spec::TrainingSpec::default()).unwrap();
    assert!(!text.contains("prune"), "{text}");
}
