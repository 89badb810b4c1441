//! The checks of generation tasks: their settings and metric (pass 2, no file read), and whether the backbone can
//! generate text at all (once the backbone's shapes are known).

use super::checks::Unresolved;
use super::{Experiment, Parsed};
use crate::registry::Registries;
use crate::shapes::BackboneInfo;
use crate::spec::{GenerationTaskSpec, TaskSpec};
use crate::Result;

/// Pass 2 of the task at `path` (`tasks[1]`) when it is a generation task: one kind of task only, target and source
/// lengths of at least one token, distinct source and target, and a metric that scores generated text. With
/// `unresolved`, a metric no registry knows is collected there instead of refused.
pub(super) fn check_generation_task(
    p: &Parsed,
    reg: &Registries,
    task: &TaskSpec,
    path: &str,
    unresolved: Option<&mut Vec<Unresolved>>,
) -> Result<()> {
    let Some(g) = &task.generation else {
        return Ok(());
    };
    let at = format!("{path}.generation");
    if task.custom.is_some() {
        return Err(p.error_at(
            &at,
            "a task is a GLUE task (only `id`), a `custom` task or a `generation` task: this one has both `custom` \
             and `generation`; keep one of them",
        ));
    }
    if g.max_target_tokens == 0 {
        return Err(p.error_at(
            &format!("{at}.max_target_tokens"),
            "must be at least 1 token (the end-of-sequence token counts); e.g. 64 for summaries",
        ));
    }
    if g.max_source_tokens == Some(0) {
        return Err(p.error_at(
            &format!("{at}.max_source_tokens"),
            "must be at least 1 token (leave it out for `training.max_seq_len`)",
        ));
    }
    let decoding = &g.decoding;
    if decoding.num_beams == 0 {
        return Err(p.error_at(
            &format!("{at}.decoding.num_beams"),
            "must be at least 1 (1 is greedy search)",
        ));
    }
    if decoding.min_target_tokens > g.max_target_tokens {
        return Err(p.error_at(
            &format!("{at}.decoding.min_target_tokens"),
            format!(
                "{} is more than `max_target_tokens` ({}); lower it or raise `max_target_tokens`",
                decoding.min_target_tokens, g.max_target_tokens
            ),
        ));
    }
    if !decoding.length_penalty.is_finite() {
        return Err(p.error_at(
            &format!("{at}.decoding.length_penalty"),
            "must be a finite number (1.0: plain length normalisation)",
        ));
    }
    if g.source == g.target {
        return Err(p.error_at(
            &format!("{at}.target"),
            format!(
                "`source` and `target` both name `{}`; the target is the reference output, another column or key",
                g.source
            ),
        ));
    }
    check_metric(p, reg, g, &at, unresolved)
}

/// The generation task's metric (named, or the default `rouge`) must be a registered text evaluator.
fn check_metric(
    p: &Parsed,
    reg: &Registries,
    g: &GenerationTaskSpec,
    at: &str,
    unresolved: Option<&mut Vec<Unresolved>>,
) -> Result<()> {
    let name = g.metric_name();
    // A default metric is placed at the task's `generation`, where a `metric` would be written.
    let place = match g.metric {
        Some(_) => format!("{at}.metric"),
        None => at.to_string(),
    };
    let texts = |reg: &Registries| -> Vec<String> {
        reg.evaluators
            .keys()
            .filter(|k| reg.evaluator(k).is_ok_and(|e| e.scores_texts()))
            .cloned()
            .collect()
    };
    match reg.evaluator(name) {
        Ok(evaluator) if evaluator.scores_texts() => Ok(()),
        Ok(_) => Err(p.error_at(
            &place,
            format!(
                "evaluator `{name}` scores labels or values, but a generation task is scored on the text it \
                 generates: use `rouge` (summarisation) or `bleu` (translation) (text evaluators known: {})",
                texts(reg).join(", ")
            ),
        )),
        Err(_) => match unresolved {
            Some(list) => {
                list.push(Unresolved {
                    at: place,
                    kind: "evaluator",
                    name: name.to_string(),
                });
                Ok(())
            }
            None => Err(p.error_at(
                &place,
                format!(
                    "unknown evaluator `{name}`; text evaluators known: {}",
                    texts(reg).join(", ")
                ),
            )),
        },
    }
}

impl Experiment {
    /// Refuses a backbone that cannot do the experiment's tasks: a generation task (search or final run) needs a
    /// decoder to generate with, which an encoder-only model (BERT, RoBERTa, MiniLM) lacks. Placed at the task.
    pub fn check_backbone(&self, info: &BackboneInfo) -> Result<()> {
        if info.decoder_layers > 0 {
            return Ok(());
        }
        let final_tasks = self.spec.final_runs.as_ref().and_then(|f| f.tasks.as_ref());
        let listed = [
            ("tasks", Some(&self.spec.tasks)),
            ("final_runs.tasks", final_tasks),
        ];
        for (at, tasks) in listed {
            for (i, task) in tasks.into_iter().flatten().enumerate() {
                if task.generation.is_some() {
                    return Err(self.error_at(
                        &format!("{at}[{i}].generation"),
                        format!(
                            "task `{}` generates text, but the backbone is a `{}` model, an encoder without a \
                             decoder to generate with; a generation task needs an encoder-decoder model such as T5 \
                             or BART (e.g. `backbone: (hub_id: \"t5-small\")`)",
                            task.id, info.model_type
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "generation_tests.rs"]
mod tests;
