//! Ordinary least squares with HC3 heteroskedasticity-robust standard errors and type-II sums of squares.
//!
//! Coefficients, standard errors, z and p follow statsmodels `OLS(y, X).fit(cov_type="HC3")`: without `use_t`
//! statsmodels reports normal-distribution p-values for robust covariances. The per-term table follows
//! `statsmodels.stats.anova.anova_lm(ols(formula, data).fit(), typ=2)` on the classical (non-robust) fit; with
//! main effects only, a term's type-II sum of squares is SSR(model without the term) − SSR(full model).
//!
//! The solver is a Householder QR of the design (no normal equations, which square the condition number). Each
//! term's sum of squares comes from a QR with that term's columns placed last: the last entries of Qᵀy are then
//! the part of y explained by the term beyond all other columns, so the sum of squares is computed directly
//! rather than as a difference of two nearly equal residual sums.
//!
//! Designs must have full column rank. Callers code a categorical with one reference level dropped
//! ([`Term::categorical`]) and a simplex of shares summing to one with one share dropped ([`Term::simplex`],
//! [`drop_reference`]); a column that is still a linear combination of others is reported by name
//! ([`OlsError::Collinear`]) instead of yielding arbitrary coefficients.

use statrs::distribution::{ContinuousCDF, FisherSnedecor, Normal};

/// Name of the intercept column and its pseudo-term, as statsmodels' formulas name it.
pub const INTERCEPT: &str = "Intercept";

/// A column is taken as a linear combination of the columns before it when the part of it orthogonal to them has
/// a norm below this fraction of its own norm; coefficients of such a design would carry no reliable digits.
const RANK_TOLERANCE: f64 = 1e-10;

/// A named group of design columns tested together (a categorical's dummies, a simplex's shares, a count).
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub name: String,
    /// (column name, one value per row).
    pub columns: Vec<(String, Vec<f64>)>,
}

impl Term {
    /// A term of one numeric column named like the term.
    pub fn numeric(name: impl Into<String>, values: Vec<f64>) -> Term {
        let name = name.into();
        Term {
            columns: vec![(name.clone(), values)],
            name,
        }
    }

    /// Treatment (dummy) coding of a categorical: one 0/1 column `name[level]` per level except `reference`,
    /// levels in sorted order (as patsy's `C(name)` with `Treatment(reference)`).
    pub fn categorical<S: AsRef<str>>(
        name: impl Into<String>,
        values: &[S],
        reference: &str,
    ) -> Result<Term, OlsError> {
        let name = name.into();
        let mut levels: Vec<&str> = values.iter().map(AsRef::as_ref).collect();
        levels.sort_unstable();
        levels.dedup();
        let columns = levels
            .iter()
            .map(|level| {
                let column = values
                    .iter()
                    .map(|v| f64::from(u8::from(v.as_ref() == *level)))
                    .collect();
                (format!("{name}[{level}]"), column)
            })
            .collect();
        let columns = drop_reference(&name, columns, &format!("{name}[{reference}]"))?;
        Ok(Term { name, columns })
    }

    /// Shares of a whole (each row's parts sum to one) with the part named `reference` dropped: the full set
    /// would equal the intercept, and the remaining coefficients are effects relative to moving share into
    /// `reference`.
    pub fn simplex(
        name: impl Into<String>,
        parts: Vec<(String, Vec<f64>)>,
        reference: &str,
    ) -> Result<Term, OlsError> {
        let name = name.into();
        let columns = drop_reference(&name, parts, reference)?;
        Ok(Term { name, columns })
    }
}

/// Removes the column named `reference` from a term's columns, which makes a full set of dummies or of shares
/// (each summing to the intercept) estimable. Errors when no column has that name.
pub fn drop_reference(
    term: &str,
    columns: Vec<(String, Vec<f64>)>,
    reference: &str,
) -> Result<Vec<(String, Vec<f64>)>, OlsError> {
    if !columns.iter().any(|(name, _)| name == reference) {
        return Err(OlsError::UnknownReference {
            term: term.to_string(),
            reference: reference.to_string(),
            known: columns.into_iter().map(|(name, _)| name).collect(),
        });
    }
    Ok(columns
        .into_iter()
        .filter(|(name, _)| name != reference)
        .collect())
}

/// Why a model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OlsError {
    #[error("term `{term}` has no columns")]
    EmptyTerm { term: String },
    #[error("{what} `{name}` appears twice in the design")]
    Duplicate { what: &'static str, name: String },
    #[error("column `{column}` has {len} values but the response has {expected}")]
    LengthMismatch {
        column: String,
        len: usize,
        expected: usize,
    },
    #[error("`{column}` is not finite in row {row}")]
    NonFinite { column: String, row: usize },
    #[error("{rows} rows cannot estimate {parameters} coefficients with a residual degree of freedom left")]
    TooFewRows { rows: usize, parameters: usize },
    #[error("term `{term}` has no column `{reference}` to drop; it has: {}", known.join(", "))]
    UnknownReference {
        term: String,
        reference: String,
        known: Vec<String>,
    },
    /// Each entry: a column and the earlier columns (the intercept first) it is a linear combination of.
    #[error("the design is rank deficient: {}; drop one reference level per categorical term and one share per simplex", describe_collinear(.0))]
    Collinear(Vec<(String, Vec<String>)>),
}

fn describe_collinear(dependencies: &[(String, Vec<String>)]) -> String {
    dependencies
        .iter()
        .map(|(column, spanned_by)| {
            if spanned_by.is_empty() {
                format!("`{column}` is zero in every row")
            } else {
                format!(
                    "`{column}` is a linear combination of `{}`",
                    spanned_by.join("`, `")
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One design column's estimate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Coefficient {
    /// The term the column belongs to ([`INTERCEPT`] for the intercept).
    pub term: String,
    pub column: String,
    pub estimate: f64,
    /// HC3 standard error (MacKinnon & White 1985): sqrt of diag((XᵀX)⁻¹ Xᵀ diag(e_i² / (1 − h_ii)²) X (XᵀX)⁻¹).
    /// NaN for every column when some row has leverage 1 (its residual carries no information).
    pub hc3_se: f64,
    /// estimate / hc3_se.
    pub z: f64,
    /// Two-sided normal p-value, 2·Φ(−|z|).
    pub p_value: f64,
}

/// One term's row of the type-II table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TermEffect {
    pub name: String,
    /// Type-II sum of squares: the drop in residual SS from adding the term to all other terms.
    pub sum_sq: f64,
    /// Number of columns of the term.
    pub df: usize,
    /// (sum_sq / df) / (residual SS / residual df), from the classical fit.
    pub f: f64,
    /// Upper tail of F(df, residual df) at `f`.
    pub p_value: f64,
    /// sum_sq / Σ(y − ȳ)²: the share of the response's variation the term alone accounts for. Type-II sums of
    /// squares of correlated terms need not add up to the explained total.
    pub importance: f64,
}

/// The fitted model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OlsFit {
    pub rows: usize,
    /// The intercept first, then each term's columns in the order given.
    pub coefficients: Vec<Coefficient>,
    /// One entry per term, in the order given.
    pub terms: Vec<TermEffect>,
    /// Σ e_i² of the full model.
    pub residual_ss: f64,
    /// rows − number of coefficients.
    pub residual_df: usize,
    /// Σ(y − ȳ)².
    pub total_ss: f64,
    /// 1 − residual_ss / total_ss.
    pub r_squared: f64,
}

impl OlsFit {
    /// The coefficient of a column, by name.
    pub fn coefficient(&self, column: &str) -> Option<&Coefficient> {
        self.coefficients.iter().find(|c| c.column == column)
    }

    /// A term's type-II row, by name.
    pub fn term(&self, name: &str) -> Option<&TermEffect> {
        self.terms.iter().find(|t| t.name == name)
    }
}

/// Fits y = β₀ + Σ_terms Σ_columns β_c x_c + e by least squares (the intercept is added here) and reports HC3
/// inference per column and the type-II table per term. See the module documentation for the conventions.
pub fn ols_hc3(y: &[f64], terms: &[Term]) -> Result<OlsFit, OlsError> {
    let n = y.len();
    validate(y, terms)?;
    let intercept = vec![1.0; n];
    // Design columns with their term index (None for the intercept).
    let mut design: Vec<(Option<usize>, &str, &[f64])> = vec![(None, INTERCEPT, &intercept[..])];
    for (t, term) in terms.iter().enumerate() {
        for (name, values) in &term.columns {
            design.push((Some(t), name.as_str(), values.as_slice()));
        }
    }
    let p = design.len();
    if n <= p {
        return Err(OlsError::TooFewRows {
            rows: n,
            parameters: p,
        });
    }

    let columns: Vec<&[f64]> = design.iter().map(|(_, _, c)| *c).collect();
    let qr = HouseholderQr::new(&columns).map_err(|deps| {
        OlsError::Collinear(
            deps.into_iter()
                .map(|(j, spanned_by)| {
                    let names = spanned_by
                        .iter()
                        .map(|&i| design[i].1.to_string())
                        .collect();
                    (design[j].1.to_string(), names)
                })
                .collect(),
        )
    })?;

    let mut qty = y.to_vec();
    qr.apply_qt(&mut qty);
    let beta = qr.solve_r(&qty[..p]);
    let residuals: Vec<f64> = (0..n)
        .map(|i| {
            y[i] - columns
                .iter()
                .zip(&beta)
                .map(|(c, b)| c[i] * b)
                .sum::<f64>()
        })
        .collect();
    let residual_ss: f64 = residuals.iter().map(|e| e * e).sum();
    let residual_df = n - p;
    let mean_y = y.iter().sum::<f64>() / n as f64;
    let total_ss: f64 = y.iter().map(|v| (v - mean_y) * (v - mean_y)).sum();

    let hc3_se = hc3_standard_errors(&qr, &columns, &residuals);
    let normal = Normal::standard();
    let coefficients = design
        .iter()
        .zip(beta.iter().zip(&hc3_se))
        .map(|((term, column, _), (&estimate, &se))| {
            let z = estimate / se;
            Coefficient {
                term: term
                    .map_or(INTERCEPT, |t| terms[t].name.as_str())
                    .to_string(),
                column: column.to_string(),
                estimate,
                hc3_se: se,
                z,
                p_value: if z.is_nan() {
                    f64::NAN
                } else {
                    2.0 * normal.sf(z.abs())
                },
            }
        })
        .collect();

    let mut effects = Vec::with_capacity(terms.len());
    for (t, term) in terms.iter().enumerate() {
        // Same columns, this term's last; a permutation of a full-rank design stays full rank.
        let (others, own): (Vec<_>, Vec<_>) =
            design.iter().partition(|(owner, _, _)| *owner != Some(t));
        let reordered: Vec<&[f64]> = others.iter().chain(&own).map(|(_, _, c)| *c).collect();
        let sum_sq = match HouseholderQr::new(&reordered) {
            Ok(reordered_qr) => {
                let mut z = y.to_vec();
                reordered_qr.apply_qt(&mut z);
                z[p - own.len()..p].iter().map(|v| v * v).sum::<f64>()
            }
            Err(_) => f64::NAN,
        };
        let df = own.len();
        let f = (sum_sq / df as f64) / (residual_ss / residual_df as f64);
        effects.push(TermEffect {
            name: term.name.clone(),
            sum_sq,
            df,
            f,
            p_value: f_upper_tail(f, df as f64, residual_df as f64),
            importance: sum_sq / total_ss,
        });
    }

    Ok(OlsFit {
        rows: n,
        coefficients,
        terms: effects,
        residual_ss,
        residual_df,
        total_ss,
        r_squared: 1.0 - residual_ss / total_ss,
    })
}

fn validate(y: &[f64], terms: &[Term]) -> Result<(), OlsError> {
    let n = y.len();
    if let Some(row) = y.iter().position(|v| !v.is_finite()) {
        return Err(OlsError::NonFinite {
            column: "response".to_string(),
            row,
        });
    }
    let mut term_names = std::collections::HashSet::from([INTERCEPT]);
    let mut column_names = std::collections::HashSet::from([INTERCEPT]);
    for term in terms {
        if !term_names.insert(term.name.as_str()) {
            return Err(OlsError::Duplicate {
                what: "term",
                name: term.name.clone(),
            });
        }
        if term.columns.is_empty() {
            return Err(OlsError::EmptyTerm {
                term: term.name.clone(),
            });
        }
        for (name, values) in &term.columns {
            if !column_names.insert(name.as_str()) {
                return Err(OlsError::Duplicate {
                    what: "column",
                    name: name.clone(),
                });
            }
            if values.len() != n {
                return Err(OlsError::LengthMismatch {
                    column: name.clone(),
                    len: values.len(),
                    expected: n,
                });
            }
            if let Some(row) = values.iter().position(|v| !v.is_finite()) {
                return Err(OlsError::NonFinite {
                    column: name.clone(),
                    row,
                });
            }
        }
    }
    Ok(())
}

/// HC3 standard errors. With a_i = R⁻ᵀ x_i, the leverage is h_i = ‖a_i‖² and (XᵀX)⁻¹ x_i = R⁻¹ a_i, so
/// Var(β_j) = Σ_i [(R⁻¹ a_i)_j]² e_i² / (1 − h_i)² without forming (XᵀX)⁻¹.
fn hc3_standard_errors(qr: &HouseholderQr, columns: &[&[f64]], residuals: &[f64]) -> Vec<f64> {
    let p = columns.len();
    let mut variance = vec![0.0; p];
    for (i, e) in residuals.iter().enumerate() {
        let x: Vec<f64> = columns.iter().map(|c| c[i]).collect();
        let a = qr.solve_rt(&x);
        let leverage: f64 = a.iter().map(|v| v * v).sum();
        // statsmodels divides by 1 − h regardless; at h = 1 that is 0/0 in exact arithmetic and noise in floating
        // point, so say "undefined" instead.
        if 1.0 - leverage <= 1e-10 {
            return vec![f64::NAN; p];
        }
        let weight = (e / (1.0 - leverage)).powi(2);
        for (var, c) in variance.iter_mut().zip(qr.solve_r(&a)) {
            *var += weight * c * c;
        }
    }
    variance.into_iter().map(f64::sqrt).collect()
}

fn f_upper_tail(f: f64, df1: f64, df2: f64) -> f64 {
    if f.is_nan() {
        return f64::NAN;
    }
    if f.is_infinite() {
        return 0.0;
    }
    match FisherSnedecor::new(df1, df2) {
        Ok(dist) => dist.sf(f),
        Err(_) => f64::NAN,
    }
}

/// Householder QR of an n × p matrix given by columns: X = Q R with R upper triangular and non-singular.
struct HouseholderQr {
    /// Reflector k: (v, τ) with H_k = I − τ v vᵀ acting on rows k..n.
    reflectors: Vec<(Vec<f64>, f64)>,
    /// Column j of R: its entries in rows 0..=j.
    r: Vec<Vec<f64>>,
}

impl HouseholderQr {
    /// Factorises the columns in order. A column whose part orthogonal to the preceding accepted columns is
    /// negligible (see [`RANK_TOLERANCE`]) is rank deficient: it is skipped so that later columns are still
    /// examined, and the error lists each such column with the indices of the columns that span it.
    #[allow(clippy::type_complexity)]
    fn new(columns: &[&[f64]]) -> Result<Self, Vec<(usize, Vec<usize>)>> {
        let mut qr = HouseholderQr {
            reflectors: Vec::new(),
            r: Vec::new(),
        };
        let mut accepted: Vec<usize> = Vec::new();
        let mut accepted_norms: Vec<f64> = Vec::new();
        let mut deficient = Vec::new();
        for (j, column) in columns.iter().enumerate() {
            let norm = euclidean_norm(column);
            let mut work = column.to_vec();
            qr.apply_qt(&mut work);
            let k = accepted.len();
            let rest = euclidean_norm(&work[k..]);
            if norm == 0.0 || rest <= RANK_TOLERANCE * norm {
                // Coefficients of the combination: solve R_kk c = (Qᵀx)[..k]; report the columns that matter.
                let c = qr.solve_r(&work[..k]);
                let spanned_by = accepted
                    .iter()
                    .zip(&accepted_norms)
                    .zip(&c)
                    .filter(|((_, n_i), c_i)| (*c_i * *n_i).abs() > 1e-8 * norm)
                    .map(|((&i, _), _)| i)
                    .collect();
                deficient.push((j, spanned_by));
                continue;
            }
            // Reflect work[k..] onto ±rest·e_k; the sign opposite to work[k] avoids cancellation in v[0].
            let alpha = if work[k] > 0.0 { -rest } else { rest };
            let mut v = work[k..].to_vec();
            v[0] -= alpha;
            let vv: f64 = v.iter().map(|x| x * x).sum();
            let tau = 2.0 / vv;
            let mut r_column = work[..k].to_vec();
            r_column.push(alpha);
            qr.reflectors.push((v, tau));
            qr.r.push(r_column);
            accepted.push(j);
            accepted_norms.push(norm);
        }
        if deficient.is_empty() {
            Ok(qr)
        } else {
            Err(deficient)
        }
    }

    /// z ← Qᵀ z (every reflector so far, in order).
    fn apply_qt(&self, z: &mut [f64]) {
        for (k, (v, tau)) in self.reflectors.iter().enumerate() {
            let tail = &mut z[k..];
            let dot: f64 = v.iter().zip(tail.iter()).map(|(a, b)| a * b).sum();
            let scale = tau * dot;
            for (t, vi) in tail.iter_mut().zip(v) {
                *t -= scale * vi;
            }
        }
    }

    /// Solves R x = b for the leading b.len() × b.len() block (back substitution).
    fn solve_r(&self, b: &[f64]) -> Vec<f64> {
        let m = b.len();
        let mut x = b.to_vec();
        for j in (0..m).rev() {
            x[j] /= self.r[j][j];
            let xj = x[j];
            for (xi, rij) in x[..j].iter_mut().zip(&self.r[j]) {
                *xi -= rij * xj;
            }
        }
        x
    }

    /// Solves Rᵀ x = b (forward substitution).
    fn solve_rt(&self, b: &[f64]) -> Vec<f64> {
        let mut x = b.to_vec();
        for j in 0..x.len() {
            let column = &self.r[j];
            let dot: f64 = column[..j].iter().zip(&x[..j]).map(|(a, b)| a * b).sum();
            x[j] = (x[j] - dot) / column[j];
        }
        x
    }
}

fn euclidean_norm(values: &[f64]) -> f64 {
    // Scaled so that squares of large or tiny entries neither overflow nor underflow.
    let scale = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return scale;
    }
    scale
        * values
            .iter()
            .map(|v| (v / scale).powi(2))
            .sum::<f64>()
            .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> (Vec<f64>, Vec<f64>) {
        let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let y = x
            .iter()
            .map(|v| {
                1.0 + 2.0 * v
                    + if (*v as usize).is_multiple_of(2) {
                        0.1
                    } else {
                        -0.1
                    }
            })
            .collect();
        (x, y)
    }

    #[test]
    fn ols_recovers_line_and_explains_almost_everything() {
        let (x, y) = line(20);
        let fit = ols_hc3(&y, &[Term::numeric("x", x)]).expect("full rank");
        let slope = fit.coefficient("x").expect("column x");
        assert!((slope.estimate - 2.0).abs() < 1e-2, "{slope:?}");
        assert!(slope.hc3_se > 0.0 && slope.p_value < 1e-10);
        let term = fit.term("x").expect("term x");
        assert_eq!(term.df, 1);
        assert!(term.importance > 0.999);
        assert_eq!(fit.residual_df, 18);
        assert!((term.sum_sq + fit.residual_ss - fit.total_ss).abs() < 1e-9 * fit.total_ss);
    }

    #[test]
    fn ols_names_collinear_columns() {
        let (x, y) = line(12);
        let a: Vec<f64> = x.iter().map(|v| v / 11.0).collect();
        let b: Vec<f64> = a.iter().map(|v| 1.0 - v).collect();
        let shares = Term {
            name: "shares".into(),
            columns: vec![("a".into(), a.clone()), ("b".into(), b.clone())],
        };
        let err = ols_hc3(&y, &[shares]).expect_err("a + b = intercept");
        let OlsError::Collinear(deps) = &err else {
            panic!("{err}");
        };
        assert_eq!(
            deps,
            &vec![(
                "b".to_string(),
                vec![INTERCEPT.to_string(), "a".to_string()]
            )]
        );
        assert!(err
            .to_string()
            .contains("`b` is a linear combination of `Intercept`, `a`"));
        // Dropping one share makes it estimable.
        let shares =
            Term::simplex("shares", vec![("a".into(), a), ("b".into(), b)], "b").expect("b exists");
        assert!(ols_hc3(&y, &[shares]).is_ok());
    }

    #[test]
    fn ols_reports_zero_column_and_bad_input() {
        let (x, y) = line(10);
        let err = ols_hc3(&y, &[Term::numeric("zero", vec![0.0; 10])]).expect_err("zero column");
        assert!(
            err.to_string().contains("`zero` is zero in every row"),
            "{err}"
        );
        let err = ols_hc3(&y, &[Term::numeric("short", vec![1.0; 9])]).expect_err("length");
        assert!(matches!(err, OlsError::LengthMismatch { .. }));
        let mut bad = x.clone();
        bad[3] = f64::NAN;
        let err = ols_hc3(&y, &[Term::numeric("x", bad)]).expect_err("NaN");
        assert_eq!(
            err,
            OlsError::NonFinite {
                column: "x".into(),
                row: 3
            }
        );
        let err = ols_hc3(&y[..2], &[Term::numeric("x", x[..2].to_vec())]).expect_err("rows");
        assert!(matches!(err, OlsError::TooFewRows { .. }));
        let err = ols_hc3(
            &y,
            &[Term::numeric("x", x.clone()), Term::numeric("x", x.clone())],
        )
        .expect_err("twice");
        assert!(matches!(err, OlsError::Duplicate { what: "term", .. }));
    }

    #[test]
    fn ols_categorical_drops_reference_level() {
        let levels = ["b", "a", "c", "a", "b", "c", "a"];
        let term = Term::categorical("method", &levels, "a").expect("a is a level");
        let names: Vec<&str> = term.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["method[b]", "method[c]"]);
        assert_eq!(term.columns[0].1, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        let err = Term::categorical("method", &levels, "z").expect_err("no level z");
        assert!(err.to_string().contains("method[z]"), "{err}");
        // All three dummies plus the intercept are collinear.
        let all = Term {
            name: "method".into(),
            columns: ["a", "b", "c"]
                .iter()
                .map(|l| {
                    let c = levels.iter().map(|v| f64::from(u8::from(v == l))).collect();
                    (format!("method[{l}]"), c)
                })
                .collect(),
        };
        let y: Vec<f64> = (0..7).map(|i| i as f64 * 0.3).collect();
        let err = ols_hc3(&y, &[all]).expect_err("dummy trap");
        assert!(err.to_string().contains("`method[c]`"), "{err}");
    }

    #[test]
    fn ols_leverage_one_gives_nan_hc3_not_noise() {
        // Level "c" occurs once: its dummy fits that row exactly (h = 1).
        let levels = ["a", "b", "a", "b", "a", "c"];
        let y = [1.0, 2.0, 1.2, 2.1, 0.9, 5.0];
        let term = Term::categorical("g", &levels, "a").expect("a is a level");
        let fit = ols_hc3(&y, &[term]).expect("full rank");
        assert!(fit.coefficients.iter().all(|c| c.hc3_se.is_nan()));
        // g[c] is y at that row minus the mean of level a (the intercept).
        let want = 5.0 - (1.0 + 1.2 + 0.9) / 3.0;
        assert!((fit.coefficient("g[c]").expect("column").estimate - want).abs() < 1e-12);
        assert!(fit.term("g").expect("term").sum_sq > 0.0);
    }
}
