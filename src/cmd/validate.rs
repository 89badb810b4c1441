//! `peftspace validate FILE`: parse and check an experiment file, its custom and generation task files, and (when
//! its `config.json` is here) whether the backbone suits the tasks; errors are one line `file:line:col: message`
//! (`file:line: message` in a data file), exit code 2.

use std::path::{Path, PathBuf};

use peftspace_core::experiment::{self, Experiment, Parsed};
use peftspace_core::plugin_trust::{default_trust_file, untrusted_error, TrustList, Verdict};
use peftspace_core::refine;
use peftspace_core::registry::registries;
use peftspace_core::resolve::{ModelNeeds, Resolver};

use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (RON).
    #[arg(value_name = "EXPERIMENT")]
    pub file: PathBuf,
    /// Check the file without loading the plugins it names (none of their code runs); names only they could
    /// provide are listed instead of refused.
    #[arg(long)]
    pub no_plugins: bool,
}

/// The plugins `parsed` names that were not given with `--plugin` (compared by canonical path).
fn plugins_named_only_in_file(parsed: &Parsed, global: &Global) -> Vec<PathBuf> {
    let already: Vec<PathBuf> = global
        .plugins
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    parsed
        .plugin_paths()
        .into_iter()
        .filter(|p| p.canonicalize().map_or(true, |c| !already.contains(&c)))
        .collect()
}

/// Refuses any of `plugins` the trust file does not list with its current hash. A plugin is native code: naming it
/// in a (perhaps downloaded) experiment file is not enough to run it.
fn check_trusted(parsed: &Parsed, plugins: &[PathBuf]) -> Result<(), Exit> {
    let trust_file = default_trust_file();
    let list = match &trust_file {
        Some(file) => TrustList::load(file).map_err(Exit::usage)?,
        None => TrustList {
            file: PathBuf::new(),
            entries: Vec::new(),
        },
    };
    for plugin in plugins {
        // A missing library is reported by the loader with its path; trust is about libraries that exist.
        if !plugin.exists() {
            continue;
        }
        let verdict = list
            .verdict(plugin)
            .map_err(|e| Exit::usage(parsed.error_at("plugins", e)))?;
        if verdict != Verdict::Trusted {
            let error = untrusted_error(plugin, &verdict, trust_file.as_deref());
            return Err(Exit::usage(parsed.error_at("plugins", error)));
        }
    }
    Ok(())
}

/// Reads and checks an experiment file, loading the plugins it lists first — those given with `--plugin` or
/// listed in the trust file; any other is refused before its code is loaded. Any problem is a usage error (exit 2).
pub fn load_experiment(file: &Path, global: &Global) -> Result<Experiment, Exit> {
    let parsed = experiment::parse(file).map_err(Exit::usage)?;
    let from_file = plugins_named_only_in_file(&parsed, global);
    if !from_file.is_empty() {
        check_trusted(&parsed, &from_file)?;
        let file_global = Global {
            plugins: from_file,
            ..global.clone()
        };
        super::load_plugins(&file_global)
            .map_err(|e| Exit::usage(parsed.error_at("plugins", format!("{:#}", e.error))))?;
    }
    let registries = registries().map_err(Exit::from)?;
    parsed.validate(&registries).map_err(Exit::usage)
}

/// `validate --no-plugins`: every check that needs no plugin code; the names left unresolved are printed.
fn validate_without_plugins(args: &Args, global: &Global) -> Result<(), Exit> {
    let parsed = experiment::parse(&args.file).map_err(Exit::usage)?;
    let skipped = plugins_named_only_in_file(&parsed, global);
    let registries = registries().map_err(Exit::from)?;
    let unresolved = parsed
        .validate_without_plugins(&registries)
        .map_err(Exit::usage)?;
    println!(
        "{}: ok without its plugins ({} not loaded)",
        args.file.display(),
        skipped.len()
    );
    for plugin in &skipped {
        println!("  not loaded: {}", plugin.display());
    }
    for name in &unresolved {
        println!(
            "  unresolved {} `{}` at {} (a plugin may provide it)",
            name.kind, name.name, name.at
        );
    }
    Ok(())
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    if args.no_plugins {
        return validate_without_plugins(&args, global);
    }
    let exp = load_experiment(&args.file, global)?;
    // Everything that needs no model: custom task files are read and checked as training would read them.
    exp.check_data().map_err(Exit::usage)?;
    check_backbone_folder(&exp, global)?;
    check_backbone_if_here(&exp, global)?;
    let s = &exp.spec;
    println!(
        "{}: ok ({} task(s), {} strateg{}, {} group(s), {} stage(s), budget {} %)",
        args.file.display(),
        s.tasks.len(),
        s.strategies.len(),
        if s.strategies.len() == 1 { "y" } else { "ies" },
        s.groups,
        s.stages.len(),
        s.budget * 100.0
    );
    print_coverage(&exp, global);
    for warning in refine::fixed_size_warnings(&exp, &registries()?).map_err(Exit::usage)? {
        println!("  warning: {warning}");
    }
    if let Some(warning) = peftspace_core::report::final_comparison::too_few_pairs(s) {
        println!("  warning: {warning}");
    }
    Ok(())
}

/// A backbone folder given by `--model`, `PEFTSPACE_MODEL` or `backbone.path` must exist with its `config.json`:
/// `sample`, `train` and `run` would refuse it later (a folder given locally is never replaced by `hub_id`).
/// Nothing to check when only a hub id names the model (it is resolved, and perhaps downloaded, when used).
fn check_backbone_folder(exp: &Experiment, global: &Global) -> Result<(), Exit> {
    let from_env = std::env::var_os(peftspace_core::resolve::MODEL_ENV).is_some();
    if global.model.is_none() && !from_env && exp.spec.backbone.path.is_none() {
        return Ok(());
    }
    let resolved = Resolver::from_env(true).model(
        global.model.as_deref(),
        &exp.spec.backbone,
        &exp.base_dir(),
        ModelNeeds::Config,
    );
    match resolved {
        Ok(_) => Ok(()),
        Err(e) if global.model.is_none() && !from_env => {
            Err(Exit::usage(exp.error_at("backbone.path", e)))
        }
        Err(e) => Err(Exit::library(e)),
    }
}

/// Refuses a backbone that cannot do the experiment's generation tasks (an encoder without a decoder), when its
/// `config.json` is already here: validate never downloads, and the commands that load the backbone check it too.
fn check_backbone_if_here(exp: &Experiment, global: &Global) -> Result<(), Exit> {
    let final_tasks = exp
        .spec
        .final_runs
        .iter()
        .flat_map(|f| f.tasks.iter().flatten());
    if !exp
        .spec
        .tasks
        .iter()
        .chain(final_tasks)
        .any(|t| t.generation.is_some())
    {
        return Ok(());
    }
    let described = Resolver::from_env(true)
        .model_folder(
            global.model.as_deref(),
            &exp.spec.backbone,
            &exp.base_dir(),
            ModelNeeds::Config,
        )
        .and_then(|m| m.describe(&registries()?));
    match described {
        Ok(info) => exp.check_backbone(&info).map_err(Exit::usage),
        // A backbone not here yet is described, and checked, when a command resolves it.
        Err(_) => Ok(()),
    }
}

/// Per grouping stage, the splits each candidate admits on the backbone and the warnings about them. The layer
/// count comes from `config.json` when it is already here: validate never downloads and never reads weights.
fn print_coverage(exp: &Experiment, global: &Global) {
    if !exp
        .spec
        .stages
        .iter()
        .any(|s| s.dimension == peftspace_core::spec::Dimension::Grouping)
    {
        return;
    }
    let described = Resolver::from_env(true)
        .model_folder(
            global.model.as_deref(),
            &exp.spec.backbone,
            &exp.base_dir(),
            ModelNeeds::Config,
        )
        .and_then(|m| {
            let reg = registries()?;
            let info = m.describe(&reg)?;
            refine::grouping_coverage(exp, &info, &reg)
        });
    let stages = match described {
        Ok(stages) => stages,
        Err(e) => {
            println!("  designs per candidate not counted: {e}");
            return;
        }
    };
    for stage in stages {
        let counts: Vec<String> = stage
            .candidates
            .iter()
            .map(|c| match &c.splits {
                Some(splits) => format!("{} {}", c.candidate, splits.len()),
                None => format!("{} (too many to count)", c.candidate),
            })
            .collect();
        println!(
            "  {}: splits of {} layers into {} groups each candidate admits: {}",
            stage.stage,
            stage.layers,
            stage.groups,
            counts.join(", ")
        );
        for warning in &stage.warnings {
            println!("  warning: {}: {warning}", stage.stage);
        }
    }
}
