//! Mann–Whitney U test, two-sided, following
//! `scipy.stats.mannwhitneyu(x, y, use_continuity=True, alternative='two-sided', method='auto')`.
//!
//! * **Exact** when one sample has at most 8 values and there are no ties (SciPy's `auto` rule): the null
//!   distribution of U is built by the recurrence over merge orders; p = 2·P(U ≥ max(U1, U2)), capped at 1.
//! * **Asymptotic** otherwise: normal approximation with the tie-corrected variance
//!   n1·n2/12·((n+1) − Σ(t³−t)/(n(n−1))) and a continuity correction of ½.

use statrs::distribution::{ContinuousCDF, Normal};

use super::ranks::average_ranks_and_ties;

/// How a Mann–Whitney p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MwuMethod {
    Exact,
    Asymptotic,
}

/// U statistic of the first sample (SciPy's `statistic`) and the two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitneyResult {
    /// U1 = R1 − n1(n1+1)/2, where R1 is the rank sum of the first sample (average ranks for ties).
    pub u: f64,
    pub p_value: f64,
    pub method: MwuMethod,
}

/// The two-sided Mann–Whitney U test; `None` when either sample is empty.
pub fn mann_whitney_u(x: &[f64], y: &[f64]) -> Option<MannWhitneyResult> {
    let (n1, n2) = (x.len(), y.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let pooled: Vec<f64> = x.iter().chain(y.iter()).copied().collect();
    let (ranks, tie_sizes) = average_ranks_and_ties(&pooled);
    let r1: f64 = ranks[..n1].iter().sum();
    let u1 = r1 - (n1 * (n1 + 1)) as f64 / 2.0;
    let u2 = (n1 * n2) as f64 - u1;
    let u = u1.max(u2);
    let has_ties = tie_sizes.iter().any(|&t| t > 1);
    if (n1 <= 8 || n2 <= 8) && !has_ties {
        let p = 2.0 * exact_upper_tail(n1, n2, u.round() as usize);
        return Some(MannWhitneyResult {
            u: u1,
            p_value: p.clamp(0.0, 1.0),
            method: MwuMethod::Exact,
        });
    }
    let n = (n1 + n2) as f64;
    let tie_term: f64 = tie_sizes
        .iter()
        .map(|&t| (t as f64).powi(3) - t as f64)
        .sum();
    let sigma = ((n1 * n2) as f64 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
    let z = (u - (n1 * n2) as f64 / 2.0 - 0.5) / sigma;
    let p = match Normal::new(0.0, 1.0) {
        // Every value tied: zero variance and U at its mean, so the continuity-corrected z is −inf; SciPy's
        // 2·sf(−inf) = 2 is clipped to p = 1.
        Ok(normal) if z.is_finite() => 2.0 * normal.sf(z),
        _ if z == f64::NEG_INFINITY => 1.0,
        _ if z == f64::INFINITY => 0.0,
        _ => f64::NAN,
    };
    Some(MannWhitneyResult {
        u: u1,
        p_value: p.clamp(0.0, 1.0),
        method: MwuMethod::Asymptotic,
    })
}

/// P(U ≥ k) under the null for samples of sizes n1, n2 (no ties).
fn exact_upper_tail(n1: usize, n2: usize, k: usize) -> f64 {
    let pmf = u_distribution(n1.min(n2), n1.max(n2));
    pmf.iter().skip(k).sum::<f64>()
}

/// Null distribution of U for sizes (a, b), from P(a, b, u) = a/(a+b)·P(a−1, b, u−b) + b/(a+b)·P(a, b−1, u):
/// the largest value of the merged sample is either one of the a values (it then beats all b others) or not.
fn u_distribution(a: usize, b: usize) -> Vec<f64> {
    // row[j] = distribution for sizes (i, j) for the current i.
    let mut row: Vec<Vec<f64>> = (0..=b).map(|_| vec![1.0]).collect();
    for i in 1..=a {
        let mut next: Vec<Vec<f64>> = Vec::with_capacity(b + 1);
        next.push(vec![1.0]);
        for j in 1..=b {
            let mut dist = vec![0.0; i * j + 1];
            let total = (i + j) as f64;
            let w_prev_i = i as f64 / total;
            let w_prev_j = j as f64 / total;
            for (u, p) in row[j].iter().enumerate() {
                dist[u + j] += w_prev_i * p;
            }
            for (u, p) in next[j - 1].iter().enumerate() {
                dist[u] += w_prev_j * p;
            }
            next.push(dist);
        }
        row = next;
    }
    row.pop().unwrap_or_else(|| vec![1.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scipy_docstring_example_exact() {
        // scipy.stats.mannwhitneyu(males, females, method="exact") -> (17.0, 0.1111111111111111)
        let males = [19.0, 22.0, 16.0, 29.0, 24.0];
        let females = [20.0, 11.0, 17.0, 12.0];
        let r = mann_whitney_u(&males, &females).expect("non-empty");
        assert_eq!(r.u, 17.0);
        assert_eq!(r.method, MwuMethod::Exact);
        assert!((r.p_value - 0.1111111111111111).abs() < 1e-14);
    }

    #[test]
    fn u_distribution_sums_to_one_and_is_symmetric() {
        let d = u_distribution(3, 5);
        assert_eq!(d.len(), 16);
        assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-14);
        for u in 0..d.len() {
            assert!((d[u] - d[15 - u]).abs() < 1e-15);
        }
    }

    #[test]
    fn all_values_tied_gives_p_one_as_scipy() {
        // scipy.stats.mannwhitneyu([.5, .5, .5], [.5, .5, .5], method="auto") -> (4.5, 1.0);
        // with [.5, .5] first -> (3.0, 1.0).
        let r = mann_whitney_u(&[0.5; 3], &[0.5; 3]).expect("non-empty");
        assert_eq!((r.u, r.p_value), (4.5, 1.0));
        let r = mann_whitney_u(&[0.5; 2], &[0.5; 3]).expect("non-empty");
        assert_eq!((r.u, r.p_value), (3.0, 1.0));
    }
}
