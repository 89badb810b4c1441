//! Throughput of one training step, MiniLM + LoRA r = 12 on q and v (or BitFit, or any design at a budget), fixed
//! sequence length and batch size, on the CPU or a GPU: the number `BENCHMARKS.md` sets next to
//! `benches/torch_train_step.py step`.
//!
//! `cargo run --release --example train_step -- MODEL_DIR [--device cpu|cuda:N] [--seq 128] [--batch 16] [--steps 10]
//! [--strategy lora|bitfit | --design "g=… a=… t=… s=…" [--budget 0.005]]`
//! With `--design`, the per-layer sizes the budget solver gives are printed first (`plan A12+L4 …`), so that a
//! reference implementation can build the same modules. Set `RAYON_NUM_THREADS` to fix the CPU thread count
//! (candle's CPU kernels read it).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use peftspace_core::backbone::{Batch, Dropout, Mode, Weights};
use peftspace_core::budget::{self, LayerAssignment, Strategies};
use peftspace_core::data::TaskKind;
use peftspace_core::design::{Design, StrategyCodes};
use peftspace_core::device::DeviceChoice;
use peftspace_core::model::ModelFolder;
use peftspace_core::params::ParamStore;
use peftspace_core::registry::registries;
use peftspace_core::spec::{StrategySpec, TrainingSpec};
use peftspace_core::train::optim::{clip_factor, global_grad_norm, AdamW, ParamGroup};
use peftspace_core::train::{build_design, uniform_plan, TaskHead};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: train_step MODEL_DIR [--device cpu|cuda:N] [--seq 128] [--batch 16] [--steps 10] \
                 [--strategy lora|bitfit | --design \"g=… a=… t=… s=…\" [--budget 0.005]]";
    let dir = PathBuf::from(args.first().filter(|a| !a.starts_with("--")).ok_or(usage)?);
    let seq: usize = option(&args, "--seq", 128)?;
    let batch_size: usize = option(&args, "--batch", 16)?;
    let steps: usize = option(&args, "--steps", 10)?;
    let choice = DeviceChoice::parse(&option(&args, "--device", "cpu".to_string())?)?;
    let device = choice.open()?;
    let registries = registries()?;
    let backbone = ModelFolder::open(&dir)?.load(&registries, &device, Weights::Frozen)?;
    let mut store = ParamStore::new(&device, 0);
    let training = TrainingSpec::default();
    let design_text: String = option(&args, "--design", String::new())?;
    // LoRA r = 12 on every layer, BitFit (every bias of every layer), or a design solved at a budget.
    let (strategy, plan): (String, Vec<LayerAssignment>) = if design_text.is_empty() {
        let strategy: String = option(&args, "--strategy", "lora".to_string())?;
        if strategy != "lora" && strategy != "bitfit" {
            return Err(format!("--strategy must be lora or bitfit, not {strategy}").into());
        }
        let plan = uniform_plan(backbone.info(), &strategy, 12);
        (strategy, plan)
    } else {
        let fraction: f64 = option(&args, "--budget", 0.005)?;
        let codes = StrategyCodes::from_registries(&registries);
        let design = Design::parse(&design_text, &codes)?;
        let mut strategies = Strategies::new();
        for name in design.strategies.iter().flatten() {
            strategies.insert(name.clone(), registries.strategy(name, &ron::Value::Unit)?);
        }
        let solved = budget::solve(backbone.info(), &design, &strategies, fraction)?;
        let sizes = solved.sizes_text(|name| codes.code(name).unwrap_or("?").to_string());
        println!("plan {sizes}");
        ("design".to_string(), solved.layer_assignments())
    };
    let names: BTreeSet<&str> = plan
        .iter()
        .flat_map(|a| a.strategies.iter().map(|(name, _)| name.as_str()))
        .collect();
    let strategies: Vec<StrategySpec> = names
        .iter()
        .map(|name| StrategySpec {
            name: name.to_string(),
            options: ron::Value::Unit,
            learning_rate: None,
        })
        .collect();
    let design = build_design(backbone.info(), &plan, &strategies, &training, &mut store)?;
    let kind = TaskKind::Classification {
        labels: vec!["0".into(), "1".into()],
    };
    let head = TaskHead::new(&mut store, backbone.feature_dim(), &kind)?;
    let mut groups = design.groups;
    groups.push(ParamGroup {
        name: "head".into(),
        vars: head.vars(),
        learning_rate: 1e-4,
        weight_decay: 0.0,
    });
    let vars = store.vars();
    let mut optimizer = AdamW::new(groups);
    let ids: Vec<u32> = (0..batch_size * seq)
        .map(|i| 1000 + (i as u32 * 7919) % 19000)
        .collect();
    let batch = Batch {
        input_ids: Tensor::from_vec(ids, (batch_size, seq), &device)?,
        attention_mask: Tensor::ones((batch_size, seq), candle_core::DType::U32, &device)?,
        token_type_ids: Some(Tensor::zeros(
            (batch_size, seq),
            candle_core::DType::U32,
            &device,
        )?),
        decoder_input_ids: None,
    };
    let labels: Vec<f32> = (0..batch_size).map(|i| (i % 2) as f32).collect();
    let dropout = Dropout::new(1);
    // Seconds spent in the forward pass, the backward pass and the update, summed over the timed steps.
    let mut phases = [0f64; 3];
    // On a GPU the kernels run asynchronously: wait for them before reading the clock.
    let sync = |d: &Device| d.synchronize();
    let mut step = |phases: &mut [f64; 3]| -> peftspace_core::Result<()> {
        let t = Instant::now();
        let mode = Mode::Train { dropout: &dropout };
        let features = backbone.features(&batch, &design.hooks, mode)?;
        let loss = head.loss(&head.forward(&features, mode, 0.1)?, &labels)?;
        sync(&device)?;
        phases[0] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = loss.backward()?;
        sync(&device)?;
        phases[1] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let norm = global_grad_norm(&grads, &vars)?;
        optimizer.step(&grads, 1.0, clip_factor(norm, 1.0))?;
        sync(&device)?;
        phases[2] += t.elapsed().as_secs_f64();
        Ok(())
    };
    for _ in 0..2 {
        step(&mut [0.0; 3])?;
    }
    let start = Instant::now();
    for _ in 0..steps {
        step(&mut phases)?;
    }
    sync(&device)?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "peftspace (candle) {strategy} device {choice} threads {} seq {seq} batch {batch_size} trainable {}: {:.1} examples/s ({:.0} ms/step), \
         peak RSS {:.0} MiB; per step: forward {:.0} ms, backward {:.0} ms, update {:.0} ms",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into()),
        design.trainable_params + head.num_params(),
        (steps * batch_size) as f64 / seconds,
        seconds / steps as f64 * 1000.0,
        peak_rss_mib(),
        phases[0] / steps as f64 * 1000.0,
        phases[1] / steps as f64 * 1000.0,
        phases[2] / steps as f64 * 1000.0,
    );
    Ok(())
}
