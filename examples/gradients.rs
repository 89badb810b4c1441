//! Gradients of every built-in strategy's variables (each alone in every layer, then all four together) on a fixed
//! probe, written to one safetensors file as `<configuration>/<variable>`. `benches/gpu_check.sh` runs it on the CPU
//! and on a GPU and compares the two files.
//!
//! `cargo run --release --features cuda --example gradients -- MODEL_DIR OUT.safetensors [--device cuda:0]`

use std::collections::HashMap;
use std::path::PathBuf;

use peftspace_core::backbone::Weights;
use peftspace_core::device::DeviceChoice;
use peftspace_core::model::ModelFolder;
use peftspace_core::registry::registries;
use peftspace_core::train::probe::{design_gradients, every_layer};

use peftspace_backbones as _;
use peftspace_plugins as _;

/// Sizes small enough for the tiny test models; BitFit ignores its size.
const SIZES: [(&str, usize); 4] = [("adapter", 2), ("prefix", 2), ("lora", 2), ("bitfit", 1)];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: gradients MODEL_DIR OUT.safetensors [--device cpu|cuda:N]";
    let dir = PathBuf::from(args.first().ok_or(usage)?);
    let out = PathBuf::from(args.get(1).ok_or(usage)?);
    let device = match args.iter().position(|a| a == "--device") {
        Some(i) => DeviceChoice::parse(args.get(i + 1).ok_or(usage)?)?,
        None => DeviceChoice::Cpu,
    };
    let folder = ModelFolder::open(&dir)?;
    let backbone = folder.load(&registries()?, &device.open()?, Weights::Frozen)?;
    let tokenizer = folder.tokenizer()?;
    let mut configurations: Vec<(String, Vec<(&str, usize)>)> = SIZES
        .iter()
        .map(|&(name, size)| (name.to_string(), vec![(name, size)]))
        .collect();
    configurations.push(("all".to_string(), SIZES.to_vec()));
    let mut tensors = HashMap::new();
    for (label, strategies) in configurations {
        let plan = every_layer(backbone.as_ref(), &strategies);
        for (name, gradient) in design_gradients(backbone.as_ref(), &tokenizer, &plan, 11)? {
            tensors.insert(
                format!("{label}/{name}"),
                gradient.to_device(&candle_core::Device::Cpu)?,
            );
        }
    }
    candle_core::safetensors::save(&tensors, &out)?;
    println!(
        "{} gradients on {device} written to {}",
        tensors.len(),
        out.display()
    );
    Ok(())
}
