//! `peftspace run`.

use crate::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args, _global: &Global) -> Result<(), Exit> {
    Err(Exit::from(anyhow::anyhow!("`peftspace run` is not implemented yet")))
}
