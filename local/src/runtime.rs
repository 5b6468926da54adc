//! Runs a function's real binary the way Lambda does: each instance is a process with its own
//! Lambda Runtime API endpoint (`AWS_LAMBDA_RUNTIME_API`); an instance takes one invocation at a
//! time; a process that crashes or exceeds its timeout is replaced by a fresh one (a cold start).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use crate::process::{own_process_group, terminate};

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Response(Vec<u8>),
    /// The handler returned an error (Lambda's "function error").
    FunctionError(Vec<u8>),
    /// Killed for exceeding the function's timeout.
    Timeout,
    /// The process died during the invocation.
    Crashed,
}

struct Pending {
    payload: Vec<u8>,
    timeout: Duration,
    done: oneshot::Sender<Outcome>,
}

/// What runs the binary: path, environment, where its output goes.
#[derive(Clone, Debug)]
pub struct FunctionConfig {
    pub name: String,
    pub binary: PathBuf,
    pub environment: BTreeMap<String, String>,
    pub timeout: Duration,
    pub memory_mb: u64,
    pub instances: usize,
    pub log_file: PathBuf,
    /// Also copy the function's log lines to stderr, prefixed with its name.
    pub echo_logs: bool,
}

struct InstanceState {
    /// The invocation this instance is working on.
    in_flight: Mutex<Option<(String, oneshot::Sender<Outcome>, Instant)>>,
    ready: AtomicBool,
    /// Which process of this instance is current; bumped when one ends.
    generation: AtomicU64,
    /// Wakes a `next` call left behind by a dead process, so that it cannot take work.
    died: Notify,
    /// Holds the generation whose process must be killed (timeout, kill request, stop).
    kill: tokio::sync::watch::Sender<u64>,
    /// The current process's id (0 while none runs).
    pid: std::sync::atomic::AtomicU32,
    /// When the current process was started, and how long it took from exec to its first
    /// `/next` (its init; cold-start benchmark).
    spawned_at: std::sync::Mutex<Option<Instant>>,
    init_took: std::sync::Mutex<Option<Duration>>,
}

impl InstanceState {
    fn request_kill(&self, generation: u64) {
        self.kill.send_replace(generation);
    }
}

struct Shared {
    config: FunctionConfig,
    work: Mutex<mpsc::Receiver<Pending>>,
    /// Puts back work a dead process's `next` call picked up.
    requeue: mpsc::Sender<Pending>,
    stopping: AtomicBool,
    next_id: AtomicU64,
    cold_starts: AtomicU64,
    /// Completed invocations and their summed duration (what Lambda bills).
    invocations: AtomicU64,
    busy_ms: AtomicU64,
    init_failure: std::sync::Mutex<Option<String>>,
    log: Mutex<tokio::fs::File>,
}

/// A function with its pool of instances.
pub struct Function {
    shared: Arc<Shared>,
    sender: mpsc::Sender<Pending>,
    instances: Vec<Arc<InstanceState>>,
    /// Runtime API servers (aborted at stop).
    servers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Process supervisors (awaited at stop: each ends after its process did).
    supervisors: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Function {
    pub async fn start(config: FunctionConfig) -> Result<Self> {
        if !config.binary.exists() {
            bail!(
                "{} is not built: run `cargo build --bins` first (the README's commands do it)",
                config.binary.display()
            );
        }
        if let Some(dir) = config.log_file.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log_file)
            .await
            .with_context(|| format!("opening {}", config.log_file.display()))?;
        let (sender, receiver) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            config: config.clone(),
            work: Mutex::new(receiver),
            requeue: sender.clone(),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            cold_starts: AtomicU64::new(0),
            invocations: AtomicU64::new(0),
            busy_ms: AtomicU64::new(0),
            init_failure: std::sync::Mutex::new(None),
            log: Mutex::new(log),
        });
        let mut instances = Vec::new();
        let mut servers = Vec::new();
        let mut supervisors = Vec::new();
        for index in 0..config.instances.max(1) {
            let state = Arc::new(InstanceState {
                in_flight: Mutex::new(None),
                ready: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                died: Notify::new(),
                kill: tokio::sync::watch::channel(u64::MAX).0,
                pid: std::sync::atomic::AtomicU32::new(0),
                spawned_at: std::sync::Mutex::new(None),
                init_took: std::sync::Mutex::new(None),
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let app = Router::new()
                .route("/2018-06-01/runtime/invocation/next", get(next))
                .route(
                    "/2018-06-01/runtime/invocation/{id}/response",
                    post(response),
                )
                .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
                .route("/2018-06-01/runtime/init/error", post(init_error))
                .with_state((shared.clone(), state.clone()));
            servers.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
            supervisors.push(tokio::spawn(supervise(
                shared.clone(),
                state.clone(),
                addr,
                index,
            )));
            instances.push(state);
        }
        Ok(Self {
            shared,
            sender,
            instances,
            servers: std::sync::Mutex::new(servers),
            supervisors: Mutex::new(supervisors),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Waits until every instance has initialised (asked for its first invocation).
    pub async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(reason) = self.shared.init_failure.lock().ok().and_then(|g| g.clone()) {
                bail!("{} failed to start: {reason}", self.name());
            }
            if self
                .instances
                .iter()
                .all(|i| i.ready.load(Ordering::SeqCst))
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!("{} did not start within {limit:?}", self.name());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Invokes the function with a JSON payload and waits for the outcome.
    pub async fn invoke(&self, payload: Vec<u8>) -> Result<Outcome> {
        if let Some(reason) = self.shared.init_failure.lock().ok().and_then(|g| g.clone()) {
            bail!("{} cannot run: {reason}", self.name());
        }
        let (done, outcome) = oneshot::channel();
        self.sender
            .send(Pending {
                payload,
                timeout: self.shared.config.timeout,
                done,
            })
            .await
            .map_err(|_| anyhow!("{} is stopped", self.name()))?;
        outcome
            .await
            .map_err(|_| anyhow!("{} stopped mid-invocation", self.name()))
    }

    /// Kills instance `index` as if its sandbox died (tests of crash recovery).
    pub fn kill_instance(&self, index: usize) {
        if let Some(i) = self.instances.get(index) {
            i.request_kill(i.generation.load(Ordering::SeqCst));
        }
    }

    /// Configured memory (what Lambda bills GB-seconds on).
    pub fn memory_mb(&self) -> u64 {
        self.shared.config.memory_mb
    }

    /// Where the function's output goes (one file per function, appended).
    pub fn log_file(&self) -> &std::path::Path {
        &self.shared.config.log_file
    }

    /// Completed invocations and their summed duration in milliseconds.
    pub fn usage(&self) -> (u64, u64) {
        (
            self.shared.invocations.load(Ordering::Relaxed),
            self.shared.busy_ms.load(Ordering::Relaxed),
        )
    }

    /// Process ids of the running instances.
    pub fn pids(&self) -> Vec<u32> {
        self.instances
            .iter()
            .map(|i| i.pid.load(Ordering::SeqCst))
            .filter(|p| *p != 0)
            .collect()
    }

    pub fn instances(&self) -> usize {
        self.instances.len()
    }

    /// Per instance: exec to the first `/next` of its current process.
    pub fn init_times(&self) -> Vec<Option<Duration>> {
        self.instances
            .iter()
            .map(|i| i.init_took.lock().ok().and_then(|t| *t))
            .collect()
    }

    /// Processes started so far (the first start of each instance included).
    pub fn cold_starts(&self) -> u64 {
        self.shared.cold_starts.load(Ordering::SeqCst)
    }

    /// Stops every instance and waits until their processes are gone.
    pub async fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for i in &self.instances {
            i.request_kill(i.generation.load(Ordering::SeqCst));
        }
        let supervisors = std::mem::take(&mut *self.supervisors.lock().await);
        for s in supervisors {
            if tokio::time::timeout(Duration::from_secs(10), s)
                .await
                .is_err()
            {
                tracing::warn!(function = %self.shared.config.name, "an instance did not stop in time");
            }
        }
        if let Ok(mut servers) = self.servers.lock() {
            for s in servers.drain(..) {
                s.abort();
            }
        }
    }
}

async fn write_log(shared: &Shared, line: &str) {
    let mut log = shared.log.lock().await;
    let _ = log.write_all(line.as_bytes()).await;
    let _ = log.write_all(b"\n").await;
    if shared.config.echo_logs {
        eprintln!("[{}] {line}", shared.config.name);
    }
}

/// Keeps one process running for an instance, restarting it after a crash, a timeout or a kill.
async fn supervise(shared: Arc<Shared>, state: Arc<InstanceState>, addr: SocketAddr, index: usize) {
    let mut rapid_failures = 0u32;
    while !shared.stopping.load(Ordering::SeqCst) {
        let started = Instant::now();
        if let Ok(mut s) = state.spawned_at.lock() {
            *s = Some(started);
        }
        let mut child = match spawn(&shared, addr, index).await {
            Ok(c) => c,
            Err(e) => {
                if let Ok(mut f) = shared.init_failure.lock() {
                    *f = Some(e.to_string());
                }
                return;
            }
        };
        shared.cold_starts.fetch_add(1, Ordering::SeqCst);
        state.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        let generation = state.generation.load(Ordering::SeqCst);
        let stderr_tail = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let readers = pipe_output(&shared, &mut child, stderr_tail.clone());
        let mut kill = state.kill.subscribe();
        let exit = tokio::select! {
            status = child.wait() => Some(status),
            _ = kill.wait_for(|g| *g == generation) => None,
        };
        if exit.is_none() {
            terminate_hard(&mut child).await;
        }
        state.ready.store(false, Ordering::SeqCst);
        state.generation.fetch_add(1, Ordering::SeqCst);
        state.died.notify_waiters();
        let orphan = state.in_flight.lock().await.take();
        if let Some((_, done, _)) = orphan {
            let _ = done.send(Outcome::Crashed);
        }
        if shared.stopping.load(Ordering::SeqCst) {
            terminate(&mut child).await;
            return;
        }
        if let Some(Ok(status)) = exit {
            drain(readers).await;
            write_log(&shared, &format!("process exited: {status}")).await;
            if started.elapsed() < Duration::from_secs(2) {
                rapid_failures += 1;
            } else {
                rapid_failures = 0;
            }
            if rapid_failures >= 3 {
                let tail = stderr_tail
                    .lock()
                    .map(|t| t.join(" | "))
                    .unwrap_or_default();
                if let Ok(mut f) = shared.init_failure.lock() {
                    *f = Some(format!("exited {status} three times at start: {tail}"));
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn terminate_hard(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: signalling the process group we created for this child.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
    let _ = child.wait().await;
}

async fn spawn(shared: &Shared, addr: SocketAddr, index: usize) -> Result<Child> {
    let c = &shared.config;
    let mut cmd = Command::new(&c.binary);
    cmd.env_clear()
        .envs(&c.environment)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", &c.name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", c.memory_mb.to_string())
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", c.name),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("local/{index}"))
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    own_process_group(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("starting {}", c.binary.display()))
}

/// Copies the child's stdout and stderr into the log (keeping stderr's last lines in `tail`);
/// returns the copying tasks, so that an exit can wait for its last words.
fn pipe_output(
    shared: &Arc<Shared>,
    child: &mut Child,
    tail: Arc<std::sync::Mutex<Vec<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let shared = shared.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                write_log(&shared, &line).await;
            }
        }));
    }
    if let Some(err) = child.stderr.take() {
        let shared = shared.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut t) = tail.lock() {
                    t.push(line.clone());
                    if t.len() > 5 {
                        t.remove(0);
                    }
                }
                write_log(&shared, &line).await;
            }
        }));
    }
    readers
}

/// Waits (briefly: a grandchild could hold the pipes open) until a dead process's output is read,
/// so that a start-up error names its cause instead of racing the exit.
async fn drain(readers: Vec<tokio::task::JoinHandle<()>>) {
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
    }
}

type Ctx = (Arc<Shared>, Arc<InstanceState>);

async fn next(State((shared, state)): State<Ctx>) -> Response {
    let generation = state.generation.load(Ordering::SeqCst);
    if !state.ready.swap(true, Ordering::SeqCst)
        && let (Ok(spawned), Ok(mut took)) = (state.spawned_at.lock(), state.init_took.lock())
        && let Some(at) = *spawned
    {
        *took = Some(at.elapsed());
    }
    let died = state.died.notified();
    tokio::pin!(died);
    died.as_mut().enable();
    let pending = {
        let mut work = shared.work.lock().await;
        if state.generation.load(Ordering::SeqCst) != generation {
            return StatusCode::GONE.into_response();
        }
        tokio::select! {
            p = work.recv() => p,
            _ = &mut died => return StatusCode::GONE.into_response(),
        }
    };
    let Some(p) = pending else {
        return StatusCode::GONE.into_response();
    };
    if state.generation.load(Ordering::SeqCst) != generation {
        // The process that asked is gone: hand the work to another instance.
        let _ = shared.requeue.send(p).await;
        return StatusCode::GONE.into_response();
    }
    let id = format!(
        "{:08x}-local-{}",
        shared.next_id.fetch_add(1, Ordering::SeqCst),
        uuid::Uuid::new_v4().simple()
    );
    let deadline = chrono::Utc::now().timestamp_millis() as u64 + p.timeout.as_millis() as u64;
    *state.in_flight.lock().await = Some((id.clone(), p.done, Instant::now()));
    // Lambda kills an invocation that outlives the function's timeout.
    {
        let state = state.clone();
        let id = id.clone();
        let timeout = p.timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let mut guard = state.in_flight.lock().await;
            if guard.as_ref().is_some_and(|(i, _, _)| *i == id) {
                if let Some((_, done, _)) = guard.take() {
                    let _ = done.send(Outcome::Timeout);
                }
                drop(guard);
                state.request_kill(generation);
            }
        });
    }
    let mut headers = HeaderMap::new();
    let arn = format!(
        "arn:aws:lambda:eu-west-1:000000000000:function:{}",
        shared.config.name
    );
    for (k, v) in [
        ("lambda-runtime-aws-request-id", id.as_str()),
        ("lambda-runtime-invoked-function-arn", arn.as_str()),
        (
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000;Sampled=0",
        ),
        ("content-type", "application/json"),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.insert(k, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&deadline.to_string()) {
        headers.insert("lambda-runtime-deadline-ms", v);
    }
    (StatusCode::OK, headers, p.payload).into_response()
}

async fn finish(shared: &Shared, state: &InstanceState, id: &str, outcome: Outcome) -> StatusCode {
    let mut guard = state.in_flight.lock().await;
    match guard.take() {
        Some((current, done, started)) if current == id => {
            shared.invocations.fetch_add(1, Ordering::Relaxed);
            // Lambda bills each invocation's duration rounded up to the millisecond.
            let ms = started.elapsed().as_micros().div_ceil(1000) as u64;
            shared.busy_ms.fetch_add(ms, Ordering::Relaxed);
            let _ = done.send(outcome);
            StatusCode::ACCEPTED
        }
        other => {
            *guard = other;
            StatusCode::BAD_REQUEST
        }
    }
}

async fn response(
    State((shared, state)): State<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    finish(&shared, &state, &id, Outcome::Response(body.to_vec())).await
}

async fn error(
    State((shared, state)): State<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    finish(&shared, &state, &id, Outcome::FunctionError(body.to_vec())).await
}

async fn init_error(State((shared, _)): State<Ctx>, body: Bytes) -> StatusCode {
    let text = String::from_utf8_lossy(&body).to_string();
    write_log(&shared, &format!("init error: {text}")).await;
    if let Ok(mut f) = shared.init_failure.lock() {
        *f = Some(text);
    }
    StatusCode::ACCEPTED
}
