//! The budget solver: turns a design into exact per-layer strategy sizes that meet a parameter budget.
//!
//! Rules (see `docs/DESIGN_SPACE.md`):
//! 1. target = fraction × backbone parameters; each tuned group gets `share × target`.
//! 2. A tuned group with only fixed-size strategies (BitFit) takes its exact count; the difference to its share is
//!    passed to the groups with sized strategies in proportion to their shares.
//! 3. Within a group, fixed-size strategies take their exact count first; the sized strategies share the rest
//!    equally. Each sized strategy takes, in every layer of the group, the largest size whose total fits its part;
//!    then as many layers as bring the total closest to that part get one step more (so sizes in a group differ by
//!    at most one step, spread evenly over the group's layers).
//! 4. Rounding differences are carried from one (group, strategy) part to the next, coarsest step first, so the
//!    finest strategy absorbs what the coarser ones could not.
//! 5. The achieved total must be within [`TOLERANCE`] of the target, else the design is rejected.
//!
//! Task heads are not part of the budget.

use std::collections::BTreeMap;

use crate::design::{group_name, Design};
use crate::shapes::{BackboneInfo, LayerShape};
use crate::strategy::TuningStrategy;
use crate::{Error, Result};

/// Largest relative difference between achieved and target parameters a plan may have.
pub const TOLERANCE: f64 = 0.01;

/// No strategy size is searched beyond this (a guard against strategies whose count stops growing).
const MAX_SIZE: usize = 1 << 22;

/// Strategy name → the strategy object, as the experiment configured it.
pub type Strategies = BTreeMap<String, Box<dyn TuningStrategy>>;

/// One strategy in one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategySize {
    pub strategy: String,
    /// Adapter width, prefix length, LoRA rank, …; 1 for fixed-size strategies (whose `build` ignores it).
    pub size: usize,
    /// Exact trainable parameters of this strategy in this layer.
    pub params: usize,
    pub fixed: bool,
}

/// Everything trained in one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    /// Global layer index.
    pub layer: usize,
    /// Group of the layer (0-based).
    pub group: usize,
    /// The group's strategies in name order; empty when the group is not tuned.
    pub strategies: Vec<StrategySize>,
}

/// The strategies of one layer, each with its size (adapter width, prefix length, LoRA rank; ignored by BitFit).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerAssignment {
    /// Global layer index.
    pub layer: usize,
    /// `(strategy name, size)` in the order their modules run.
    pub strategies: Vec<(String, usize)>,
}

/// A solved design: per layer, per strategy, its size and parameter count.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetPlan {
    /// `fraction × backbone parameters`, rounded.
    pub target: usize,
    /// Trainable parameters of all strategies in all layers (task heads not included).
    pub achieved: usize,
    /// Budget each group was asked to meet after fixed-size-only groups passed on their rest.
    pub group_budgets: Vec<f64>,
    /// Parameters each group achieved.
    pub group_params: Vec<usize>,
    pub layers: Vec<LayerPlan>,
}

impl BudgetPlan {
    /// `(achieved − target) / target`.
    pub fn relative_error(&self) -> f64 {
        if self.target == 0 {
            return 0.0;
        }
        (self.achieved as f64 - self.target as f64) / self.target as f64
    }

    /// Every `(layer, strategy name, size)` to build, layer by layer.
    pub fn assignments(&self) -> impl Iterator<Item = (usize, &str, usize)> + '_ {
        self.layers.iter().flat_map(|l| {
            l.strategies
                .iter()
                .map(move |s| (l.layer, s.strategy.as_str(), s.size))
        })
    }

    /// The plan as the trainer builds it (`train::build_design`): per layer, `(strategy, size)` pairs.
    /// Untuned layers are left out.
    pub fn layer_assignments(&self) -> Vec<LayerAssignment> {
        self.layers
            .iter()
            .filter(|l| !l.strategies.is_empty())
            .map(|l| LayerAssignment {
                layer: l.layer,
                strategies: l
                    .strategies
                    .iter()
                    .map(|s| (s.strategy.clone(), s.size))
                    .collect(),
            })
            .collect()
    }

    /// Per-layer sizes as text: layers separated by spaces, strategies by `+` as code and size (`A12+L4+B`,
    /// fixed-size strategies without a size), `-` for an untuned layer. `code` maps a name to its short code.
    pub fn sizes_text(&self, code: impl Fn(&str) -> String) -> String {
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|l| {
                if l.strategies.is_empty() {
                    return "-".to_string();
                }
                let parts: Vec<String> = l
                    .strategies
                    .iter()
                    .map(|s| {
                        if s.fixed {
                            code(&s.strategy)
                        } else {
                            format!("{}{}", code(&s.strategy), s.size)
                        }
                    })
                    .collect();
                parts.join("+")
            })
            .collect();
        layers.join(" ")
    }
}

/// Solves a design and refuses plans further than [`TOLERANCE`] from the target ([`Error::Budget`]).
pub fn solve(
    info: &BackboneInfo,
    design: &Design,
    strategies: &Strategies,
    fraction: f64,
) -> Result<BudgetPlan> {
    let plan = solve_unchecked(info, design, strategies, fraction)?;
    let err = plan.relative_error();
    if err.abs() > TOLERANCE {
        return Err(Error::Budget(format!(
            "the design reaches {} parameters for a target of {} ({:+.2} %, allowed ±{} %)",
            thousands(plan.achieved),
            thousands(plan.target),
            err * 100.0,
            TOLERANCE * 100.0
        )));
    }
    Ok(plan)
}

/// Solves a design without the tolerance check; errors ([`Error::Budget`]) only when a strategy cannot get even
/// size 1 in every layer of its group.
pub fn solve_unchecked(
    info: &BackboneInfo,
    design: &Design,
    strategies: &Strategies,
    fraction: f64,
) -> Result<BudgetPlan> {
    design.check()?;
    if design.layers() != info.num_layers() {
        return Err(Error::msg(format!(
            "the design's groups cover {} layers but the backbone has {}",
            design.layers(),
            info.num_layers()
        )));
    }
    if !(fraction.is_finite() && fraction > 0.0) {
        return Err(Error::msg(format!(
            "budget fraction must be positive, not {fraction}"
        )));
    }
    let target_exact = fraction * info.num_params as f64;
    let g_count = design.groups();
    let layers_of = |g: usize| &info.layers[design.group_layers(g)];
    let lookup = |name: &str| lookup(strategies, name);

    // Fixed-size parameters per group, and which groups can absorb budget (have a sized strategy).
    let mut fixed_params = vec![0usize; g_count];
    let mut absorbs = vec![false; g_count];
    for g in (0..g_count).filter(|&g| design.tuned[g]) {
        for name in &design.strategies[g] {
            let s = lookup(name)?;
            if s.fixed_size() {
                fixed_params[g] += layers_of(g).iter().map(|l| s.params(l, 1)).sum::<usize>();
            } else {
                absorbs[g] = true;
            }
        }
    }
    let mut group_budgets: Vec<f64> = design.shares.iter().map(|s| s * target_exact).collect();
    let absorbing_share: f64 = (0..g_count)
        .filter(|&g| absorbs[g])
        .map(|g| design.shares[g])
        .sum();
    if absorbing_share > 0.0 {
        let passed: f64 = (0..g_count)
            .filter(|&g| design.tuned[g] && !absorbs[g])
            .map(|g| group_budgets[g] - fixed_params[g] as f64)
            .sum();
        for g in 0..g_count {
            if absorbs[g] {
                group_budgets[g] += passed * design.shares[g] / absorbing_share;
            } else if design.tuned[g] {
                group_budgets[g] = fixed_params[g] as f64;
            }
        }
    }

    // The parts each sized strategy must meet.
    struct Part<'a> {
        group: usize,
        name: &'a str,
        strategy: &'a dyn TuningStrategy,
        budget: f64,
        step: usize,
    }
    let mut parts: Vec<Part> = Vec::new();
    for g in (0..g_count).filter(|&g| absorbs[g]) {
        let sized: Vec<&String> = design.strategies[g]
            .iter()
            .filter(|n| lookup(n).is_ok_and(|s| !s.fixed_size()))
            .collect();
        let rest = group_budgets[g] - fixed_params[g] as f64;
        let count = sized.len();
        let each = rest / count as f64;
        for name in sized {
            let s = lookup(name)?;
            let layers = layers_of(g);
            let min_total: usize = layers.iter().map(|l| s.params(l, 1)).sum();
            if each < min_total as f64 {
                return Err(infeasible(
                    g,
                    name,
                    layers,
                    s,
                    group_budgets[g],
                    fixed_params[g],
                    each,
                    count,
                ));
            }
            let step = layers
                .iter()
                .map(|l| s.params(l, 2).saturating_sub(s.params(l, 1)))
                .max()
                .unwrap_or(0);
            parts.push(Part {
                group: g,
                name,
                strategy: s,
                budget: each,
                step,
            });
        }
    }
    // Coarsest step first: the finest strategy ends the chain and takes up what is left.
    parts.sort_by(|a, b| {
        b.step
            .cmp(&a.step)
            .then(a.group.cmp(&b.group))
            .then(a.name.cmp(b.name))
    });

    let mut sizes: BTreeMap<(usize, &str), Vec<usize>> = BTreeMap::new();
    let mut carry = 0.0;
    for p in &parts {
        let layers = layers_of(p.group);
        let want = p.budget + carry;
        let (layer_sizes, total) = fit(layers, p.strategy, want);
        carry = want - total as f64;
        sizes.insert((p.group, p.name), layer_sizes);
    }

    let mut layers_plan = Vec::with_capacity(info.num_layers());
    let mut group_params = vec![0usize; g_count];
    for g in 0..g_count {
        for (i, layer) in layers_of(g).iter().enumerate() {
            let mut entries = Vec::new();
            if design.tuned[g] {
                for name in &design.strategies[g] {
                    let s = lookup(name)?;
                    let (size, fixed) = if s.fixed_size() {
                        (1, true)
                    } else {
                        let per_layer = sizes
                            .get(&(g, name.as_str()))
                            .and_then(|v| v.get(i))
                            .copied();
                        (
                            per_layer
                                .ok_or_else(|| Error::msg("budget solver lost a strategy size"))?,
                            false,
                        )
                    };
                    let params = s.params(layer, size);
                    group_params[g] += params;
                    entries.push(StrategySize {
                        strategy: name.clone(),
                        size,
                        params,
                        fixed,
                    });
                }
            }
            layers_plan.push(LayerPlan {
                layer: layer.index,
                group: g,
                strategies: entries,
            });
        }
    }
    Ok(BudgetPlan {
        target: target_exact.round() as usize,
        achieved: group_params.iter().sum(),
        group_budgets,
        group_params,
        layers: layers_plan,
    })
}

fn lookup<'a>(strategies: &'a Strategies, name: &str) -> Result<&'a dyn TuningStrategy> {
    strategies
        .get(name)
        .map(|b| b.as_ref())
        .ok_or_else(|| Error::UnknownName {
            kind: "strategy",
            name: name.to_string(),
            known: strategies.keys().cloned().collect(),
        })
}

/// Sizes for one strategy over a group's layers: the largest common size whose total fits `budget` (at least 1),
/// then the number of layers one step larger that brings the total closest to `budget`, spread evenly.
fn fit(layers: &[LayerShape], s: &dyn TuningStrategy, budget: f64) -> (Vec<usize>, usize) {
    let total = |size: usize| -> usize { layers.iter().map(|l| s.params(l, size)).sum() };
    let fits = |size: usize| total(size) as f64 <= budget;
    let mut lo = 1;
    if fits(1) {
        let mut hi = 2;
        while hi < MAX_SIZE && fits(hi) {
            lo = hi;
            hi *= 2;
        }
        // Invariant: fits(lo), and hi does not fit (or is the cap).
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    let n = layers.len();
    let base: Vec<usize> = layers.iter().map(|l| s.params(l, lo)).collect();
    let bumped: Vec<usize> = layers.iter().map(|l| s.params(l, lo + 1)).collect();
    let mut best = (f64::INFINITY, 0usize, 0usize);
    for m in 0..=n {
        let up = spread(n, m);
        let t: usize = (0..n)
            .map(|i| if up[i] { bumped[i] } else { base[i] })
            .sum();
        let dist = (budget - t as f64).abs();
        if dist < best.0 {
            best = (dist, m, t);
        }
    }
    let up = spread(n, best.1);
    (
        (0..n).map(|i| if up[i] { lo + 1 } else { lo }).collect(),
        best.2,
    )
}

/// Which of `n` layers get one step more when `m` do, spread evenly (Bresenham).
fn spread(n: usize, m: usize) -> Vec<bool> {
    (0..n).map(|i| (i + 1) * m / n > i * m / n).collect()
}

#[allow(clippy::too_many_arguments)]
fn infeasible(
    g: usize,
    name: &str,
    layers: &[LayerShape],
    s: &dyn TuningStrategy,
    group_budget: f64,
    fixed: usize,
    each: f64,
    sized: usize,
) -> Error {
    let per_layer = layers.first().map(|l| s.params(l, 1)).unwrap_or(0);
    let fixed_note = if fixed > 0 {
        format!(", fixed-size strategies take {}", thousands(fixed))
    } else {
        String::new()
    };
    Error::Budget(format!(
        "{name} size 1 needs {} parameters per layer ({} for the {} layer(s) of group {}) but gets {} \
         (group budget {}{fixed_note}, shared by {sized} sized strateg{})",
        thousands(per_layer),
        thousands(layers.iter().map(|l| s.params(l, 1)).sum()),
        layers.len(),
        group_name(g),
        thousands(each.max(0.0).round() as usize),
        thousands(group_budget.max(0.0).round() as usize),
        if sized == 1 { "y" } else { "ies" }
    ))
}

/// `12288` → `12,288`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
