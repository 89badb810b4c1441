//! Throughput of population training: K designs trained together on MiniLM at the quickstart's settings (SST-2,
//! batch 16, 64 tokens, one epoch), in designs·examples per second, with the process's peak resident memory. One K
//! per process, so the peak memory is that K's; `benches/population.sh` runs K = 1, 4, 8, 16 in interleaved rounds.
//!
//! `cargo run --release --example population -- MODEL_DIR GLUE_DIR [--population 4] [--train 64] [--eval 32]
//! [--device cpu|cuda:N]`
//! Set `RAYON_NUM_THREADS` to fix the CPU thread count (candle's CPU kernels read it).

use std::path::PathBuf;
use std::time::Instant;

use peftspace_core::backbone::Weights;
use peftspace_core::budget::LayerAssignment;
use peftspace_core::data::load_task;
use peftspace_core::device::DeviceChoice;
use peftspace_core::model::ModelFolder;
use peftspace_core::registry::registries;
use peftspace_core::spec::{TaskSpec, TrainingSpec};
use peftspace_core::train::{run_population, uniform_plan, TrialInput};

use peftspace_backbones as _;
use peftspace_plugins as _;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// `--name value` from the command line, parsed, or `default`.
fn option<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a value")),
    }
}

/// The k-th design: LoRA, adapters or BitFit in every layer at sizes around the quickstart's budget (0.5 % of
/// MiniLM), no prefix (a prefix design goes with designs of its own prefix length).
fn design(layers: &peftspace_core::shapes::BackboneInfo, k: usize) -> Vec<LayerAssignment> {
    match k % 4 {
        0 => uniform_plan(layers, "lora", 12),
        1 => uniform_plan(layers, "adapter", 16),
        2 => uniform_plan(layers, "lora", 4 + 2 * (k % 3)),
        _ => uniform_plan(layers, "bitfit", 1),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: population MODEL_DIR GLUE_DIR [--population 4] [--train 64] [--eval 32] [--device cpu|cuda:N]";
    let positional: Vec<&String> = args.iter().take_while(|a| !a.starts_with("--")).collect();
    let (model_dir, glue_dir) = match positional.as_slice() {
        [m, g, ..] => (PathBuf::from(m), PathBuf::from(g)),
        _ => return Err(usage.into()),
    };
    let k: usize = option(&args, "--population", 4)?;
    let train: usize = option(&args, "--train", 64)?;
    let eval: usize = option(&args, "--eval", 32)?;
    let device = DeviceChoice::parse(&option(&args, "--device", "cpu".to_string())?)?.open()?;
    let folder = ModelFolder::open(&model_dir)?;
    let backbone = folder.load(&registries()?, &device, Weights::Frozen)?;
    let tokenizer = folder.tokenizer()?;
    let task = load_task(
        &TaskSpec {
            id: "sst2".into(),
            max_train: Some(train),
            max_eval: Some(eval),
            custom: None,
            generation: None,
        },
        Some(&glue_dir),
        &glue_dir,
        1,
    )?;
    // experiments/quickstart.ron's training settings.
    let training = TrainingSpec {
        epochs: 1,
        batch_size: 16,
        learning_rate: 5e-3,
        max_seq_len: 64,
        ..TrainingSpec::default()
    };
    let plans: Vec<Vec<LayerAssignment>> = (0..k).map(|i| design(backbone.info(), i)).collect();
    let inputs: Vec<TrialInput<'_>> = plans
        .iter()
        .map(|plan| TrialInput {
            backbone: backbone.as_ref(),
            tokenizer: &tokenizer,
            task: &task,
            plan,
            strategies: &[],
            training: &training,
            seed: 1,
            progress: false,
            on_epoch: None,
        })
        .collect();
    let started = Instant::now();
    let reports = run_population(&inputs)?;
    let seconds = started.elapsed().as_secs_f64();
    for (i, report) in reports.iter().enumerate() {
        let report = report.as_ref().map_err(|e| format!("design {i}: {e}"))?;
        if !report.status.is_ok() {
            return Err(format!("design {i}: {}", report.status).into());
        }
    }
    let rate = (k * task.train.len()) as f64 / seconds;
    println!(
        "K {k}: {rate:.2} designs·examples/s ({} training + {} evaluation examples, {seconds:.1} s), peak RSS {:.0} MiB",
        task.train.len(),
        task.eval.len(),
        peak_rss_mib()
    );
    Ok(())
}
