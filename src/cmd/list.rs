//! `peftspace list`: everything registered, static and loaded from plugins.

use peftspace_core::registry::{registries, Registered};

use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {}

/// Prints one section: a title, then one aligned line per entry (`name  extra  summary  [source]`).
fn section<E>(
    title: &str,
    map: &std::collections::BTreeMap<String, Registered<E>>,
    line: impl Fn(&E) -> (String, &'static str),
) {
    println!("{title}:");
    if map.is_empty() {
        println!("  (none)");
    }
    let rows: Vec<(String, String, &'static str, String)> = map
        .iter()
        .map(|(name, r)| {
            let (extra, summary) = line(&r.entry);
            (name.clone(), extra, summary, r.source.clone())
        })
        .collect();
    let w_name = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w_extra = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    for (name, extra, summary, source) in rows {
        let source = if source == "built-in" {
            String::new()
        } else {
            format!("  [{source}]")
        };
        let extra = if w_extra > 0 {
            format!("  {extra:<w_extra$}")
        } else {
            String::new()
        };
        println!("  {name:<w_name$}{extra}  {summary}{source}");
    }
    println!();
}

pub fn run(_args: Args, _global: &Global) -> Result<(), Exit> {
    let r = registries()?;
    section("strategies (name, design code)", &r.strategies, |e| {
        (e.code.to_string(), e.summary)
    });
    section("grouping rules", &r.groupings, |e| {
        (String::new(), e.summary)
    });
    section("allocation rules", &r.allocations, |e| {
        (String::new(), e.summary)
    });
    section("evaluators", &r.evaluators, |e| (String::new(), e.summary));
    section("architectures (name, model_type)", &r.architectures, |e| {
        (e.model_types.join(","), e.summary)
    });
    Ok(())
}
