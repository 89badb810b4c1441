//! Average ranks, as `scipy.stats.rankdata(values, method='average')`: shared by the Mann–Whitney test and the
//! Spearman correlation.

/// Ranks starting at 1; tied values share the average of their ranks.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    average_ranks_and_ties(values).0
}

/// [`average_ranks`], and the size of every tie group in ascending order of value (1 for a value without ties):
/// what the tie correction of rank tests needs.
pub fn average_ranks_and_ties(values: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut ties = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) hold ranks start+1..=end; their mean is (start + 1 + end) / 2.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        ties.push(end - start);
        start = end;
    }
    (ranks, ties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_get_average_ranks() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0, 3.0]),
            vec![4.0, 1.0, 4.0, 2.0, 4.0]
        );
        assert_eq!(average_ranks(&[0.5, 0.5]), vec![1.5, 1.5]);
    }

    #[test]
    fn tie_groups_are_counted_in_ascending_order() {
        let (ranks, ties) = average_ranks_and_ties(&[2.0, 1.0, 2.0, 3.0]);
        assert_eq!(ranks, vec![2.5, 1.0, 2.5, 4.0]);
        assert_eq!(ties, vec![1, 2, 1]);
    }

    #[test]
    fn no_values_no_ranks() {
        assert_eq!(average_ranks_and_ties(&[]), (vec![], vec![]));
    }
}
