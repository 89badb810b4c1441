//! `peftspace trust LIBRARY…`: lists plugin libraries in the trust file, so that experiment files naming them may
//! load them; `--list` shows the file. A plugin is native code with your rights: trust only libraries you built or
//! whose source you have read.

use std::path::PathBuf;

use anyhow::anyhow;
use peftspace_core::plugin_trust::{default_trust_file, TrustList, Verdict, TRUST_FILE_ENV};

use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Plugin libraries to trust as they are now (a later rebuild needs trusting again).
    pub libraries: Vec<PathBuf>,
    /// Print the trust file's entries and whether each library still has the trusted bytes.
    #[arg(long)]
    pub list: bool,
}

pub fn run(args: Args, _global: &Global) -> Result<(), Exit> {
    let file = default_trust_file().ok_or_else(|| {
        Exit::usage(anyhow!(
            "no place for the trust file: set {TRUST_FILE_ENV}, XDG_CONFIG_HOME or HOME"
        ))
    })?;
    let mut list = TrustList::load(&file).map_err(Exit::usage)?;
    if args.libraries.is_empty() && !args.list {
        return Err(Exit::usage(anyhow!(
            "name the plugin libraries to trust (`peftspace trust path/to/libplugin.so`), or pass --list"
        )));
    }
    for library in &args.libraries {
        let entry = list.add(library).map_err(Exit::usage)?;
        println!("trusted {}  {}", entry.sha256, entry.path.display());
    }
    if !args.libraries.is_empty() {
        list.save().map_err(Exit::library)?;
        println!("written to {}", file.display());
    }
    if args.list {
        println!(
            "{}: {} trusted librar{}",
            file.display(),
            list.entries.len(),
            if list.entries.len() == 1 { "y" } else { "ies" }
        );
        for entry in &list.entries {
            let state = match list.verdict(&entry.path) {
                Ok(Verdict::Trusted) => "ok",
                Ok(_) => "changed since trusted",
                Err(_) => "missing",
            };
            println!("  {}  {} ({state})", entry.sha256, entry.path.display());
        }
    }
    Ok(())
}
