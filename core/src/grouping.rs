//! `GroupingRule`: a constraint on how L layers are cut into G consecutive groups.

use rand::RngCore;

use crate::Result;

/// A constraint on group sizes n1..nG (each ≥ 1, summing to L).
pub trait GroupingRule: Send + Sync {
    fn name(&self) -> &str;

    /// Whether these group sizes satisfy the rule.
    fn admits(&self, sizes: &[usize]) -> bool;

    /// Draws sizes uniformly among all compositions of `layers` into `groups` parts that the rule admits;
    /// an error says why when there is none.
    fn sample(&self, layers: usize, groups: usize, rng: &mut dyn RngCore) -> Result<Vec<usize>>;
}

/// A registry entry for a grouping rule.
#[derive(Clone, Copy)]
pub struct GroupingEntry {
    pub name: &'static str,
    pub summary: &'static str,
    pub create: fn() -> Box<dyn GroupingRule>,
}

inventory::collect!(GroupingEntry);
