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
