//! What an experiment will cost before it runs: trials, trial-epochs and examples processed per stage and in
//! total, from the experiment file and the tasks' sizes alone (no weights), and a wall time from a short measured
//! calibration on the chosen device.
//!
//! Counts follow the runner: every candidate of a stage gets `samples` designs (the stage's or the experiment's),
//! each design one trial per search task and training seed; without stages, S0 alone is sampled. A raced stage
//! trains between `min_samples` designs per candidate (one look that leaves one candidate) and `samples` (no
//! candidate dropped): both are given. Final runs train `top` designs plus the baselines on the final tasks and
//! seeds at the final epochs. Search trials train on the training set less its validation split (`validation_fraction`)
//! and are scored on that split; final runs train on the whole training set and are scored on the evaluation set.
//! A trial reads its training examples once per epoch and evaluates the whole evaluation
//! set after every epoch. Counts are upper bounds where the run can only do less: a strategy stage for a group
//! that S3 leaves untuned is skipped, and a final design that is also a stage design is not trained twice.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::data;
use crate::design::StrategyCodes;
use crate::registry::registries;
use crate::spec::{ExperimentSpec, Select, TaskSpec};
use crate::train::executor::{TrainingExecutor, Watch};
use crate::trial::TrialSpec;
use crate::{Error, Result};

/// Where a task's size came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SizeSource {
    /// Rows counted in the task's files (after the task's `max_train` / `max_eval`).
    Files,
    /// GLUE's published split sizes (the files are not here), capped by `max_train` / `max_eval`.
    KnownGlue,
    /// Neither: a custom task whose files cannot be read.
    Unknown,
}

/// Training and evaluation examples of one task as the trials see them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSize {
    pub id: String,
    pub train: usize,
    pub eval: usize,
    pub source: SizeSource,
    /// A generation task: scoring decodes, so a trial reporting its last epoch is scored only then.
    pub decodes: bool,
}

/// GLUE's train and dev split sizes as the benchmark ships them (MNLI: matched and mismatched dev sets).
pub fn known_glue_size(id: &str) -> Option<(usize, usize)> {
    let task = data::glue_task(id).ok()?;
    Some(match task.id {
        "cola" => (8_551, 1_043),
        "sst2" => (67_349, 872),
        "mrpc" => (3_668, 408),
        "qqp" => (363_846, 40_430),
        "stsb" => (5_749, 1_500),
        "mnli" => (392_702, 9_815),
        "mnli_mm" => (392_702, 9_832),
        "qnli" => (104_743, 5_463),
        "rte" => (2_490, 277),
        "wnli" => (635, 71),
        _ => return None,
    })
}

/// The size of `task`: its rows when its files can be read (GLUE under `glue_dir`, custom files relative to
/// `spec_dir`), else GLUE's published sizes, capped by the task's subsample settings.
pub fn task_size(task: &TaskSpec, glue_dir: Option<&Path>, spec_dir: &Path) -> TaskSize {
    let readable = !task.is_glue()
        || glue_dir.is_some_and(|dir| {
            data::glue_task(&task.id).is_ok_and(|g| dir.join(g.folder).join(g.train_file).is_file())
        });
    if readable {
        // The seed only picks which rows a subsample keeps, not how many.
        if let Ok(d) = data::load_task(task, glue_dir, spec_dir, 0) {
            return TaskSize {
                id: task.id.clone(),
                train: d.train.len(),
                eval: d.eval.len(),
                source: SizeSource::Files,
                decodes: task.generation.is_some(),
            };
        }
    }
    let cap = |n: usize, max: Option<usize>| max.map_or(n, |m| m.min(n));
    match (task.is_glue(), known_glue_size(&task.id)) {
        (true, Some((train, eval))) => TaskSize {
            id: task.id.clone(),
            train: cap(train, task.max_train),
            eval: cap(eval, task.max_eval),
            source: SizeSource::KnownGlue,
            decodes: false,
        },
        _ => TaskSize {
            id: task.id.clone(),
            train: 0,
            eval: 0,
            source: SizeSource::Unknown,
            decodes: task.generation.is_some(),
        },
    }
}

/// Work of a set of trials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Work {
    pub trials: u64,
    pub trial_epochs: u64,
    /// Training examples read, over every epoch of every trial.
    pub train_examples: u64,
    /// Evaluation examples scored (the evaluation set after every epoch).
    pub eval_examples: u64,
}

impl Work {
    fn add(&mut self, other: Work) {
        self.trials += other.trials;
        self.trial_epochs += other.trial_epochs;
        self.train_examples += other.train_examples;
        self.eval_examples += other.eval_examples;
    }

    pub fn examples(&self) -> u64 {
        self.train_examples + self.eval_examples
    }

    /// `designs` designs, each trained once per task of `tasks` and per seed, for `epochs` epochs, scored after
    /// `scored(task)` of them.
    fn of(
        designs: u64,
        tasks: &[TaskSize],
        seeds: u64,
        epochs: u64,
        scored: &dyn Fn(&TaskSize) -> u64,
    ) -> Work {
        let train: u64 = tasks.iter().map(|t| t.train as u64 * epochs).sum();
        let eval: u64 = tasks.iter().map(|t| t.eval as u64 * scored(t)).sum();
        Work {
            trials: designs * tasks.len() as u64 * seeds,
            trial_epochs: designs * tasks.len() as u64 * seeds * epochs,
            train_examples: designs * train * seeds,
            eval_examples: designs * eval * seeds,
        }
    }
}

/// One stage (or the final runs): its candidates and the least and most work it can take.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageCost {
    pub name: String,
    pub candidates: usize,
    /// Designs per candidate: (least, most); equal unless the stage races.
    pub designs: (usize, usize),
    pub min: Work,
    pub max: Work,
}

/// The cost of a whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComputePlan {
    /// The search tasks as a search trial sees them: training rows less the validation split, scored on that split.
    pub tasks: Vec<TaskSize>,
    pub final_tasks: Vec<TaskSize>,
    pub stages: Vec<StageCost>,
    pub final_runs: Option<StageCost>,
    pub total_min: Work,
    pub total_max: Work,
}

/// The epochs after which a trial of `task` is scored (as the trainer decides): every one, except for a generation
/// task reporting its last epoch, scored after the last epoch and after the one pruning looks at.
fn scored_epochs(task: &TaskSize, epochs: u64, select: Select, prune_epoch: Option<u64>) -> u64 {
    if !task.decodes || select == Select::Best {
        return epochs;
    }
    let pruned_before_last = prune_epoch.is_some_and(|e| e >= 1 && e < epochs);
    epochs.min(1 + u64::from(pruned_before_last))
}

/// Counts the experiment's work from its spec and the sizes of its search tasks and final tasks (in the order the
/// spec names them).
pub fn compute_plan(
    spec: &ExperimentSpec,
    tasks: Vec<TaskSize>,
    final_tasks: Vec<TaskSize>,
) -> ComputePlan {
    let seeds = spec.seeds.len() as u64;
    let epochs = spec.training.epochs as u64;
    // Search trials train on the training set less its validation split and are scored on that split.
    // With `validation: (rows: N)` they train on the whole subset and are scored on N spare rows outside it.
    let search_tasks: Vec<TaskSize> = tasks
        .iter()
        .map(|t| match spec.validation {
            Some(v) => TaskSize {
                eval: v.rows,
                ..t.clone()
            },
            None => {
                let held = data::validation_rows(t.train, spec.validation_fraction);
                TaskSize {
                    train: t.train.saturating_sub(held),
                    eval: held,
                    ..t.clone()
                }
            }
        })
        .collect();
    let stage_list: Vec<(String, usize, usize)> = if spec.stages.is_empty() {
        vec![("S0".into(), 1, spec.samples)]
    } else {
        spec.stages
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.candidates.len(),
                    s.samples.unwrap_or(spec.samples),
                )
            })
            .collect()
    };
    let prune_epoch = spec.training.prune.map(|p| p.after_epoch as u64);
    let search_scored = |t: &TaskSize| scored_epochs(t, epochs, spec.training.select, prune_epoch);
    let mut total_min = Work::default();
    let mut total_max = Work::default();
    let mut stages = Vec::new();
    for (name, candidates, samples) in stage_list {
        let least = spec
            .race
            .map_or(samples, |r| r.min_samples.clamp(1, samples.max(1)));
        let cost = StageCost {
            min: Work::of(
                (candidates * least) as u64,
                &search_tasks,
                seeds,
                epochs,
                &search_scored,
            ),
            max: Work::of(
                (candidates * samples) as u64,
                &search_tasks,
                seeds,
                epochs,
                &search_scored,
            ),
            name,
            candidates,
            designs: (least, samples),
        };
        total_min.add(cost.min);
        total_max.add(cost.max);
        stages.push(cost);
    }
    let final_runs = spec.final_runs.as_ref().map(|f| {
        let methods = f.top + f.baselines.len();
        let epochs = f.epochs.unwrap_or(spec.training.epochs) as u64;
        let seeds = f.seeds_after(&spec.seeds).len() as u64;
        // Final runs are never pruned.
        let scored = |t: &TaskSize| scored_epochs(t, epochs, spec.training.select, None);
        let work = Work::of(methods as u64, &final_tasks, seeds, epochs, &scored);
        StageCost {
            name: "final".into(),
            candidates: methods,
            designs: (1, 1),
            min: work,
            max: work,
        }
    });
    if let Some(f) = &final_runs {
        total_min.add(f.min);
        total_max.add(f.max);
    }
    ComputePlan {
        tasks: search_tasks,
        final_tasks,
        stages,
        final_runs,
        total_min,
        total_max,
    }
}

/// Seconds per example measured on the device: a training example (forward, backward, update) and an evaluation
/// example (forward only).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Calibration {
    pub train_seconds: f64,
    pub eval_seconds: f64,
    /// A trial's fixed cost (building the design and its optimizer, tokenising, the loops' set-up): the short
    /// calibration trial's time less its examples'. Leaving it out made small runs' estimates a third of the
    /// measured time.
    pub trial_seconds: f64,
}

/// The estimate's stated range: from half to one and a half times the point estimate. A calibration measures a
/// handful of short trials; a run's trials differ in design (prefix rows, adapters), in length and in the load
/// beside them, which moves a run's time by tens of percent (measured: `tests/real/refine_real_data.rs`).
pub const ESTIMATE_RANGE: (f64, f64) = (0.5, 1.5);

/// Batches trained by the short and the long calibration trial: the difference isolates the cost of a batch from
/// the fixed cost of a trial (building the design, the first evaluation's set-up).
const SHORT_BATCHES: usize = 2;
const LONG_BATCHES: usize = 6;
/// Evaluation batches of the eval-only comparison.
const EVAL_BATCHES: usize = 4;

impl ComputePlan {
    /// Wall time of (least, most) work at the calibrated rates, one trial at a time, each trial's fixed cost
    /// included.
    pub fn seconds(&self, calibration: &Calibration) -> (f64, f64) {
        let time = |w: &Work| {
            w.train_examples as f64 * calibration.train_seconds
                + w.eval_examples as f64 * calibration.eval_seconds
                + w.trials as f64 * calibration.trial_seconds
        };
        (time(&self.total_min), time(&self.total_max))
    }
}

/// Measures training and evaluation speed on the executor's device with the experiment's settings: one-epoch trials
/// of the first strategy as a one-group baseline on the first search task, differing in how many training batches
/// and evaluation examples they have (after one untimed warm-up trial that loads the backbone), each timed twice.
/// The rate of a training example is the time difference per added training example, that of an evaluation
/// example likewise, so a trial's fixed costs cancel.
pub fn calibrate(spec: &ExperimentSpec, executor: &TrainingExecutor) -> Result<Calibration> {
    let task = spec
        .tasks
        .first()
        .ok_or_else(|| Error::msg("the experiment has no task to calibrate on"))?;
    let codes = StrategyCodes::from_registries(&registries()?);
    let batch = spec.training.batch_size.max(1);
    let time = |design: &str, train_batches: usize, eval: usize| -> Result<f64> {
        let mut training = spec.training.clone();
        training.epochs = 1;
        let subset = TaskSpec {
            max_train: Some(train_batches * batch),
            max_eval: Some(eval),
            ..task.clone()
        };
        // Evaluation is timed on training rows outside the subset, like the validation rows most trials (the
        // search's) are scored on: a task's dev examples may be much longer than its training rows (SST-2's are
        // whole sentences, its training rows mostly phrases). A task with no rows to spare is timed on its dev set.
        let mut elapsed = None;
        for split in [
            crate::trial::Split::SpareRows {
                rows: eval,
                seed: 1,
            },
            crate::trial::Split::Dev,
        ] {
            let trial = TrialSpec::new(
                design,
                &subset,
                spec.seeds.first().copied().unwrap_or(1),
                &training,
                spec.budget,
                &spec.strategies,
                "calibration",
                "calibration",
                split,
            )?;
            let started = Instant::now();
            let watch = Watch {
                progress: false,
                on_epoch: None,
            };
            match executor.train(&trial, watch) {
                Ok(_) => {
                    elapsed = Some(started.elapsed().as_secs_f64());
                    break;
                }
                Err(e) if split.is_dev() => return Err(e),
                Err(_) => {}
            }
        }
        elapsed.ok_or_else(|| Error::msg("internal: calibration timed nothing"))
    };
    // The first strategy whose one-group baseline fits the budget (a small model may not fit every strategy).
    let mut found: Option<String> = None;
    let mut last_error = Error::msg("the experiment has no strategy to calibrate with");
    for strategy in &spec.strategies {
        let design = executor.baseline(&strategy.name)?.to_text(&codes)?;
        match time(&design, 1, 1) {
            Ok(_) => {
                found = Some(design);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let design = found.ok_or(last_error)?;
    // The faster of two runs: on a shared machine a slow run measures the neighbours, not the trial.
    let best = |train_batches: usize, eval: usize| -> Result<f64> {
        Ok(time(&design, train_batches, eval)?.min(time(&design, train_batches, eval)?))
    };
    let short = best(SHORT_BATCHES, 1)?;
    let long = best(LONG_BATCHES, 1)?;
    let long_eval = best(LONG_BATCHES, 1 + EVAL_BATCHES * batch)?;
    let train_seconds = ((long - short) / ((LONG_BATCHES - SHORT_BATCHES) * batch) as f64).max(0.0);
    let eval_seconds = ((long_eval - long) / (EVAL_BATCHES * batch) as f64).max(0.0);
    let trial_seconds =
        (short - (SHORT_BATCHES * batch) as f64 * train_seconds - eval_seconds).max(0.0);
    Ok(Calibration {
        train_seconds,
        eval_seconds,
        trial_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(pairs: &[(usize, usize)]) -> Vec<TaskSize> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, &(train, eval))| TaskSize {
                id: format!("t{i}"),
                train,
                eval,
                source: SizeSource::Files,
                decodes: false,
            })
            .collect()
    }

    fn spec(extra: &str) -> ExperimentSpec {
        ron::from_str(&format!(
            r#"ExperimentSpec(name: "c", backbone: (), tasks: [(id: "sst2"), (id: "rte")], seeds: [1, 2],
                training: (epochs: 3), samples: 20, {extra})"#
        ))
        .expect("parses")
    }

    #[test]
    fn a_generation_task_reporting_its_last_epoch_is_decoded_once_per_trial() {
        let decoding = |pairs: &[(usize, usize)]| -> Vec<TaskSize> {
            sizes(pairs)
                .into_iter()
                .map(|t| TaskSize { decodes: true, ..t })
                .collect()
        };
        let stages = r#"stages: [(name: "S1", dimension: Grouping, candidates: ["uniform"])],
               final_runs: Some((top: 1, seeds: Some([3]), epochs: Some(4), baselines: []))"#;
        let count = |training: &str| {
            let spec: ExperimentSpec = ron::from_str(&format!(
                r#"ExperimentSpec(name: "c", backbone: (), tasks: [(id: "sst2")], seeds: [1, 2],
                    training: (epochs: 3, {training}), samples: 20, {stages})"#
            ))
            .expect("parses");
            let plan = compute_plan(&spec, decoding(&[(100, 10)]), decoding(&[(100, 10)]));
            let f = plan.final_runs.expect("final runs").max;
            (plan.stages[0].max.eval_examples, f.eval_examples)
        };
        // 20 designs × 2 seeds × 10 held-out rows, once (select Last), twice with pruning after epoch 1, after every
        // one of 3 epochs with select Best; final runs: 1 method × 1 seed × 10 dev rows, never pruned.
        assert_eq!(count(""), (400, 10));
        assert_eq!(
            count("prune: Some((after_epoch: 1, below: Score(0.1)))"),
            (800, 10)
        );
        assert_eq!(count("select: Best"), (1200, 40));
    }

    #[test]
    fn stages_multiply_candidates_designs_tasks_seeds_and_epochs() {
        let spec = spec(
            r#"stages: [(name: "S1", dimension: Grouping, candidates: ["uniform", "spindle", "increasing"]),
                        (name: "S2", dimension: Allocation, candidates: ["uniform", "increasing"], samples: Some(5))],
               final_runs: Some((top: 2, seeds: Some([3, 4, 5]), epochs: Some(10), baselines: ["lora"]))"#,
        );
        let plan = compute_plan(
            &spec,
            sizes(&[(100, 10), (50, 5)]),
            sizes(&[(100, 10), (50, 5)]),
        );
        let s1 = &plan.stages[0];
        // 3 candidates × 20 designs × 2 tasks × 2 seeds.
        assert_eq!(s1.max.trials, 240);
        assert_eq!(s1.max.trial_epochs, 720);
        // Search trials hold out 10 % of each training set (10 and 5 rows) and are scored on it. Per design:
        // (90 + 45) × 2 seeds × 3 epochs training examples, (10 + 5) × 2 × 3 evaluated.
        assert_eq!(s1.max.train_examples, 60 * 810);
        assert_eq!(s1.max.eval_examples, 60 * 90);
        assert_eq!(plan.stages[1].max.trials, 2 * 5 * 2 * 2);
        let f = plan.final_runs.as_ref().expect("final runs");
        // (2 best + 1 baseline) × 2 tasks × 3 seeds, 10 epochs each, on the whole training sets and the dev sets.
        assert_eq!((f.max.trials, f.max.trial_epochs), (18, 180));
        assert_eq!(f.max.train_examples, 3 * 150 * 3 * 10);
        assert_eq!(f.max.eval_examples, 3 * 15 * 3 * 10);
        assert_eq!(plan.total_max.trials, 240 + 40 + 18);
        assert_eq!(plan.total_min, plan.total_max);
    }

    #[test]
    fn a_race_gives_the_least_and_the_most_and_no_stages_mean_s0() {
        let raced = spec(
            r#"race: Some((min_samples: 4, batch: 2)),
               stages: [(name: "S1", dimension: Grouping, candidates: ["uniform", "spindle"])]"#,
        );
        let plan = compute_plan(&raced, sizes(&[(10, 1), (10, 1)]), Vec::new());
        assert_eq!(plan.stages[0].designs, (4, 20));
        assert_eq!(plan.total_min.trials, 2 * 4 * 4);
        assert_eq!(plan.total_max.trials, 2 * 20 * 4);
        let s0 = compute_plan(&spec(""), sizes(&[(10, 1), (10, 1)]), Vec::new());
        assert_eq!(s0.stages[0].name, "S0");
        assert_eq!(s0.total_max.trials, 20 * 4);
    }

    #[test]
    fn calibrated_seconds_weigh_training_and_evaluation() {
        let plan = compute_plan(&spec(""), sizes(&[(10, 2), (10, 2)]), Vec::new());
        let (least, most) = plan.seconds(&Calibration {
            train_seconds: 0.5,
            eval_seconds: 0.25,
            trial_seconds: 2.0,
        });
        // 20 designs × 2 seeds × 3 epochs × (18 training × 0.5 s + 2 evaluated × 0.25 s): each task's search trials
        // train on 9 of its 10 training rows and are scored on the tenth; plus 2 s for each of the 80 trials.
        assert_eq!(least, most);
        assert!((most - (120.0 * 9.5 + 80.0 * 2.0)).abs() < 1e-9);
    }

    #[test]
    fn glue_sizes_cap_at_the_subsample_and_custom_without_files_is_unknown() {
        let dir = std::path::Path::new("/nonexistent");
        let task: TaskSpec = ron::from_str(r#"(id: "rte", max_train: Some(1000))"#).expect("task");
        let size = task_size(&task, None, dir);
        assert_eq!(
            (size.train, size.eval, size.source),
            (1000, 277, SizeSource::KnownGlue)
        );
        let custom: TaskSpec = ron::from_str(
            r#"(id: "mine", custom: Some((train: "no.tsv", eval: "no.tsv", text: "t", label: "l", labels: Some(["a"]))))"#,
        )
        .expect("task");
        assert_eq!(task_size(&custom, None, dir).source, SizeSource::Unknown);
    }
}
