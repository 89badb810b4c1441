//! `peftspace sample FILE`: draw designs from an experiment's space and solve their budgets, from the backbone's
//! `config.json` alone (no weights, no training).
//!
//! Without `--stage` the space is S0. With `--stage NAME` it is S0 narrowed by the first candidate of every stage
//! up to and including NAME. `--design TEXT` solves one given design instead of sampling.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use peftspace_core::budget::{self, thousands};
use peftspace_core::design::{Design, StrategyCodes};
use peftspace_core::registry::registries;
use peftspace_core::resolve::ModelNeeds;
use peftspace_core::space::{seeded_rng, SampleStats, SampledDesign};

use super::{Exit, Global};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (RON).
    #[arg(value_name = "EXPERIMENT")]
    pub file: PathBuf,
    /// Sample the space as narrowed up to this stage (each stage by its first candidate).
    #[arg(long)]
    pub stage: Option<String>,
    /// Number of designs.
    #[arg(short = 'n', long = "count", default_value_t = 10)]
    pub count: usize,
    /// Sampling seed (default: the experiment's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Solve this design (text form, e.g. `g=1,2,2,1 s=AL|AP|ABP|L`) instead of sampling.
    #[arg(long)]
    pub design: Option<String>,
}

/// One output row.
struct Row {
    index: usize,
    /// Draws rejected just before this design was accepted.
    rejected_before: usize,
    sampled: SampledDesign,
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    let exp = super::validate::load_experiment(&args.file, global)?;
    let reg = registries()?;
    // Sampling needs the backbone's shapes only: config.json, nothing else is resolved or downloaded.
    let model = super::model_folder(global, &exp, ModelNeeds::Config)?;
    let info = model.describe(&reg).map_err(Exit::library)?;
    let space = match &args.stage {
        None => exp.space(&info),
        Some(name) => {
            let (index, _) = exp.stage(name).map_err(Exit::usage)?;
            exp.stage_space(&info, index)
        }
    }
    .map_err(Exit::usage)?;
    let ctx = exp.sample_context(info, &reg).map_err(Exit::usage)?;
    let codes = StrategyCodes::from_registries(&reg);
    let seed = args.seed.unwrap_or(exp.spec.seed);

    let mut stats = SampleStats::default();
    let mut rows = Vec::new();
    if let Some(text) = &args.design {
        let design = Design::parse(text, &codes).map_err(Exit::usage)?;
        let plan = budget::solve(&ctx.info, &design, &ctx.strategies, ctx.fraction)
            .map_err(Exit::usage)?;
        if let Some(reason) = space.exclusion(&design, &reg)? {
            eprintln!(
                "note: this design is not in the space {}: {reason}",
                space.describe()
            );
        }
        rows.push(Row {
            index: 0,
            rejected_before: 0,
            sampled: SampledDesign { design, plan },
        });
    } else {
        let mut rng = seeded_rng(seed);
        for index in 0..args.count {
            let before = stats.rejected;
            let sampled = space.sample(&ctx, &mut rng, &mut stats)?;
            rows.push(Row {
                index,
                rejected_before: stats.rejected - before,
                sampled,
            });
        }
    }

    let code = |name: &str| {
        codes
            .code(name)
            .map(str::to_string)
            .unwrap_or_else(|_| name.to_string())
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Csv => write_csv(&mut out, &rows, &codes, &code)?,
        Format::Table => {
            writeln!(
                out,
                "backbone {} ({} layers, {} parameters); budget {} % = {} parameters; space: {}",
                ctx.info.model_type,
                ctx.info.num_layers(),
                thousands(ctx.info.num_params),
                exp.spec.budget * 100.0,
                thousands(rows.first().map_or(0, |r| r.sampled.plan.target)),
                space.describe()
            )?;
            write_table(&mut out, &rows, &codes, &code)?;
        }
    }
    if args.design.is_none() {
        eprintln!(
            "{} design(s) from {} (seed {seed}): {} of {} drawn rejected by the budget solver ({:.1} %){}",
            rows.len(),
            space.describe(),
            stats.rejected,
            stats.drawn,
            stats.rejection_rate() * 100.0,
            stats.last_reason.as_deref().map(|r| format!("; last reason: {r}")).unwrap_or_default()
        );
    }
    Ok(())
}

fn list<T: std::fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

fn strategy_sets(d: &Design, codes: &StrategyCodes) -> anyhow::Result<String> {
    let sets = d
        .strategies
        .iter()
        .map(|s| codes.set_to_text(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sets.join("|"))
}

fn tuned(d: &Design) -> String {
    d.tuned.iter().map(|&t| if t { '1' } else { '0' }).collect()
}

fn write_csv(
    out: &mut impl Write,
    rows: &[Row],
    codes: &StrategyCodes,
    code: &dyn Fn(&str) -> String,
) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "index",
        "design",
        "group_sizes",
        "tuned_groups",
        "strategy_sets",
        "allocation",
        "target_params",
        "achieved_params",
        "relative_error",
        "per_layer_sizes",
        "rejected_before",
    ])?;
    for r in rows {
        let (d, p) = (&r.sampled.design, &r.sampled.plan);
        w.write_record([
            r.index.to_string(),
            d.to_text(codes)?,
            list(&d.group_sizes, ","),
            tuned(d),
            strategy_sets(d, codes)?,
            list(
                &d.shares
                    .iter()
                    .map(|s| format!("{s:.4}"))
                    .collect::<Vec<_>>(),
                ",",
            ),
            p.target.to_string(),
            p.achieved.to_string(),
            format!("{:.6}", p.relative_error()),
            p.sizes_text(code),
            r.rejected_before.to_string(),
        ])?;
    }
    w.flush().context("writing csv")?;
    Ok(())
}

fn write_table(
    out: &mut impl Write,
    rows: &[Row],
    codes: &StrategyCodes,
    code: &dyn Fn(&str) -> String,
) -> anyhow::Result<()> {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| -> anyhow::Result<[String; 5]> {
            let (d, p) = (&r.sampled.design, &r.sampled.plan);
            Ok([
                r.index.to_string(),
                format!(
                    "g={} a={} t={} s={}",
                    list(&d.group_sizes, ","),
                    list(
                        &d.shares
                            .iter()
                            .map(|s| format!("{s:.3}"))
                            .collect::<Vec<_>>(),
                        ","
                    ),
                    tuned(d),
                    strategy_sets(d, codes)?
                ),
                thousands(p.achieved),
                format!("{:+.2}%", p.relative_error() * 100.0),
                p.sizes_text(code),
            ])
        })
        .collect::<anyhow::Result<_>>()?;
    let header = [
        "#",
        "design (shares rounded)",
        "params",
        "error",
        "per-layer sizes",
    ];
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |c: [&str; 5]| {
        format!(
            "{:>w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )
    };
    writeln!(out, "{}", line(header).trim_end())?;
    for c in &cells {
        writeln!(out, "{}", line([&c[0], &c[1], &c[2], &c[3], &c[4]]))?;
    }
    Ok(())
}
