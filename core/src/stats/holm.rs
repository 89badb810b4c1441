//! Holm's step-down correction for the comparisons of one stage.

/// Holm-adjusted p-values, in the input order: sort ascending, multiply the k-th smallest (0-based) by (m − k),
/// take the running maximum, cap at 1. NaN p-values (comparisons that could not be made) stay NaN and do not count
/// towards m.
pub fn holm_adjust(p_values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p_values.len())
        .filter(|&i| !p_values[i].is_nan())
        .collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let m = order.len();
    let mut adjusted = vec![f64::NAN; p_values.len()];
    let mut running = 0.0_f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_entries_are_skipped_and_kept() {
        let adj = holm_adjust(&[0.02, f64::NAN, 0.01]);
        assert!(adj[1].is_nan());
        assert_eq!(adj[2], 0.02);
        assert_eq!(adj[0], 0.02);
    }
}
