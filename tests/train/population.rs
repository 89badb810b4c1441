//! Population training: K designs trained together on tiny BERT and tiny T5 report exactly what each reports trained
//! alone (every epoch's loss and dev score, the status, the step count), with dropout on; a member that diverges
//! leaves the population and the others' reports stay those of their solo runs.

use crate::common;

// The built-in strategies, evaluators and backbones register through `inventory`: name the crates so they are linked.
use peftspace_backbones as _;
use peftspace_plugins as _;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::{ensure_accuracy_evaluator, synthetic_task};
use peftspace_core::backbone::{Backbone, Weights};
use peftspace_core::budget::LayerAssignment;
use peftspace_core::data::TaskData;
use peftspace_core::model::{ModelFolder, Tokenizer};
use peftspace_core::registry::registries;
use peftspace_core::spec::{Select, StrategySpec, TrainingSpec};
use peftspace_core::train::{run_population, run_trial, TrainingReport, TrialInput};
use peftspace_core::trial::TrialStatus;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Model {
    backbone: Box<dyn Backbone>,
    tokenizer: Tokenizer,
}

fn model(name: &str) -> Model {
    let folder = ModelFolder::open(fixture(name)).expect("fixture opens");
    let backbone = folder
        .load(
            &registries().expect("registries"),
            &Device::Cpu,
            Weights::Frozen,
        )
        .expect("fixture loads");
    Model {
        backbone,
        tokenizer: folder.tokenizer().expect("tokenizer"),
    }
}

/// Dropout on (backbone from its config, head here), several epochs, `Best` so a wrong epoch shows too.
fn training() -> TrainingSpec {
    TrainingSpec {
        epochs: 3,
        batch_size: 8,
        learning_rate: 5e-3,
        max_seq_len: 16,
        eval_batch_size: 16,
        dropout: 0.1,
        warmup: 0.2,
        grad_clip: 1.0,
        select: Select::Best,
        ..TrainingSpec::default()
    }
}

/// A plan from `(layer, [(strategy, size)])`.
fn plan(layers: &[(usize, &[(&str, usize)])]) -> Vec<LayerAssignment> {
    layers
        .iter()
        .map(|(layer, strategies)| LayerAssignment {
            layer: *layer,
            strategies: strategies
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
        })
        .collect()
}

/// Four designs without prefixes and four with a prefix of length 2 in every layer (a population needs one prefix
/// length per layer), mixing LoRA, adapters and BitFit at different sizes and layers.
fn designs(layers: usize) -> Vec<Vec<Vec<LayerAssignment>>> {
    let last = layers - 1;
    let plain = vec![
        plan(&[(0, &[("lora", 2)]), (last, &[("adapter", 3)])]),
        plan(&[(0, &[("bitfit", 1)]), (1, &[("bitfit", 1), ("lora", 4)])]),
        plan(&[(last, &[("adapter", 2), ("bitfit", 1)])]),
        plan(&[(0, &[("lora", 1)]), (last, &[("lora", 3)])]),
    ];
    let every = |extra: &[(&str, usize)]| -> Vec<LayerAssignment> {
        (0..layers)
            .map(|layer| {
                let mut strategies = vec![("prefix".to_string(), 2)];
                if layer % 2 == 0 {
                    strategies.extend(extra.iter().map(|(s, n)| (s.to_string(), *n)));
                }
                LayerAssignment { layer, strategies }
            })
            .collect()
    };
    let prefixed = vec![
        every(&[]),
        every(&[("lora", 2)]),
        every(&[("adapter", 4), ("bitfit", 1)]),
        every(&[("bitfit", 1)]),
    ];
    vec![plain, prefixed]
}

fn input<'a>(
    m: &'a Model,
    task: &'a TaskData,
    plan: &'a [LayerAssignment],
    strategies: &'a [StrategySpec],
    training: &'a TrainingSpec,
) -> TrialInput<'a> {
    TrialInput {
        backbone: m.backbone.as_ref(),
        tokenizer: &m.tokenizer,
        task,
        plan,
        strategies,
        training,
        seed: 7,
        progress: false,
        on_epoch: None,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-12)
}

/// The report of a population member equals the solo report: status, steps, sizes, and every epoch within 1e-5.
fn assert_same(what: &str, alone: &TrainingReport, together: &TrainingReport) {
    assert_eq!(alone.status, together.status, "{what}: status");
    assert_eq!(alone.steps, together.steps, "{what}: steps");
    assert_eq!(alone.trainable_params, together.trainable_params, "{what}");
    assert_eq!(alone.head_params, together.head_params, "{what}");
    assert_eq!(alone.selected_epoch, together.selected_epoch, "{what}");
    assert_eq!(
        alone.per_epoch.len(),
        together.per_epoch.len(),
        "{what}: epochs"
    );
    for (a, t) in alone.per_epoch.iter().zip(&together.per_epoch) {
        assert!(
            close(a.train_loss, t.train_loss),
            "{what} epoch {}: loss {} alone, {} together",
            a.epoch,
            a.train_loss,
            t.train_loss
        );
        assert!(
            close(a.metrics.primary, t.metrics.primary),
            "{what} epoch {}: score {} alone, {} together",
            a.epoch,
            a.metrics.primary,
            t.metrics.primary
        );
    }
    assert!(
        close(alone.metrics.primary, together.metrics.primary),
        "{what}"
    );
}

fn check_equivalence(name: &str) {
    ensure_accuracy_evaluator();
    let m = model(name);
    let task = synthetic_task(48, 24, 3);
    let training = training();
    for (p, population) in designs(m.backbone.info().num_layers()).iter().enumerate() {
        let inputs: Vec<TrialInput<'_>> = population
            .iter()
            .map(|plan| input(&m, &task, plan, &[], &training))
            .collect();
        let together = run_population(&inputs).expect("the population trains");
        assert_eq!(together.len(), inputs.len());
        let mut losses = Vec::new();
        for (k, (one, report)) in inputs.iter().zip(together).enumerate() {
            let report = report.unwrap_or_else(|e| panic!("{name} population {p} design {k}: {e}"));
            let alone = run_trial(one).expect("the design trains alone");
            assert_eq!(alone.status, TrialStatus::Ok, "{name} {p}/{k}");
            assert_same(
                &format!("{name} population {p} design {k}"),
                &alone,
                &report,
            );
            losses.push(alone.per_epoch[0].train_loss);
        }
        // The designs really differ, so equal reports are not a coincidence of identical members.
        losses.sort_by(f64::total_cmp);
        losses.dedup();
        assert_eq!(losses.len(), inputs.len(), "{name}: {losses:?}");
    }
}

#[test]
fn a_population_trains_each_tiny_bert_design_exactly_as_alone() {
    check_equivalence("tiny-bert");
}

#[test]
fn a_population_trains_each_tiny_t5_design_exactly_as_alone() {
    check_equivalence("t5-tiny-gated");
}

#[test]
fn a_diverging_design_leaves_and_the_others_train_on_as_alone() {
    ensure_accuracy_evaluator();
    let m = model("tiny-bert");
    let task = synthetic_task(48, 24, 3);
    let training = training();
    let population = &designs(m.backbone.info().num_layers())[0];
    // The same design as member 0, with a learning rate that blows its weights up after the first step.
    let wild = vec![StrategySpec {
        name: "lora".into(),
        options: ron::Value::Unit,
        learning_rate: Some(1e38),
    }];
    let strategies: [&[StrategySpec]; 3] = [&[], &wild, &[]];
    let plans = [&population[0], &population[0], &population[2]];
    let inputs: Vec<TrialInput<'_>> = plans
        .iter()
        .zip(strategies)
        .map(|(plan, s)| input(&m, &task, plan, s, &training))
        .collect();
    let together = run_population(&inputs).expect("the population trains");
    for (k, (one, report)) in inputs.iter().zip(together).enumerate() {
        let report = report.expect("a report");
        let alone = run_trial(one).expect("alone");
        assert_same(&format!("design {k}"), &alone, &report);
    }
    let alone = run_trial(&inputs[1]).expect("alone");
    assert!(
        matches!(alone.status, TrialStatus::Diverged { step } if step > 0 && (step as usize) < 18),
        "the wild design should diverge during training: {alone:?}"
    );
    assert_eq!(
        run_trial(&inputs[0]).expect("alone").status,
        TrialStatus::Ok
    );
}

#[test]
fn designs_that_differ_in_shared_inputs_or_prefix_lengths_are_refused() {
    ensure_accuracy_evaluator();
    let m = model("tiny-bert");
    let task = synthetic_task(16, 8, 3);
    let training = training();
    let other = TrainingSpec {
        batch_size: 4,
        ..training.clone()
    };
    let p = designs(m.backbone.info().num_layers());
    let inputs = [
        input(&m, &task, &p[0][0], &[], &training),
        input(&m, &task, &p[0][1], &[], &other),
    ];
    let err = run_population(&inputs).expect_err("different settings");
    assert!(err.to_string().contains("share"), "{err}");
    // A prefix design with a plain one: the shared forward pass cannot stack them, so both fail with a reason.
    let inputs = [
        input(&m, &task, &p[0][0], &[], &training),
        input(&m, &task, &p[1][0], &[], &training),
    ];
    for report in run_population(&inputs).expect("runs") {
        match report.expect("a report").status {
            TrialStatus::Failed { message } => {
                assert!(message.contains("prefix lengths"), "{message}")
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

#[test]
fn a_pruned_design_leaves_after_its_epoch_and_the_others_train_on_as_alone() {
    use peftspace_core::spec::{PruneSpec, PruneThreshold};
    ensure_accuracy_evaluator();
    let m = model("tiny-bert");
    let task = synthetic_task(48, 24, 3);
    let population = &designs(m.backbone.info().num_layers())[0];
    // A threshold between the members' scores after the first epoch where they differ, so that some are pruned
    // there and some go on.
    let plain = training();
    let alone: Vec<TrainingReport> = population
        .iter()
        .map(|plan| run_trial(&input(&m, &task, plan, &[], &plain)).expect("alone"))
        .collect();
    let (epoch, low, high) = (1..plain.epochs)
        .find_map(|e| {
            let scores: Vec<f64> = alone
                .iter()
                .map(|r| r.per_epoch[e - 1].metrics.primary)
                .collect();
            let low = scores.iter().copied().fold(f64::INFINITY, f64::min);
            let high = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (low < high).then_some((e, low, high))
        })
        .expect("the designs should score differently after some epoch before the last");
    let mut training = training();
    training.prune = Some(PruneSpec {
        after_epoch: epoch,
        below: PruneThreshold::Score((low + high) / 2.0),
    });
    let inputs: Vec<TrialInput<'_>> = population
        .iter()
        .map(|plan| input(&m, &task, plan, &[], &training))
        .collect();
    let together = run_population(&inputs).expect("the population trains");
    let mut statuses = Vec::new();
    for (k, (one, report)) in inputs.iter().zip(together).enumerate() {
        let report = report.expect("a report");
        let alone = run_trial(one).expect("alone");
        assert_same(&format!("design {k}"), &alone, &report);
        statuses.push(report.status.label());
    }
    assert!(
        statuses.contains(&"pruned") && statuses.contains(&"ok"),
        "{statuses:?}"
    );
}
