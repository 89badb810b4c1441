//! The module floors of `peftspace-core` (docs/ARCHITECTURE.md, "Floors inside `core`"): a module may use
//! modules of its own floor or lower ones, never a higher one, and modules of one floor form no circle. Read from
//! the source text (`crate::name` paths outside comments and `#[cfg(test)]` blocks), so a new upward import fails
//! here with the file that has it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const FLOORS: [&[&str]; 5] = [
    &[
        "error",
        "shapes",
        "autograd",
        "stats",
        "evaluator",
        "grouping",
        "allocation",
        "tensor_ops",
        "device",
        "interrupt",
    ],
    &[
        "hooks",
        "params",
        "backbone",
        "strategy",
        "plugin_abi",
        "registry",
        "design",
        "spec",
    ],
    &["data", "model", "budget", "space", "trial", "generate"],
    &[
        "experiment",
        "resolve",
        "plugin_loader",
        "plugin_trust",
        "store",
        "train",
    ],
    &["refine", "report", "saved", "scale_out"],
];

/// Modules that are not part of the library's floors: the crate root, and test-only code.
const OUTSIDE: [&str; 4] = ["lib", "test_doubles", "budget_tests", "space_tests"];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read core/src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `core/src` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative
        .components()
        .next()
        .expect("a component")
        .as_os_str()
        .to_string_lossy()
        .to_string();
    first.trim_end_matches(".rs").to_string()
}

/// The code of a file without comments and without `#[cfg(test)]` items (tests may use anything).
fn library_code(text: &str) -> String {
    let mut out = String::new();
    let mut skipping_test_block = false;
    let mut depth = 0i32;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if skipping_test_block {
            depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
            if depth <= 0 && line.contains('}') {
                skipping_test_block = false;
            }
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            // The next item is test-only: skip it to its closing brace (or to its `;` for a one-line item).
            if let Some(next) = lines.next() {
                depth = next.matches('{').count() as i32 - next.matches('}').count() as i32;
                skipping_test_block = depth > 0;
            }
            continue;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// `crate::name` uses in code, including grouped ones (`use crate::{a, b::c}`).
fn crate_uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        rest = after;
    }
    found
}

#[test]
fn no_module_uses_a_higher_floor_and_no_floor_has_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if OUTSIDE.contains(&module.as_str()) || module.ends_with("_tests") || module == "tests" {
            continue;
        }
        let Some(own) = floor_of(&module) else {
            problems.push(format!(
                "{}: module `{module}` has no floor; add it to FLOORS and the architecture doc",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for used in crate_uses(&library_code(&text)) {
            // Crate-root items (`crate::Result`, `crate::Error`, macros) are not modules.
            let Some(floor) = floor_of(&used) else {
                continue;
            };
            if used == module {
                continue;
            }
            if floor > own {
                problems.push(format!(
                    "{}: `{module}` (floor {}) uses `{used}` (floor {})",
                    file.display(),
                    own + 1,
                    floor + 1
                ));
            }
            edges.entry(module.clone()).or_default().insert(used);
        }
    }
    // A circle among modules of one floor: depth-first search over the same-floor edges.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            circles.push(format!("{} → {node}", path[at..].join(" → ")));
            return;
        }
        if !done.insert(node.to_string()) {
            return;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if floor_of(next) == floor_of(node) {
                visit(next, edges, path, done, circles);
            }
        }
        path.pop();
    }
    let mut circles = Vec::new();
    for module in edges.keys() {
        visit(
            module,
            &edges,
            &mut Vec::new(),
            &mut BTreeSet::new(),
            &mut circles,
        );
    }
    circles.sort();
    circles.dedup();
    problems.extend(circles.into_iter().map(|c| format!("import circle: {c}")));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
