//! The real trial executor: the frozen backbone loaded once per process, task data loaded once per task, and
//! `peftspace_core::train::run_trial` for each trial. The full fine-tuning baseline loads its own trainable copy of
//! the backbone for each trial (the optimiser changes those weights in place).
//!
//! A design's text is parsed and solved by the budget solver into per-layer strategy sizes, exactly as the sampler
//! solved it when it drew the design.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::Device;
use peftspace_core::backbone::{Backbone, Weights};
use peftspace_core::budget::{self, Strategies};
use peftspace_core::data::{self, HfTokenizer, TaskData};
use peftspace_core::design::{Design, StrategyCodes};
use peftspace_core::experiment::Experiment;
use peftspace_core::refine::{hex_sha256, TrialExecutor, TrialOutcome, TrialSpec, TrialStatus};
use peftspace_core::registry::registries;
use peftspace_core::spec::TaskSpec;
use peftspace_core::train::{self, LayerAssignment, TrialInput};
use peftspace_core::{Error, Result};
use sha2::{Digest, Sha256};

pub struct TrainerExecutor {
    model_dir: PathBuf,
    data_dir: Option<PathBuf>,
    spec_dir: PathBuf,
    /// Seed of the data subsamples (the experiment's root seed), so every trial of a task sees the same examples.
    data_seed: u64,
    /// The backbone and its tokenizer, loaded on first use.
    loaded: Mutex<Option<(Arc<dyn Backbone>, Arc<HfTokenizer>)>>,
    tasks: Mutex<HashMap<String, Arc<TaskData>>>,
    strategies: Strategies,
    codes: StrategyCodes,
}

impl TrainerExecutor {
    pub fn new(
        experiment: &Experiment,
        model: Option<&Path>,
        data_dir: Option<&Path>,
    ) -> Result<Self> {
        let model_dir = experiment.backbone_dir(model).ok_or_else(|| {
            Error::msg("no local backbone folder: pass --model DIR, set PEFTSPACE_MODEL, or set `backbone.path`")
        })?;
        let reg = registries()?;
        Ok(TrainerExecutor {
            model_dir,
            data_dir: experiment.data_dir(data_dir),
            spec_dir: experiment.base_dir(),
            data_seed: experiment.spec.seed,
            loaded: Mutex::new(None),
            tasks: Mutex::new(HashMap::new()),
            strategies: experiment.strategies(&reg)?,
            codes: StrategyCodes::from_registries(&reg),
        })
    }

    fn loaded(&self) -> Result<(Arc<dyn Backbone>, Arc<HfTokenizer>)> {
        let mut slot = self
            .loaded
            .lock()
            .map_err(|_| Error::msg("backbone lock poisoned"))?;
        if let Some((b, t)) = slot.as_ref() {
            return Ok((b.clone(), t.clone()));
        }
        let (backbone, tokenizer) = crate::cmd::train::load_backbone(&self.model_dir, &Device::Cpu)
            .map_err(|e| Error::msg(format!("{e:#}")))?;
        let pair: (Arc<dyn Backbone>, Arc<HfTokenizer>) =
            (Arc::from(backbone), Arc::new(tokenizer));
        *slot = Some(pair.clone());
        Ok(pair)
    }

    fn task(&self, task: &TaskSpec) -> Result<Arc<TaskData>> {
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

    /// The design's per-layer strategy sizes, from its text and the budget solver. No tolerance check here: a
    /// sampled design passed it when it was drawn (the solver is deterministic, so the sizes are the same), and a
    /// baseline may miss the budget by construction (BitFit's size is fixed).
    fn plan(&self, trial: &TrialSpec, backbone: &dyn Backbone) -> Result<Vec<LayerAssignment>> {
        let design = Design::parse(&trial.design, &self.codes)?;
        let plan = budget::allocate(backbone.info(), &design, &self.strategies, trial.budget)?;
        Ok(plan.layer_assignments())
    }
}

impl TrialExecutor for TrainerExecutor {
    /// SHA-256 over the folder's config, tokenizer and weight files (names and bytes, sorted by name).
    fn backbone_identity(&self) -> Result<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.model_dir)
            .map_err(|e| Error::io(&self.model_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                name == "config.json" || name == "tokenizer.json" || name.ends_with(".safetensors")
            })
            .collect();
        files.sort();
        let mut hasher = Sha256::new();
        for path in files {
            hasher.update(
                path.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
                    .as_bytes(),
            );
            let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buffer).map_err(|e| Error::io(&path, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
            }
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
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
        let (shared, encoder) = self.loaded()?;
        let task = self.task(&trial.task)?;
        let (backbone, plan): (Arc<dyn Backbone>, _) = if trial.is_full_fine_tuning() {
            let fresh =
                crate::cmd::train::load_model(&self.model_dir, &Device::Cpu, Weights::Trainable)
                    .map_err(|e| Error::msg(format!("{e:#}")))?;
            (Arc::from(fresh), Vec::new())
        } else {
            let plan = self.plan(trial, shared.as_ref())?;
            (shared, plan)
        };
        let input = TrialInput {
            backbone: backbone.as_ref(),
            encoder: encoder.as_ref(),
            task: &task,
            plan: &plan,
            strategies: &trial.strategies,
            training: &trial.training,
            seed: trial.seed,
            progress: false,
            on_epoch: None,
        };
        let outcome = train::run_trial(&input)?;
        let status = match &outcome.status {
            train::TrialStatus::Completed => TrialStatus::Ok,
            train::TrialStatus::Diverged { step } => TrialStatus::Diverged { step: *step as u64 },
            train::TrialStatus::Failed(message) => TrialStatus::Failed {
                message: message.clone(),
            },
        };
        let primary = status.is_ok().then_some(outcome.metrics.primary);
        Ok(TrialOutcome {
            status,
            metrics: outcome.metrics.values.clone(),
            primary,
            trainable_params: outcome.trainable_params as u64,
            head_params: outcome.head_params as u64,
            seconds: outcome.seconds,
        })
    }
}
