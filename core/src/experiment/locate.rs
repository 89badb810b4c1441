//! Finds where a field of a RON document is written, so that checks made after parsing can still report
//! `file:line:col`. A path is written as in messages: `stages[2].candidates[1]`, `training.epochs`.

/// A position in the text: 1-based line and column (in characters), like ron's own errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Open,
    Close,
    Comma,
    Colon,
    Other,
}

/// Splits RON text into the tokens the path walk needs, each with its position.
fn tokenize(text: &str) -> Vec<(Tok, Position)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let advance = |i: &mut usize, line: &mut usize, col: &mut usize, chars: &[char]| {
        if chars[*i] == '\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let c = chars[i];
        let pos = Position { line, col };
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut col, &chars);
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                advance(&mut i, &mut line, &mut col, &chars);
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    advance(&mut i, &mut line, &mut col, &chars);
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    advance(&mut i, &mut line, &mut col, &chars);
                    advance(&mut i, &mut line, &mut col, &chars);
                    if depth == 0 {
                        break;
                    }
                    continue;
                }
                advance(&mut i, &mut line, &mut col, &chars);
            }
        } else if c == '"' || (c == 'r' && matches!(chars.get(i + 1), Some('"') | Some('#'))) {
            // Plain or raw string: skip to its end.
            let mut hashes = 0;
            let raw = c == 'r';
            if raw {
                advance(&mut i, &mut line, &mut col, &chars);
                while i < chars.len() && chars[i] == '#' {
                    hashes += 1;
                    advance(&mut i, &mut line, &mut col, &chars);
                }
            }
            advance(&mut i, &mut line, &mut col, &chars); // opening quote
            while i < chars.len() {
                if !raw && chars[i] == '\\' {
                    advance(&mut i, &mut line, &mut col, &chars);
                    if i < chars.len() {
                        advance(&mut i, &mut line, &mut col, &chars);
                    }
                    continue;
                }
                if chars[i] == '"' && (0..hashes).all(|h| chars.get(i + 1 + h) == Some(&'#')) {
                    for _ in 0..=hashes {
                        advance(&mut i, &mut line, &mut col, &chars);
                    }
                    break;
                }
                advance(&mut i, &mut line, &mut col, &chars);
            }
            out.push((Tok::Other, pos));
        } else if c.is_alphabetic() || c == '_' {
            let mut ident = String::new();
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                ident.push(chars[i]);
                advance(&mut i, &mut line, &mut col, &chars);
            }
            out.push((Tok::Ident(ident), pos));
        } else {
            let tok = match c {
                '(' | '[' | '{' => Tok::Open,
                ')' | ']' | '}' => Tok::Close,
                ',' => Tok::Comma,
                ':' => Tok::Colon,
                _ => Tok::Other,
            };
            // Numbers and other literals only need to be skipped, so each of their characters is its own token.
            out.push((tok, pos));
            advance(&mut i, &mut line, &mut col, &chars);
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Seg<'a> {
    Field(&'a str),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Seg<'_>> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            segs.push(Seg::Field(name));
        }
        for idx in rest.split('[') {
            if let Some(n) = idx
                .trim_end_matches(']')
                .parse::<usize>()
                .ok()
                .filter(|_| !idx.is_empty())
            {
                segs.push(Seg::Index(n));
            }
        }
    }
    segs
}

/// Index of the token just inside the value starting at `at`: skips a struct name and `Some(` wrappers and
/// returns the position after the opening bracket, or `None` when the value is not a container.
fn enter(toks: &[(Tok, Position)], mut at: usize) -> Option<usize> {
    loop {
        match toks.get(at)? {
            (Tok::Ident(name), _) if matches!(toks.get(at + 1), Some((Tok::Open, _))) => {
                // `Some(` wraps the real value; a struct name opens the struct itself.
                if name == "Some" && !matches!(toks.get(at + 2), Some((Tok::Close, _))) {
                    let inner = at + 2;
                    if matches!(toks.get(inner), Some((Tok::Open, _)))
                        || matches!(
                            (toks.get(inner), toks.get(inner + 1)),
                            (Some((Tok::Ident(_), _)), Some((Tok::Open, _)))
                        )
                    {
                        at = inner;
                        continue;
                    }
                }
                return Some(at + 2);
            }
            (Tok::Open, _) => return Some(at + 1),
            _ => return None,
        }
    }
}

/// Token indices where the elements of the container entered at `start` begin (commas at depth 0 separate them).
fn elements(toks: &[(Tok, Position)], start: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut expect_start = true;
    for (k, (t, _)) in toks.iter().enumerate().skip(start) {
        match t {
            Tok::Open => {
                if depth == 0 && expect_start {
                    out.push(k);
                    expect_start = false;
                }
                depth += 1;
            }
            Tok::Close => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            Tok::Comma if depth == 0 => expect_start = true,
            _ => {
                if depth == 0 && expect_start {
                    out.push(k);
                    expect_start = false;
                }
            }
        }
    }
    out
}

/// The position of `path` in `text`, or of its deepest part that is written there; `None` when even the first
/// part is missing.
pub fn locate(text: &str, path: &str) -> Option<Position> {
    let toks = tokenize(text);
    if toks.is_empty() {
        return None;
    }
    let mut value_at = 0;
    let mut found = None;
    for seg in parse_path(path) {
        let inside = enter(&toks, value_at)?;
        let elems = elements(&toks, inside);
        match seg {
            Seg::Field(name) => {
                let hit = elems.iter().find(|&&k| {
                    matches!(&toks[k].0, Tok::Ident(n) if n == name)
                        && matches!(toks.get(k + 1), Some((Tok::Colon, _)))
                });
                let k = match hit {
                    Some(&k) => k,
                    None => return found,
                };
                found = Some(toks[k].1);
                value_at = k + 2;
            }
            Seg::Index(i) => {
                let k = match elems.get(i) {
                    Some(&k) => k,
                    None => return found,
                };
                found = Some(toks[k].1);
                value_at = k;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"// an experiment
ExperimentSpec(
    name: "x, (y)",
    backbone: (path: Some("m")),
    /* budget: 3, */ budget: 0.0,
    stages: [
        (name: "S1", dimension: Grouping, candidates: ["uniform", "spindel"]),
        (name: "S2", dimension: Strategies(1), candidates: ["lora"]),
    ],
    final_runs: Some((baselines: ["full", "lorra"])),
)"#;

    fn at(path: &str) -> Option<(usize, usize)> {
        locate(TEXT, path).map(|p| (p.line, p.col))
    }

    #[test]
    fn finds_fields_elements_and_nested_values() {
        assert_eq!(at("budget"), Some((5, 22)));
        assert_eq!(at("backbone.path"), Some((4, 16)));
        assert_eq!(at("stages[0].candidates[1]"), Some((7, 67)));
        assert_eq!(at("stages[1].dimension"), Some((8, 22)));
        assert_eq!(at("final_runs.baselines[1]"), Some((10, 43)));
    }

    #[test]
    fn missing_parts_fall_back_to_the_deepest_present_one() {
        assert_eq!(at("stages[1].samples"), Some((8, 9)));
        assert_eq!(at("training.epochs"), None);
    }
}
