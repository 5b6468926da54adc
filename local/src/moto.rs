//! The SQS emulator: moto server from PyPI, installed into the project's own virtualenv by the
//! command that needs it, started on a free loopback port, stopped with the stack.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::process::own_process_group;

/// The repository root (where `.venv` and `tools/` live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn venv_dir() -> PathBuf {
    std::env::var_os("CONNECTOR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"))
}

/// Makes sure `.venv` exists and has the packages of `requirements` (a file under `tools/`).
/// Idempotent and quick when already done (a stamp file records the requirements installed).
pub fn ensure_venv(requirements: &str) -> Result<PathBuf> {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    let req_path = repo_root().join("tools").join(requirements);
    let wanted = std::fs::read_to_string(&req_path)
        .with_context(|| format!("reading {}", req_path.display()))?;
    let stamp = venv.join(format!(".installed-{requirements}"));
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(venv);
    }
    if !python.exists() {
        eprintln!("setting up {} (first run only)…", venv.display());
        let status = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("python3 is needed to install the local AWS emulator (moto)")?;
        if !status.success() {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    eprintln!("installing {requirements} into {} …", venv.display());
    let status = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&req_path)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip install -r {} failed", req_path.display());
    }
    std::fs::write(&stamp, wanted)?;
    Ok(venv)
}

/// A running moto server; stopped when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub async fn start() -> Result<Self> {
        let venv = tokio::task::spawn_blocking(|| ensure_venv("requirements-local.txt")).await??;
        crate::process::on_a_free_port(|port| Self::start_on(&venv, port)).await
    }

    async fn start_on(venv: &std::path::Path, port: u16) -> Result<Self> {
        let mut cmd = Command::new(venv.join("bin").join("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        own_process_group(&mut cmd);
        let child = cmd.spawn().context("starting moto_server")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut moto = Self { child, endpoint };
        moto.wait_ready(port).await?;
        Ok(moto)
    }

    async fn wait_ready(&mut self, port: u16) -> Result<()> {
        crate::process::wait_answering(&mut self.child, port, "/moto-api/", "moto_server").await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self) {
        crate::process::terminate(&mut self.child).await;
    }
}
