//! Throughput of one training step, MiniLM + LoRA r = 12 on q and v, fixed sequence length and batch size: the
//! number `BENCHMARKS.md` sets next to `benches/torch_train_step.py step`. Ignored by default; run in release:
//! `RAYON_NUM_THREADS=2 PEFTSPACE_SHARED=… cargo test --release --test train_bench -- --ignored --nocapture`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use peftspace_core::backbone::{Batch, Dropout, Mode};
use peftspace_core::data::TaskKind;
use peftspace_core::params::ParamStore;
use peftspace_core::registry::registries;
use peftspace_core::spec::{StrategySpec, TrainingSpec};
use peftspace_core::train::optim::{clip_factor, global_grad_norm, AdamW, ParamGroup};
use peftspace_core::train::{build_design, uniform_plan, TaskHead};

use peftspace_backbones as _;
use peftspace_plugins as _;

fn shared() -> PathBuf {
    std::env::var_os("PEFTSPACE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED); a benchmark, run it in release"]
fn bench_train_step() -> peftspace_core::Result<()> {
    let seq: usize = std::env::var("BENCH_SEQ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let batch_size: usize = std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let steps: usize = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let device = Device::Cpu;
    let dir = shared().join("models/all-MiniLM-L6-v2");
    let backbone = (registries()?.architecture_for("bert")?.load)(&dir, &device)?;
    let mut store = ParamStore::new(&device, 0);
    let training = TrainingSpec::default();
    let plan = uniform_plan(backbone.info(), "lora", 12);
    let strategies = [StrategySpec {
        name: "lora".into(),
        options: ron::Value::Unit,
        learning_rate: None,
    }];
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
    let mut step = |phases: &mut [f64; 3]| -> peftspace_core::Result<()> {
        let t = Instant::now();
        let mode = Mode::Train { dropout: &dropout };
        let features = backbone.features(&batch, &design.hooks, mode)?;
        let loss = head.loss(&head.forward(&features, mode, 0.1)?, &labels)?;
        phases[0] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = loss.backward()?;
        phases[1] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let norm = global_grad_norm(&grads, &vars)?;
        optimizer.step(&grads, 1.0, clip_factor(norm, 1.0))?;
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
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "peftspace (candle) threads {} seq {seq} batch {batch_size} trainable {}: {:.1} examples/s ({:.0} ms/step), \
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
