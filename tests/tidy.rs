//! Tidiness checks that run with the normal tests: every Rust module says what it is for (`//!`), no to-do
//! or fix-me marker is left behind, and the README only shows `cargo xtask` verbs that exist.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in ["src", "tests", "crates", "xtask/src", "xtask/tests"] {
        rust_files(&root.join(dir), &mut found);
    }
    found
}

#[test]
fn every_module_says_what_it_is_for() {
    let undocumented: Vec<_> =
        sources().into_iter().filter(|path| !std::fs::read_to_string(path).unwrap().trim_start().starts_with("//!")).collect();
    assert!(undocumented.is_empty(), "modules without a `//!` line: {undocumented:?}");
}

#[test]
fn no_todo_or_fixme_is_left_behind() {
    let markers = [concat!("TO", "DO"), concat!("FIX", "ME")];
    let offenders: Vec<_> = sources()
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            markers.iter().any(|marker| text.contains(marker))
        })
        .collect();
    assert!(offenders.is_empty(), "files with a leftover marker: {offenders:?}");
}

#[test]
fn readme_shows_only_verbs_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let main = std::fs::read_to_string(root.join("xtask/src/main.rs")).unwrap();
    let mut verbs_seen = 0;
    for (index, _) in readme.match_indices("cargo xtask ") {
        let verb: String = readme[index + "cargo xtask ".len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        if verb.is_empty() {
            continue;
        }
        verbs_seen += 1;
        // clap names the verb `build-images` after the variant `Verb::BuildImages`.
        let variant: String = verb
            .split('-')
            .map(|word| word.chars().take(1).flat_map(char::to_uppercase).chain(word.chars().skip(1)).collect::<String>())
            .collect();
        assert!(main.contains(&format!("Verb::{variant}")), "the README shows `cargo xtask {verb}`, which xtask does not have");
    }
    assert!(verbs_seen > 0, "the README shows no xtask verb at all");
    let top: String = readme.lines().take(25).collect::<Vec<_>>().join("\n");
    assert!(top.contains("cargo xtask up") && top.contains("cargo test"), "the two set-up commands belong near the top of the README");
}
