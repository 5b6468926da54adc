//! Cold start and footprint (issue 7, item 1): each function's release binary started against
//! the local Lambda Runtime API, one at a time, beside a hello-world `lambda_runtime` binary
//! built with the same profile in the same run.
//!
//! Init is exec to the first `GET /runtime/invocation/next` (what Lambda reports as Init
//! Duration); the first invocation is the function's sample event from `events/`, answered
//! against the local stack's emulators and sandbox; peak RSS is the process's VmHWM after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::LocalStack;
use crate::bench::peak_rss_kib;
use crate::runtime::{Function, FunctionConfig, Outcome};
use crate::stats::quantile;

pub const BASELINE: &str = "hello-lambda";

#[derive(Debug, Clone)]
pub struct ColdStart {
    pub name: String,
    /// Medians over the runs.
    pub init_ms: f64,
    pub first_invocation_ms: f64,
    pub peak_rss_mib: f64,
    pub binary_mib: f64,
    pub outcome: String,
    /// Init over the hello-world init measured just before it, per round: median and 90th
    /// percentile over the rounds (the baseline's own row is 1).
    pub ratio_median: f64,
    pub ratio_p90: f64,
    pub rounds: usize,
}

fn median(v: Vec<f64>) -> f64 {
    quantile(v, 0.5)
}

fn sample_event(root: &Path, name: &str) -> Result<Vec<u8>> {
    if name == BASELINE {
        return Ok(b"{}".to_vec());
    }
    std::fs::read(root.join("events").join(format!("{name}.json")))
        .with_context(|| format!("events/{name}.json"))
}

async fn measure_once(
    binary: &Path,
    name: &str,
    environment: &BTreeMap<String, String>,
    event: &[u8],
    log_dir: &Path,
) -> Result<(f64, f64, f64, String)> {
    let function = Function::start(FunctionConfig {
        name: name.to_string(),
        binary: binary.to_path_buf(),
        environment: environment.clone(),
        timeout: Duration::from_secs(30),
        memory_mb: 256,
        instances: 1,
        log_file: log_dir.join(format!("{name}.log")),
        echo_logs: false,
    })
    .await?;
    let result = async {
        function.wait_ready(Duration::from_secs(30)).await?;
        let init = function
            .init_times()
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| anyhow!("{name}: no init time"))?;
        let started = Instant::now();
        let outcome = function.invoke(event.to_vec()).await?;
        let first = started.elapsed();
        let rss = function
            .pids()
            .first()
            .and_then(|pid| peak_rss_kib(*pid))
            .unwrap_or(0);
        let outcome = match outcome {
            Outcome::Response(_) => "response".to_string(),
            other => format!("{other:?}"),
        };
        Ok::<_, anyhow::Error>((
            init.as_secs_f64() * 1000.0,
            first.as_secs_f64() * 1000.0,
            rss as f64 / 1024.0,
            outcome,
        ))
    }
    .await;
    function.stop().await;
    result
}

/// `runs` cold starts of the baseline and of every function, one process at a time, in rounds.
pub async fn run(
    stack: &LocalStack,
    bin_dir: &Path,
    root: &Path,
    runs: usize,
) -> Result<Vec<ColdStart>> {
    let log_dir: PathBuf =
        std::env::temp_dir().join(format!("connector-coldstart-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir)?;
    let mut names = vec![BASELINE.to_string()];
    names.extend(stack.environment.keys().cloned());
    struct Subject {
        name: String,
        binary: PathBuf,
        size: u64,
        environment: BTreeMap<String, String>,
        event: Vec<u8>,
        inits: Vec<f64>,
        firsts: Vec<f64>,
        rss: Vec<f64>,
        ratios: Vec<f64>,
        outcome: String,
    }
    let mut subjects = Vec::new();
    for name in names {
        let binary = bin_dir.join(&name);
        let size = std::fs::metadata(&binary)
            .with_context(|| format!("{} (build with --release)", binary.display()))?
            .len();
        let environment = if name == BASELINE {
            BTreeMap::new()
        } else {
            stack.environment[&name].clone()
        };
        let event = sample_event(root, &name)?;
        subjects.push(Subject {
            name,
            binary,
            size,
            environment,
            event,
            inits: Vec::new(),
            firsts: Vec::new(),
            rss: Vec::new(),
            ratios: Vec::new(),
            outcome: String::new(),
        });
    }
    // Paired rounds: every function's start comes right after a start of the baseline, and
    // its ratio is taken against that one, so that the machine drifting (other load, caches,
    // frequency) moves both sides of each ratio alike and one run's figure predicts the next.
    let (baseline, functions) = subjects.split_at_mut(1);
    let baseline = &mut baseline[0];
    for round in 1..=runs {
        for s in functions.iter_mut() {
            let (hello, hello_first, hello_rss, _) = measure_once(
                &baseline.binary,
                &baseline.name,
                &baseline.environment,
                &baseline.event,
                &log_dir,
            )
            .await?;
            baseline.inits.push(hello);
            baseline.firsts.push(hello_first);
            baseline.rss.push(hello_rss);
            baseline.ratios.push(1.0);
            let (i, f, r, o) =
                measure_once(&s.binary, &s.name, &s.environment, &s.event, &log_dir).await?;
            s.inits.push(i);
            s.ratios.push(i / hello);
            s.firsts.push(f);
            s.rss.push(r);
            s.outcome = o;
        }
        println!("    round {round}/{runs} done");
    }
    baseline.outcome = "response".into();
    let mut out = Vec::new();
    for s in subjects {
        println!(
            "    {:<22} init {:>6.1} ms, first invocation {:>7.1} ms",
            s.name,
            median(s.inits.clone()),
            median(s.firsts.clone())
        );
        out.push(ColdStart {
            name: s.name,
            ratio_median: quantile(s.ratios.clone(), 0.5),
            ratio_p90: quantile(s.ratios.clone(), 0.9),
            rounds: s.ratios.len(),
            init_ms: median(s.inits),
            first_invocation_ms: median(s.firsts),
            peak_rss_mib: s.rss.into_iter().fold(0.0, f64::max),
            binary_mib: s.size as f64 / (1024.0 * 1024.0),
            outcome: s.outcome,
        });
    }
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(out)
}

pub fn print(results: &[ColdStart], runs: usize) {
    println!(
        "Cold start and footprint (release binaries, {runs} paired rounds: each function's start right after one of hello-lambda)"
    );
    println!(
        "  {:<22} {:>8} {:>13} {:>10} {:>12} {:>9} {:>8}  first answer",
        "function", "init ms", "x hello (med)", "(p90)", "1st call ms", "RSS MiB", "size MiB"
    );
    for r in results {
        println!(
            "  {:<22} {:>8.1} {:>13.2} {:>10.2} {:>12.1} {:>9.1} {:>8.1}  {}",
            r.name,
            r.init_ms,
            r.ratio_median,
            r.ratio_p90,
            r.first_invocation_ms,
            r.peak_rss_mib,
            r.binary_mib,
            r.outcome
        );
    }
    let worst = results
        .iter()
        .filter(|r| r.name != BASELINE)
        .map(|r| r.ratio_median)
        .fold(f64::NAN, f64::max);
    println!(
        "  target: median ratio <= 1.2 x hello-lambda for every function (worst here {worst:.2}: {}); peak RSS <= 30 MB",
        if worst <= 1.2 { "met" } else { "missed" }
    );
}
