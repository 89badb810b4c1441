//! A design: group sizes, budget shares, tuned groups and per-group strategy sets, with a compact text form.
//!
//! Text form (documented in `docs/DESIGN_SPACE.md`): `g=1,2,2,1 a=0.25,0.25,0.25,0.25 t=1111 s=AL|AP|ABP|L`.
//! Strategies are held by registry *name*; the text uses each strategy's short registry *code*.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::registry::Registries;
use crate::{Error, Result};

/// Shares whose sum is this close to 1 are kept exactly as written (so printed shares parse back bit for bit);
/// others are normalised over the tuned groups.
const SHARE_SUM_SLACK: f64 = 1e-9;

/// Shares of a valid design must sum to 1 within this.
const SHARE_SUM_TOLERANCE: f64 = 1e-6;

/// One point of the design space.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    /// n1..nG: consecutive layer groups, each ≥ 1, summing to the number of layers.
    pub group_sizes: Vec<usize>,
    /// s1..sG: each group's share of the total budget; 0 for untuned groups, > 0 and summing to 1 over tuned ones.
    pub shares: Vec<f64>,
    /// Whether each group gets trainable parameters.
    pub tuned: Vec<bool>,
    /// Strategy names per group: non-empty for tuned groups, empty for untuned ones.
    pub strategies: Vec<BTreeSet<String>>,
}

impl Design {
    /// Number of groups G.
    pub fn groups(&self) -> usize {
        self.group_sizes.len()
    }

    /// Number of layers (sum of group sizes).
    pub fn layers(&self) -> usize {
        self.group_sizes.iter().sum()
    }

    /// The global layer indices of group `g` (0-based).
    pub fn group_layers(&self, g: usize) -> std::ops::Range<usize> {
        let start: usize = self.group_sizes.iter().take(g).sum();
        start..start + self.group_sizes.get(g).copied().unwrap_or(0)
    }

    /// The group (0-based) holding global layer `layer`.
    pub fn group_of(&self, layer: usize) -> Option<usize> {
        (0..self.groups()).find(|&g| self.group_layers(g).contains(&layer))
    }

    /// Per-layer budget weight of each group (`share / size`); 0 for untuned groups.
    pub fn per_layer_shares(&self) -> Vec<f64> {
        self.shares
            .iter()
            .zip(&self.group_sizes)
            .map(|(s, &n)| if n == 0 { 0.0 } else { s / n as f64 })
            .collect()
    }

    /// Checks the invariants listed on the fields; the message names the group (`G1` = first group).
    pub fn check(&self) -> Result<()> {
        let g = self.group_sizes.len();
        if g == 0 {
            return Err(Error::msg("a design needs at least one group"));
        }
        if self.shares.len() != g || self.tuned.len() != g || self.strategies.len() != g {
            return Err(Error::msg(format!(
                "design has {g} group sizes but {} shares, {} tuned flags and {} strategy sets",
                self.shares.len(),
                self.tuned.len(),
                self.strategies.len()
            )));
        }
        if !self.tuned.iter().any(|&t| t) {
            return Err(Error::msg("a design needs at least one tuned group"));
        }
        let total = self
            .group_sizes
            .iter()
            .try_fold(0usize, |acc, &n| acc.checked_add(n));
        if total.is_none_or(|t| t > MAX_LAYERS) {
            return Err(Error::msg(format!(
                "the group sizes sum to more than {MAX_LAYERS} layers; no backbone has that many"
            )));
        }
        for i in 0..g {
            let name = group_name(i);
            if self.group_sizes[i] == 0 {
                return Err(Error::msg(format!(
                    "group {name} is empty; every group needs at least one layer"
                )));
            }
            let share = self.shares[i];
            if self.tuned[i] {
                if !(share.is_finite() && share > 0.0) {
                    return Err(Error::msg(format!(
                        "tuned group {name} needs a positive share, not {share}"
                    )));
                }
                if self.strategies[i].is_empty() {
                    return Err(Error::msg(format!(
                        "tuned group {name} needs at least one strategy"
                    )));
                }
            } else {
                if share != 0.0 {
                    return Err(Error::msg(format!(
                        "group {name} is not tuned, so its share must be 0, not {share}"
                    )));
                }
                if !self.strategies[i].is_empty() {
                    return Err(Error::msg(format!(
                        "group {name} is not tuned, so it takes no strategies (`-`)"
                    )));
                }
            }
        }
        let sum: f64 = self.shares.iter().sum();
        if (sum - 1.0).abs() > SHARE_SUM_TOLERANCE {
            return Err(Error::msg(format!(
                "the shares of the tuned groups sum to {sum}, not 1"
            )));
        }
        Ok(())
    }

    /// The compact text form; `codes` maps strategy names to their short codes.
    pub fn to_text(&self, codes: &StrategyCodes) -> Result<String> {
        let mut out = String::new();
        out.push_str("g=");
        out.push_str(&join(self.group_sizes.iter()));
        out.push_str(" a=");
        out.push_str(&join(self.shares.iter()));
        out.push_str(" t=");
        for &t in &self.tuned {
            out.push(if t { '1' } else { '0' });
        }
        out.push_str(" s=");
        for (i, set) in self.strategies.iter().enumerate() {
            if i > 0 {
                out.push('|');
            }
            out.push_str(&codes.set_to_text(set)?);
        }
        Ok(out)
    }

    /// Parses the text form (see `docs/DESIGN_SPACE.md`) and checks the result.
    pub fn parse(text: &str, codes: &StrategyCodes) -> Result<Design> {
        parse_design(text, codes).map_err(|m| Error::msg(format!("design `{}`: {m}", text.trim())))
    }
}

/// Whether `text` is meant as a design text (`g=… a=… t=… s=…`) rather than a name (a strategy, `full`): names
/// never contain `=`.
pub fn is_design_text(text: &str) -> bool {
    text.contains('=')
}

/// `G1`, `G2`, …: how messages name group `index` (0-based).
pub fn group_name(index: usize) -> String {
    format!("G{}", index + 1)
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let mut s = String::new();
    for (i, x) in items.enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{x}");
    }
    s
}

/// Most layers a design may span (far above any real backbone; keeps every sum of group sizes exact).
pub const MAX_LAYERS: usize = 1 << 20;

fn parse_design(text: &str, codes: &StrategyCodes) -> std::result::Result<Design, String> {
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for token in text.split_whitespace() {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| format!("`{token}` is not `key=value` (keys: g, a, t, s)"))?;
        if !matches!(key, "g" | "a" | "t" | "s") {
            return Err(format!("unknown key `{key}` (keys: g, a, t, s)"));
        }
        if fields.insert(key, value).is_some() {
            return Err(format!("`{key}=` is given twice"));
        }
    }
    let sizes_text = fields
        .get("g")
        .ok_or("missing `g=` (group sizes, e.g. g=1,2,2,1)")?;
    let group_sizes = sizes_text
        .split(',')
        .map(|x| match x.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("group size `{x}` is not a positive integer")),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let g = group_sizes.len();
    // Sums of group sizes (layers, tuned layers, group starts) must not overflow, in debug builds least of all.
    let total = group_sizes
        .iter()
        .try_fold(0usize, |acc, &n| acc.checked_add(n));
    if total.is_none_or(|t| t > MAX_LAYERS) {
        return Err(format!(
            "the group sizes sum to more than {MAX_LAYERS} layers; no backbone has that many"
        ));
    }

    let strategies_text = fields
        .get("s")
        .ok_or("missing `s=` (strategy codes per group, e.g. s=AL|P|B|-)")?;
    let parts: Vec<&str> = strategies_text.split('|').collect();
    if parts.len() != g {
        return Err(format!(
            "`s=` lists {} groups but `g=` has {g}",
            parts.len()
        ));
    }
    let strategies = parts
        .iter()
        .map(|p| codes.set_from_text(p))
        .collect::<std::result::Result<Vec<_>, _>>()?;

    let tuned = match fields.get("t") {
        Some(t) => {
            if t.len() != g || !t.chars().all(|c| c == '0' || c == '1') {
                return Err(format!(
                    "`t={t}` must be {g} characters 0 or 1, one per group"
                ));
            }
            t.chars().map(|c| c == '1').collect()
        }
        // Without `t=`, the groups with strategies are the tuned ones.
        None => strategies.iter().map(|s| !s.is_empty()).collect::<Vec<_>>(),
    };

    let shares = match fields.get("a") {
        Some(a) => {
            let raw = a
                .split(',')
                .map(|x| match x.parse::<f64>() {
                    Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
                    _ => Err(format!("share `{x}` is not a non-negative number")),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            if raw.len() != g {
                return Err(format!(
                    "`a=` lists {} shares but `g=` has {g} groups",
                    raw.len()
                ));
            }
            let sum: f64 = raw.iter().sum();
            if sum <= 0.0 {
                return Err("the shares sum to 0".to_string());
            }
            if (sum - 1.0).abs() > SHARE_SUM_SLACK {
                raw.iter().map(|v| v / sum).collect()
            } else {
                raw
            }
        }
        // Without `a=`, every tuned layer gets the same budget (uniform allocation).
        None => {
            let tuned_layers: usize = group_sizes
                .iter()
                .zip(&tuned)
                .filter(|(_, &t)| t)
                .map(|(n, _)| n)
                .sum();
            group_sizes
                .iter()
                .zip(&tuned)
                .map(|(&n, &t)| {
                    if t && tuned_layers > 0 {
                        n as f64 / tuned_layers as f64
                    } else {
                        0.0
                    }
                })
                .collect()
        }
    };
    let design = Design {
        group_sizes,
        shares,
        tuned,
        strategies,
    };
    design.check().map_err(|e| e.to_string())?;
    Ok(design)
}

/// The two-way map between strategy names and their short codes used by the text form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StrategyCodes {
    code_of: BTreeMap<String, String>,
    name_of: BTreeMap<String, String>,
}

impl StrategyCodes {
    /// From `(name, code)` pairs; names and codes must be unique and codes ASCII letters.
    pub fn new<N: Into<String>, C: Into<String>>(
        pairs: impl IntoIterator<Item = (N, C)>,
    ) -> Result<Self> {
        let mut codes = StrategyCodes::default();
        for (name, code) in pairs {
            let (name, code) = (name.into(), code.into());
            if code.is_empty() || !code.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(Error::msg(format!(
                    "strategy `{name}`: code `{code}` must be ASCII letters"
                )));
            }
            if codes.name_of.contains_key(&code) || codes.code_of.contains_key(&name) {
                return Err(Error::msg(format!(
                    "strategy `{name}` or its code `{code}` appears twice"
                )));
            }
            codes.code_of.insert(name.clone(), code.clone());
            codes.name_of.insert(code, name);
        }
        Ok(codes)
    }

    /// Every registered strategy's code.
    pub fn from_registries(registries: &Registries) -> Self {
        let mut codes = StrategyCodes::default();
        for r in registries.strategies.values() {
            // The registry already guarantees unique names and codes.
            codes
                .code_of
                .insert(r.entry.name.to_string(), r.entry.code.to_string());
            codes
                .name_of
                .insert(r.entry.code.to_string(), r.entry.name.to_string());
        }
        codes
    }

    /// The code of a strategy name.
    pub fn code(&self, name: &str) -> Result<&str> {
        self.code_of
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Error::UnknownName {
                kind: "strategy",
                name: name.to_string(),
                known: self.code_of.keys().cloned().collect(),
            })
    }

    /// The strategy name of a code.
    pub fn name(&self, code: &str) -> Option<&str> {
        self.name_of.get(code).map(String::as_str)
    }

    /// Codes of a set, sorted by code: concatenated when all are single letters (`ALP`), joined with `+` otherwise
    /// or when the concatenation would read as another strategy's code; `-` for the empty set.
    pub fn set_to_text(&self, set: &BTreeSet<String>) -> Result<String> {
        if set.is_empty() {
            return Ok("-".to_string());
        }
        let mut codes = set
            .iter()
            .map(|n| self.code(n))
            .collect::<Result<Vec<_>>>()?;
        codes.sort_unstable();
        let joined = codes.concat();
        let single_letters = codes.iter().all(|c| c.len() == 1);
        if single_letters && (codes.len() == 1 || !self.name_of.contains_key(&joined)) {
            Ok(joined)
        } else {
            Ok(codes.join("+"))
        }
    }

    /// Reads one group's codes (the inverse of [`StrategyCodes::set_to_text`]).
    fn set_from_text(&self, text: &str) -> std::result::Result<BTreeSet<String>, String> {
        if text == "-" {
            return Ok(BTreeSet::new());
        }
        if text.is_empty() {
            return Err("an empty strategy set is written `-`".to_string());
        }
        let codes: Vec<String> = if text.contains('+') {
            text.split('+').map(str::to_string).collect()
        } else if self.name_of.contains_key(text) {
            vec![text.to_string()]
        } else {
            text.chars().map(|c| c.to_string()).collect()
        };
        let mut set = BTreeSet::new();
        for code in codes {
            let name = self.name(&code).ok_or_else(|| {
                let known: Vec<String> = self
                    .name_of
                    .iter()
                    .map(|(c, n)| format!("{c} ({n})"))
                    .collect();
                format!(
                    "unknown strategy code `{code}` in `{text}`; known: {}",
                    known.join(", ")
                )
            })?;
            if !set.insert(name.to_string()) {
                return Err(format!("strategy code `{code}` appears twice in `{text}`"));
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codes() -> StrategyCodes {
        StrategyCodes::new([
            ("adapter", "A"),
            ("prefix", "P"),
            ("lora", "L"),
            ("bitfit", "B"),
            ("ia3", "Ia"),
        ])
        .unwrap()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn example_parses() {
        let d = Design::parse(
            "g=1,2,2,1 a=0.25,0.25,0.25,0.25 t=1111 s=AL|AP|APB|L",
            &codes(),
        )
        .unwrap();
        assert_eq!(d.group_sizes, vec![1, 2, 2, 1]);
        assert_eq!(d.strategies[2], set(&["adapter", "prefix", "bitfit"]));
        assert_eq!(
            d.to_text(&codes()).unwrap(),
            "g=1,2,2,1 a=0.25,0.25,0.25,0.25 t=1111 s=AL|AP|ABP|L"
        );
    }

    #[test]
    fn weights_are_normalised_and_defaults_fill_in() {
        let d = Design::parse("g=2,2 a=1,3 s=A|L", &codes()).unwrap();
        assert_eq!(d.shares, vec![0.25, 0.75]);
        assert_eq!(d.tuned, vec![true, true]);
        let d = Design::parse("g=1,3 s=-|Ia+L", &codes()).unwrap();
        assert_eq!(d.shares, vec![0.0, 1.0]);
        assert_eq!(d.tuned, vec![false, true]);
        assert_eq!(d.strategies[1], set(&["ia3", "lora"]));
        assert_eq!(d.to_text(&codes()).unwrap(), "g=1,3 a=0,1 t=01 s=-|Ia+L");
    }

    #[test]
    fn bad_texts_are_refused_with_reasons() {
        let c = codes();
        for (text, needle) in [
            ("g=1,2 s=A", "lists 1 groups"),
            ("g=1,0 s=A|A", "positive integer"),
            ("g=1,2 s=A|X", "unknown strategy code `X`"),
            ("g=1,2 t=10 s=A|L", "not tuned"),
            ("g=1,2 a=1,0 s=A|L", "positive share"),
            ("g=1,2 s=AA|L", "twice"),
            ("g=1,2 s=A|L q=3", "unknown key"),
            ("g=1,2 s=-|-", "at least one tuned group"),
        ] {
            let err = Design::parse(text, &c).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn concatenation_that_reads_as_another_code_uses_plus() {
        let c = StrategyCodes::new([("a", "A"), ("l", "L"), ("al", "AL")]).unwrap();
        let both = set(&["a", "l"]);
        assert_eq!(c.set_to_text(&both).unwrap(), "A+L");
        assert_eq!(c.set_from_text("A+L").unwrap(), both);
        assert_eq!(c.set_from_text("AL").unwrap(), set(&["al"]));
    }

    fn arb_design() -> impl Strategy<Value = Design> {
        (1usize..7).prop_flat_map(|g| {
            (
                proptest::collection::vec(1usize..9, g),
                proptest::collection::vec(0.001f64..10.0, g),
                proptest::collection::vec(any::<bool>(), g),
                proptest::collection::vec(1u8..32, g),
                0usize..g,
            )
                .prop_map(|(sizes, weights, mut tuned, masks, forced)| {
                    tuned[forced] = true;
                    let names = ["adapter", "prefix", "lora", "bitfit", "ia3"];
                    let sum: f64 = weights
                        .iter()
                        .zip(&tuned)
                        .filter(|(_, &t)| t)
                        .map(|(w, _)| w)
                        .sum();
                    let shares = weights
                        .iter()
                        .zip(&tuned)
                        .map(|(w, &t)| if t { w / sum } else { 0.0 })
                        .collect();
                    let strategies = masks
                        .iter()
                        .zip(&tuned)
                        .map(|(m, &t)| {
                            if !t {
                                return BTreeSet::new();
                            }
                            (0..5)
                                .filter(|b| m & (1 << b) != 0)
                                .map(|b| names[b].to_string())
                                .collect()
                        })
                        .collect();
                    Design {
                        group_sizes: sizes,
                        shares,
                        tuned,
                        strategies,
                    }
                })
        })
    }

    proptest! {
        #[test]
        fn parse_of_print_is_identity(d in arb_design()) {
            let c = codes();
            let text = d.to_text(&c).unwrap();
            let back = Design::parse(&text, &c).unwrap();
            prop_assert_eq!(back, d);
        }
    }
}
