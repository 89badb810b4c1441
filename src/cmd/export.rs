//! `peftspace export`: write a saved design as a Hugging Face PEFT adapter.

use std::path::PathBuf;

use anyhow::anyhow;
use peftspace_core::registry::registries;
use peftspace_plugins::peft;

use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A folder written by `train --save`.
    pub design: PathBuf,
    /// Output format; `peft` (adapter_config.json + adapter_model.safetensors) is the one there is.
    #[arg(long, default_value = "peft")]
    pub format: String,
    /// The adapter folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out when it already holds files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    if args.format != "peft" {
        return Err(Exit::usage(anyhow!(
            "unknown --format `{}`; known: peft",
            args.format
        )));
    }
    if peft::is_adapter(&args.design) {
        return Err(Exit::usage(anyhow!(
            "{} is already a PEFT adapter",
            args.design.display()
        )));
    }
    let occupied = std::fs::read_dir(&args.out).is_ok_and(|mut entries| entries.next().is_some());
    if occupied && !args.force {
        return Err(Exit::usage(anyhow!(
            "{} already holds files; choose another --out, or pass --force to replace them",
            args.out.display()
        )));
    }
    let (_, device) = super::device(global)?;
    let model = super::adapter::model_for(&args.design, global)?;
    let design = super::adapter::read(&args.design, &model, &device)?;
    let registries = registries()?;
    let info = model.describe(&registries).map_err(Exit::library)?;
    let target = peft::Target::new(&model, &info, &registries).map_err(Exit::usage)?;
    peft::export(&design.design, &target, &args.out).map_err(Exit::usage)?;
    eprintln!("wrote a PEFT adapter to {}", args.out.display());
    Ok(())
}
