//! `AllocationRule`: a constraint on how the parameter budget is shared among the tuned groups.

use rand::RngCore;

use crate::Result;

/// A constraint on budget shares s1..sG (zero for untuned groups, summing to 1 over tuned ones).
/// Rules such as `increasing` order the per-*layer* budget `share / group size`.
pub trait AllocationRule: Send + Sync {
    fn name(&self) -> &str;

    /// Whether these shares satisfy the rule for these group sizes and tuned flags.
    fn admits(&self, shares: &[f64], sizes: &[usize], tuned: &[bool]) -> bool;

    /// Draws shares for these group sizes and tuned flags.
    fn sample(&self, sizes: &[usize], tuned: &[bool], rng: &mut dyn RngCore) -> Result<Vec<f64>>;
}

/// A registry entry for an allocation rule.
#[derive(Clone, Copy)]
pub struct AllocationEntry {
    pub name: &'static str,
    pub summary: &'static str,
    pub create: fn() -> Box<dyn AllocationRule>,
}

inventory::collect!(AllocationEntry);
