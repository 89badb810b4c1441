//! Beam search, with transformers 5's bookkeeping (`_beam_search` and its helpers), since its returned sequences
//! depend on details a textbook beam search does differently:
//!
//! - each input keeps `num_beams` running beams; before the first step only the first beam is live (the others
//!   start at −10⁹, so the first step does not pick the same token once per beam);
//! - a step scores every beam's `vocab` continuations as the beam's score plus the token's log-probability (after
//!   the processors) and keeps the best `2 × num_beams` candidates of the input (one EOS id: transformers keeps
//!   `max(2, 1 + EOS ids) × num_beams`), best first, ties to the lower beam, then the lower token;
//! - a candidate is *done* when its token is EOS or the sequence reached the length limit; done candidates drop
//!   10⁹ in score, so the next running beams are the best `num_beams` candidates that are not done (or, when fewer
//!   are left, done ones with their lowered score);
//! - a done candidate among the best `num_beams` candidates (not any of the `2 × num_beams`) becomes a finished
//!   hypothesis with score `sum of log-probabilities / generated^length_penalty`, where `generated` counts the tokens
//!   after the start token, EOS included; each input keeps its best `num_beams` finished hypotheses. No hypothesis
//!   is added once the input is done (below);
//! - an input is done when all its `num_beams` slots hold finished hypotheses and either `early_stopping` is true,
//!   or the best running beam's score divided by `generated^length_penalty` at the *current* length cannot beat the
//!   worst finished score (a heuristic: with a positive penalty a longer beam could still win; transformers keeps
//!   it, so do we). Once done, an input stays done;
//! - the search stops when every input is done, or when every candidate of the step was done (the length limit);
//!   each input returns its best finished hypothesis.
//!
//! Scores are f32 as in PyTorch, and the −10⁹ marks are added the way transformers adds them, so that the rare
//! cases where they meet real scores come out the same.

use std::cmp::Ordering;

use super::process::log_softmax;
use super::{GenerationSettings, Search};
use crate::backbone::lm::DecoderCache;
use crate::{Error, Result};

/// transformers' mark of a score that must lose: a dead beam, a done candidate, a closed input.
const PENALTY: f32 = -1.0e9;

/// A running beam.
#[derive(Clone)]
struct Beam {
    tokens: Vec<u32>,
    score: f32,
}

/// One of an input's `num_beams` places for finished hypotheses; `finished` is false until a hypothesis fills it.
#[derive(Clone)]
struct Slot {
    tokens: Vec<u32>,
    score: f32,
    finished: bool,
}

/// One of the best continuations of a step.
struct Candidate {
    parent: usize,
    token: u32,
    score: f32,
    done: bool,
}

/// The search state of one input.
struct Input {
    running: Vec<Beam>,
    slots: Vec<Slot>,
    /// False once the input is done (see the module documentation).
    improvable: bool,
}

impl Input {
    fn new(start: u32, beams: usize) -> Self {
        let running = (0..beams)
            .map(|i| Beam {
                tokens: vec![start],
                score: if i == 0 { 0.0 } else { PENALTY },
            })
            .collect();
        let slots = vec![
            Slot {
                tokens: vec![start],
                score: PENALTY,
                finished: false,
            };
            beams
        ];
        Input {
            running,
            slots,
            improvable: true,
        }
    }

    fn all_finished(&self) -> bool {
        self.slots.iter().all(|s| s.finished)
    }
}

/// Decodes `batch` inputs whose encoder ran into `cache` (one row per input) with `settings.num_beams` beams each.
pub(super) fn run(
    search: &Search<'_>,
    mut cache: DecoderCache,
    batch: usize,
    settings: &GenerationSettings,
) -> Result<Vec<Vec<u32>>> {
    let beams = settings.num_beams;
    let vocab = search.vocab;
    if vocab < 2 {
        return Err(Error::msg(format!(
            "beam search needs a vocabulary of at least 2 tokens, the model has {vocab}"
        )));
    }
    let keep = 2 * beams;
    let special = search.lm.special_tokens();
    let max_length = search.processors.max_length;
    let penalty = settings.length_penalty;

    // Row `input × beams + beam` of the cache holds that beam; the encoder ran once per input.
    let repeat: Vec<u32> = (0..batch as u32)
        .flat_map(|b| std::iter::repeat_n(b, beams))
        .collect();
    cache.select_rows(&repeat)?;
    let mut inputs: Vec<Input> = (0..batch)
        .map(|_| Input::new(special.decoder_start, beams))
        .collect();
    // Length of every running sequence, start token included.
    let mut length = 1;
    loop {
        let last: Vec<u32> = inputs
            .iter()
            .flat_map(|input| input.running.iter())
            .map(|beam| *beam.tokens.last().unwrap_or(&special.decoder_start))
            .collect();
        let logits = search.step(&mut cache, &last)?;
        let mut every_candidate_done = true;
        let mut parents: Vec<u32> = Vec::with_capacity(batch * beams);
        // The tokens after the start token, the new one included.
        let divisor = (length as f64).powf(penalty) as f32;
        for (b, input) in inputs.iter_mut().enumerate() {
            let mut accumulated = Vec::with_capacity(beams * vocab);
            for (j, beam) in input.running.iter().enumerate() {
                let mut scores = log_softmax(&logits[b * beams + j]);
                search.processors.apply(&beam.tokens, &mut scores);
                accumulated.extend(scores.iter().map(|&s| s + beam.score));
            }
            let candidates: Vec<Candidate> = best(&accumulated, keep)
                .into_iter()
                .map(|i| {
                    let token = (i % vocab) as u32;
                    Candidate {
                        parent: i / vocab,
                        token,
                        score: accumulated[i],
                        done: token == special.eos || length + 1 >= max_length,
                    }
                })
                .collect();
            every_candidate_done &= candidates.iter().all(|c| c.done);
            let extend = |c: &Candidate| {
                let mut tokens = input.running[c.parent].tokens.clone();
                tokens.push(c.token);
                tokens
            };

            // Finished hypotheses: the slots and the new ones compete for the `beams` places.
            let closed = input.all_finished() && settings.early_stopping;
            let mut merged: Vec<f32> = input.slots.iter().map(|s| s.score).collect();
            for (j, c) in candidates.iter().enumerate() {
                let mut score = c.score / divisor;
                if closed {
                    score += PENALTY;
                }
                if !input.improvable {
                    score += PENALTY;
                }
                if !(c.done && j < beams) {
                    score += PENALTY;
                }
                merged.push(score);
            }
            let slots = best(&merged, beams)
                .into_iter()
                .map(|m| match m.checked_sub(beams) {
                    None => input.slots[m].clone(),
                    Some(j) => Slot {
                        tokens: extend(&candidates[j]),
                        score: merged[m],
                        finished: candidates[j].done && j < beams,
                    },
                })
                .collect();

            // Running beams: the best candidates that are not done.
            let lowered: Vec<f32> = candidates
                .iter()
                .map(|c| if c.done { c.score + PENALTY } else { c.score })
                .collect();
            let running = best(&lowered, beams)
                .into_iter()
                .map(|j| {
                    parents.push((b * beams + candidates[j].parent) as u32);
                    Beam {
                        tokens: extend(&candidates[j]),
                        score: lowered[j],
                    }
                })
                .collect();
            input.slots = slots;
            input.running = running;
        }
        length += 1;
        let generated = ((length - 1) as f64).powf(penalty) as f32;
        for input in inputs.iter_mut().filter(|i| i.improvable) {
            let best_possible = input.running[0].score / generated;
            let worst = input
                .slots
                .iter()
                .map(|s| s.score)
                .fold(f32::INFINITY, f32::min);
            input.improvable = input
                .slots
                .iter()
                .any(|s| best_possible > if s.finished { worst } else { PENALTY });
        }
        let open = inputs.iter().any(|i| i.improvable);
        let all_closed = settings.early_stopping && inputs.iter().all(Input::all_finished);
        if !open || all_closed || every_candidate_done {
            break;
        }
        cache.select_rows(&parents)?;
    }
    Ok(inputs
        .into_iter()
        .map(|mut input| input.slots.swap_remove(0).tokens)
        .collect())
}

/// The indices of the `n` highest scores, highest first; equal scores in index order, NaN below everything.
fn best(scores: &[f32], n: usize) -> Vec<usize> {
    let key = |i: usize| {
        let s = scores[i];
        if s.is_nan() {
            f32::NEG_INFINITY
        } else {
            s
        }
    };
    let order = |&a: &usize, &b: &usize| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(Ordering::Equal)
            .then(a.cmp(&b))
    };
    let mut indices: Vec<usize> = (0..scores.len()).collect();
    let n = n.min(indices.len());
    if n < indices.len() && n > 0 {
        indices.select_nth_unstable_by(n - 1, order);
        indices.truncate(n);
    }
    indices.sort_unstable_by(order);
    indices.truncate(n);
    indices
}

#[cfg(test)]
mod tests {
    use super::best;

    #[test]
    fn best_orders_by_score_then_index() {
        let s = [0.5, 2.0, f32::NAN, 2.0, -1.0, 3.0];
        assert_eq!(best(&s, 3), vec![5, 1, 3]);
        assert_eq!(best(&s, 10), vec![5, 1, 3, 0, 4, 2]);
        assert!(best(&s, 0).is_empty());
    }
}
