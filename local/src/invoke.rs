//! `local-stack invoke <function> [event]`: one invocation of one function against the stack
//! `local-stack up` is serving, with the environment that stack gave the function, and its
//! answer printed. What `sam local invoke` does on a machine with a container engine.
//!
//! `up` writes each function's environment to `.local-stack/environment.json` and removes it
//! when it stops. The invocation runs the function's binary behind its own Lambda Runtime API
//! (the one the stack uses): a function that exits at start-up (a missing or malformed variable)
//! ends the invocation with its start-up error instead of waiting for it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::runtime::{Function, FunctionConfig, Outcome};
use crate::template::Template;

/// What `up` leaves for `invoke`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunningStack {
    pub api_url: String,
    /// Binary name -> environment.
    pub environment: BTreeMap<String, BTreeMap<String, String>>,
}

/// Where `up` records its stack for `invoke`.
pub const STATE_VARIABLE: &str = "CONNECTOR_LOCAL_STACK_STATE";

/// `.local-stack/environment.json`, or the file `CONNECTOR_LOCAL_STACK_STATE` names (tests).
pub fn state_file() -> PathBuf {
    std::env::var_os(STATE_VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            crate::moto::repo_root()
                .join(".local-stack")
                .join("environment.json")
        })
}

/// Records the running stack (called by `up`).
pub fn record(stack: &crate::LocalStack) -> Result<()> {
    let file = state_file();
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let running = RunningStack {
        api_url: stack.api_url.clone(),
        environment: stack.environment.clone(),
    };
    std::fs::write(&file, serde_json::to_vec_pretty(&running)?)
        .with_context(|| format!("writing {}", file.display()))
}

pub fn forget() {
    let _ = std::fs::remove_file(state_file());
}

pub struct InvokeOptions {
    pub function: String,
    pub event: Option<PathBuf>,
    /// `NAME=VALUE` set on top of the stack's environment.
    pub set: Vec<String>,
    /// Variables removed from it (to see a function's start-up error).
    pub unset: Vec<String>,
    pub bin_dir: PathBuf,
}

/// What the invocation gave back.
pub enum Answer {
    Response(serde_json::Value),
    FunctionError(serde_json::Value),
}

fn json_or_text(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into()))
}

pub async fn invoke(o: &InvokeOptions) -> Result<Answer> {
    let template = Template::load()?;
    let names: Vec<&str> = template
        .functions
        .iter()
        .map(|f| f.binary.as_str())
        .collect();
    let spec = template
        .functions
        .iter()
        .find(|f| f.binary == o.function)
        .ok_or_else(|| {
            anyhow!(
                "no function {}; functions: {}",
                o.function,
                names.join(", ")
            )
        })?;
    let file = state_file();
    let running: RunningStack = match std::fs::read(&file) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", file.display()))?
        }
        Err(_) => bail!(
            "no local stack is running ({} is missing): start `cargo xtask up` in another terminal first",
            file.display()
        ),
    };
    let api = running
        .api_url
        .strip_prefix("http://")
        .unwrap_or(&running.api_url)
        .to_string();
    if tokio::net::TcpStream::connect(&api).await.is_err() {
        bail!(
            "the local stack recorded in {} does not answer at {}: start `cargo xtask up` again",
            file.display(),
            running.api_url
        );
    }
    let mut environment = running
        .environment
        .get(&o.function)
        .cloned()
        .ok_or_else(|| anyhow!("the running stack has no environment for {}", o.function))?;
    for name in &o.unset {
        environment.remove(name);
    }
    for pair in &o.set {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--env takes NAME=VALUE, not {pair}"))?;
        environment.insert(k.to_string(), v.to_string());
    }
    let event_path = o.event.clone().unwrap_or_else(|| {
        crate::moto::repo_root()
            .join("events")
            .join(format!("{}.json", o.function))
    });
    let payload = std::fs::read(&event_path)
        .with_context(|| format!("reading the event {}", event_path.display()))?;
    let logs = std::env::temp_dir().join(format!("connector-invoke-{}", uuid::Uuid::new_v4()));
    let function = Function::start(FunctionConfig {
        name: o.function.clone(),
        binary: o.bin_dir.join(&o.function),
        environment,
        timeout: Duration::from_secs(spec.timeout_secs),
        memory_mb: spec.memory_mb,
        instances: 1,
        log_file: logs.join(format!("{}.log", o.function)),
        // The function's own log lines go to stderr, its answer to stdout.
        echo_logs: true,
    })
    .await?;
    let outcome = async {
        function.wait_ready(Duration::from_secs(30)).await?;
        function.invoke(payload).await
    }
    .await;
    function.stop().await;
    let _ = std::fs::remove_dir_all(&logs);
    match outcome? {
        Outcome::Response(bytes) => Ok(Answer::Response(json_or_text(&bytes))),
        Outcome::FunctionError(bytes) => Ok(Answer::FunctionError(json_or_text(&bytes))),
        Outcome::Timeout => bail!(
            "{} timed out after {} s (its Timeout in template.yaml)",
            o.function,
            spec.timeout_secs
        ),
        Outcome::Crashed => bail!("{} died during the invocation", o.function),
    }
}
