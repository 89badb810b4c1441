//! `peftspace report DIR`: re-render trials.csv, stages.csv, final.csv and the EDF plots from a results directory.

use std::path::PathBuf;

use peftspace_core::spec::RaceSpec;

use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A results directory written by `peftspace run`.
    pub dir: PathBuf,
    /// Replay a race over the stored populations instead (`MIN_SAMPLES,BATCH[,ALPHA]`, e.g. `10,5,0.05`): per
    /// stage, whether racing reaches the same decision and with how many trials. Trains nothing, writes nothing.
    #[arg(long, value_name = "MIN,BATCH[,ALPHA]")]
    pub replay_race: Option<String>,
    /// Print the effects of the design features across all search trials instead: an OLS of the design score and
    /// of each task's score on grouping shape, allocation shares, tuned groups and strategy shares, with stage
    /// fixed effects and HC3 standard errors (exploratory). Writes nothing.
    #[arg(long, conflicts_with = "replay_race")]
    pub effects: bool,
}

/// `MIN,BATCH[,ALPHA]` as a race; alpha defaults as in experiment files.
fn parse_race(text: &str) -> anyhow::Result<RaceSpec> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if !(2..=3).contains(&parts.len()) {
        anyhow::bail!("--replay-race `{text}`: expected MIN_SAMPLES,BATCH[,ALPHA], e.g. 10,5,0.05");
    }
    let count = |name: &str, v: &str| {
        v.parse::<usize>().map_err(|_| {
            anyhow::anyhow!("--replay-race `{text}`: {name} `{v}` is not a whole number")
        })
    };
    let mut race = RaceSpec {
        min_samples: count("MIN_SAMPLES", parts[0])?,
        batch: count("BATCH", parts[1])?,
        ..RaceSpec::default()
    };
    if let Some(alpha) = parts.get(2) {
        race.alpha = alpha.parse().map_err(|_| {
            anyhow::anyhow!("--replay-race `{text}`: ALPHA `{alpha}` is not a number")
        })?;
    }
    if let Some((field, reason)) = race.problem() {
        anyhow::bail!("--replay-race `{text}`: {field}: {reason}");
    }
    Ok(race)
}

pub fn run(args: Args, _global: &Global) -> Result<(), Exit> {
    if !args.dir.is_dir() {
        return Err(Exit::usage(anyhow::anyhow!(
            "{}: no such results directory",
            args.dir.display()
        )));
    }
    if let Some(text) = &args.replay_race {
        let race = parse_race(text).map_err(Exit::usage)?;
        let table = peftspace_core::report::race_replay(&args.dir, &race).map_err(Exit::library)?;
        print!("{table}");
        return Ok(());
    }
    if args.effects {
        let plan = peftspace_core::report::read_plan(&args.dir).map_err(Exit::library)?;
        let store = peftspace_core::store::ResultStore::read(&args.dir).map_err(Exit::library)?;
        print!(
            "{}",
            peftspace_core::report::effects::effects(&plan, &store).describe()
        );
        return Ok(());
    }
    // While a run holds the directory this is refused (exit 2): the run rewrites the reports when it ends.
    let report = peftspace_core::report::write_reports(&args.dir).map_err(Exit::library)?;
    print!("{}", report.to_terminal());
    Ok(())
}
