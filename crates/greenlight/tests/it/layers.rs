//! The product crate's layer order (docs/architecture.md): every module imports only modules
//! below it, adapters never import each other, and no two files of one module import each
//! other. Read from the source's `crate::` and `super::` paths, so a new upward import fails here
//! before it grows roots.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A module may use the modules of the layers below its own, never one of its own
/// layer or above.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["app", "client"],
    &["http", "mcp"],
    &["service"],
    &["delivery"],
    &["slack"],
    &["config"],
    &["store"],
    &["rules", "policy"],
    &["domain"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's text without comments, so a doc comment naming a module is not an import.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers that follow `prefix` in `text` (`crate::store::X` gives `store`).
fn names_after<'t>(text: &'t str, prefix: &str) -> BTreeSet<&'t str> {
    text.match_indices(prefix)
        .filter(|(at, _)| {
            // `crate::` itself, not the end of another path (`greenlight_crate::`).
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .filter_map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (end > 0).then(|| &rest[..end])
        })
        .collect()
}

/// Path relative to `src/`, with `/` separators.
fn relative(path: &Path) -> String {
    path.strip_prefix(src())
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[test]
fn every_module_has_a_place_in_the_layer_order() {
    let lib = code(&src().join("lib.rs"));
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub mod ")
                .or_else(|| l.trim().strip_prefix("mod "))
        })
        .map(|m| m.trim_end_matches(';'))
        .collect();
    assert!(declared.len() > 5, "read no modules from lib.rs");
    for module in declared {
        assert!(
            layer_of(module).is_some(),
            "module `{module}` is not in the layer order: add it to LAYERS and to docs/architecture.md"
        );
    }
}

#[test]
fn no_module_imports_one_above_it_or_beside_it() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    let mut seen = 0;
    for file in &files {
        let rel = relative(file);
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
        let Some(own) = layer_of(top) else {
            continue; // lib.rs and main.rs sit above every layer.
        };
        for used in names_after(&code(file), "crate::") {
            let Some(theirs) = layer_of(used) else {
                continue; // an item of the crate root, not a module
            };
            seen += 1;
            if used != top && theirs <= own {
                wrong.push(format!("{rel} uses crate::{used}"));
            }
        }
    }
    assert!(
        seen > 100,
        "found only {seen} imports: is the reader broken?"
    );
    assert!(
        wrong.is_empty(),
        "imports that go up or sideways in the layer order ({}):\n{}",
        LAYERS
            .iter()
            .map(|l| l.join(" "))
            .collect::<Vec<_>>()
            .join(" > "),
        wrong.join("\n")
    );
}

#[test]
fn no_two_files_of_one_module_import_each_other() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    // Sibling files (not `mod.rs`, which declares them) and whom each names through `super::`
    // or through its module's full path.
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = relative(file);
        let Some((dir, name)) = rel.rsplit_once('/') else {
            continue;
        };
        let name = name.trim_end_matches(".rs");
        if name == "mod" {
            continue;
        }
        let text = code(file);
        let full = format!("crate::{}::", dir.replace('/', "::"));
        let named: BTreeSet<String> = names_after(&text, "super::")
            .into_iter()
            .chain(names_after(&text, &full))
            .filter(|n| *n != name && src().join(dir).join(format!("{n}.rs")).exists())
            .map(|n| format!("{dir}/{n}"))
            .collect();
        uses.insert(format!("{dir}/{name}"), named);
    }
    let mut circles = Vec::new();
    for (a, named) in &uses {
        for b in named {
            if a < b && uses.get(b).is_some_and(|back| back.contains(a)) {
                circles.push(format!("{a}.rs <-> {b}.rs"));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "files that import each other (move what both need below them):\n{}",
        circles.join("\n")
    );
}
