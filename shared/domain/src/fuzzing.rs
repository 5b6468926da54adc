//! Entry points for fuzzing every parser that takes outside input (`fuzz/`, run with
//! `cargo xtask fuzz`). Each takes arbitrary bytes and must never panic, whatever it is given;
//! the seeds and every finding under `fuzz/` are replayed by a unit test on each CI run.

use std::collections::HashMap;

use crate::redirect::{RedirectAllowList, StartLink};

/// `POST /notification` body.
pub fn notification(data: &[u8]) {
    let _ = crate::notification::parse_notification(data);
}

/// `POST /ingest` body, then every record on its own, as ingest does.
pub fn ingest(data: &[u8]) {
    if let Ok(request) = crate::ingest::parse_ingest_body(data) {
        for record in &request.records {
            let _ = crate::transaction::validate_record(record);
        }
    }
}

/// Query string of `GET /auth` and `GET /authrefresh`.
pub fn auth_link(data: &[u8]) {
    let params: HashMap<String, String> = url::form_urlencoded::parse(data).into_owned().collect();
    let Ok(allow) = RedirectAllowList::parse("*.sagebankdrive.com,money.sage.com", false) else {
        return;
    };
    for refresh in [false, true] {
        if let Ok(link) = StartLink::parse(|k| params.get(k).map(String::as_str), refresh, &allow) {
            // What the flow then builds from it.
            let _ = crate::redirect::with_state(&link.redirect, &link.state);
        }
    }
}

/// `GET /v1/statements/{id}` answer from Banking Service (its `data`), then its outcome.
pub fn statement_response(data: &[u8]) {
    if let Ok(resource) = serde_json::from_slice::<crate::statement::StatementResource>(data) {
        let _ = crate::statement::classify(&resource);
    }
}

/// A fuzz target: arbitrary bytes in, never a panic.
pub type Target = fn(&[u8]);

/// The targets by name (the fuzz binaries and the replay test share this list).
pub const TARGETS: &[(&str, Target)] = &[
    ("notification", notification),
    ("ingest", ingest),
    ("auth_link", auth_link),
    ("statement_response", statement_response),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed and every past finding of every target, replayed.
    #[test]
    fn seeds_and_findings_never_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            for dir in ["seeds", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).unwrap();
                    target(&data);
                    replayed += 1;
                }
            }
        }
        assert!(
            replayed >= TARGETS.len(),
            "no seeds found under {}",
            root.display()
        );
    }
}
