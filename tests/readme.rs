//! The README's Rust examples are the crate's front-page doctests (`src/lib.rs`), which
//! `cargo test` compiles: this keeps the two the same, so the README's code compiles as written.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::fs;

/// The ```rust blocks of `text`, one string per block.
fn rust_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```rust") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// The `//!` doctests of `src/lib.rs` that are compiled (`no_run`), without their hidden lines.
fn doctests(lib: &str) -> Vec<String> {
    let docs: Vec<&str> =
        lib.lines().filter_map(|l| l.strip_prefix("//!")).map(|l| l.strip_prefix(' ').unwrap_or(l)).collect();
    let mut tests = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in docs {
        match (&mut current, line) {
            (None, "```no_run") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                tests.push(lines.join("\n"));
                current = None;
            }
            (Some(_), l) if l == "#" || l.starts_with("# ") => {}
            (Some(lines), l) => lines.push(l),
            (None, _) => {}
        }
    }
    tests
}

#[test]
fn every_rust_example_in_the_readme_is_a_compiled_doctest() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = fs::read_to_string(format!("{root}/README.md")).unwrap();
    let lib = fs::read_to_string(format!("{root}/src/lib.rs")).unwrap();
    let blocks = rust_blocks(&readme);
    let tests = doctests(&lib);
    assert!(blocks.len() >= 2, "the README has {} rust blocks", blocks.len());
    for block in &blocks {
        assert!(
            tests.iter().any(|t| t.trim() == block.trim()),
            "this README example is not a doctest in src/lib.rs (copy it there, or fix the drift):\n{block}"
        );
    }
}
