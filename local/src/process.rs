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

/// Waits until the server `name` (`child`) itself listens on `port` and answers any HTTP request
/// to `path`, failing if it exits first or does not answer within 30 s. The port was free when
/// chosen, but another process may bind it before the child does: then the child exits at start
/// while the port still answers, which the ownership check tells apart.
pub async fn wait_answering(
    child: &mut Child,
    port: u16,
    path: &str,
    name: &str,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}{path}");
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{name} exited at start ({status})");
        }
        let own = child.id().is_some_and(|pid| listens_on(pid, port));
        if own && client.get(&url).send().await.is_ok() {
            return Ok(());
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            anyhow::bail!("{name} did not answer within 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Runs `start` on a fresh free port until it does not fail with "exited at start" (the port was
/// taken between its choice and the server's bind), at most three times.
pub async fn on_a_free_port<T, F, Fut>(mut start: F) -> anyhow::Result<T>
where
    F: FnMut(u16) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match start(free_port()?).await {
            Err(e) if tries < 3 && format!("{e:#}").contains("exited at start") => continue,
            other => return other,
        }
    }
}

/// Whether process `pid` holds a socket listening on TCP `port` (IPv4 or IPv6): the socket's
/// inode, from `/proc/net/tcp{,6}`, is one of the process's file descriptors.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| {
            inodes
                .iter()
                .any(|i| target.as_os_str() == format!("socket:[{i}]").as_str())
        })
}

/// The inodes of the sockets listening on `port` in one `/proc/net/tcp`-style table, on an
/// address a client of `127.0.0.1` reaches (a child listening on `[::1]` alone would leave
/// `127.0.0.1:port` to whoever holds it).
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    // 127.0.0.1 and 0.0.0.0; the IPv6 wildcard (dual stack) and ::ffff:127.0.0.1.
    const REACHED: [&str; 4] = [
        "0100007F",
        "00000000",
        "00000000000000000000000000000000",
        "0000000000000000FFFF00000100007F",
    ];
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (address, local_port) = f.get(1)?.rsplit_once(':')?;
            let listening = u16::from_str_radix(local_port, 16).ok()? == port
                && *f.get(3)? == LISTEN
                && REACHED.contains(&address);
            listening.then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 217 1 0 100 0 0 10 0
   1: 0100007F:07E8 0100007F:BF8C 01 00000000:00000000 00:00000000 00000000     0        0 918 1 0 100 0 0 10 0
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0 100 0 0 10 0
   3: 0200007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 556 1 0 100 0 0 10 0
";
    const TABLE6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 700 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 701 1 0 100 0 0 10 0
";

    #[test]
    fn only_sockets_listening_on_the_port_count() {
        assert_eq!(listening_inodes(TABLE, 0x07E8), vec![217]);
        assert_eq!(listening_inodes(TABLE, 8080), vec![555]);
        assert!(listening_inodes(TABLE, 9000).is_empty());
    }

    #[test]
    fn only_listeners_a_client_of_127_0_0_1_reaches_count() {
        assert!(listening_inodes(TABLE, 0x1F91).is_empty(), "127.0.0.2");
        assert_eq!(listening_inodes(TABLE6, 0x1F92), vec![700], "the wildcard");
        assert!(listening_inodes(TABLE6, 0x1F93).is_empty(), "::1 alone");
    }

    #[test]
    fn a_port_another_process_listens_on_is_not_ours() {
        let theirs = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = theirs.local_addr().unwrap().port();
        assert!(listens_on(std::process::id(), port));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(!listens_on(child.id(), port));
        child.kill().unwrap();
        let _ = child.wait();
    }
}
