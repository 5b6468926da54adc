//! Child processes that never outlive the stack.

use std::time::Duration;

use anyhow::Result;
use tokio::process::{Child, Command};

/// A free loopback port (bound and released: good enough on a developer machine).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Puts the child in its own process group and asks Linux to kill it if we die, so that no
/// process is left behind even when the stack is killed without a chance to clean up.
pub fn own_process_group(cmd: &mut Command) {
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// SIGTERM to the child's process group, then SIGKILL after a grace period.
pub async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: signalling a process group we created.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(3), child.wait())
            .await
            .is_err()
        {
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
            let _ = child.wait().await;
        }
    }
}

/// Waits until `url` answers any HTTP request, failing if `child` (the server `name`) exits
/// first or does not answer within 30 s.
pub async fn wait_answering(child: &mut Child, url: &str, name: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let client = reqwest::Client::new();
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{name} exited at start ({status})");
        }
        if client.get(url).send().await.is_ok() {
            return Ok(());
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            anyhow::bail!("{name} did not answer within 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
