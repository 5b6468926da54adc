//! What the browser tests need on this machine, installed when missing: Debian's Chromium and
//! ChromeDriver (`apt-get install chromium chromium-driver`, as root) and axe-core, the
//! accessibility rules engine (npm, pinned in `tools/axe-core/package-lock.json`, installed into
//! `.tools/axe-core`); and ChromeDriver run as a child that never outlives its owner.
//!
//! Nothing here skips: a tool that cannot be installed is an error saying what to install.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::process::{listens_on, own_process_group, terminate};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The flags Chromium needs here: headless, as root (no sandbox), and no traffic of its own
/// (background networking, component updates, sync), which this machine's closed network
/// refuses and which a test must not send anyway.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1024,900",
    "--hide-scrollbars",
];

/// Paths of the installed tools.
#[derive(Debug, Clone)]
pub struct BrowserTools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
    /// `axe.min.js`, injected into each page by the tests.
    pub axe_js: PathBuf,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs Debian's `chromium` and `chromium-driver` when either binary is missing and this
/// is a root shell with apt-get (a fresh machine of the project's kind).
fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return Ok(());
    }
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "the browser tests need {CHROMIUM} and {CHROMEDRIVER}: install them \
             (Debian: apt-get install chromium chromium-driver)"
        );
    }
    eprintln!("installing chromium and chromium-driver with apt-get (for the browser tests)…");
    let started = Instant::now();
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "chromium", "chromium-driver"][..],
    ] {
        let status = std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed", args.join(" "));
        }
    }
    eprintln!(
        "installed chromium and chromium-driver in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Installs the pinned axe-core once per content of its package files; returns `axe.min.js`.
fn ensure_axe() -> Result<PathBuf> {
    let dir = crate::npm::ensure_installed(
        "axe-core",
        &["package.json", "package-lock.json"],
        "axe-core (npm)",
    )?;
    let js = dir.join("node_modules/axe-core/axe.min.js");
    if !js.exists() {
        bail!("{} is missing after npm ci", js.display());
    }
    Ok(js)
}

/// Chromium, ChromeDriver and axe-core, installed when missing (once per process).
pub fn ensure_installed() -> Result<BrowserTools> {
    static ONCE: std::sync::Mutex<Option<BrowserTools>> = std::sync::Mutex::new(None);
    let mut done = ONCE
        .lock()
        .map_err(|_| anyhow::anyhow!("an earlier install panicked"))?;
    if let Some(t) = done.as_ref() {
        return Ok(t.clone());
    }
    ensure_chromium()?;
    let tools = BrowserTools {
        chromium: CHROMIUM.into(),
        chromedriver: CHROMEDRIVER.into(),
        axe_js: ensure_axe()?,
    };
    *done = Some(tools.clone());
    Ok(tools)
}

/// A running ChromeDriver on a loopback port; the Chromium it starts are its children, in its
/// process group, which `stop` (or dropping it) ends.
pub struct ChromeDriver {
    child: Child,
    pub url: String,
}

impl ChromeDriver {
    pub async fn start(tools: &BrowserTools) -> Result<Self> {
        crate::process::on_a_free_port(|port| Self::start_on(tools, port)).await
    }

    async fn start_on(tools: &BrowserTools, port: u16) -> Result<Self> {
        let mut cmd = Command::new(&tools.chromedriver);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        own_process_group(&mut cmd);
        let child = cmd.spawn().context("starting chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        let mut driver = Self { child, url };
        let started = Instant::now();
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = driver.child.try_wait()? {
                bail!("chromedriver exited at start ({status})");
            }
            // Its own listener, not one that took the port first (see `wait_answering`).
            let own = driver.pid().is_some_and(|pid| listens_on(pid, port));
            if own
                && let Ok(r) = client.get(format!("{}/status", driver.url)).send().await
                && r.status().is_success()
            {
                return Ok(driver);
            }
            if started.elapsed() > Duration::from_secs(20) {
                driver.stop().await;
                bail!("chromedriver did not answer within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Ends ChromeDriver and every Chromium process it started.
    pub async fn stop(mut self) {
        terminate(&mut self.child).await;
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling the process group we created (a test that panicked).
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}
