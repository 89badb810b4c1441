//! The real trial executor: the frozen backbone loaded once per process, task data loaded once per task, and
//! `peftspace_core::train::run_trial` for each trial.
//!
//! Baseline designs (`baseline=<strategy>`: one strategy in every layer at the experiment's budget) are planned
//! here. Designs sampled from the design space reach the trainer through [`TrainerExecutor::with_planner`]; until
//! the design space is connected to `peftspace run`, such a trial stops the run with a message saying so.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::Device;
use peftspace_core::backbone::Backbone;
use peftspace_core::data::{self, TaskData, TextEncoder, Tokens};
use peftspace_core::refine::{hex_sha256, TrialExecutor, TrialOutcome, TrialSpec, TrialStatus};
use peftspace_core::registry::registries;
use peftspace_core::shapes::BackboneInfo;
use peftspace_core::spec::{ExperimentSpec, StrategySpec, TaskSpec};
use peftspace_core::train::{self, LayerAssignment, TrialInput};
use peftspace_core::{Error, Result};
use sha2::{Digest, Sha256};

/// Turns a design's text into per-layer strategy sizes for a backbone.
pub type Planner = Box<dyn Fn(&str, &BackboneInfo, &TrialSpec) -> Result<Vec<LayerAssignment>> + Send + Sync>;

pub struct TrainerExecutor {
    model_dir: PathBuf,
    data_dir: Option<PathBuf>,
    spec_dir: PathBuf,
    /// Seed of the data subsamples (the experiment's root seed), so every trial of a task sees the same examples.
    data_seed: u64,
    max_seq_len: usize,
    backbone: Mutex<Option<Arc<dyn Backbone>>>,
    encoder: Mutex<Option<Arc<TokenizerEncoder>>>,
    tasks: Mutex<HashMap<String, Arc<TaskData>>>,
    planner: Option<Planner>,
}

impl TrainerExecutor {
    pub fn new(spec: &ExperimentSpec, experiment: &Path, model: Option<&Path>, data_dir: Option<&Path>) -> Result<Self> {
        let model_dir = model
            .map(Path::to_path_buf)
            .or_else(|| spec.backbone.path.clone())
            .ok_or_else(|| {
                Error::msg("no backbone folder: pass --model DIR, set PEFTSPACE_MODEL, or set `backbone.path`")
            })?;
        let spec_dir = experiment.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(TrainerExecutor {
            model_dir,
            data_dir: data_dir.map(Path::to_path_buf).or_else(|| spec.data_dir.clone()),
            spec_dir,
            data_seed: spec.seed,
            max_seq_len: spec.training.max_seq_len,
            backbone: Mutex::new(None),
            encoder: Mutex::new(None),
            tasks: Mutex::new(HashMap::new()),
            planner: None,
        })
    }

    /// Connects the design space's design → layer-plan function.
    #[allow(dead_code)] // Used once the design space is connected to `peftspace run`.
    pub fn with_planner(mut self, planner: Planner) -> Self {
        self.planner = Some(planner);
        self
    }

    fn backbone(&self) -> Result<Arc<dyn Backbone>> {
        let mut slot = self.backbone.lock().map_err(|_| Error::msg("backbone lock poisoned"))?;
        if let Some(b) = slot.as_ref() {
            return Ok(b.clone());
        }
        let loaded: Arc<dyn Backbone> = Arc::from(peftspace_backbones::load(&self.model_dir, &Device::Cpu)?);
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    fn encoder(&self) -> Result<Arc<TokenizerEncoder>> {
        let mut slot = self.encoder.lock().map_err(|_| Error::msg("tokenizer lock poisoned"))?;
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let tokenizer = peftspace_backbones::tokenizer::TextTokenizer::from_dir(&self.model_dir, self.max_seq_len)?;
        let encoder = Arc::new(TokenizerEncoder(tokenizer));
        *slot = Some(encoder.clone());
        Ok(encoder)
    }

    fn task(&self, task: &TaskSpec) -> Result<Arc<TaskData>> {
        let key = serde_json::to_string(task).map_err(|e| Error::msg(format!("task {}: {e}", task.id)))?;
        let mut tasks = self.tasks.lock().map_err(|_| Error::msg("task cache lock poisoned"))?;
        if let Some(t) = tasks.get(&key) {
            return Ok(t.clone());
        }
        let loaded = Arc::new(data::load_task(task, self.data_dir.as_deref(), &self.spec_dir, self.data_seed)?);
        tasks.insert(key, loaded.clone());
        Ok(loaded)
    }

    fn plan(&self, trial: &TrialSpec, info: &BackboneInfo) -> Result<Vec<LayerAssignment>> {
        if let Some(name) = trial.design.strip_prefix("baseline=") {
            return baseline_plan(name, info, trial.budget, &trial.strategies);
        }
        match &self.planner {
            Some(planner) => planner(&trial.design, info, trial),
            None => Err(Error::msg(format!(
                "cannot train design `{}`: the design space is not connected to the trainer in this build",
                trial.design
            ))),
        }
    }
}

impl TrialExecutor for TrainerExecutor {
    /// SHA-256 over the folder's config, tokenizer and weight files (names and bytes, sorted by name).
    fn backbone_identity(&self) -> Result<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.model_dir)
            .map_err(|e| Error::io(&self.model_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                name == "config.json" || name == "tokenizer.json" || name.ends_with(".safetensors")
            })
            .collect();
        files.sort();
        let mut hasher = Sha256::new();
        for path in files {
            hasher.update(path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default().as_bytes());
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
        Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// SHA-256 over the examples the task keeps after subsampling.
    fn data_fingerprint(&self, task: &TaskSpec) -> Result<String> {
        let data = self.task(task)?;
        let text = format!("{}|{:?}|{}|{:?}|{:?}", data.id, data.kind, data.evaluator, data.train, data.eval);
        Ok(hex_sha256(text.as_bytes()))
    }

    fn run(&self, trial: &TrialSpec) -> Result<TrialOutcome> {
        let backbone = self.backbone()?;
        let encoder = self.encoder()?;
        let task = self.task(&trial.task)?;
        let plan = self.plan(trial, backbone.info())?;
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
            train::TrialStatus::Failed(message) => TrialStatus::Failed { message: message.clone() },
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

/// One strategy in every layer with the largest size whose total stays within the budget (fixed-size strategies
/// take their one size). `full` is not a strategy plan and is refused here.
fn baseline_plan(name: &str, info: &BackboneInfo, budget: f64, strategies: &[StrategySpec]) -> Result<Vec<LayerAssignment>> {
    let options = strategies.iter().find(|s| s.name == name).map_or(ron::Value::Unit, |s| s.options.clone());
    let strategy = registries()?.strategy(name, &options)?;
    let target = (budget * info.num_params as f64).round() as usize;
    let total = |size: usize| info.layers.iter().map(|l| strategy.params(l, size)).sum::<usize>();
    let size = if strategy.fixed_size() {
        1
    } else {
        let mut size = 1;
        while total(size + 1) <= target && size < 1 << 16 {
            size += 1;
        }
        size
    };
    Ok((0..info.num_layers()).map(|layer| LayerAssignment { layer, strategies: vec![(name.to_string(), size)] }).collect())
}

/// The backbone's tokenizer as the trainer's text encoder.
struct TokenizerEncoder(peftspace_backbones::tokenizer::TextTokenizer);

impl TextEncoder for TokenizerEncoder {
    fn encode(&self, text: &str, pair: Option<&str>, _max_len: usize) -> Result<Tokens> {
        // The tokenizer truncates to the experiment's max_seq_len, which is what the trainer asks for.
        let t = self.0.encode(text, pair)?;
        Ok(Tokens { ids: t.ids, type_ids: t.type_ids })
    }

    fn pad_id(&self) -> u32 {
        self.0.pad_id()
    }
}
