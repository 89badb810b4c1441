//! What the refinement runner needs from a design space: narrowing by one stage's candidate, and sampling.
//!
//! The concrete design space (grouping, allocation, tuned groups, strategy sets and the budget solver) implements
//! this trait; the runner knows nothing else about designs, so it is tested with [`super::SyntheticSpace`].

use serde::{Deserialize, Serialize};

use crate::spec::Dimension;
use crate::Result;

/// A design space that can be narrowed stage by stage and sampled with a seed.
pub trait SearchSpace: Send + Sync {
    /// This space ∩ the candidate constraint on `dimension` (a grouping or allocation rule name, a tuned-groups
    /// pattern such as `"0111"`, or a strategy set such as `"adapter+lora"`). An unknown or impossible candidate
    /// is an error that says why.
    fn constrain(&self, dimension: Dimension, candidate: &str) -> Result<Box<dyn SearchSpace>>;

    /// Draws one design; the same seed gives the same design. Fails (saying why) when no design is feasible.
    fn sample(&self, seed: u64) -> Result<DesignRecord>;

    /// A baseline at the experiment's budget: one strategy name in every layer, `full` (all weights), or a design
    /// text (`g=… a=… t=… s=…`, see [`crate::design::is_design_text`]).
    fn baseline(&self, name: &str) -> Result<DesignRecord>;

    /// A one-line description of the constraints so far, for logs and `plan.json`.
    fn describe(&self) -> String;

    /// Why a stage on `dimension` cannot apply to this space (a strategy stage for a group an earlier stage left
    /// untuned); `None` when it applies. Such a stage is skipped and recorded as skipped.
    fn inapplicable(&self, _dimension: Dimension) -> Option<String> {
        None
    }
}

/// A sampled design as the runner stores and reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesignRecord {
    /// The compact, round-trippable text form; trial ids hash it.
    pub text: String,
    /// Group sizes, e.g. `2,4,4,2`.
    pub group_sizes: String,
    /// Relative per-layer budget of each group, e.g. `1,1,1,1`.
    pub allocation: String,
    /// Tuned groups as a bit pattern, e.g. `1111`.
    pub tuned_groups: String,
    /// Strategy set per group, e.g. `adapter+lora|bitfit|lora|prefix`.
    pub strategy_sets: String,
    /// The budget in parameters (fraction × backbone parameters).
    pub target_params: u64,
    /// The parameters the budget solver planned for this design (task head excluded).
    pub planned_params: u64,
    /// Parameters of the frozen backbone, for the trainable-% column.
    pub backbone_params: u64,
    /// Designs the sampler drew to get this one (it plus those the budget rejected); 0 when not sampled (a
    /// baseline).
    #[serde(default)]
    pub draws: u64,
    /// Of `draws`, how many the budget solver rejected.
    #[serde(default)]
    pub rejected: u64,
}

/// The union of spaces, each a previous stage's candidate: what an undecided stage hands on
/// ([`crate::spec::OnUndecided::KeepAll`]). A design is drawn from one member picked by the seed, each member
/// equally often, so every candidate still in the race stays as represented as it was in the stage.
pub struct UnionSpace {
    /// (candidate, the space constrained to it), in the stage's candidate order.
    members: Vec<(String, Box<dyn SearchSpace>)>,
}

impl UnionSpace {
    /// The union of `members`; one member is that member's space itself.
    pub fn of(mut members: Vec<(String, Box<dyn SearchSpace>)>) -> Result<Box<dyn SearchSpace>> {
        match members.len() {
            0 => Err(crate::Error::msg(
                "internal: a union of no candidates has no design",
            )),
            1 => Ok(members.remove(0).1),
            _ => Ok(Box::new(UnionSpace { members })),
        }
    }
}

impl SearchSpace for UnionSpace {
    /// Each member constrained; members where the stage does not apply (a strategy stage for a group the member
    /// leaves untuned) or the candidate is impossible leave the union. An error only when it is impossible in all.
    fn constrain(&self, dimension: Dimension, candidate: &str) -> Result<Box<dyn SearchSpace>> {
        let mut kept = Vec::new();
        let mut first_error = None;
        for (name, space) in &self.members {
            if let Some(reason) = space.inapplicable(dimension) {
                first_error.get_or_insert(crate::Error::msg(reason));
                continue;
            }
            match space.constrain(dimension, candidate) {
                Ok(narrowed) => kept.push((name.clone(), narrowed)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (kept.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            _ => UnionSpace::of(kept),
        }
    }

    fn sample(&self, seed: u64) -> Result<DesignRecord> {
        let pick = crate::trial::child_seed(seed, &["union member"]) % self.members.len() as u64;
        self.members[pick as usize].1.sample(seed)
    }

    fn baseline(&self, name: &str) -> Result<DesignRecord> {
        self.members[0].1.baseline(name)
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .members
            .iter()
            .map(|(name, space)| format!("[{name}: {}]", space.describe()))
            .collect();
        format!("any of {}", parts.join(" | "))
    }

    /// Inapplicable only when it is in every member (elsewhere [`Self::constrain`] leaves those members out).
    fn inapplicable(&self, dimension: Dimension) -> Option<String> {
        let reasons: Vec<String> = self
            .members
            .iter()
            .map(|(_, space)| space.inapplicable(dimension))
            .collect::<Option<Vec<_>>>()?;
        reasons.into_iter().next()
    }
}
