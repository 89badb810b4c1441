//! Real data: MiniLM fine-tuned on GLUE subsamples from `../shared` (or `PEFTSPACE_SHARED`). Ignored by default;
//! run with `PEFTSPACE_SHARED=/path/to/shared cargo test --test real train_real:: -- --ignored`.
//!
//! SST-2 with LoRA (the calibration protocol: 8,000 seeded examples, one epoch, batch 32, lr 5e-4, 6 % warm-up) on an
//! otherwise idle 2-core machine: dev accuracy 0.7913 in 276 s. With 3,000 examples and lr 1e-3 it reached only
//! 0.7603. The all-four-strategies threshold has not been checked against a finished run yet.

use crate::common;
use common::shared;

use std::path::Path;

use candle_core::Device;
use peftspace_core::backbone::Backbone;
use peftspace_core::budget::LayerAssignment;
use peftspace_core::data::{glue_task, load_glue, load_task, TaskData};
use peftspace_core::model::Tokenizer;
use peftspace_core::registry::registries;
use peftspace_core::resolve::split_mrpc;
use peftspace_core::spec::{StrategySpec, TaskSpec, TrainingSpec};
use peftspace_core::train::{run_trial, uniform_plan, TrainingReport, TrialInput};
use peftspace_core::trial::TrialStatus;

// Link the built-in strategies, evaluators and architectures into this test binary.
use peftspace_backbones as _;
use peftspace_plugins as _;

fn minilm() -> (Box<dyn Backbone>, Tokenizer) {
    let dir = shared().join("models/all-MiniLM-L6-v2");
    let backbone = (registries()
        .expect("registries")
        .architecture_for("bert")
        .expect("bert registered")
        .load)(&dir, &Device::Cpu)
    .expect("MiniLM loads");
    let tokenizer =
        Tokenizer::from_file(&dir.join("tokenizer.json"), Some(0)).expect("tokenizer loads");
    (backbone, tokenizer)
}

fn task(id: &str, max_train: usize, max_eval: Option<usize>) -> TaskData {
    let spec = TaskSpec {
        id: id.into(),
        max_train: Some(max_train),
        max_eval,
        custom: None,
        generation: None,
    };
    load_task(&spec, Some(&shared().join("data/glue")), Path::new("."), 1).expect("task loads")
}

fn train(
    backbone: &dyn Backbone,
    tokenizer: &Tokenizer,
    task: &TaskData,
    plan: &[LayerAssignment],
    strategies: &[StrategySpec],
    training: &TrainingSpec,
) -> TrainingReport {
    train_seeded(backbone, tokenizer, task, plan, strategies, training, 1)
}

fn train_seeded(
    backbone: &dyn Backbone,
    tokenizer: &Tokenizer,
    task: &TaskData,
    plan: &[LayerAssignment],
    strategies: &[StrategySpec],
    training: &TrainingSpec,
    seed: u64,
) -> TrainingReport {
    let print = |r: &peftspace_core::train::EpochReport| {
        eprintln!(
            "{} epoch {}: loss {:.4} {:?} ({:.0} s)",
            task.id, r.epoch, r.train_loss, r.metrics.values, r.seconds
        )
    };
    let out = run_trial(&TrialInput {
        backbone,
        tokenizer,
        task,
        plan,
        strategies,
        training,
        seed,
        progress: false,
        on_epoch: Some(&print),
    })
    .expect("trial runs");
    eprintln!(
        "{}: {:?} primary {:.4}, {} trainable + {} head, {} steps, {:.0} s",
        task.id,
        out.status,
        out.metrics.primary,
        out.trainable_params,
        out.head_params,
        out.steps,
        out.seconds
    );
    assert_eq!(out.status, TrialStatus::Ok);
    out
}

fn strategy(name: &str, lr: f64) -> StrategySpec {
    StrategySpec {
        name: name.into(),
        options: ron::Value::Unit,
        learning_rate: Some(lr),
    }
}

/// The calibrated SST-2 setting: one epoch over a seeded subsample, batch 32, warm-up 6 %.
fn sst2_training(lr: f64) -> TrainingSpec {
    TrainingSpec {
        epochs: 1,
        batch_size: 32,
        learning_rate: lr,
        max_seq_len: 128,
        ..TrainingSpec::default()
    }
}

const SST2_TRAIN: usize = 8000;

#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn sst2_lora_at_half_a_percent_reaches_78() {
    let (backbone, tokenizer) = minilm();
    let info = backbone.info();
    // LoRA on q and v: 2 · 384 · 2 · r per layer; r = 12 is the size closest to 0.5 % of MiniLM's parameters.
    let plan = uniform_plan(info, "lora", 12);
    let out = train(
        backbone.as_ref(),
        &tokenizer,
        &task("sst2", SST2_TRAIN, None),
        &plan,
        &[strategy("lora", 5e-4)],
        &sst2_training(5e-4),
    );
    assert_eq!(out.trainable_params, 110_592);
    let budget = 0.005 * info.num_params as f64;
    assert!((out.trainable_params as f64 - budget).abs() / budget < 0.03);
    assert!(
        out.metrics.primary >= 0.78,
        "SST-2 dev accuracy {}",
        out.metrics.primary
    );
}

/// Half the calibration subsample (4,000 examples, one epoch at lr 1e-3): every strategy's hooks together still
/// learn SST-2, at half the suite's time of the 8,000-example run (which took 843 s on a loaded machine).
#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn sst2_all_four_strategies_in_every_layer_reach_75() {
    let (backbone, tokenizer) = minilm();
    let info = backbone.info();
    // Sizes near a 0.5 % budget split four ways: BitFit's fixed count, then adapter width, prefix length, LoRA rank.
    let plan: Vec<LayerAssignment> = (0..info.num_layers())
        .map(|layer| LayerAssignment {
            layer,
            strategies: vec![
                ("adapter".into(), 8),
                ("prefix".into(), 8),
                ("lora".into(), 4),
                ("bitfit".into(), 1),
            ],
        })
        .collect();
    let strategies = [
        strategy("adapter", 1e-3),
        strategy("prefix", 5e-3),
        strategy("lora", 1e-3),
        strategy("bitfit", 1e-3),
    ];
    let out = train(
        backbone.as_ref(),
        &tokenizer,
        &task("sst2", 4_000, None),
        &plan,
        &strategies,
        &sst2_training(1e-3),
    );
    assert!(
        out.metrics.primary >= 0.75,
        "SST-2 dev accuracy {}",
        out.metrics.primary
    );
}

/// A learning claim beyond SST-2 that a majority-class predictor fails: LoRA (r = 12 on q and v, 0.5 % of MiniLM) on
/// the whole MRPC training set for 3 epochs. Measured on 2 cores: this test, dev accuracy 0.767 (the majority class:
/// 0.684), F1 0.840 (0.812) in 459 s (test profile); `peftspace train` with the budget-solved LoRA baseline (r =
/// 12/13, otherwise these settings, release build): accuracy 0.772, F1 0.845, primary 0.808 against the reference
/// 0.748, in 299 s.
#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn mrpc_lora_on_the_whole_training_set_beats_the_majority_class() {
    let (backbone, tokenizer) = minilm();
    let plan = uniform_plan(backbone.info(), "lora", 12);
    let training = TrainingSpec {
        epochs: 3,
        batch_size: 32,
        learning_rate: 1e-3,
        max_seq_len: 128,
        ..TrainingSpec::default()
    };
    let out = train(
        backbone.as_ref(),
        &tokenizer,
        &task("mrpc", 3_668, None),
        &plan,
        &[strategy("lora", 1e-3)],
        &training,
    );
    let accuracy = out.metrics.values["accuracy"];
    let f1 = out.metrics.values["f1"];
    // GLUE's MRPC score is the mean of accuracy and F1.
    assert!((out.metrics.primary - (f1 + accuracy) / 2.0).abs() < 1e-9);
    let reference = out.reference.as_ref().expect("reference").primary;
    assert!(
        accuracy >= 0.74,
        "MRPC dev accuracy {accuracy} (majority class 0.684)"
    );
    assert!(
        out.metrics.primary >= reference + 0.03,
        "MRPC primary {} against the majority class's {reference}",
        out.metrics.primary
    );
}

/// CoLA learns beyond chance with a bottleneck adapter on the whole training set. Calibration on an otherwise idle
/// 2-core machine (release build, the CLI's `train --baseline adapter` at the same settings, plan A11 A12 A12 A12 A12
/// A12): dev MCC 0.000, 0.042, 0.181, 0.190 after epochs 1–4 (accuracy 0.709; the majority class scores MCC 0 at
/// accuracy 0.691), 57 s per epoch. At lr 1e-3 for 2 epochs the adapter reached MCC 0.076; LoRA r = 12 on query and
/// value stayed at the majority class (MCC 0.000) at lr 1e-3 (2 epochs) and 5e-3 (3 epochs); full fine-tuning at lr
/// 5e-5 reached 0.240 after 2 epochs. This test (plan A12 everywhere, 115,344 parameters), test profile, idle machine:
/// MCC 0.000, 0.133, 0.220, 0.251 after epochs 1–4 (accuracy 0.722), 347 s.
#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn cola_adapter_on_the_whole_training_set_beats_chance() {
    let (backbone, tokenizer) = minilm();
    let plan = uniform_plan(backbone.info(), "adapter", 12);
    let training = TrainingSpec {
        epochs: 4,
        batch_size: 32,
        learning_rate: 2e-3,
        max_seq_len: 48,
        ..TrainingSpec::default()
    };
    let out = train(
        backbone.as_ref(),
        &tokenizer,
        &task("cola", 8_551, None),
        &plan,
        &[strategy("adapter", 2e-3)],
        &training,
    );
    let mcc = out.metrics.values["mcc"];
    assert_eq!(out.metrics.primary, mcc);
    assert!(
        mcc > 0.1,
        "CoLA dev MCC {mcc} (the majority class scores 0)"
    );
    let accuracy = out.metrics.values["accuracy"];
    assert!(
        accuracy > 0.6913,
        "CoLA dev accuracy {accuracy} (majority class 0.6913)"
    );
}

#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn real_glue_files_load_with_their_known_sizes() {
    let dir = shared().join("data/glue");
    for (id, train, dev) in [
        ("sst2", 67_349, 872),
        ("cola", 8_551, 1_043),
        ("mrpc", 3_668, 408),
        ("rte", 2_490, 277),
        ("wnli", 635, 71),
    ] {
        let t = load_glue(glue_task(id).expect("glue"), &dir).expect("loads");
        assert_eq!((t.train.len(), t.eval.len()), (train, dev), "{id}");
    }
    // GLUE's MRPC split, rebuilt from the Microsoft corpus and the dev ids, reads back as the shipped files do.
    let mrpc = dir.join("MRPC");
    let read = |name: &str| std::fs::read_to_string(mrpc.join(name)).expect("reads");
    let (train, dev) =
        split_mrpc(&read("msr_paraphrase_train.txt"), &read("dev_ids.tsv")).expect("splits");
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("MRPC")).expect("mkdir");
    std::fs::write(tmp.path().join("MRPC/train.tsv"), train).expect("write");
    std::fs::write(tmp.path().join("MRPC/dev.tsv"), dev).expect("write");
    let rebuilt = load_glue(glue_task("mrpc").expect("mrpc"), tmp.path()).expect("loads");
    let shipped = load_glue(glue_task("mrpc").expect("mrpc"), &dir).expect("loads");
    assert_eq!(rebuilt.train, shipped.train);
    assert_eq!(rebuilt.eval, shipped.eval);
}

#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn minilm_tokenizer_matches_bert_layout() {
    use peftspace_core::data::Tokenize;
    let (_, tokenizer) = minilm();
    let t = tokenizer
        .encode("hello world", Some("good bye"), 128)
        .expect("encodes");
    // [CLS] hello world [SEP] good bye [SEP]; no padding to 128 although the file asks for it.
    assert_eq!(t.ids.len(), 7);
    assert_eq!((t.ids[0], t.ids[3], t.ids[6]), (101, 102, 102));
    assert_eq!(t.type_ids, vec![0, 0, 0, 0, 1, 1, 1]);
    let long = "word ".repeat(300);
    let t = tokenizer
        .encode(&long, Some("short pair"), 32)
        .expect("encodes");
    assert_eq!(t.ids.len(), 32);
    assert_eq!(
        t.type_ids.iter().filter(|&&x| x == 1).count(),
        3,
        "the longer text is cut first"
    );
}

/// SICK (`../shared/data/sick`, SemEval-2014 Task 1) as a custom task: relatedness (`labels: []`, a regression scored
/// by Pearson/Spearman) or 3-way entailment. `max_train` pairs are drawn with `seed`; the dev set (495 pairs) whole.
fn sick_task(regression: bool, max_train: usize, seed: u64) -> TaskData {
    let dir = shared().join("data/sick");
    let spec = TaskSpec {
        id: if regression {
            "sick_relatedness"
        } else {
            "sick_entailment"
        }
        .into(),
        max_train: Some(max_train),
        max_eval: None,
        custom: Some(peftspace_core::spec::CustomTaskSpec {
            train: dir.join("train.tsv"),
            eval: dir.join("dev.tsv"),
            text: "sentence_A".into(),
            text_pair: Some("sentence_B".into()),
            label: if regression {
                "relatedness_score"
            } else {
                "entailment_label"
            }
            .into(),
            labels: Some(if regression {
                Vec::new()
            } else {
                vec![
                    "ENTAILMENT".into(),
                    "NEUTRAL".into(),
                    "CONTRADICTION".into(),
                ]
            }),
            kind: None,
            header: true,
            metric: None,
        }),
        generation: None,
    };
    load_task(&spec, None, Path::new("."), seed).expect("SICK loads")
}

/// Regression learns on standardised targets: SICK relatedness under the calibration protocol (LoRA r = 12 on q and
/// v, 4,000 seeded training pairs, one epoch, batch 32, lr 5e-4, 6 % warm-up, max length 128, the whole dev set),
/// averaged over seeds 0, 1 and 2. Measured (`benches/sick_anchor.sh`, BENCHMARKS.md): 0.653, 0.576, 0.564, mean
/// 0.598; PyTorch + PEFT at the same seeds 0.744, 0.698, 0.587, mean 0.676. A mean predictor scores 0 (a constant has
/// no correlation) and raw targets scored about 0.49 on this protocol, so the threshold 0.55 fails both; it is below
/// the 0.72 once aimed at, which PyTorch's own mean does not reach either.
#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn sick_relatedness_on_standardised_targets_reaches_055() {
    let (backbone, tokenizer) = minilm();
    let plan = uniform_plan(backbone.info(), "lora", 12);
    let mut scores = Vec::new();
    // `benches/sick_anchor.sh` runs one seed at a time (SICK_SEEDS="1"); the suite runs all three.
    let seeds: Vec<u64> = std::env::var("SICK_SEEDS")
        .unwrap_or_else(|_| "0 1 2".into())
        .split_whitespace()
        .map(|s| s.parse().expect("SICK_SEEDS: seeds separated by spaces"))
        .collect();
    for seed in seeds {
        let task = sick_task(true, 4_000, seed);
        assert_eq!(task.eval.len(), 495);
        let out = train_seeded(
            backbone.as_ref(),
            &tokenizer,
            &task,
            &plan,
            &[strategy("lora", 5e-4)],
            &sst2_training(5e-4),
            seed,
        );
        let (p, s) = (
            out.metrics.values["pearson"],
            out.metrics.values["spearman"],
        );
        assert!((out.metrics.primary - (p + s) / 2.0).abs() < 1e-9);
        scores.push(out.metrics.primary);
    }
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    eprintln!("SICK relatedness per seed {scores:?}, mean {mean:.4}");
    assert!(
        mean >= 0.55,
        "SICK relatedness mean over seeds 0-2: {mean} ({scores:?})"
    );
}

/// SICK's 3-way entailment as a custom classification task learns beyond its majority class (NEUTRAL, 0.568 of the
/// dev set): 2,000 seeded pairs, two epochs, LoRA r = 12 at lr 5e-3, scored on the whole dev set. A majority-class
/// predictor scores exactly the reference and fails the margin (one epoch at lr 1e-3 still predicted only NEUTRAL).
#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn sick_entailment_beats_its_majority_class() {
    let (backbone, tokenizer) = minilm();
    let plan = uniform_plan(backbone.info(), "lora", 12);
    let task = sick_task(false, 2_000, 1);
    let training = TrainingSpec {
        epochs: 2,
        ..sst2_training(5e-3)
    };
    let out = train(
        backbone.as_ref(),
        &tokenizer,
        &task,
        &plan,
        &[strategy("lora", 5e-3)],
        &training,
    );
    let reference = out.reference.as_ref().expect("reference").primary;
    assert!(
        out.metrics.primary >= reference + 0.05,
        "SICK entailment accuracy {} against the majority class's {reference}",
        out.metrics.primary
    );
}
