//! Emulators shipped as npm packages: each has a folder under `tools/` with its pinned
//! `package.json` and `package-lock.json` (and any launcher beside them), installed with `npm ci`
//! under `.tools/<name>` once per content of those files.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::moto::repo_root;

/// Installs `tools/<name>` (its `files`, then `npm ci`) under `.tools/<name>` unless the same
/// files are installed already; returns the install directory. `what` names the package for the
/// progress lines.
pub fn ensure_installed(name: &str, files: &[&str], what: &str) -> Result<PathBuf> {
    // Stacks of one test process start side by side: one `npm ci` at a time.
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let source = repo_root().join("tools").join(name);
    let mut wanted = String::new();
    for file in files {
        wanted += &std::fs::read_to_string(source.join(file))
            .with_context(|| format!("reading tools/{name}/{file}"))?;
    }
    let dir = repo_root().join(".tools").join(name);
    let stamp = dir.join(".installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(dir);
    }
    eprintln!("installing {what} into {} …", dir.display());
    let started = Instant::now();
    std::fs::create_dir_all(&dir)?;
    for file in files {
        std::fs::copy(source.join(file), dir.join(file))
            .with_context(|| format!("copying {file}"))?;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        // Packages may ask for a newer Node.js than the parts used here need.
        .env("npm_config_engine_strict", "false")
        .current_dir(&dir)
        .status()
        .with_context(|| {
            format!("npm is needed to install {what} (Debian: apt-get install npm)")
        })?;
    if !status.success() {
        bail!("npm ci in {} failed", dir.display());
    }
    std::fs::write(&stamp, &wanted)?;
    eprintln!(
        "installed {what} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}
