//! The built-in allocation rules: constraints on budget shares s1..sG over the tuned groups.
//!
//! Our documented definitions (see `docs/DESIGN_SPACE.md`), with p_g = s_g / n_g the per-layer budget of group g,
//! over the tuned groups in layer order:
//! - `s0`: any shares; sampled uniformly on the simplex (Dirichlet(1, …, 1)).
//! - `uniform`: every tuned layer gets the same budget: s_g = n_g / Σ n over tuned groups (one point).
//! - `increasing`: p non-decreasing and not all equal; per-layer budgets drawn from Dirichlet(1, …, 1) and sorted.
//! - `decreasing`: the mirror.
//!
//! With a single tuned group there is nothing to order: every rule then gives it the whole budget.

use peftspace_core::allocation::{AllocationEntry, AllocationRule};
use peftspace_core::{Error, Result};
use rand::{Rng, RngCore};

/// Shares sum to 1 within this; per-layer budgets within this (relative) count as equal.
const EPS: f64 = 1e-9;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Any,
    Uniform,
    Increasing,
    Decreasing,
}

struct Rule {
    name: &'static str,
    kind: Kind,
}

/// Shares are positive on tuned groups, zero elsewhere, and sum to 1.
fn well_formed(shares: &[f64], sizes: &[usize], tuned: &[bool]) -> bool {
    shares.len() == sizes.len()
        && tuned.len() == sizes.len()
        && tuned.iter().any(|&t| t)
        && shares.iter().zip(tuned).all(|(&s, &t)| {
            if t {
                s.is_finite() && s > 0.0
            } else {
                s == 0.0
            }
        })
        && (shares.iter().sum::<f64>() - 1.0).abs() <= 1e-6
}

/// Per-layer budgets of the tuned groups, in layer order.
fn per_layer(shares: &[f64], sizes: &[usize], tuned: &[bool]) -> Vec<f64> {
    (0..sizes.len())
        .filter(|&g| tuned[g])
        .map(|g| shares[g] / sizes[g] as f64)
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= EPS * a.abs().max(b.abs())
}

/// Dirichlet(1, …, 1): normalised standard exponentials.
fn flat_dirichlet(k: usize, rng: &mut dyn RngCore) -> Vec<f64> {
    // 1 − u lies in (0, 1], so the logarithm is finite.
    let x: Vec<f64> = (0..k).map(|_| -(1.0 - rng.random::<f64>()).ln()).collect();
    let sum: f64 = x.iter().sum();
    if sum > 0.0 {
        x.iter().map(|v| v / sum).collect()
    } else {
        vec![1.0 / k as f64; k]
    }
}

/// Shares from per-layer budgets of the tuned groups (zero for the others).
fn shares_from_per_layer(p: &[f64], sizes: &[usize], tuned: &[bool]) -> Vec<f64> {
    let mut it = p.iter();
    let raw: Vec<f64> = (0..sizes.len())
        .map(|g| {
            if tuned[g] {
                it.next().copied().unwrap_or(0.0) * sizes[g] as f64
            } else {
                0.0
            }
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|v| v / sum).collect()
}

impl AllocationRule for Rule {
    fn name(&self) -> &str {
        self.name
    }

    fn admits(&self, shares: &[f64], sizes: &[usize], tuned: &[bool]) -> bool {
        if !well_formed(shares, sizes, tuned) {
            return false;
        }
        let p = per_layer(shares, sizes, tuned);
        if p.len() == 1 {
            return true;
        }
        let all_equal = p.windows(2).all(|w| close(w[0], w[1]));
        match self.kind {
            Kind::Any => true,
            Kind::Uniform => all_equal,
            Kind::Increasing => {
                !all_equal && p.windows(2).all(|w| w[0] <= w[1] || close(w[0], w[1]))
            }
            Kind::Decreasing => {
                !all_equal && p.windows(2).all(|w| w[0] >= w[1] || close(w[0], w[1]))
            }
        }
    }

    fn sample(&self, sizes: &[usize], tuned: &[bool], rng: &mut dyn RngCore) -> Result<Vec<f64>> {
        let k = tuned.iter().filter(|&&t| t).count();
        if k == 0 || sizes.len() != tuned.len() || sizes.contains(&0) {
            return Err(Error::msg(format!(
                "allocation rule `{}` needs at least one tuned, non-empty group (sizes {sizes:?}, tuned {tuned:?})",
                self.name
            )));
        }
        let shares = match self.kind {
            Kind::Any => {
                let mut d = flat_dirichlet(k, rng).into_iter();
                tuned
                    .iter()
                    .map(|&t| if t { d.next().unwrap_or(0.0) } else { 0.0 })
                    .collect()
            }
            Kind::Uniform => shares_from_per_layer(&vec![1.0; k], sizes, tuned),
            Kind::Increasing | Kind::Decreasing => {
                let mut p = flat_dirichlet(k, rng);
                p.sort_by(f64::total_cmp);
                if self.kind == Kind::Decreasing {
                    p.reverse();
                }
                shares_from_per_layer(&p, sizes, tuned)
            }
        };
        Ok(shares)
    }
}

macro_rules! allocation_rule {
    ($create:ident, $name:literal, $kind:expr, $summary:literal) => {
        fn $create() -> Box<dyn AllocationRule> {
            Box::new(Rule {
                name: $name,
                kind: $kind,
            })
        }
        inventory::submit! {
            AllocationEntry { name: $name, summary: $summary, create: $create }
        }
    };
}

allocation_rule!(
    create_s0,
    "s0",
    Kind::Any,
    "any shares of the budget over the tuned groups (flat Dirichlet)"
);
allocation_rule!(
    create_uniform,
    "uniform",
    Kind::Uniform,
    "the same budget for every tuned layer"
);
allocation_rule!(
    create_increasing,
    "increasing",
    Kind::Increasing,
    "per-layer budget rises from group to group (sorted flat Dirichlet)"
);
allocation_rule!(
    create_decreasing,
    "decreasing",
    Kind::Decreasing,
    "per-layer budget falls from group to group (sorted flat Dirichlet)"
);

#[cfg(test)]
mod tests {
    use super::*;
    use peftspace_core::registry::registries;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const RULES: [&str; 4] = ["s0", "uniform", "increasing", "decreasing"];

    fn rule(name: &str) -> Box<dyn AllocationRule> {
        registries().unwrap().allocation(name).unwrap()
    }

    #[test]
    fn uniform_gives_every_tuned_layer_the_same_budget() {
        let mut rng = StdRng::seed_from_u64(1);
        let s = rule("uniform")
            .sample(&[1, 2, 2, 1], &[true, true, false, true], &mut rng)
            .unwrap();
        assert_eq!(s, vec![0.25, 0.5, 0.0, 0.25]);
        assert!(rule("uniform").admits(&s, &[1, 2, 2, 1], &[true, true, false, true]));
    }

    #[test]
    fn orderings_are_on_per_layer_budget_not_shares() {
        let (sizes, tuned) = ([1, 3], [true, true]);
        // Shares 0.2 and 0.8 give per-layer budgets 0.2 and 0.267: increasing.
        assert!(rule("increasing").admits(&[0.2, 0.8], &sizes, &tuned));
        // Shares 0.3 and 0.7 give 0.3 and 0.233: decreasing, although the shares rise.
        assert!(rule("decreasing").admits(&[0.3, 0.7], &sizes, &tuned));
        assert!(!rule("increasing").admits(&[0.3, 0.7], &sizes, &tuned));
        assert!(
            !rule("increasing").admits(&[0.25, 0.75], &sizes, &tuned),
            "all equal is uniform"
        );
        assert!(
            !rule("s0").admits(&[0.5, 0.4], &sizes, &tuned),
            "shares must sum to 1"
        );
        assert!(
            !rule("s0").admits(&[0.0, 1.0], &sizes, &tuned),
            "tuned groups need a positive share"
        );
    }

    proptest! {
        #[test]
        fn every_sample_is_admitted_by_its_rule(
            sizes in proptest::collection::vec(1usize..8, 1..7),
            mask in 1u32..64,
            seed in any::<u64>(),
            which in 0usize..4,
        ) {
            let tuned: Vec<bool> = (0..sizes.len()).map(|g| mask & (1 << g) != 0).collect();
            prop_assume!(tuned.iter().any(|&t| t));
            let r = rule(RULES[which]);
            let s = r.sample(&sizes, &tuned, &mut StdRng::seed_from_u64(seed)).unwrap();
            prop_assert!(r.admits(&s, &sizes, &tuned), "{} {:?} {:?} {:?}", RULES[which], sizes, tuned, s);
        }
    }
}
