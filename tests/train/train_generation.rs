//! Training on generation tasks through the tiny T5/BART language-model fixtures: the token cross-entropy equals
//! transformers' loss, a PEFT design trains and is scored by decoding, and a population of designs reports each
//! design exactly as trained alone.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use peftspace_core::backbone::{Backbone, Batch, Mode, Weights};
use peftspace_core::budget::LayerAssignment;
use peftspace_core::data::{Example, TaskData, TaskKind};
use peftspace_core::hooks::NoHooks;
use peftspace_core::model::{ModelFolder, Tokenizer};
use peftspace_core::registry::registries;
use peftspace_core::spec::{Select, TrainingSpec};
use peftspace_core::train::{
    run_population, run_trial, token_cross_entropy, uniform_plan, TargetLabels, TrainingReport,
    TrialInput,
};
use peftspace_core::trial::TrialStatus;

// The built-in strategies, evaluators and backbones register through `inventory`: name the crates so they are linked.
use peftspace_backbones as _;
use peftspace_plugins as _;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The frozen model and tokenizer of a fixture folder.
fn open(dir: impl AsRef<Path>) -> (Box<dyn Backbone>, Tokenizer) {
    let folder = ModelFolder::open(dir.as_ref()).expect("fixture opens");
    let backbone = folder
        .load(
            &registries().expect("registries"),
            &Device::Cpu,
            Weights::Frozen,
        )
        .expect("fixture loads");
    (backbone, folder.tokenizer().expect("tokenizer"))
}

/// transformers' mean token cross-entropy (padding as -100 left out), plain and with label smoothing 0.1, equals
/// ours on our logits for the same batch.
#[test]
fn the_token_loss_equals_transformers_loss() {
    for name in ["t5-tiny-relu", "t5-tiny-gated", "bart-tiny"] {
        let dir = fixture("lm").join(name);
        let (backbone, _) = open(&dir);
        let lm = backbone.language_model().expect("a language model");
        let reference =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
                .expect("reference");
        let u32_of = |key: &str| reference[key].to_dtype(DType::U32).expect(key);
        let batch = Batch {
            input_ids: u32_of("input_ids"),
            attention_mask: u32_of("attention_mask"),
            token_type_ids: None,
            decoder_input_ids: Some(u32_of("decoder_input_ids")),
        };
        let logits = lm.logits(&batch, &NoHooks, Mode::Eval).expect("logits");
        // -100 marks padding in transformers' labels; any id works there since the mask leaves it out.
        let raw = reference["labels"].to_dtype(DType::F32).unwrap();
        let mask = raw.ge(0f32).unwrap().to_dtype(DType::U32).unwrap();
        let ids = raw
            .clamp(0f32, f32::MAX)
            .unwrap()
            .to_dtype(DType::U32)
            .unwrap();
        let labels = TargetLabels { ids, mask };
        for (smoothing, key) in [(0.0, "loss"), (0.1, "loss_smoothed")] {
            let ours = token_cross_entropy(&logits, &labels, smoothing)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let theirs = reference[key].to_vec1::<f32>().unwrap()[0];
            assert!(
                (ours - theirs).abs() < 1e-4 * theirs.abs().max(1.0),
                "{name} {key}: ours {ours}, transformers {theirs}"
            );
        }
    }
}

/// A word-reversal task in the tiny models' vocabulary (`w0` … `w39`).
fn reversal_task(train: usize, eval: usize) -> TaskData {
    let example = |i: usize| {
        let words: Vec<String> = (0..3)
            .map(|j| format!("w{}", (i * 7 + j * 3) % 40))
            .collect();
        let reversed: Vec<String> = words.iter().rev().cloned().collect();
        Example {
            text: words.join(" "),
            pair: None,
            label: 0.0,
            target: Some(reversed.join(" ")),
        }
    };
    TaskData {
        id: "reverse".into(),
        kind: TaskKind::Generation {
            max_source_tokens: None,
            max_target_tokens: 6,
            decoding: Default::default(),
        },
        evaluator: "rouge".into(),
        train: (0..train).map(example).collect(),
        eval: (train..train + eval).map(example).collect(),
        sources: Vec::new(),
    }
}

fn training() -> TrainingSpec {
    TrainingSpec {
        epochs: 4,
        batch_size: 8,
        learning_rate: 2e-2,
        max_seq_len: 16,
        eval_batch_size: 4,
        label_smoothing: 0.1,
        // Every epoch scored, for the learning curve (with `Last` only the last epoch would be).
        select: Select::Best,
        ..TrainingSpec::default()
    }
}

fn designs(backbone: &dyn Backbone) -> Vec<Vec<LayerAssignment>> {
    let info = backbone.info();
    vec![
        uniform_plan(info, "lora", 2),
        uniform_plan(info, "adapter", 4),
    ]
}

/// A PEFT design trains on a generation task: the loss falls, the design is scored by decoding (ROUGE), and the
/// reference (copying the source) is reported beside it.
#[test]
fn a_design_trains_on_a_generation_task_and_is_scored_by_decoding() {
    for name in ["t5-tiny-relu", "bart-tiny"] {
        let (backbone, tokenizer) = open(fixture("lm").join(name));
        let task = reversal_task(48, 8);
        let training = training();
        for plan in designs(backbone.as_ref()) {
            let report = run_trial(&TrialInput {
                backbone: backbone.as_ref(),
                tokenizer: &tokenizer,
                task: &task,
                plan: &plan,
                strategies: &[],
                training: &training,
                seed: 3,
                progress: false,
                on_epoch: None,
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(report.status, TrialStatus::Ok, "{name}");
            assert_eq!(report.per_epoch.len(), 4);
            assert_eq!(report.head_params, 0, "no task head on a generation task");
            let metrics = &report.metrics.values;
            for key in ["rouge1", "rouge2", "rougeL", "rougeLsum"] {
                assert!(metrics.contains_key(key), "{name}: {metrics:?}");
            }
            let (first, last) = (
                report.per_epoch[0].train_loss,
                report.per_epoch[3].train_loss,
            );
            assert!(
                last < first,
                "{name}: the loss should fall: {first} → {last}"
            );
            assert!(report.reference.is_some(), "{name}: the copy reference");
        }
    }
}

fn same(a: &TrainingReport, b: &TrainingReport) -> bool {
    a.status == b.status
        && a.metrics == b.metrics
        && a.per_epoch.len() == b.per_epoch.len()
        && a.per_epoch
            .iter()
            .zip(&b.per_epoch)
            .all(|(x, y)| (x.train_loss - y.train_loss).abs() <= 1e-5 * x.train_loss.abs().max(1.0))
}

/// Two designs trained together (stacked batches, population hooks, stacked decoding) report what each reports
/// alone.
#[test]
fn a_population_on_a_generation_task_equals_its_designs_alone() {
    let (backbone, tokenizer) = open(fixture("lm").join("t5-tiny-gated"));
    // Beam search with an n-gram ban in evaluation, as a task's `decoding` asks.
    let mut task = reversal_task(32, 6);
    if let TaskKind::Generation { decoding, .. } = &mut task.kind {
        decoding.num_beams = 2;
        decoding.no_repeat_ngram_size = 2;
    }
    let training = training();
    let plans = designs(backbone.as_ref());
    fn input<'a>(
        backbone: &'a dyn peftspace_core::backbone::Backbone,
        tokenizer: &'a Tokenizer,
        task: &'a TaskData,
        plan: &'a [LayerAssignment],
        training: &'a TrainingSpec,
    ) -> TrialInput<'a> {
        TrialInput {
            backbone,
            tokenizer,
            task,
            plan,
            strategies: &[],
            training,
            seed: 5,
            progress: false,
            on_epoch: None,
        }
    }
    let inputs: Vec<TrialInput<'_>> = plans
        .iter()
        .map(|p| input(backbone.as_ref(), &tokenizer, &task, p, &training))
        .collect();
    let together = run_population(&inputs).expect("population runs");
    for (plan, report) in plans.iter().zip(together) {
        let report = report.expect("member report");
        let alone = run_trial(&input(
            backbone.as_ref(),
            &tokenizer,
            &task,
            plan,
            &training,
        ))
        .expect("trial runs");
        assert!(
            same(&report, &alone),
            "together {report:?}\nalone {alone:?}"
        );
    }
}

#[test]
fn a_generation_task_needs_a_language_model() {
    let (backbone, tokenizer) = open(fixture("tiny-bert"));
    let task = reversal_task(8, 2);
    let plan = uniform_plan(backbone.info(), "lora", 2);
    let err = run_trial(&TrialInput {
        backbone: backbone.as_ref(),
        tokenizer: &tokenizer,
        task: &task,
        plan: &plan,
        strategies: &[],
        training: &training(),
        seed: 1,
        progress: false,
        on_epoch: None,
    })
    .err()
    .expect("refused");
    assert!(err.to_string().contains("no language-model head"), "{err}");
}

/// Reversal pairs of two to four distinct words drawn with `seed`: the reversed text never equals its source.
fn reversal_pairs(count: usize, seed: u64) -> Vec<Example> {
    use rand::seq::IndexedRandom;
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let all: Vec<usize> = (0..40).collect();
    (0..count)
        .map(|_| {
            let length = rng.random_range(2..=4);
            let words: Vec<String> = all
                .choose_multiple(&mut rng, length)
                .map(|w| format!("w{w}"))
                .collect();
            let reversed: Vec<String> = words.iter().rev().cloned().collect();
            Example {
                text: words.join(" "),
                pair: None,
                label: 0.0,
                target: Some(reversed.join(" ")),
            }
        })
        .collect()
}

/// The acceptance test of learning on a generation task. `lm/t5-copy` is a small T5 trained (all weights) to copy
/// word sequences, standing in for a pretrained model; it reverses none of the evaluation sources (exact match 0:
/// the copy reference). LoRA of rank 8 on every projection of both stacks (self- and cross-attention, FFN), about
/// 40 % of the model's size, then learns to reverse them in 315 steps (1 000 pairs, 5 epochs; 0.90 to 0.96 with
/// seeds 1, 2, 3 and 7): the decoder must attend to the source positions in the opposite order, and
/// cross-attention's query, key and value projections carry exactly that. Copying the source, or any constant
/// output, scores 0.
#[test]
fn a_copy_model_learns_to_reverse_words_through_lora() {
    let (backbone, tokenizer) = open(fixture("lm").join("t5-copy"));
    let task = TaskData {
        id: "reverse".into(),
        kind: TaskKind::Generation {
            max_source_tokens: None,
            max_target_tokens: 6,
            decoding: Default::default(),
        },
        evaluator: "exact_match".into(),
        train: reversal_pairs(1000, 1),
        eval: reversal_pairs(100, 2),
        sources: Vec::new(),
    };
    let training = TrainingSpec {
        epochs: 5,
        batch_size: 16,
        learning_rate: 1e-2,
        max_seq_len: 16,
        eval_batch_size: 50,
        ..TrainingSpec::default()
    };
    let strategies = vec![peftspace_core::spec::StrategySpec {
        name: "lora".into(),
        options: ron::from_str(
            r#"(targets: ["q", "k", "v", "o", "cq", "ck", "cv", "co", "ffn_in", "ffn_out"])"#,
        )
        .expect("options"),
        learning_rate: None,
    }];
    let plan = uniform_plan(backbone.info(), "lora", 8);
    let report = run_trial(&TrialInput {
        backbone: backbone.as_ref(),
        tokenizer: &tokenizer,
        task: &task,
        plan: &plan,
        strategies: &strategies,
        training: &training,
        seed: 7,
        progress: false,
        on_epoch: None,
    })
    .expect("trial runs");
    assert_eq!(report.status, TrialStatus::Ok);
    let reference = report.reference.as_ref().expect("reference").primary;
    assert_eq!(reference, 0.0, "copying never reverses distinct words");
    let scores: Vec<f64> = report.per_epoch.iter().map(|e| e.metrics.primary).collect();
    eprintln!("exact match per epoch: {scores:?}");
    assert!(
        report.metrics.primary > 0.8,
        "exact match after 315 steps: {scores:?}, losses {:?}",
        report
            .per_epoch
            .iter()
            .map(|e| e.train_loss)
            .collect::<Vec<_>>()
    );
    assert!(
        report.trainable_params * 2 < backbone.info().num_params,
        "the design is a fraction of the model"
    );
}

/// With `select: Last` a generation trial decodes only after its last epoch (scoring is decoding, the expensive
/// part); its report equals the last epoch of the same trial scored after every epoch.
#[test]
fn reporting_the_last_epoch_decodes_only_after_it() {
    let (backbone, tokenizer) = open(fixture("lm").join("t5-tiny-relu"));
    let task = reversal_task(24, 6);
    let plan = uniform_plan(backbone.info(), "lora", 2);
    let run = |training: &TrainingSpec| {
        run_trial(&TrialInput {
            backbone: backbone.as_ref(),
            tokenizer: &tokenizer,
            task: &task,
            plan: &plan,
            strategies: &[],
            training,
            seed: 2,
            progress: false,
            on_epoch: None,
        })
        .expect("trial runs")
    };
    let every = run(&TrainingSpec {
        epochs: 3,
        ..training()
    });
    let last = run(&TrainingSpec {
        epochs: 3,
        select: Select::Last,
        ..training()
    });
    assert_eq!(every.per_epoch.len(), 3);
    assert_eq!(last.per_epoch.len(), 1);
    assert_eq!(last.per_epoch[0].epoch, 3);
    assert_eq!(last.selected_epoch, Some(3));
    assert_eq!(last.per_epoch[0].metrics, every.per_epoch[2].metrics);
    assert_eq!(last.per_epoch[0].train_loss, every.per_epoch[2].train_loss);
    assert_eq!(last.metrics, every.per_epoch[2].metrics);
}
