//! Metrics of generated text: ROUGE-1/2/L/Lsum as Google's `rouge_score` computes them (without stemming) and
//! corpus BLEU as `sacrebleu` computes it by default (13a tokenisation, four n-gram orders, `exp` smoothing, one
//! reference per segment). Both are checked number for number against those packages on committed pairs
//! (`tests/fixtures/gen_text_metrics.py`).
//!
//! Registered as the evaluators `rouge` (primary: mean ROUGE-2 F-measure) and `bleu` (primary: BLEU / 100), which
//! score generated texts: they refuse class predictions.

use std::collections::{BTreeSet, HashMap};

use peftspace_core::evaluator::{Evaluator, EvaluatorEntry, Metrics};
use peftspace_core::{Error, Result};

/// Precision, recall and F-measure of one ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

impl RougeScore {
    fn new(precision: f64, recall: f64) -> Self {
        RougeScore {
            precision,
            recall,
            fmeasure: fmeasure(precision, recall),
        }
    }
}

/// ROUGE's tokens: lower-cased, every run of characters other than ASCII letters and digits is a separator.
pub fn rouge_tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if n > 0 && tokens.len() >= n {
        for window in tokens.windows(n) {
            *counts.entry(window).or_insert(0) += 1;
        }
    }
    counts
}

/// ROUGE-N: clipped n-gram overlap over the prediction's (precision) and the target's (recall) n-grams.
pub fn rouge_n(target: &str, prediction: &str, n: usize) -> RougeScore {
    let (t, p) = (rouge_tokens(target), rouge_tokens(prediction));
    let (tc, pc) = (ngram_counts(&t, n), ngram_counts(&p, n));
    let overlap: usize = tc
        .iter()
        .map(|(g, c)| (*c).min(pc.get(g).copied().unwrap_or(0)))
        .sum();
    let (t_total, p_total): (usize, usize) = (tc.values().sum(), pc.values().sum());
    RougeScore::new(
        overlap as f64 / p_total.max(1) as f64,
        overlap as f64 / t_total.max(1) as f64,
    )
}

/// The longest-common-subsequence table of `a` (rows) and `b` (columns), `(len a + 1) × (len b + 1)`.
fn lcs_table(a: &[String], b: &[String]) -> Vec<Vec<usize>> {
    let mut t = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            t[i][j] = if a[i - 1] == b[j - 1] {
                t[i - 1][j - 1] + 1
            } else {
                t[i - 1][j].max(t[i][j - 1])
            };
        }
    }
    t
}

/// ROUGE-L: LCS length over the prediction's and the target's token counts.
pub fn rouge_l(target: &str, prediction: &str) -> RougeScore {
    let (t, p) = (rouge_tokens(target), rouge_tokens(prediction));
    if t.is_empty() || p.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_table(&t, &p)[t.len()][p.len()] as f64;
    RougeScore::new(lcs / p.len() as f64, lcs / t.len() as f64)
}

/// Indices into `reference` of one LCS with `candidate`, taken as `rouge_score` takes it (walking back from the
/// end, preferring to drop a candidate token when that keeps a strictly longer subsequence).
fn lcs_indices(reference: &[String], candidate: &[String]) -> Vec<usize> {
    let t = lcs_table(reference, candidate);
    let (mut i, mut j) = (reference.len(), candidate.len());
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        if reference[i - 1] == candidate[j - 1] {
            out.push(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i][j - 1] > t[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    out.reverse();
    out
}

/// Sentences for ROUGE-Lsum: the lines of the text (newline-separated, as `rouge_score` expects), empty ones left
/// out. Put each sentence of a summary on its own line before scoring.
fn sentences(text: &str) -> Vec<Vec<String>> {
    text.split('\n')
        .filter(|s| !s.is_empty())
        .map(rouge_tokens)
        .collect()
}

/// ROUGE-Lsum: summary-level LCS — for each target sentence the union of its LCS with every predicted sentence,
/// each token counted at most as often as it occurs on both sides.
pub fn rouge_lsum(target: &str, prediction: &str) -> RougeScore {
    let (refs, cands) = (sentences(target), sentences(prediction));
    let m: usize = refs.iter().map(Vec::len).sum();
    let n: usize = cands.iter().map(Vec::len).sum();
    if refs.is_empty() || cands.is_empty() || m == 0 || n == 0 {
        return RougeScore::default();
    }
    let mut left_r: HashMap<&str, usize> = HashMap::new();
    let mut left_c: HashMap<&str, usize> = HashMap::new();
    for t in refs.iter().flatten() {
        *left_r.entry(t).or_insert(0) += 1;
    }
    for t in cands.iter().flatten() {
        *left_c.entry(t).or_insert(0) += 1;
    }
    let mut hits = 0usize;
    for r in &refs {
        let union: BTreeSet<usize> = cands.iter().flat_map(|c| lcs_indices(r, c)).collect();
        for i in union {
            let token = r[i].as_str();
            let (cr, cc) = (
                left_r.get(token).copied().unwrap_or(0),
                left_c.get(token).copied().unwrap_or(0),
            );
            if cr > 0 && cc > 0 {
                hits += 1;
                left_r.insert(token, cr - 1);
                left_c.insert(token, cc - 1);
            }
        }
    }
    RougeScore::new(hits as f64 / n as f64, hits as f64 / m as f64)
}

/// Characters the 13a tokeniser sets apart everywhere: ASCII punctuation except `'`, `-`, `.` and `,`.
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// One pass of a two-character rewrite, left to right without overlaps (as a regular-expression substitution).
fn rewrite_pairs(
    chars: &[char],
    matches: impl Fn(char, char) -> bool,
    emit: impl Fn(char, char, &mut Vec<char>),
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && matches(chars[i], chars[i + 1]) {
            emit(chars[i], chars[i + 1], &mut out);
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// mteval-v13a's tokenisation, as `sacrebleu` applies it: tokens joined by single spaces.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut chars: Vec<char> = Vec::with_capacity(line.len() + 2);
    chars.push(' ');
    for c in line.chars() {
        if is_13a_symbol(c) {
            chars.extend([' ', c, ' ']);
        } else {
            chars.push(c);
        }
    }
    chars.push(' ');
    let digit = |c: char| c.is_ascii_digit();
    let stop = |c: char| c == '.' || c == ',';
    // A period or comma is split off unless it sits between digits; a dash after a digit is split off.
    let chars = rewrite_pairs(
        &chars,
        |a, b| !digit(a) && stop(b),
        |a, b, o| o.extend([a, ' ', b, ' ']),
    );
    let chars = rewrite_pairs(
        &chars,
        |a, b| stop(a) && !digit(b),
        |a, b, o| o.extend([' ', a, ' ', b]),
    );
    let chars = rewrite_pairs(
        &chars,
        |a, b| digit(a) && b == '-',
        |a, b, o| o.extend([a, ' ', b, ' ']),
    );
    let text: String = chars.into_iter().collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Corpus BLEU and its parts (sacrebleu's scale: 0–100).
#[derive(Debug, Clone, PartialEq)]
pub struct Bleu {
    pub score: f64,
    pub precisions: [f64; 4],
    pub brevity_penalty: f64,
    pub hypothesis_length: usize,
    pub reference_length: usize,
}

/// Corpus BLEU of `hypotheses` against one reference each: clipped n-gram matches summed over the corpus, NIST
/// (`exp`) smoothing for orders without a match, the brevity penalty on the summed lengths.
pub fn corpus_bleu(hypotheses: &[String], references: &[String]) -> Result<Bleu> {
    if hypotheses.len() != references.len() {
        return Err(Error::msg(format!(
            "bleu: {} hypotheses but {} references",
            hypotheses.len(),
            references.len()
        )));
    }
    let (mut correct, mut total) = ([0usize; 4], [0usize; 4]);
    let (mut sys_len, mut ref_len) = (0usize, 0usize);
    for (h, r) in hypotheses.iter().zip(references) {
        let h: Vec<String> = tokenize_13a(h.trim_end())
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        let r: Vec<String> = tokenize_13a(r.trim_end())
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        sys_len += h.len();
        ref_len += r.len();
        for n in 1..=4 {
            let (hc, rc) = (ngram_counts(&h, n), ngram_counts(&r, n));
            for (gram, count) in hc {
                total[n - 1] += count;
                correct[n - 1] += count.min(rc.get(gram).copied().unwrap_or(0));
            }
        }
    }
    let brevity_penalty = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut precisions = [0.0f64; 4];
    let mut bleu = Bleu {
        score: 0.0,
        precisions,
        brevity_penalty,
        hypothesis_length: sys_len,
        reference_length: ref_len,
    };
    if correct.iter().all(|&c| c == 0) {
        return Ok(bleu);
    }
    let mut smooth = 1.0;
    for n in 0..4 {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    // An order without any n-gram (all segments too short) counts as log 0, i.e. a score of 0, as in sacrebleu.
    let log_sum: f64 = precisions
        .iter()
        .map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() })
        .sum();
    bleu.precisions = precisions;
    bleu.score = brevity_penalty * (log_sum / 4.0).exp();
    Ok(bleu)
}

fn texts_only(name: &str) -> Error {
    Error::msg(format!(
        "evaluator `{name}` scores generated texts against reference texts; it cannot score class or regression \
         predictions (use accuracy, f1, mcc, … for those tasks)"
    ))
}

fn same_length(name: &str, hypotheses: &[String], references: &[String]) -> Result<()> {
    if hypotheses.len() != references.len() || hypotheses.is_empty() {
        return Err(Error::msg(format!(
            "{name}: {} generated texts for {} references",
            hypotheses.len(),
            references.len()
        )));
    }
    Ok(())
}

/// Mean ROUGE-1/2/L/Lsum F-measures over the examples; primary: ROUGE-2.
struct Rouge;

impl Evaluator for Rouge {
    fn name(&self) -> &str {
        "rouge"
    }
    fn score(&self, _: &[f64], _: &[f64]) -> Result<Metrics> {
        Err(texts_only("rouge"))
    }
    fn scores_texts(&self) -> bool {
        true
    }
    fn score_texts(&self, hypotheses: &[String], references: &[String]) -> Result<Metrics> {
        same_length("rouge", hypotheses, references)?;
        let count = hypotheses.len() as f64;
        let mut sums = [0.0f64; 4];
        for (h, r) in hypotheses.iter().zip(references) {
            let scores = [
                rouge_n(r, h, 1),
                rouge_n(r, h, 2),
                rouge_l(r, h),
                rouge_lsum(r, h),
            ];
            for (sum, s) in sums.iter_mut().zip(scores) {
                *sum += s.fmeasure;
            }
        }
        let names = ["rouge1", "rouge2", "rougeL", "rougeLsum"];
        let values = names
            .iter()
            .zip(sums)
            .map(|(n, s)| (n.to_string(), s / count))
            .collect();
        Ok(Metrics {
            primary: sums[1] / count,
            values,
        })
    }
}

/// The share of generated texts equal to their reference, whitespace runs and the ends ignored (the usual
/// score of synthetic tasks such as copying or reversing, and of short answers); primary: that share.
struct ExactMatch;

impl Evaluator for ExactMatch {
    fn name(&self) -> &str {
        "exact_match"
    }
    fn score(&self, _: &[f64], _: &[f64]) -> Result<Metrics> {
        Err(texts_only("exact_match"))
    }
    fn scores_texts(&self) -> bool {
        true
    }
    fn score_texts(&self, hypotheses: &[String], references: &[String]) -> Result<Metrics> {
        same_length("exact_match", hypotheses, references)?;
        let equal = hypotheses
            .iter()
            .zip(references)
            .filter(|(h, r)| h.split_whitespace().eq(r.split_whitespace()))
            .count();
        let share = if hypotheses.is_empty() {
            0.0
        } else {
            equal as f64 / hypotheses.len() as f64
        };
        Ok(Metrics {
            primary: share,
            values: [("exact_match".to_string(), share)].into_iter().collect(),
        })
    }
}

/// sacrebleu's corpus BLEU; primary: BLEU / 100.
struct BleuEvaluator;

impl Evaluator for BleuEvaluator {
    fn name(&self) -> &str {
        "bleu"
    }
    fn score(&self, _: &[f64], _: &[f64]) -> Result<Metrics> {
        Err(texts_only("bleu"))
    }
    fn scores_texts(&self) -> bool {
        true
    }
    fn score_texts(&self, hypotheses: &[String], references: &[String]) -> Result<Metrics> {
        same_length("bleu", hypotheses, references)?;
        let b = corpus_bleu(hypotheses, references)?;
        let values = [
            ("bleu", b.score),
            ("bleu_brevity_penalty", b.brevity_penalty),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(Metrics {
            primary: b.score / 100.0,
            values,
        })
    }
}

peftspace_core::inventory::submit! {
    EvaluatorEntry {
        name: "rouge",
        summary: "generated text: mean ROUGE-1/2/L/Lsum F (rouge_score, no stemming); primary ROUGE-2",
        create: || Box::new(Rouge),
    }
}

peftspace_core::inventory::submit! {
    EvaluatorEntry {
        name: "exact_match",
        summary: "generated text: share of outputs equal to their reference (whitespace-normalised)",
        create: || Box::new(ExactMatch),
    }
}

peftspace_core::inventory::submit! {
    EvaluatorEntry {
        name: "bleu",
        summary: "generated text: corpus BLEU (sacrebleu: 13a tokens, exp smoothing); primary BLEU / 100",
        create: || Box::new(BleuEvaluator),
    }
}
