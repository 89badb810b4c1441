//! Design spaces: constraints on the four design dimensions, and a seeded sampler that redraws designs the budget
//! solver rejects, counting the rejections.
//!
//! A space starts as S0 (any grouping, any allocation, any non-empty set of tuned groups, any non-empty strategy set
//! per tuned group) and is narrowed one dimension at a time with [`DesignSpace::constrain`].

use std::collections::BTreeSet;

use rand::{Rng, RngCore};

use crate::budget::{self, BudgetPlan, Strategies};
use crate::design::{group_name, Design};
use crate::registry::Registries;
use crate::shapes::BackboneInfo;
use crate::spec::Dimension;
use crate::{Error, Result};

/// Compositions are enumerated (and sampled from the list) up to this many; beyond, uniform compositions are drawn
/// and those the rule refuses are redrawn, which is uniform among the admitted ones too.
const ENUMERATION_LIMIT: u128 = 200_000;

/// Draws of uniform compositions before a rule is declared (practically) unsatisfiable.
const COMPOSITION_DRAWS: usize = 1_000_000;

/// Beyond the draws, compositions are walked (not stored) up to this many to find the admitted ones exactly.
const WALK_LIMIT: u128 = 50_000_000;

/// Designs drawn for one sample before the space is declared infeasible for the budget.
pub const MAX_DRAWS: usize = 10_000;

/// The grouping rule of S0.
pub const ANY: &str = "s0";

/// A set of designs, given as constraints per dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct DesignSpace {
    /// Number of layers L.
    pub layers: usize,
    /// Number of groups G.
    pub groups: usize,
    /// Grouping rule name (`s0` = any composition).
    pub grouping: String,
    /// Allocation rule name (`s0` = any shares).
    pub allocation: String,
    /// The tuned groups, when fixed; `None` = any non-empty subset.
    pub tuned: Option<Vec<bool>>,
    /// Per group: the strategy set it must use when tuned; `None` = any non-empty subset of `available`.
    pub strategy_sets: Vec<Option<BTreeSet<String>>>,
    /// The strategies designs may use (the experiment's), in the experiment's order.
    pub available: Vec<String>,
    /// When encoder and decoder are grouped separately: the number of encoder layers. The first half of the groups
    /// then covers the encoder and the second half the decoder, and the grouping rule applies to each half.
    pub split: Option<usize>,
    /// Largest group at most this many times the smallest (per stack when split), whatever the grouping rule;
    /// `None` = no bound. It keeps a rule's family of shapes but drops its extreme splits (a 1-layer group beside
    /// a 9-layer one), so candidates compare shapes rather than outliers.
    pub max_group_ratio: Option<f64>,
}

/// What sampling needs besides the space: shapes, strategies, budget, rules.
pub struct SampleContext {
    pub info: BackboneInfo,
    pub strategies: Strategies,
    /// Budget as a fraction of the backbone's parameters.
    pub fraction: f64,
    pub registries: Registries,
}

/// A design with its solved budget plan.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledDesign {
    pub design: Design,
    pub plan: BudgetPlan,
}

/// Draw statistics of one candidate's sampling.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleStats {
    /// Designs drawn (accepted + rejected).
    pub drawn: usize,
    /// Designs whose budget plan was infeasible or outside the tolerance.
    pub rejected: usize,
    /// Why the last rejected design was rejected.
    pub last_reason: Option<String>,
}

impl SampleStats {
    /// Rejected / drawn (0 when nothing was drawn).
    pub fn rejection_rate(&self) -> f64 {
        if self.drawn == 0 {
            0.0
        } else {
            self.rejected as f64 / self.drawn as f64
        }
    }
}

impl DesignSpace {
    /// S0 for `layers` layers in `groups` groups using the `available` strategies.
    pub fn new(layers: usize, groups: usize, available: Vec<String>) -> Result<Self> {
        if groups == 0 || groups > layers {
            return Err(Error::msg(format!(
                "cannot cut {layers} layers into {groups} groups (need 1 ≤ groups ≤ layers)"
            )));
        }
        if groups > 30 {
            return Err(Error::msg(format!(
                "at most 30 groups are supported, not {groups}"
            )));
        }
        if available.is_empty() || available.len() > 30 {
            return Err(Error::msg(
                "a design space needs between 1 and 30 strategies",
            ));
        }
        Ok(DesignSpace {
            layers,
            groups,
            grouping: ANY.to_string(),
            allocation: ANY.to_string(),
            tuned: None,
            strategy_sets: vec![None; groups],
            available,
            split: None,
            max_group_ratio: None,
        })
    }

    /// Groups encoder (the first `encoder_layers` layers) and decoder separately, G/2 groups each.
    pub fn split_stacks(&self, encoder_layers: usize) -> Result<DesignSpace> {
        let half = self.groups / 2;
        let decoder_layers = self.layers.saturating_sub(encoder_layers);
        if self.groups % 2 != 0 || half == 0 || encoder_layers < half || decoder_layers < half {
            return Err(Error::msg(format!(
                "grouping encoder ({encoder_layers} layers) and decoder ({decoder_layers} layers) separately needs an \
                 even number of groups, at most twice the smaller stack; got {}",
                self.groups
            )));
        }
        let mut next = self.clone();
        next.split = Some(encoder_layers);
        Ok(next)
    }

    /// This space with every split bounded by `ratio` (largest group ÷ smallest), or unbounded for `None`.
    pub fn with_max_group_ratio(mut self, ratio: Option<f64>) -> DesignSpace {
        self.max_group_ratio = ratio;
        self
    }

    /// Whether every stack's groups are within the ratio bound.
    fn within_ratio(&self, sizes: &[usize]) -> bool {
        let Some(ratio) = self.max_group_ratio else {
            return true;
        };
        let bounded = |part: &[usize]| match (part.iter().min(), part.iter().max()) {
            (Some(&lo), Some(&hi)) => hi as f64 <= ratio * lo as f64,
            _ => true,
        };
        match self.split {
            None => bounded(sizes),
            Some(_) => {
                let (a, b) = sizes.split_at(self.groups / 2);
                bounded(a) && bounded(b)
            }
        }
    }

    /// Group sizes drawn by the grouping rule (per stack when split) within the ratio bound: the rule draws
    /// uniformly among the splits it admits, so redrawing until the bound holds is uniform among the bounded ones.
    fn draw_sizes(&self, registries: &Registries, rng: &mut dyn RngCore) -> Result<Vec<usize>> {
        for _ in 0..MAX_DRAWS {
            let sizes = self.draw_rule_sizes(registries, rng)?;
            if self.within_ratio(&sizes) {
                return Ok(sizes);
            }
        }
        Err(Error::msg(format!(
            "grouping `{}`: no split of {} layers into {} groups found with the largest group at most {} times the \
             smallest in {MAX_DRAWS} draws; raise `max_group_ratio` or drop the candidate",
            self.grouping,
            self.layers,
            self.groups,
            self.max_group_ratio.unwrap_or(f64::INFINITY)
        )))
    }

    /// Group sizes drawn by the grouping rule alone (per stack when split).
    fn draw_rule_sizes(
        &self,
        registries: &Registries,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<usize>> {
        let rule = registries.grouping(&self.grouping)?;
        match self.split {
            None => rule.sample(self.layers, self.groups, rng),
            Some(enc) => {
                let half = self.groups / 2;
                let mut sizes = rule.sample(enc, half, rng)?;
                sizes.extend(rule.sample(self.layers - enc, half, rng)?);
                Ok(sizes)
            }
        }
    }

    /// Every group split the grouping rule `rule` admits in this space's layers and groups (per stack when split),
    /// in lexicographic order; `None` when there are more than `limit` compositions to look at (they are counted
    /// one by one, so a large space is not enumerated).
    pub fn admitted_splits(
        &self,
        rule: &str,
        registries: &Registries,
        limit: u64,
    ) -> Result<Option<Vec<Vec<usize>>>> {
        let rule = registries.grouping(rule)?;
        let stacks: Vec<(usize, usize)> = match self.split {
            None => vec![(self.layers, self.groups)],
            Some(enc) => vec![(enc, self.groups / 2), (self.layers - enc, self.groups / 2)],
        };
        let total = stacks
            .iter()
            .map(|&(l, g)| count_compositions(l, g))
            .fold(1u128, u128::saturating_mul);
        if total > u128::from(limit) {
            return Ok(None);
        }
        // Per stack, the admitted compositions; a split is one admitted composition of each stack.
        let mut splits: Vec<Vec<usize>> = vec![Vec::new()];
        for (layers, groups) in stacks {
            let admitted: Vec<Vec<usize>> = compositions(layers, groups)
                .into_iter()
                .filter(|c| rule.admits(c))
                .collect();
            splits = splits
                .iter()
                .flat_map(|head| {
                    admitted.iter().map(move |tail| {
                        let mut s = head.clone();
                        s.extend(tail);
                        s
                    })
                })
                .collect();
        }
        splits.retain(|s| self.within_ratio(s));
        Ok(Some(splits))
    }

    /// Whether the grouping rule admits these sizes (per stack when split).
    fn grouping_admits(&self, sizes: &[usize], registries: &Registries) -> Result<bool> {
        let rule = registries.grouping(&self.grouping)?;
        if !self.within_ratio(sizes) {
            return Ok(false);
        }
        Ok(match self.split {
            None => rule.admits(sizes),
            Some(enc) => {
                let (a, b) = sizes.split_at(self.groups / 2);
                a.iter().sum::<usize>() == enc && rule.admits(a) && rule.admits(b)
            }
        })
    }

    /// This space narrowed by one stage candidate on `dimension`: a grouping or allocation rule name, a tuned-group
    /// pattern (`0111`), or a strategy set (`adapter+lora`) for one group. Rule names are not resolved here.
    pub fn constrain(&self, dimension: Dimension, candidate: &str) -> Result<DesignSpace> {
        let mut next = self.clone();
        match dimension {
            Dimension::Grouping => next.grouping = candidate.to_string(),
            Dimension::Allocation => next.allocation = candidate.to_string(),
            Dimension::TunedGroups => {
                next.tuned = Some(parse_tuned_pattern(candidate, self.groups)?)
            }
            Dimension::Strategies(g) => {
                if g >= self.groups {
                    return Err(Error::msg(format!(
                        "Strategies({g}) names group {} but designs have {} groups (Strategies takes 0..{})",
                        group_name(g),
                        self.groups,
                        self.groups - 1
                    )));
                }
                next.strategy_sets[g] = Some(parse_strategy_set(candidate, &self.available)?);
            }
        }
        Ok(next)
    }

    /// One line describing the constraints (`grouping=spindle allocation=s0 tuned=any G1=adapter+lora`).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "grouping={} allocation={} tuned=",
            self.grouping, self.allocation
        );
        match &self.tuned {
            Some(t) => s.extend(t.iter().map(|&b| if b { '1' } else { '0' })),
            None => s.push_str("any"),
        }
        for (g, set) in self.strategy_sets.iter().enumerate() {
            if let Some(set) = set {
                let names: Vec<&str> = set.iter().map(String::as_str).collect();
                s.push_str(&format!(" {}={}", group_name(g), names.join("+")));
            }
        }
        if let Some(ratio) = self.max_group_ratio {
            s.push_str(&format!(" max_group_ratio={ratio}"));
        }
        s
    }

    /// Whether a design lies in this space (rules resolved through `registries`).
    pub fn admits(&self, design: &Design, registries: &Registries) -> Result<bool> {
        Ok(self.exclusion(design, registries)?.is_none())
    }

    /// Why `design` is not in this space (the first constraint it breaks), or `None` when it is.
    pub fn exclusion(&self, design: &Design, registries: &Registries) -> Result<Option<String>> {
        let bits =
            |v: &[bool]| -> String { v.iter().map(|&t| if t { '1' } else { '0' }).collect() };
        if let Err(e) = design.check() {
            return Ok(Some(format!("the design itself is invalid: {e}")));
        }
        if design.groups() != self.groups {
            return Ok(Some(format!(
                "it has {} groups; the space has {}",
                design.groups(),
                self.groups
            )));
        }
        if design.layers() != self.layers {
            return Ok(Some(format!(
                "its groups cover {} layers; the space has {}",
                design.layers(),
                self.layers
            )));
        }
        if !self.grouping_admits(&design.group_sizes, registries)? {
            return Ok(Some(format!(
                "its group sizes {:?} are not `{}` grouping",
                design.group_sizes, self.grouping
            )));
        }
        if !registries.allocation(&self.allocation)?.admits(
            &design.shares,
            &design.group_sizes,
            &design.tuned,
        ) {
            return Ok(Some(format!(
                "its budget shares are not `{}` allocation",
                self.allocation
            )));
        }
        if let Some(tuned) = self.tuned.as_ref().filter(|t| **t != design.tuned) {
            return Ok(Some(format!(
                "it tunes groups {}; the space tunes {}",
                bits(&design.tuned),
                bits(tuned)
            )));
        }
        for g in 0..self.groups {
            if !design.tuned[g] {
                continue;
            }
            let set = &design.strategies[g];
            if let Some(unknown) = set.iter().find(|n| !self.available.contains(*n)) {
                return Ok(Some(format!(
                    "group {} uses `{unknown}`, which is not one of the experiment's strategies ({})",
                    group_name(g),
                    self.available.join(", ")
                )));
            }
            if let Some(fixed) = self.strategy_sets[g].as_ref().filter(|fixed| *fixed != set) {
                let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join("+");
                return Ok(Some(format!(
                    "group {} uses {}; the space fixes {}",
                    group_name(g),
                    join(set),
                    join(fixed)
                )));
            }
        }
        Ok(None)
    }

    /// Draws one design from the space, without looking at the budget. Order of draws: group sizes, tuned groups,
    /// strategy sets (group by group), shares. A strategy-set constraint applies only when its group is tuned.
    pub fn draw(&self, registries: &Registries, rng: &mut dyn RngCore) -> Result<Design> {
        let group_sizes = self.draw_sizes(registries, rng)?;
        let tuned = match &self.tuned {
            Some(t) => t.clone(),
            None => {
                let mask: u64 = rng.random_range(1..(1u64 << self.groups));
                (0..self.groups).map(|g| mask & (1 << g) != 0).collect()
            }
        };
        let mut strategies = Vec::with_capacity(self.groups);
        for g in 0..self.groups {
            let set = if !tuned[g] {
                BTreeSet::new()
            } else if let Some(fixed) = &self.strategy_sets[g] {
                fixed.clone()
            } else {
                let mask: u64 = rng.random_range(1..(1u64 << self.available.len()));
                (0..self.available.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| self.available[i].clone())
                    .collect()
            };
            strategies.push(set);
        }
        let shares = registries
            .allocation(&self.allocation)?
            .sample(&group_sizes, &tuned, rng)?;
        let design = Design {
            group_sizes,
            shares,
            tuned,
            strategies,
        };
        design.check()?;
        Ok(design)
    }

    /// Draws designs until one meets the budget within tolerance; counts draws and rejections into `stats`.
    /// Fails when [`MAX_DRAWS`] draws in a row are rejected, with the last reason.
    pub fn sample(
        &self,
        ctx: &SampleContext,
        rng: &mut dyn RngCore,
        stats: &mut SampleStats,
    ) -> Result<SampledDesign> {
        if ctx.info.num_layers() != self.layers {
            return Err(Error::msg(format!(
                "the space has {} layers but the backbone has {}",
                self.layers,
                ctx.info.num_layers()
            )));
        }
        for _ in 0..MAX_DRAWS {
            let design = self.draw(&ctx.registries, rng)?;
            stats.drawn += 1;
            match budget::solve(&ctx.info, &design, &ctx.strategies, ctx.fraction) {
                Ok(plan) => return Ok(SampledDesign { design, plan }),
                Err(Error::Budget(reason)) => {
                    stats.rejected += 1;
                    stats.last_reason = Some(reason);
                }
                Err(other) => return Err(other),
            }
        }
        Err(Error::Budget(format!(
            "no design of the space ({}) met the budget in {MAX_DRAWS} draws; last reason: {}",
            self.describe(),
            stats.last_reason.as_deref().unwrap_or("none")
        )))
    }
}

/// The random generator every seeded draw uses (`StdRng`, so a seed gives the same designs on every platform
/// for a given rand version).
pub fn seeded_rng(seed: u64) -> rand::rngs::StdRng {
    rand::SeedableRng::seed_from_u64(seed)
}

/// Reads a tuned-group pattern: one `0`/`1` per group, at least one `1`.
pub fn parse_tuned_pattern(text: &str, groups: usize) -> Result<Vec<bool>> {
    if text.chars().count() != groups || !text.chars().all(|c| c == '0' || c == '1') {
        return Err(Error::msg(format!(
            "tuned-group pattern `{text}` must be {groups} characters 0 or 1 (one per group), e.g. `{}`",
            "1".repeat(groups)
        )));
    }
    if !text.contains('1') {
        return Err(Error::msg(format!(
            "tuned-group pattern `{text}` tunes no group; at least one must be 1"
        )));
    }
    Ok(text.chars().map(|c| c == '1').collect())
}

/// Reads a strategy set written as names joined by `+` (`adapter+lora`); each must be one of `available`.
pub fn parse_strategy_set(text: &str, available: &[String]) -> Result<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    for name in text.split('+').map(str::trim) {
        if !available.iter().any(|a| a == name) {
            return Err(Error::UnknownName {
                kind: "strategy (in this experiment)",
                name: name.to_string(),
                known: available.to_vec(),
            });
        }
        if !set.insert(name.to_string()) {
            return Err(Error::msg(format!(
                "strategy `{name}` appears twice in `{text}`"
            )));
        }
    }
    Ok(set)
}

/// Number of compositions of `layers` into `groups` positive parts: C(layers − 1, groups − 1).
pub fn count_compositions(layers: usize, groups: usize) -> u128 {
    if groups == 0 || groups > layers {
        return 0;
    }
    let (n, k) = ((layers - 1) as u128, (groups - 1) as u128);
    let k = k.min(n - k);
    let mut c: u128 = 1;
    for i in 0..k {
        c = c * (n - i) / (i + 1);
    }
    c
}

/// Every composition of `layers` into `groups` positive parts, in lexicographic order.
pub fn compositions(layers: usize, groups: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for_each_composition(layers, groups, &mut |c| out.push(c.to_vec()));
    out
}

/// Calls `visit` with every composition of `layers` into `groups` positive parts, in lexicographic order, without
/// keeping them: counting through tens of millions of compositions stays cheap in memory.
pub fn for_each_composition(layers: usize, groups: usize, visit: &mut dyn FnMut(&[usize])) {
    fn extend(prefix: &mut Vec<usize>, left: usize, parts: usize, visit: &mut dyn FnMut(&[usize])) {
        if parts == 1 {
            prefix.push(left);
            visit(prefix);
            prefix.pop();
            return;
        }
        for first in 1..=left - (parts - 1) {
            prefix.push(first);
            extend(prefix, left - first, parts - 1, visit);
            prefix.pop();
        }
    }
    if groups >= 1 && groups <= layers {
        extend(&mut Vec::with_capacity(groups), layers, groups, visit);
    }
}

/// A composition drawn uniformly: `groups − 1` distinct cut points among the `layers − 1` gaps
/// (empty when there is none, i.e. unless 1 ≤ groups ≤ layers).
pub fn uniform_composition(layers: usize, groups: usize, rng: &mut dyn RngCore) -> Vec<usize> {
    if groups == 0 || groups > layers {
        return Vec::new();
    }
    let mut cuts = rand::seq::index::sample(rng, layers - 1, groups - 1).into_vec();
    cuts.sort_unstable();
    let mut sizes = Vec::with_capacity(groups);
    let mut last = 0;
    for c in cuts {
        sizes.push(c + 1 - last);
        last = c + 1;
    }
    sizes.push(layers - last);
    sizes
}

/// Draws uniformly among the compositions `admits` accepts; `rule` names the rule in errors.
pub fn sample_composition(
    rule: &str,
    admits: &dyn Fn(&[usize]) -> bool,
    layers: usize,
    groups: usize,
    rng: &mut dyn RngCore,
) -> Result<Vec<usize>> {
    let total = count_compositions(layers, groups);
    let none = || {
        Error::msg(format!(
            "grouping rule `{rule}` admits no way to cut {layers} layers into {groups} consecutive groups"
        ))
    };
    if total == 0 {
        return Err(none());
    }
    if total <= ENUMERATION_LIMIT {
        let admitted: Vec<Vec<usize>> = compositions(layers, groups)
            .into_iter()
            .filter(|c| admits(c))
            .collect();
        if admitted.is_empty() {
            return Err(none());
        }
        let i = rng.random_range(0..admitted.len());
        return Ok(admitted[i].clone());
    }
    for _ in 0..COMPOSITION_DRAWS {
        let c = uniform_composition(layers, groups, rng);
        if admits(&c) {
            return Ok(c);
        }
    }
    if total <= WALK_LIMIT {
        // A rule this narrow (e.g. `uniform`: one admitted cut of 36 layers in 324,632) can escape every draw; two
        // walks over all compositions, one counting and one stopping at a uniformly chosen admitted index, settle it.
        return nth_admitted(admits, layers, groups, rng).ok_or_else(none);
    }
    Err(Error::msg(format!(
        "grouping rule `{rule}`: no admitted composition of {layers} layers into {groups} groups found in \
         {COMPOSITION_DRAWS} draws"
    )))
}

/// A uniformly chosen admitted composition, found by walking all of them twice; `None` when none is admitted.
fn nth_admitted(
    admits: &dyn Fn(&[usize]) -> bool,
    layers: usize,
    groups: usize,
    rng: &mut dyn RngCore,
) -> Option<Vec<usize>> {
    let mut count = 0u64;
    for_each_composition(layers, groups, &mut |c| count += u64::from(admits(c)));
    if count == 0 {
        return None;
    }
    let wanted = rng.random_range(0..count);
    let (mut seen, mut chosen) = (0u64, None);
    for_each_composition(layers, groups, &mut |c| {
        if chosen.is_none() && admits(c) {
            if seen == wanted {
                chosen = Some(c.to_vec());
            }
            seen += 1;
        }
    });
    chosen
}

#[cfg(test)]
#[path = "space_tests.rs"]
mod tests;
