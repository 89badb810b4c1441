//! The score processors of a decoding step, in transformers' order: n-gram ban, minimum length, forced EOS; and the
//! log-softmax beam search scores with.

use super::GenerationSettings;
use crate::backbone::lm::SpecialTokens;

/// The processors one decoding run applies to every row's scores.
pub(super) struct Processors {
    ngram: usize,
    min_new_tokens: usize,
    eos: u32,
    forced_eos: Option<u32>,
    /// The longest decoder sequence, start token included.
    pub max_length: usize,
}

impl Processors {
    pub fn new(settings: &GenerationSettings, special: SpecialTokens) -> Self {
        Processors {
            ngram: settings.no_repeat_ngram_size,
            min_new_tokens: settings.min_new_tokens,
            eos: special.eos,
            forced_eos: special.forced_eos,
            max_length: settings.max_new_tokens + 1,
        }
    }

    /// Changes `scores` (one row, the vocabulary wide) for the next token after `sequence` (the decoder sequence so
    /// far, start token first).
    pub fn apply(&self, sequence: &[u32], scores: &mut [f32]) {
        self.ban_repeated_ngrams(sequence, scores);
        // The start token is the decoder's prompt: only the tokens after it count as generated.
        if sequence.len().saturating_sub(1) < self.min_new_tokens {
            set(scores, self.eos, f32::NEG_INFINITY);
        }
        if let Some(eos) = self.forced_eos {
            // The next token is the last one allowed: it must be EOS.
            if sequence.len() + 1 == self.max_length {
                scores.fill(f32::NEG_INFINITY);
                set(scores, eos, 0.0);
            }
        }
    }

    /// Every n-gram of the sequence whose first n − 1 tokens equal the sequence's last n − 1 tokens bans its last
    /// token (the n-gram ending at the sequence's end cannot match: it would need one more token).
    fn ban_repeated_ngrams(&self, sequence: &[u32], scores: &mut [f32]) {
        let n = self.ngram;
        if n == 0 || sequence.len() < n {
            return;
        }
        let suffix = &sequence[sequence.len() + 1 - n..];
        for window in sequence.windows(n) {
            if &window[..n - 1] == suffix {
                set(scores, window[n - 1], f32::NEG_INFINITY);
            }
        }
    }
}

/// Sets `scores[token]` when the token is inside the row (an id past the model's logits cannot be generated anyway).
fn set(scores: &mut [f32], token: u32, value: f32) {
    if let Some(s) = scores.get_mut(token as usize) {
        *s = value;
    }
}

/// `x − max − ln Σ exp(x − max)` over one row, in f32 like PyTorch (the sum accumulated in f64).
pub(super) fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return row.to_vec();
    }
    let sum: f64 = row.iter().map(|&x| f64::from((x - max).exp())).sum();
    let log_sum = sum.ln() as f32;
    row.iter().map(|&x| x - max - log_sum).collect()
}

/// The index of the first highest score (PyTorch's `argmax`); NaN never wins.
pub(super) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] || (row[best].is_nan() && !x.is_nan()) {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processors(ngram: usize, min_new: usize, forced: Option<u32>, max_new: usize) -> Processors {
        let settings = GenerationSettings {
            no_repeat_ngram_size: ngram,
            min_new_tokens: min_new,
            max_new_tokens: max_new,
            ..GenerationSettings::default()
        };
        let special = SpecialTokens {
            decoder_start: 0,
            eos: 1,
            pad: 0,
            forced_eos: forced,
        };
        Processors::new(&settings, special)
    }

    fn banned(scores: &[f32]) -> Vec<usize> {
        (0..scores.len())
            .filter(|&i| scores[i] == f32::NEG_INFINITY)
            .collect()
    }

    #[test]
    fn ngram_bans_tokens_that_would_repeat_an_ngram() {
        let p = processors(2, 0, None, 20);
        let mut s = vec![0.0; 8];
        // Bigrams (0,3) (3,4) (4,3) (3,5): after a 3, both 4 and 5 would repeat one.
        p.apply(&[0, 3, 4, 3, 5, 3], &mut s);
        assert_eq!(banned(&s), vec![4, 5]);
        let p3 = processors(3, 0, None, 20);
        let mut s = vec![0.0; 8];
        p3.apply(&[0, 3, 4, 6, 3, 4], &mut s);
        assert_eq!(banned(&s), vec![6]);
        // Shorter than n: nothing to ban.
        let mut s = vec![0.0; 8];
        p3.apply(&[0, 3], &mut s);
        assert!(banned(&s).is_empty());
        // n = 1 bans every token seen, the start token included.
        let p1 = processors(1, 0, None, 20);
        let mut s = vec![0.0; 8];
        p1.apply(&[0, 3, 4], &mut s);
        assert_eq!(banned(&s), vec![0, 3, 4]);
    }

    #[test]
    fn min_length_bans_eos_until_enough_tokens_and_forced_eos_overrides() {
        let p = processors(0, 2, Some(1), 3);
        let mut s = vec![0.5; 4];
        p.apply(&[0, 2], &mut s);
        assert_eq!(banned(&s), vec![1]);
        let mut s = vec![0.5; 4];
        p.apply(&[0, 2, 3], &mut s);
        // Two generated: EOS allowed again; the next token is the third and last, so it is forced.
        assert_eq!(
            s,
            vec![f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]
        );
    }

    #[test]
    fn log_softmax_and_argmax() {
        let l = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f32 = l.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!((l[2] - l[1] - 1.0).abs() < 1e-6);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
        let masked = log_softmax(&[f32::NEG_INFINITY, 0.0]);
        assert_eq!(masked, vec![f32::NEG_INFINITY, 0.0]);
    }
}
