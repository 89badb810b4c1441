//! The built-in grouping rules: constraints on group sizes n1..nG (each ≥ 1, summing to L).
//!
//! Our documented definitions (see `docs/DESIGN_SPACE.md`):
//! - `s0`: any composition.
//! - `uniform`: as equal as L allows: largest − smallest ≤ 1.
//! - `increasing`: n1 ≤ n2 ≤ … ≤ nG, not all equal.
//! - `decreasing`: n1 ≥ n2 ≥ … ≥ nG, not all equal.
//! - `spindle`: rises then falls (non-decreasing up to a peak, non-increasing after it), and both outer groups are
//!   strictly smaller than every middle group. Needs G ≥ 3.
//! - `bottleneck`: falls then rises, and both outer groups are strictly larger than every middle group. Needs G ≥ 3.
//!
//! Every rule samples uniformly among the compositions it admits (`peftspace_core::space::sample_composition`).

use peftspace_core::grouping::{GroupingEntry, GroupingRule};
use peftspace_core::space::sample_composition;
use peftspace_core::Result;
use rand::RngCore;

/// A grouping rule given by its admission test.
struct Rule {
    name: &'static str,
    admits: fn(&[usize]) -> bool,
}

impl GroupingRule for Rule {
    fn name(&self) -> &str {
        self.name
    }

    fn admits(&self, sizes: &[usize]) -> bool {
        !sizes.is_empty() && !sizes.contains(&0) && (self.admits)(sizes)
    }

    fn sample(&self, layers: usize, groups: usize, rng: &mut dyn RngCore) -> Result<Vec<usize>> {
        sample_composition(self.name, &|s| self.admits(s), layers, groups, rng)
    }
}

pub fn admits_any(_: &[usize]) -> bool {
    true
}

pub fn admits_uniform(s: &[usize]) -> bool {
    let (lo, hi) = (s.iter().min(), s.iter().max());
    matches!((lo, hi), (Some(lo), Some(hi)) if hi - lo <= 1)
}

fn all_equal(s: &[usize]) -> bool {
    s.windows(2).all(|w| w[0] == w[1])
}

pub fn admits_increasing(s: &[usize]) -> bool {
    s.windows(2).all(|w| w[0] <= w[1]) && !all_equal(s)
}

pub fn admits_decreasing(s: &[usize]) -> bool {
    s.windows(2).all(|w| w[0] >= w[1]) && !all_equal(s)
}

/// Non-decreasing up to some index, non-increasing after it.
fn unimodal(s: &[usize]) -> bool {
    let mut i = 0;
    while i + 1 < s.len() && s[i] <= s[i + 1] {
        i += 1;
    }
    s[i..].windows(2).all(|w| w[0] >= w[1])
}

pub fn admits_spindle(s: &[usize]) -> bool {
    let g = s.len();
    if g < 3 {
        return false;
    }
    let middle_min = s[1..g - 1].iter().min().copied().unwrap_or(0);
    s[0] < middle_min && s[g - 1] < middle_min && unimodal(s)
}

pub fn admits_bottleneck(s: &[usize]) -> bool {
    let g = s.len();
    if g < 3 {
        return false;
    }
    let middle_max = s[1..g - 1].iter().max().copied().unwrap_or(usize::MAX);
    let mirrored: Vec<usize> = s.iter().map(|&x| usize::MAX - x).collect();
    s[0] > middle_max && s[g - 1] > middle_max && unimodal(&mirrored)
}

macro_rules! grouping_rule {
    ($create:ident, $name:literal, $admits:path, $summary:literal) => {
        fn $create() -> Box<dyn GroupingRule> {
            Box::new(Rule {
                name: $name,
                admits: $admits,
            })
        }
        inventory::submit! {
            GroupingEntry { name: $name, summary: $summary, create: $create }
        }
    };
}

grouping_rule!(
    create_s0,
    "s0",
    admits_any,
    "any cut of the layers into G consecutive groups"
);
grouping_rule!(
    create_uniform,
    "uniform",
    admits_uniform,
    "groups as equal as the layer count allows (sizes differ by ≤ 1)"
);
grouping_rule!(
    create_increasing,
    "increasing",
    admits_increasing,
    "n1 ≤ … ≤ nG, not all equal"
);
grouping_rule!(
    create_decreasing,
    "decreasing",
    admits_decreasing,
    "n1 ≥ … ≥ nG, not all equal"
);
grouping_rule!(
    create_spindle,
    "spindle",
    admits_spindle,
    "rises then falls; outer groups strictly smaller than every middle group (G ≥ 3)"
);
grouping_rule!(
    create_bottleneck,
    "bottleneck",
    admits_bottleneck,
    "falls then rises; outer groups strictly larger than every middle group (G ≥ 3)"
);

#[cfg(test)]
#[path = "grouping_tests.rs"]
mod tests;
