//! `peftspace plan FILE`: what an experiment will cost — trials, trial-epochs and examples per stage and in total —
//! from the experiment file, `config.json` and the tasks' sizes (no weights), and, unless `--no-calibrate`, an
//! estimated wall time from a short measured calibration on the chosen device.

use std::path::PathBuf;

use peftspace_core::budget::thousands;
use peftspace_core::refine::{self, ComputePlan, SizeSource, StageCost, TaskSize, Work};
use peftspace_core::registry::registries;
use peftspace_core::resolve::{ModelNeeds, Resolver};
use peftspace_core::train::executor::TrainingExecutor;

use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (RON).
    #[arg(value_name = "EXPERIMENT")]
    pub file: PathBuf,
    /// Count only: no calibration (loads no weights, trains nothing) and no time estimate.
    #[arg(long)]
    pub no_calibrate: bool,
    /// The within-candidate standard deviation of design scores to plan with (from a pilot or an earlier run's
    /// stages.csv): prints the difference each stage can detect at 80 % power with its designs per candidate, and
    /// the designs per candidate that would decide the equivalence margin.
    #[arg(long, value_name = "SD")]
    pub sd: Option<f64>,
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    let exp = super::validate::load_experiment(&args.file, global)?;
    let spec = &exp.spec;
    let base = exp.base_dir();
    let final_specs = spec
        .final_runs
        .as_ref()
        .and_then(|f| f.tasks.clone())
        .unwrap_or_else(|| spec.tasks.clone());
    // Sizes come from files already here; counting never downloads (GLUE's published sizes stand in).
    let all_tasks: Vec<_> = spec.tasks.iter().chain(&final_specs).cloned().collect();
    let glue_dir = Resolver::from_env(true)
        .glue_data_for(
            global.data_dir.as_deref(),
            spec.data_dir.as_deref(),
            &base,
            &all_tasks,
        )
        .ok()
        .flatten();
    let size = |t| refine::task_size(t, glue_dir.as_deref(), &base);
    let plan = refine::compute_plan(
        spec,
        spec.tasks.iter().map(size).collect(),
        final_specs.iter().map(size).collect(),
    );

    // The layer count needs config.json only; without --calibrate a missing model is a note, not an error.
    let config = super::model_folder(global, &exp, ModelNeeds::Config).and_then(|m| {
        let reg = registries()?;
        m.describe(&reg).map_err(Exit::library)
    });
    match &config {
        Ok(info) => println!(
            "{}: backbone {} layers, {} parameters",
            spec.name,
            info.num_layers(),
            thousands(info.num_params)
        ),
        Err(e) if args.no_calibrate => {
            println!("{}: backbone not described ({:#})", spec.name, e.error)
        }
        Err(_) => return config.map(|_| ()),
    }
    print!("{}", table(&plan));
    if let Some(sd) = args.sd {
        if !(sd.is_finite() && sd > 0.0) {
            return Err(Exit::usage(anyhow::anyhow!(
                "--sd {sd}: give the standard deviation of design scores, a number > 0 (e.g. 0.03)"
            )));
        }
        print!("{}", detectable(&plan, sd, spec.equivalence_margin));
    }

    if args.no_calibrate {
        return Ok(());
    }
    let (choice, device) = super::device(global)?;
    // Calibration trains: without the weights (a config-only folder) the counts above are the answer.
    let model = match super::model_folder(global, &exp, ModelNeeds::Everything) {
        Ok(model) => model,
        Err(e) => {
            println!(
                "no time estimate: calibration trains a few short trials and needs the model's weights and \
                 tokenizer ({:#}); the counts above need neither",
                e.error
            );
            return Ok(());
        }
    };
    let data_dir = super::glue_data_dir(global, &exp, &spec.tasks)?;
    let executor = TrainingExecutor::new(&exp, model, data_dir, device).map_err(Exit::library)?;
    eprintln!("calibrating on {choice} (a few short trials of the first task)…");
    let calibration = refine::calibrate(spec, &executor).map_err(Exit::library)?;
    let (least, most) = plan.seconds(&calibration);
    let (low, high) = refine::ESTIMATE_RANGE;
    println!(
        "estimated wall time on {choice}, one trial at a time: {}{} (range {}–{}; {} per training example, {} per \
         evaluation example, {} per trial)",
        duration(most),
        if least < most {
            format!(" at most, {} at least (race)", duration(least))
        } else {
            String::new()
        },
        duration(least * low),
        duration(most * high),
        per_example(calibration.train_seconds),
        per_example(calibration.eval_seconds),
        per_example(calibration.trial_seconds)
    );
    println!(
        "estimated range in seconds: {:.1}–{:.1}",
        least * low,
        most * high
    );
    Ok(())
}

/// Per stage, what its populations can decide with design scores of standard deviation `sd`: the minimum
/// detectable difference at 80 % power (α = 0.05 over the stage's pairs, the most designs per candidate), and the
/// designs per candidate that would decide the equivalence margin.
fn detectable(plan: &ComputePlan, sd: f64, margin: Option<f64>) -> String {
    let margin = margin.unwrap_or(refine::DEFAULT_EQUIVALENCE_MARGIN);
    let mut out = format!(
        "with a design-score sd of {sd} (80 % power, α = 0.05 over each stage's pairs; margin ±{margin}):\n"
    );
    for s in &plan.stages {
        let pairs = (s.candidates * s.candidates.saturating_sub(1) / 2).max(1);
        let alpha = 0.05 / pairs as f64;
        let mde = peftspace_core::stats::mde(sd, s.designs.1, alpha, 0.8);
        let needed = peftspace_core::stats::designs_needed(margin, sd, alpha, 0.8)
            .map_or("more than a million".to_string(), |n| n.to_string());
        out.push_str(&format!(
            "  {}: detects {} with {} designs per candidate; {needed} per candidate would decide ±{margin}\n",
            s.name,
            if mde.is_finite() { format!("{mde:.4}") } else { "nothing".into() },
            s.designs.1
        ));
    }
    out
}

/// A per-example time with three significant digits in a unit that fits (`1.23 ms`, `456 µs`); a rate the
/// calibration could not separate from its noise is said to be so rather than printed as zero.
fn per_example(seconds: f64) -> String {
    if !(seconds > 0.0) {
        return "below the calibration's resolution".into();
    }
    let (value, unit) = if seconds >= 1.0 {
        (seconds, "s")
    } else if seconds >= 1e-3 {
        (seconds * 1e3, "ms")
    } else {
        (seconds * 1e6, "µs")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {unit}")
}

/// The plan as a plain-text table: one row per stage, the final runs, the total.
fn table(plan: &ComputePlan) -> String {
    let mut out = String::new();
    let sizes = |tasks: &[TaskSize]| -> String {
        tasks
            .iter()
            .map(|t| match t.source {
                SizeSource::Files => format!("{} {}/{}", t.id, t.train, t.eval),
                SizeSource::KnownGlue => format!("{} {}/{} (GLUE sizes)", t.id, t.train, t.eval),
                SizeSource::Unknown => format!("{} unknown size", t.id),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!(
        "search trials (train/validation examples per trial): {}\n",
        sizes(&plan.tasks)
    ));
    if plan.final_runs.is_some() {
        out.push_str(&format!(
            "final-run trials (train/dev examples per trial): {}\n",
            sizes(&plan.final_tasks)
        ));
    }
    out.push_str(&format!(
        "{:<8} {:>10} {:>9} {:>14} {:>16} {:>18} {:>18}\n",
        "stage",
        "candidates",
        "designs",
        "trials",
        "trial-epochs",
        "train examples",
        "eval examples"
    ));
    let range = |min: u64, max: u64| {
        if min == max {
            thousands(max as usize)
        } else {
            format!("{}–{}", thousands(min as usize), thousands(max as usize))
        }
    };
    let row = |name: &str, candidates: String, designs: String, min: &Work, max: &Work| {
        format!(
            "{:<8} {:>10} {:>9} {:>14} {:>16} {:>18} {:>18}\n",
            name,
            candidates,
            designs,
            range(min.trials, max.trials),
            range(min.trial_epochs, max.trial_epochs),
            range(min.train_examples, max.train_examples),
            range(min.eval_examples, max.eval_examples)
        )
    };
    let stage_row = |s: &StageCost| {
        let designs = if s.designs.0 == s.designs.1 {
            s.designs.1.to_string()
        } else {
            format!("{}–{}", s.designs.0, s.designs.1)
        };
        row(&s.name, s.candidates.to_string(), designs, &s.min, &s.max)
    };
    for s in &plan.stages {
        out.push_str(&stage_row(s));
    }
    if let Some(f) = &plan.final_runs {
        out.push_str(&row(
            &f.name,
            f.candidates.to_string(),
            "-".into(),
            &f.min,
            &f.max,
        ));
    }
    out.push_str(&row(
        "total",
        String::new(),
        String::new(),
        &plan.total_min,
        &plan.total_max,
    ));
    if plan.total_min != plan.total_max {
        out.push_str(
            "ranges: least–most; a raced stage trains between min_samples and samples designs per candidate\n",
        );
    }
    out.push_str(&format!(
        "examples processed: {} (train + eval, at most)\n",
        thousands(plan.total_max.examples() as usize)
    ));
    out
}

/// Seconds as `1 d 2 h`, `3 h 4 min`, `5 min 6 s` or `7.8 s`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    let whole = s.round() as u64;
    let (d, h, m, sec) = (
        whole / 86_400,
        whole / 3600 % 24,
        whole / 60 % 60,
        whole % 60,
    );
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {sec} s")
    } else {
        format!("{s:.1} s")
    }
}
