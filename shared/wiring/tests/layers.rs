//! The layers of docs/architecture.md hold: the use cases compile without the adapters, and the
//! domain without I/O. Read from Cargo's own dependency graph, so that a dependency slipped in
//! through another crate counts too.

use std::collections::BTreeSet;
use std::process::Command;

/// Every crate `package` needs to build (its normal dependencies, transitively).
fn dependencies(package: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn forbidden<'a>(deps: &'a BTreeSet<String>, prefixes: &[&str]) -> Vec<&'a String> {
    deps.iter()
        .filter(|d| prefixes.iter().any(|p| d.starts_with(p)))
        .collect()
}

#[test]
fn the_use_cases_depend_on_no_adapter_sdk_http_client_or_lambda_crate() {
    let deps = dependencies("connector-app");
    assert!(deps.contains("connector-domain"), "{deps:?}");
    let found = forbidden(
        &deps,
        &[
            "aws-sdk-",
            "aws-config",
            "aws_lambda_events",
            "lambda_",
            "connector-aws",
            "connector-sage",
            "connector-bank",
            "connector-wiring",
            "reqwest",
            "hyper",
        ],
    );
    assert!(found.is_empty(), "connector-app depends on {found:?}");
}

#[test]
fn the_domain_depends_on_no_runtime_or_io_crate() {
    let deps = dependencies("connector-domain");
    let found = forbidden(
        &deps,
        &["tokio", "aws-", "lambda_", "reqwest", "hyper", "connector-"],
    );
    // Itself only.
    assert_eq!(
        found,
        vec![&"connector-domain".to_string()],
        "connector-domain depends on {found:?}"
    );
}

/// The domain's code (its test modules aside) reads no clock and no environment: the time comes
/// in as an argument or through the `Clock` port, settings through the composition root.
#[test]
fn the_domain_reads_no_clock_and_no_environment() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../domain/src");
    let mut files = vec![root];
    let mut found = Vec::new();
    let mut read = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)
                .expect("a source directory")
                .flatten()
            {
                files.push(entry.path());
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file");
        read += 1;
        // Test modules come last in each file.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or_default();
            for reading in [
                "Utc::now",
                "Local::now",
                "SystemTime::now",
                "Instant::now",
                "std::env::",
                "env::var",
            ] {
                if line.contains(reading) {
                    found.push(format!("{}:{}: {reading}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(read > 10, "read {read} files");
    assert!(found.is_empty(), "{found:#?}");
}
