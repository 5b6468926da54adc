//! The README's "Configuration contract" names every environment variable the functions' code
//! reads, so that an operator never meets a setting only the code knows.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("a source directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Names read through `Env` (`env.required("X")`, ...), `std::env::var("X")`, the platform's
/// `url(needs, "X")`, or a `const NAME: &str = "X"` passed to them.
fn names_read(source: &str) -> BTreeSet<String> {
    const CALLS: [&str; 12] = [
        ".required(",
        ".optional(",
        ".url(",
        ".duration_secs(",
        ".duration_days(",
        ".parse_or(",
        ".flag(",
        ".secret(",
        ".optional_secret(",
        ".optional_uuid(",
        "var(",
        "const NAME: &str =",
    ];
    let mut out = BTreeSet::new();
    for call in CALLS.iter().chain(&["url(needs."]) {
        for (at, _) in source.match_indices(call) {
            // The first string literal within the call's first 80 characters.
            let rest: String = source[at + call.len()..].chars().take(80).collect();
            let Some(open) = rest.find('"') else { continue };
            let Some(len) = rest[open + 1..].find('"') else {
                continue;
            };
            let name = &rest[open + 1..open + 1 + len];
            let looks_like_a_variable = name.len() > 3
                && name.contains('_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if looks_like_a_variable {
                out.insert(name.to_string());
            }
        }
    }
    out
}

fn documented(readme: &str) -> String {
    let start = readme
        .find("## Configuration contract")
        .expect("a Configuration contract section");
    let rest = &readme[start + 2..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_string()
}

#[test]
fn every_variable_the_code_reads_is_in_the_readme() {
    let root = repo();
    let mut files = Vec::new();
    rust_files(&root.join("shared"), &mut files);
    rust_files(&root.join("functions"), &mut files);
    let mut read = BTreeSet::new();
    for f in files
        .iter()
        .filter(|f| !f.ends_with("configuration_contract.rs"))
    {
        read.extend(names_read(&std::fs::read_to_string(f).expect("source")));
    }
    // The scan must find what it is meant to find, or it would pass on nothing.
    for sure in [
        "TABLE_NAME",
        "PUSH_QUEUE_URL",
        "AUTH_HANDSHAKE_TTL_S",
        "PUBLIC_BASE_URL",
    ] {
        assert!(read.contains(sure), "the scan missed {sure}: {read:?}");
    }
    let section = documented(&std::fs::read_to_string(root.join("README.md")).expect("README"));
    let missing: Vec<&String> = read
        .iter()
        .filter(|name| !section.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "read by the code, missing from the README's Configuration contract: {missing:?}"
    );
}
