//! Which examples go together in a batch: similar lengths (less padding), in a seeded order.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Batches per length-sorted chunk: large enough that batches hold similar lengths, small enough that an epoch's
/// order still mixes short and long examples.
const BATCHES_PER_CHUNK: usize = 50;

/// Training batches for one epoch: shuffle all examples, cut them into chunks, sort each chunk by length, cut it
/// into batches, then shuffle the batches. `lengths[i]` is example i's token count.
pub fn training_batches(lengths: &[usize], batch_size: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(rng);
    let mut batches = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for chunk in order.chunks_mut(batch_size * BATCHES_PER_CHUNK) {
        // Stable sort: ties keep the shuffled order, so the result depends only on the seed.
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(rng);
    batches
}

/// Evaluation batches: all examples sorted by length (ties by index), cut into batches. No randomness.
pub fn eval_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_example_once_and_same_seed_same_order() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 101).collect();
        let a = training_batches(&lengths, 16, &mut StdRng::seed_from_u64(7));
        let b = training_batches(&lengths, 16, &mut StdRng::seed_from_u64(7));
        let c = training_batches(&lengths, 16, &mut StdRng::seed_from_u64(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut seen: Vec<usize> = a.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert!(a.iter().all(|batch| batch.len() <= 16));
    }

    #[test]
    fn batches_hold_similar_lengths() {
        let lengths: Vec<usize> = (0..800).map(|i| (i * 7919) % 128).collect();
        let batches = training_batches(&lengths, 16, &mut StdRng::seed_from_u64(1));
        let padded: usize = batches
            .iter()
            .map(|b| b.iter().map(|&i| lengths[i]).max().unwrap_or(0) * b.len())
            .sum();
        let real: usize = lengths.iter().sum();
        // Unsorted batches of uniform lengths in 0..128 would pad to ~1.9× the real tokens.
        assert!(
            (padded as f64) < 1.2 * real as f64,
            "padded {padded} vs real {real}"
        );
    }

    #[test]
    fn eval_batches_are_sorted_and_complete() {
        let lengths = vec![5, 1, 3, 3, 9];
        assert_eq!(
            eval_batches(&lengths, 2),
            vec![vec![1, 2], vec![3, 0], vec![4]]
        );
    }
}
