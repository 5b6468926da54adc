//! The `sandbox` binary: one ready line, loopback-only local credentials, driver sub-commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn prints_one_ready_line_and_drives_over_http() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["--listen", "127.0.0.1:0", "--fast"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("sandbox listening on ")
        .map(str::to_string);
    let ok = url
        .as_deref()
        .is_some_and(|u| u.starts_with("http://127.0.0.1:") && u[17..].parse::<u16>().is_ok());
    let out = url.as_ref().map(|u| {
        Command::new(env!("CARGO_BIN_EXE_sandbox"))
            .args([
                "driver",
                "--sandbox-url",
                u,
                "probe",
                "--variant",
                "unknownAuthorisationId",
            ])
            .output()
            .unwrap()
    });
    child.kill().unwrap();
    let _ = child.wait();
    assert!(ok, "{line:?}");
    let out = out.unwrap();
    assert!(!out.status.success(), "no bank registered yet");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no bank registered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn refuses_local_credentials_off_loopback() {
    let out = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing the well-known local credentials")
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn library_refuses_local_credentials_off_loopback() {
    let r = sandbox::Sandbox::start(
        "0.0.0.0:0".parse().unwrap(),
        sandbox::SandboxConfig::default(),
    )
    .await;
    assert!(matches!(
        r,
        Err(sandbox::SandboxError::LocalCredentialsOffLoopback(_))
    ));
}

/// A free loopback port below Linux's ephemeral range (32768–60999): no connection made by
/// another test meanwhile is given it as its source port, which would hold it.
fn port_outside_the_ephemeral_range() -> std::net::SocketAddr {
    let start = 20_000 + (std::process::id() % 12_000) as u16;
    (start..32_000)
        .chain(20_000..start)
        .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
        .find(|a| std::net::TcpListener::bind(a).is_ok())
        .expect("a free port below 32000")
}

#[tokio::test]
async fn shutdown_frees_the_port() {
    let sb = sandbox::Sandbox::start(
        port_outside_the_ephemeral_range(),
        sandbox::SandboxConfig::fast(),
    )
    .await
    .unwrap();
    let addr = sb.addr();
    assert_eq!(sb.issuer(), format!("{}/", sb.base_url()));
    assert_eq!(sb.bank_api_url(), format!("{}/bank", sb.base_url()));
    sb.shutdown().await;
    let again = sandbox::Sandbox::start(addr, sandbox::SandboxConfig::fast())
        .await
        .unwrap();
    again.shutdown().await;
}

#[test]
fn omit_optional_rate_flag_has_help_a_default_and_a_range() {
    let out = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let flag = help
        .split("\n\n")
        .find(|p| p.contains("--omit-optional-rate"))
        .unwrap_or_default()
        .to_string();
    assert!(flag.contains("left out"), "{help}");
    assert!(flag.contains("[default: 0]"), "{flag}");
    assert!(flag.contains("SANDBOX_OMIT_OPTIONAL_RATE"), "{flag}");
    let out = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["--listen", "127.0.0.1:0", "--omit-optional-rate", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("from 0 to 1"));
}
