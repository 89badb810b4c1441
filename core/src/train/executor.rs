//! The trial executor that really trains: one model folder, its frozen backbone loaded once per process (on the
//! device it was given), task data loaded once per task, and [`run_trial`] for each trial. The full fine-tuning
//! baseline loads its own trainable copy of the backbone for each trial (the optimiser changes those weights in
//! place).
//!
//! A design's text is parsed and solved by the budget solver into per-layer strategy sizes, exactly as the sampler
//! solved it when it drew the design. `peftspace train` and `peftspace run` both train through this type.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::Device;

use super::{
    build_design, run_population, run_trial_with, EpochReport, TrainedTrial, TrainingReport,
    TrialExtras, TrialInput,
};
use crate::backbone::{Backbone, Weights};
use crate::budget::{self, BudgetPlan, LayerAssignment, Strategies};
use crate::data::{self, TaskData};
use crate::design::{Design, StrategyCodes};
use crate::experiment::Experiment;
use crate::hooks::LayerHooks;
use crate::model::{ModelFolder, Tokenizer};
use crate::params::ParamStore;
use crate::registry::{registries, Registries};
use crate::shapes::{AttentionKind, BackboneInfo};
use crate::spec::{StrategySpec, TaskSpec};
use crate::trial::{hex_sha256, Split, TrialExecutor, TrialOutcome, TrialSpec};
use crate::{Error, Result};

/// How a trial is watched while it trains (the command line draws a bar and prints each epoch; the runner does
/// neither).
#[derive(Default, Clone, Copy)]
pub struct Watch<'a> {
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Called after each epoch's evaluation.
    pub on_epoch: Option<&'a (dyn Fn(&EpochReport) + Sync)>,
}

/// Trains trials of one experiment on one model folder and device.
pub struct TrainingExecutor {
    model: ModelFolder,
    device: Device,
    data_dir: Option<PathBuf>,
    spec_dir: PathBuf,
    /// Seed of the data subsamples (the experiment's root seed), so every trial of a task sees the same examples.
    data_seed: u64,
    registries: Registries,
    info: BackboneInfo,
    strategy_specs: Vec<StrategySpec>,
    codes: StrategyCodes,
    /// The frozen backbone, loaded on first use (never for full fine-tuning alone).
    frozen: Mutex<Option<Arc<dyn Backbone>>>,
    tokenizer: OnceLock<Arc<Tokenizer>>,
    tasks: Mutex<HashMap<String, Arc<TaskData>>>,
    identity: OnceLock<String>,
}

impl TrainingExecutor {
    /// An executor for `experiment` on `model` (resolved by [`crate::resolve::Resolver`]), reading GLUE tasks from
    /// `data_dir` and training on `device`. Nothing heavy happens until the first trial.
    pub fn new(
        experiment: &Experiment,
        model: ModelFolder,
        data_dir: Option<PathBuf>,
        device: Device,
    ) -> Result<Self> {
        let registries = registries()?;
        let info = model.describe(&registries)?;
        // Options are checked here, with the experiment file's place, rather than at the first trial; so is a
        // generation task on a model without a decoder.
        experiment.strategies(&registries)?;
        experiment.check_backbone(&info)?;
        Ok(TrainingExecutor {
            data_dir,
            spec_dir: experiment.base_dir(),
            data_seed: experiment.spec.seed,
            strategy_specs: experiment.spec.strategies.clone(),
            codes: StrategyCodes::from_registries(&registries),
            registries,
            info,
            model,
            device,
            frozen: Mutex::new(None),
            tokenizer: OnceLock::new(),
            tasks: Mutex::new(HashMap::new()),
            identity: OnceLock::new(),
        })
    }

    /// The model folder the executor trains on.
    pub fn model(&self) -> &ModelFolder {
        &self.model
    }

    /// The backbone's layers and parameter count (from `config.json`).
    pub fn info(&self) -> &BackboneInfo {
        &self.info
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The design a trial's text stands for: parsed, or a one-strategy baseline's text (see [`Self::baseline`]).
    pub fn design(&self, text: &str) -> Result<Design> {
        Design::parse(text, &self.codes)
    }

    /// One strategy in every layer, in one group: the baseline `peftspace train --baseline NAME` trains. The
    /// strategy need not be one of the experiment's (it then gets its default options).
    pub fn baseline(&self, strategy: &str) -> Result<Design> {
        self.registries.strategy_entry(strategy)?;
        Ok(Design {
            group_sizes: vec![self.info.num_layers()],
            shares: vec![1.0],
            tuned: vec![true],
            strategies: vec![BTreeSet::from([strategy.to_string()])],
        })
    }

    /// The design's exact per-layer sizes at `fraction` of the backbone's parameters. `checked`: refuse a design
    /// whose sizes miss the budget by more than the solver's tolerance (a sampled design always meets it; a
    /// baseline may not, BitFit's size being fixed, and is then reported at the size it has).
    pub fn solve(&self, design: &Design, fraction: f64, checked: bool) -> Result<BudgetPlan> {
        let strategies = self.strategies_for(design)?;
        if checked {
            budget::solve(&self.info, design, &strategies, fraction)
        } else {
            budget::solve_unchecked(&self.info, design, &strategies, fraction)
        }
    }

    /// The strategies a design names, built with the experiment's options (defaults for those it does not list).
    fn strategies_for(&self, design: &Design) -> Result<Strategies> {
        let mut out = Strategies::new();
        for name in design.strategies.iter().flatten() {
            if out.contains_key(name) {
                continue;
            }
            let options = self
                .strategy_specs
                .iter()
                .find(|s| &s.name == name)
                .map_or(ron::Value::Unit, |s| s.options.clone());
            out.insert(name.clone(), self.registries.strategy(name, &options)?);
        }
        Ok(out)
    }

    /// Short code of a strategy name, for printing plans.
    pub fn code(&self, name: &str) -> String {
        self.codes
            .code(name)
            .map(str::to_string)
            .unwrap_or_else(|_| name.to_string())
    }

    /// The experiment file's folder (relative task paths are read from it) and the GLUE folder, if any.
    pub fn data_location(&self) -> (&std::path::Path, Option<&std::path::Path>) {
        (&self.spec_dir, self.data_dir.as_deref())
    }

    /// Subsample tasks with `seed` instead of the experiment's root seed (`peftspace train` ties the subsample
    /// to its training seed).
    pub fn with_data_seed(mut self, seed: u64) -> Self {
        self.data_seed = seed;
        self
    }

    /// The frozen backbone, loaded on first use and shared by every PEFT trial.
    pub fn frozen(&self) -> Result<Arc<dyn Backbone>> {
        let mut slot = self
            .frozen
            .lock()
            .map_err(|_| Error::msg("backbone lock poisoned"))?;
        if let Some(backbone) = slot.as_ref() {
            return Ok(backbone.clone());
        }
        let backbone: Arc<dyn Backbone> = Arc::from(self.model.load(
            &self.registries,
            &self.device,
            Weights::Frozen,
        )?);
        *slot = Some(backbone.clone());
        Ok(backbone)
    }

    /// The model folder's tokenizer, read once.
    pub fn tokenizer(&self) -> Result<Arc<Tokenizer>> {
        if let Some(t) = self.tokenizer.get() {
            return Ok(t.clone());
        }
        let loaded = Arc::new(self.model.tokenizer()?);
        Ok(self.tokenizer.get_or_init(|| loaded).clone())
    }

    /// A task's examples after subsampling, read once per task.
    pub fn task(&self, task: &TaskSpec) -> Result<Arc<TaskData>> {
        let key = serde_json::to_string(task)
            .map_err(|e| Error::msg(format!("task {}: {e}", task.id)))?;
        let mut tasks = self
            .tasks
            .lock()
            .map_err(|_| Error::msg("task cache lock poisoned"))?;
        if let Some(t) = tasks.get(&key) {
            return Ok(t.clone());
        }
        let loaded = Arc::new(data::load_task(
            task,
            self.data_dir.as_deref(),
            &self.spec_dir,
            self.data_seed,
        )?);
        tasks.insert(key, loaded.clone());
        Ok(loaded)
    }

    /// A task's examples as a trial on `split` sees them: [`Self::task`] itself for the dev split, or its training
    /// set cut into a training and a validation part ([`TaskData::hold_out`]).
    pub fn task_on(&self, task: &TaskSpec, split: Split) -> Result<Arc<TaskData>> {
        let data = self.task(task)?;
        match split {
            Split::Dev => Ok(data),
            Split::Validation { fraction, seed } => Ok(Arc::new(data.hold_out(fraction, seed)?)),
            Split::SpareRows { rows, seed } => {
                // The whole training set (the subset `data` is, and the rows outside it), read once.
                let whole = self.task(&TaskSpec {
                    max_train: None,
                    ..task.clone()
                })?;
                Ok(Arc::new(data::TaskData::spare_validation(
                    &whole,
                    task.max_train,
                    self.data_seed,
                    rows,
                    seed,
                )?))
            }
        }
    }

    /// Trains one trial and reports every epoch. No tolerance check on the design's budget here: a sampled design
    /// passed it when it was drawn (the solver is deterministic, so the sizes are the same), and a baseline may
    /// miss the budget by construction.
    pub fn train(&self, trial: &TrialSpec, watch: Watch<'_>) -> Result<TrainingReport> {
        Ok(self
            .train_with(trial, None, TrialExtras::default(), watch)?
            .0
            .report)
    }

    /// [`Self::train`] with a given per-layer plan instead of the one solved from the trial's design (an imported
    /// adapter's plan) and [`TrialExtras`]; also returns the plan trained.
    pub fn train_with(
        &self,
        trial: &TrialSpec,
        plan: Option<&[LayerAssignment]>,
        extras: TrialExtras<'_>,
        watch: Watch<'_>,
    ) -> Result<(TrainedTrial, Vec<LayerAssignment>)> {
        let tokenizer = self.tokenizer()?;
        let task = self.task_on(&trial.task, trial.split)?;
        let (backbone, plan): (Arc<dyn Backbone>, _) = if trial.is_full_fine_tuning() {
            let fresh = self
                .model
                .load(&self.registries, &self.device, Weights::Trainable)?;
            (Arc::from(fresh), Vec::new())
        } else if let Some(plan) = plan {
            (self.frozen()?, plan.to_vec())
        } else {
            let design = self.design(&trial.design)?;
            let plan = self.solve(&design, trial.budget, false)?;
            (self.frozen()?, plan.layer_assignments())
        };
        let trained = run_trial_with(
            &TrialInput {
                backbone: backbone.as_ref(),
                tokenizer: tokenizer.as_ref(),
                task: &task,
                plan: &plan,
                strategies: &trial.strategies,
                training: &trial.training,
                seed: trial.seed,
                progress: watch.progress,
                on_epoch: watch.on_epoch,
            },
            extras,
        )?;
        Ok((trained, plan))
    }
}

/// `cpu`, `cuda:N` or `metal:N`, as `--device` names it.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

impl TrialExecutor for TrainingExecutor {
    /// SHA-256 over the folder's config, tokenizer and weight files ([`ModelFolder::identity`]), computed once.
    fn backbone_identity(&self) -> Result<String> {
        if let Some(id) = self.identity.get() {
            return Ok(id.clone());
        }
        let id = self.model.identity()?;
        Ok(self.identity.get_or_init(|| id).clone())
    }

    /// SHA-256 over the examples the task keeps after subsampling.
    fn data_fingerprint(&self, task: &TaskSpec) -> Result<String> {
        let data = self.task(task)?;
        let text = format!(
            "{}|{:?}|{}|{:?}|{:?}",
            data.id, data.kind, data.evaluator, data.train, data.eval
        );
        Ok(hex_sha256(text.as_bytes()))
    }

    fn run(&self, trial: &TrialSpec) -> Result<TrialOutcome> {
        if let Some(dir) = &trial.save {
            // Writing a saved design is the saved-design module's (a floor above): it wraps this executor.
            return Err(Error::msg(format!(
                "trial {} asks for its trained design to be saved in {}; run it through \
                 `saved::SavingExecutor`, which trains with this executor and writes the folder",
                trial.id,
                dir.display()
            )));
        }
        let mut outcome = self.train(trial, Watch::default())?.outcome();
        outcome.device = Some(device_name(&self.device));
        Ok(outcome)
    }

    /// Task, training settings and seed (the backbone is this executor's), and the design's prefix lengths: the
    /// trials of one key train in one population exactly as alone. Full fine-tuning trains alone.
    fn population_key(&self, trial: &TrialSpec) -> Result<Option<String>> {
        if trial.is_full_fine_tuning() {
            return Ok(None);
        }
        // The split too: search trials of one task hold out the same validation rows only with the same split.
        let shared =
            serde_json::to_string(&(&trial.task, &trial.training, trial.seed, &trial.split))
                .map_err(|e| Error::msg(format!("trial {}: {e}", trial.id)))?;
        let prefixes = self.prefix_signature(trial)?;
        Ok(Some(format!("{shared}|prefix {prefixes:?}")))
    }

    /// Solves each trial's design and trains them as one population ([`run_population`]); a design that cannot be
    /// solved or built fails alone.
    fn run_population(&self, trials: &[TrialSpec]) -> Result<Vec<Result<TrialOutcome>>> {
        if let [one] = trials {
            return Ok(vec![self.run(one)]);
        }
        let Some(first) = trials.first() else {
            return Ok(Vec::new());
        };
        if let Some(full) = trials.iter().find(|t| t.is_full_fine_tuning()) {
            return Err(Error::msg(format!(
                "trial {} is full fine-tuning, which trains alone, not in a population",
                full.id
            )));
        }
        let tokenizer = self.tokenizer()?;
        let task = self.task_on(&first.task, first.split)?;
        let backbone = self.frozen()?;
        let plans: Vec<Result<Vec<LayerAssignment>>> = trials
            .iter()
            .map(|t| {
                let design = self.design(&t.design)?;
                Ok(self.solve(&design, t.budget, false)?.layer_assignments())
            })
            .collect();
        let ready: Vec<usize> = (0..trials.len()).filter(|&i| plans[i].is_ok()).collect();
        let inputs: Vec<TrialInput<'_>> = ready
            .iter()
            .map(|&i| TrialInput {
                backbone: backbone.as_ref(),
                tokenizer: tokenizer.as_ref(),
                task: &task,
                plan: plans[i].as_deref().unwrap_or(&[]),
                strategies: &trials[i].strategies,
                training: &trials[i].training,
                seed: trials[i].seed,
                progress: false,
                on_epoch: None,
            })
            .collect();
        let mut reports = run_population(&inputs)?.into_iter();
        let device = device_name(&self.device);
        Ok(plans
            .into_iter()
            .map(|plan| {
                plan?;
                let report = reports
                    .next()
                    .ok_or_else(|| Error::msg("the population lost a design"))??;
                let mut outcome = report.outcome();
                outcome.device = Some(device.clone());
                Ok(outcome)
            })
            .collect())
    }
}

impl TrainingExecutor {
    /// The prefix length of every layer and attention kind where the design prepends any (built on the CPU, from
    /// a throwaway store): designs with different signatures cannot share a population's attention.
    fn prefix_signature(&self, trial: &TrialSpec) -> Result<Vec<(usize, AttentionKind, usize)>> {
        let design = self.design(&trial.design)?;
        let plan = self
            .solve(&design, trial.budget, false)?
            .layer_assignments();
        let mut store = ParamStore::new(&Device::Cpu, 0);
        let built = build_design(
            &self.info,
            &plan,
            &trial.strategies,
            &trial.training,
            &mut store,
        )?;
        let mut signature = Vec::new();
        for layer in 0..self.info.num_layers() {
            for kind in [AttentionKind::SelfAttention, AttentionKind::CrossAttention] {
                if let Some(prefix) = built.hooks.prefix(layer, kind, 1)? {
                    let len = prefix.len()?;
                    if len > 0 {
                        signature.push((layer, kind, len));
                    }
                }
            }
        }
        Ok(signature)
    }
}
