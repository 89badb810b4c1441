//! The registries: static entries collected with `inventory`, plus entries added at run time by dynamic plugins.
//!
//! Built lazily on first use into sorted maps. A duplicate name is an error naming both sources; an unknown name
//! lists the known ones.

use std::collections::BTreeMap;
use std::sync::{OnceLock, RwLock};

use crate::allocation::{AllocationEntry, AllocationRule};
use crate::backbone::ArchitectureEntry;
use crate::evaluator::{Evaluator, EvaluatorEntry};
use crate::grouping::{GroupingEntry, GroupingRule};
use crate::strategy::{StrategyEntry, TuningStrategy};
use crate::{Error, Result};

/// One registered entry and where it came from (`built-in` or a plugin's path).
#[derive(Clone)]
pub struct Registered<E> {
    pub entry: E,
    pub source: String,
}

/// All registries.
#[derive(Default, Clone)]
pub struct Registries {
    pub strategies: BTreeMap<String, Registered<StrategyEntry>>,
    pub groupings: BTreeMap<String, Registered<GroupingEntry>>,
    pub allocations: BTreeMap<String, Registered<AllocationEntry>>,
    pub evaluators: BTreeMap<String, Registered<EvaluatorEntry>>,
    /// Keyed by entry name; see [`Registries::architecture_for`] for `model_type` lookup.
    pub architectures: BTreeMap<String, Registered<ArchitectureEntry>>,
}

const BUILT_IN: &str = "built-in";

fn insert<E>(
    map: &mut BTreeMap<String, Registered<E>>,
    kind: &'static str,
    name: &str,
    entry: E,
    source: &str,
) -> Result<()> {
    if let Some(existing) = map.get(name) {
        return Err(Error::DuplicateName {
            kind,
            name: name.to_string(),
            first: existing.source.clone(),
            second: source.to_string(),
        });
    }
    map.insert(
        name.to_string(),
        Registered {
            entry,
            source: source.to_string(),
        },
    );
    Ok(())
}

fn lookup<'a, E>(
    map: &'a BTreeMap<String, Registered<E>>,
    kind: &'static str,
    name: &str,
) -> Result<&'a E> {
    map.get(name)
        .map(|r| &r.entry)
        .ok_or_else(|| Error::UnknownName {
            kind,
            name: name.to_string(),
            known: map.keys().cloned().collect(),
        })
}

impl Registries {
    fn from_inventory() -> Result<Self> {
        let mut r = Registries::default();
        for e in inventory::iter::<StrategyEntry> {
            r.add_strategy(*e, BUILT_IN)?;
        }
        for e in inventory::iter::<GroupingEntry> {
            insert(&mut r.groupings, "grouping rule", e.name, *e, BUILT_IN)?;
        }
        for e in inventory::iter::<AllocationEntry> {
            insert(&mut r.allocations, "allocation rule", e.name, *e, BUILT_IN)?;
        }
        for e in inventory::iter::<EvaluatorEntry> {
            insert(&mut r.evaluators, "evaluator", e.name, *e, BUILT_IN)?;
        }
        for e in inventory::iter::<ArchitectureEntry> {
            r.add_architecture(*e, BUILT_IN)?;
        }
        Ok(r)
    }

    /// Adds a strategy; its name and its short code must both be new.
    pub fn add_strategy(&mut self, entry: StrategyEntry, source: &str) -> Result<()> {
        if entry.code.is_empty() || !entry.code.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(Error::msg(format!(
                "strategy `{}` from {source}: code `{}` must be one or more ASCII letters",
                entry.name, entry.code
            )));
        }
        if let Some(other) = self
            .strategies
            .values()
            .find(|r| r.entry.code == entry.code)
        {
            return Err(Error::DuplicateName {
                kind: "strategy code",
                name: entry.code.to_string(),
                first: format!("{} ({})", other.entry.name, other.source),
                second: format!("{} ({source})", entry.name),
            });
        }
        insert(&mut self.strategies, "strategy", entry.name, entry, source)
    }

    pub fn add_grouping(&mut self, entry: GroupingEntry, source: &str) -> Result<()> {
        insert(
            &mut self.groupings,
            "grouping rule",
            entry.name,
            entry,
            source,
        )
    }

    pub fn add_allocation(&mut self, entry: AllocationEntry, source: &str) -> Result<()> {
        insert(
            &mut self.allocations,
            "allocation rule",
            entry.name,
            entry,
            source,
        )
    }

    pub fn add_evaluator(&mut self, entry: EvaluatorEntry, source: &str) -> Result<()> {
        insert(&mut self.evaluators, "evaluator", entry.name, entry, source)
    }

    /// Adds an architecture; none of its `model_types` may be claimed already.
    pub fn add_architecture(&mut self, entry: ArchitectureEntry, source: &str) -> Result<()> {
        for mt in entry.model_types {
            if let Some(other) = self
                .architectures
                .values()
                .find(|r| r.entry.model_types.contains(mt))
            {
                return Err(Error::DuplicateName {
                    kind: "model_type",
                    name: mt.to_string(),
                    first: format!("{} ({})", other.entry.name, other.source),
                    second: format!("{} ({source})", entry.name),
                });
            }
        }
        insert(
            &mut self.architectures,
            "architecture",
            entry.name,
            entry,
            source,
        )
    }

    pub fn strategy_entry(&self, name: &str) -> Result<&StrategyEntry> {
        lookup(&self.strategies, "strategy", name)
    }

    /// The strategy whose short code (design text form) is `code`.
    pub fn strategy_by_code(&self, code: &str) -> Result<&StrategyEntry> {
        self.strategies
            .values()
            .map(|r| &r.entry)
            .find(|e| e.code == code)
            .ok_or_else(|| Error::UnknownName {
                kind: "strategy code",
                name: code.to_string(),
                known: self
                    .strategies
                    .values()
                    .map(|r| format!("{} ({})", r.entry.code, r.entry.name))
                    .collect(),
            })
    }

    pub fn strategy(&self, name: &str, options: &ron::Value) -> Result<Box<dyn TuningStrategy>> {
        (self.strategy_entry(name)?.create)(options)
    }

    pub fn grouping(&self, name: &str) -> Result<Box<dyn GroupingRule>> {
        Ok((lookup(&self.groupings, "grouping rule", name)?.create)())
    }

    pub fn allocation(&self, name: &str) -> Result<Box<dyn AllocationRule>> {
        Ok((lookup(&self.allocations, "allocation rule", name)?.create)())
    }

    pub fn evaluator(&self, name: &str) -> Result<Box<dyn Evaluator>> {
        Ok((lookup(&self.evaluators, "evaluator", name)?.create)())
    }

    /// The architecture that accepts this HF `model_type`.
    pub fn architecture_for(&self, model_type: &str) -> Result<&ArchitectureEntry> {
        self.architectures
            .values()
            .map(|r| &r.entry)
            .find(|e| e.model_types.contains(&model_type))
            .ok_or_else(|| Error::UnknownName {
                kind: "model_type",
                name: model_type.to_string(),
                known: self
                    .architectures
                    .values()
                    .flat_map(|r| r.entry.model_types.iter().map(|s| s.to_string()))
                    .collect(),
            })
    }
}

fn cell() -> &'static RwLock<Result<Registries>> {
    static CELL: OnceLock<RwLock<Result<Registries>>> = OnceLock::new();
    CELL.get_or_init(|| RwLock::new(Registries::from_inventory()))
}

/// A snapshot of all registries (static entries plus plugins loaded so far).
pub fn registries() -> Result<Registries> {
    let guard = cell().read().unwrap_or_else(|e| e.into_inner());
    match &*guard {
        Ok(r) => Ok(r.clone()),
        Err(e) => Err(Error::msg(format!(
            "building the plugin registries failed: {e}"
        ))),
    }
}

/// Changes the global registries (used by the dynamic plugin loader).
pub fn with_registries_mut<T>(f: impl FnOnce(&mut Registries) -> Result<T>) -> Result<T> {
    let mut guard = cell().write().unwrap_or_else(|e| e.into_inner());
    match &mut *guard {
        Ok(r) => {
            // Apply to a copy so a failing plugin leaves the registries as they were.
            let mut copy = r.clone();
            let out = f(&mut copy)?;
            *r = copy;
            Ok(out)
        }
        Err(e) => Err(Error::msg(format!(
            "building the plugin registries failed: {e}"
        ))),
    }
}
