//! A second SQS emulator for the benchmarks: fauxqs, from npm, run on Node.js.
//!
//! moto answers each `ReceiveMessage` by walking and copying every message of the queue, so a
//! fleet of thousands of accounts (each with its delayed poll and watchdog messages) makes moto,
//! not the connector, the limit. fauxqs keeps each FIFO group's messages apart and answers in
//! JavaScript. Its FIFO receive hands out one message per group at a time, stricter than SQS
//! (which may return several of one group), so a figure measured on it errs low, never high.
//! `bench-fleet` runs on it by default and the other benchmarks with `--sqs fauxqs`; the tests
//! stay on moto, but one pipeline test (and any, with `CONNECTOR_SQS_EMULATOR=fauxqs`) checks
//! that it keeps the guarantees the pipeline relies on. It needs Node.js 20 or later.

use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

use crate::process::own_process_group;

/// Which emulator serves the local stack's SQS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SqsEmulator {
    /// moto server (PyPI), which also serves KMS; what the tests use.
    #[default]
    Moto,
    /// fauxqs (npm) for SQS, moto for KMS.
    Fauxqs,
}

/// fauxqs runs on Node.js 20 or later (its install does not check: npm's engine check is off,
/// since other tools' packages ask for more than they need).
fn ensure_node_20() -> Result<()> {
    let out = std::process::Command::new("node")
        .arg("--version")
        .output()
        .context(
            "fauxqs needs Node.js 20 or later: `node` is not on PATH (apt-get install nodejs)",
        )?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        anyhow::bail!("fauxqs needs Node.js 20 or later; `node --version` says {version:?}");
    }
    Ok(())
}

/// A running fauxqs; stopped when dropped.
pub struct Fauxqs {
    child: Child,
    pub endpoint: String,
}

impl Fauxqs {
    pub async fn start() -> Result<Self> {
        let dir = tokio::task::spawn_blocking(|| {
            crate::npm::ensure_installed(
                "fauxqs",
                &["package.json", "package-lock.json", "serve.mjs"],
                "the SQS emulator fauxqs (npm)",
            )
        })
        .await??;
        ensure_node_20()?;
        crate::process::on_a_free_port(|port| Self::start_on(&dir, port)).await
    }

    async fn start_on(dir: &std::path::Path, port: u16) -> Result<Self> {
        // What it says when it fails is the only clue: kept beside its install (appended to, as
        // stacks of one test process run side by side; it logs errors only).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("fauxqs.log"))
            .context("fauxqs.log")?;
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("serve.mjs"))
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        own_process_group(&mut cmd);
        let child = cmd
            .spawn()
            .context("starting fauxqs (Node.js is needed: apt-get install nodejs)")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut fauxqs = Self { child, endpoint };
        crate::process::wait_answering(&mut fauxqs.child, port, "/health", "fauxqs")
            .await
            .with_context(|| format!("see {}", dir.join("fauxqs.log").display()))?;
        Ok(fauxqs)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self) {
        crate::process::terminate(&mut self.child).await;
    }
}
