//! Greedy search: every row takes its highest-scoring next token until EOS or the length limit.

use super::process::argmax;
use super::Search;
use crate::backbone::lm::DecoderCache;
use crate::Result;

/// Decodes `batch` rows whose encoder ran into `cache`. A row that finishes leaves the cache, so later steps only
/// compute the rows still running (transformers keeps them and feeds padding; the tokens are the same).
pub(super) fn run(
    search: &Search<'_>,
    mut cache: DecoderCache,
    batch: usize,
) -> Result<Vec<Vec<u32>>> {
    let special = search.lm.special_tokens();
    let max_length = search.processors.max_length;
    let mut sequences = vec![vec![special.decoder_start]; batch];
    // `running[i]`: the input row that cache row i decodes.
    let mut running: Vec<usize> = (0..batch).collect();
    while !running.is_empty() {
        let last: Vec<u32> = running
            .iter()
            .map(|&r| *sequences[r].last().unwrap_or(&special.decoder_start))
            .collect();
        let logits = search.step(&mut cache, &last)?;
        let mut keep = Vec::with_capacity(running.len());
        for (row, mut scores) in logits.into_iter().enumerate() {
            let sequence = &mut sequences[running[row]];
            search.processors.apply(sequence, &mut scores);
            let token = argmax(&scores) as u32;
            sequence.push(token);
            if token != special.eos && sequence.len() < max_length {
                keep.push(row);
            }
        }
        if keep.len() < running.len() && !keep.is_empty() {
            let rows: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
            cache.select_rows(&rows)?;
        }
        running = keep.into_iter().map(|i| running[i]).collect();
    }
    Ok(sequences)
}
