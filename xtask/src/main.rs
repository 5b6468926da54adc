//! The README's two commands.
//!
//! - `cargo xtask demo`: builds the connector and runs the main job locally (moto + sandbox +
//!   the nine functions), printing what happens.
//! - `cargo xtask test`: everything CI checks, stage by stage with timings: formatting, clippy,
//!   unit, integration and browser tests (Chromium, ChromeDriver and axe-core installed when
//!   missing), the template checks (cfn-lint, sam validate --lint, then the
//!   SAM transform itself: `tools/check_template.py`) and `sam build`.
//!
//! Both install what they need themselves (a project-local virtualenv from `tools/`).
//! - `cargo xtask invoke <function> [event]`: one function once against `cargo xtask up`'s stack.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn venv() -> PathBuf {
    std::env::var_os("CONNECTOR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"))
}

struct Stage {
    name: &'static str,
    took: Duration,
    ok: bool,
}

fn run(cmd: &mut Command) -> bool {
    eprintln!("$ {}", describe(cmd));
    match cmd.current_dir(root()).status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("could not run {}: {e}", describe(cmd));
            false
        }
    }
}

/// Like [`run`], but the command's output is shown only if it fails (for a tool whose success
/// is one line of news and many lines of noise).
fn run_quiet(cmd: &mut Command, success: &str) -> bool {
    eprintln!("$ {}", describe(cmd));
    match cmd.current_dir(root()).output() {
        Ok(out) if out.status.success() => {
            eprintln!("{success}");
            true
        }
        Ok(out) => {
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            false
        }
        Err(e) => {
            eprintln!("could not run {}: {e}", describe(cmd));
            false
        }
    }
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().to_string()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().to_string()));
    parts.join(" ")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Creates `.venv` and installs `tools/<file>` into it, once per content of the file.
fn ensure_venv(requirements: &[&str]) -> bool {
    let venv = venv();
    let python = venv.join("bin").join("python");
    if !python.exists() && !run(Command::new("python3").args(["-m", "venv"]).arg(&venv)) {
        return false;
    }
    for req in requirements {
        let path = root().join("tools").join(req);
        let Ok(wanted) = std::fs::read_to_string(&path) else {
            eprintln!("missing {}", path.display());
            return false;
        };
        let stamp = venv.join(format!(".installed-{req}"));
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
            continue;
        }
        let names: Vec<&str> = wanted
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split(['=', '>', '<', '[', ';', ' ']).next().unwrap_or(l))
            .collect();
        eprintln!(
            "==> Installing into {} from PyPI (tools/{req}): {}",
            venv.display(),
            names.join(", ")
        );
        let started = std::time::Instant::now();
        if !run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&path))
        {
            return false;
        }
        eprintln!("    installed in {:.0} s", started.elapsed().as_secs_f64());
        if std::fs::write(&stamp, &wanted).is_err() {
            return false;
        }
    }
    true
}

/// The architecture this machine has a Rust standard library for (sam build targets it).
fn lambda_architecture() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "x86_64"
    }
}

fn with_tools_path(cmd: &mut Command) -> &mut Command {
    let bin = venv().join("bin");
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{}:{path}", bin.display()))
        .env("SAM_CLI_TELEMETRY", "0")
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .env("AWS_REGION", "eu-west-1")
        // No AWS account is needed: the checks and the build run offline.
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

fn test() -> ExitCode {
    let started = Instant::now();
    let mut stages: Vec<Stage> = Vec::new();
    let mut stage = |name: &'static str, f: &mut dyn FnMut() -> bool| -> bool {
        eprintln!("\n==> {name}");
        let t = Instant::now();
        let ok = f();
        let took = t.elapsed();
        eprintln!(
            "<== {name}: {} in {:.1} s",
            if ok { "ok" } else { "FAILED" },
            took.as_secs_f64()
        );
        stages.push(Stage { name, took, ok });
        ok
    };
    let sam_dir = std::env::temp_dir().join(format!("connector-sam-build-{}", std::process::id()));
    let all_ok = stage(
        "tools (virtualenv: moto, aws-sam-cli, cfn-lint, cargo-lambda, zig)",
        &mut || ensure_venv(&["requirements-local.txt", "requirements-ci.txt"]),
    ) && stage("cargo fmt --check", &mut || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    }) && stage("cargo clippy --all-targets -D warnings", &mut || {
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    }) && stage(
        "cargo build --bins (binaries the local stack runs)",
        &mut || run(cargo().args(["build", "--workspace", "--bins"])),
    ) && stage(
        "browser tools (apt-get chromium chromium-driver as root; npm axe-core)",
        &mut || {
            // The browser tests install these themselves too; here the install is seen and timed.
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root().join("target"));
            run(Command::new(target.join("debug").join("local-stack")).arg("browser-tools"))
        },
    ) && stage(
        "cargo test (unit, property and integration tests, browser tests)",
        &mut || {
            run(cargo()
                .args(["test", "--workspace", "--no-fail-fast"])
                .env("CONNECTOR_VENV", venv()))
        },
    ) && stage("cfn-lint template.yaml", &mut || {
        run(with_tools_path(&mut Command::new("cfn-lint")).arg("template.yaml"))
    }) && stage("sam validate --lint", &mut || {
        run(with_tools_path(&mut Command::new("sam")).args(["validate", "--lint"]))
    }) && stage(
        "template checks (SAM transform per parameter set, cfn-lint on its output)",
        &mut || {
            // cfn-lint and sam validate read the template before the transform; a deployment
            // runs it first. This runs it, and checks what it produces against the repository.
            run(
                with_tools_path(&mut Command::new(venv().join("bin").join("python")))
                    .arg("tools/check_template.py"),
            )
        },
    ) && stage("sam build", &mut || {
        // CI proves the template builds; an unoptimised release keeps that within minutes on 2
        // cores. `sam build` for a deployment uses the tuned release profile of Cargo.toml.
        // Quiet unless it fails: its "commands you can use next" name a directory removed right
        // after. The Rust builder builds in source either way; saying so spares a warning per
        // function.
        let ok = run_quiet(
            with_tools_path(&mut Command::new("sam"))
                .args(["build", "--build-in-source", "--build-dir"])
                .arg(&sam_dir)
                .args([
                    "--parameter-overrides",
                    &format!("Architecture={}", lambda_architecture()),
                ])
                .env("CARGO_PROFILE_RELEASE_LTO", "false")
                .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
                .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0"),
            "Build Succeeded: every function of template.yaml builds (the artifacts are not kept)",
        );
        let _ = std::fs::remove_dir_all(&sam_dir);
        ok
    });
    eprintln!("\nStage timings:");
    for s in &stages {
        eprintln!(
            "  {:<70} {:>7.1} s  {}",
            s.name,
            s.took.as_secs_f64(),
            if s.ok { "ok" } else { "FAILED" }
        );
    }
    eprintln!(
        "  {:<70} {:>7.1} s",
        "total",
        started.elapsed().as_secs_f64()
    );
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Builds the connector and runs `local-stack <command>` (demo, up, bench).
fn local_stack(command: &str, args: &[String], release: bool) -> ExitCode {
    // `cargo xtask bench -- --accounts 4`: the `--` is cargo's habit, not local-stack's.
    let args = match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        _ => args,
    };
    if !ensure_venv(&["requirements-local.txt"]) {
        return ExitCode::FAILURE;
    }
    eprintln!("==> Building the connector (the first build takes a few minutes)");
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    if release {
        build.arg("--release");
    }
    if !run(&mut build) {
        return ExitCode::FAILURE;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let profile = if release { "release" } else { "debug" };
    let mut cmd = Command::new(target.join(profile).join("local-stack"));
    cmd.arg(command).args(args).env("CONNECTOR_VENV", venv());
    // Ctrl-C reaches local-stack too (same process group): it stops every process of the stack,
    // and this process waits for it instead of returning the prompt first.
    outlive_interrupt();
    if run(&mut cmd) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

extern "C" fn ignore_interrupt(_: libc::c_int) {}

/// SIGINT no longer ends this process (a handler that does nothing, not SIG_IGN, so that the
/// children it starts get the default action back at exec).
fn outlive_interrupt() {
    // SAFETY: installs an async-signal-safe handler that does nothing.
    unsafe {
        libc::signal(
            libc::SIGINT,
            ignore_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// The fuzz targets of `fuzz/Cargo.toml` (the same list as `connector_domain::fuzzing::TARGETS`).
const FUZZ_TARGETS: &[&str] = &["notification", "ingest", "auth_link", "statement_response"];

/// `cargo xtask fuzz [--seconds N] [target ...]`: builds the libFuzzer targets with coverage
/// instrumentation (stable Rust: the sanitizer-coverage pass is asked for through RUSTFLAGS)
/// and runs each for N seconds (default 600), seeded from `fuzz/seeds/<target>`.
fn fuzz(args: &[String]) -> ExitCode {
    let mut seconds: u64 = 600;
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => match it.next().and_then(|v| v.parse().ok()) {
                Some(v) => seconds = v,
                None => {
                    eprintln!("--seconds takes a number");
                    return ExitCode::from(2);
                }
            },
            t if FUZZ_TARGETS.contains(&t) => targets.push(t.to_string()),
            other => {
                eprintln!(
                    "unknown fuzz target {other}; targets: {}",
                    FUZZ_TARGETS.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.iter().map(|t| t.to_string()).collect();
    }
    let host = match Command::new("rustc").arg("-vV").output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
            .unwrap_or_default(),
        Err(e) => {
            eprintln!("rustc -vV: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target_dir = root().join("target").join("fuzz");
    eprintln!("==> Building the fuzz targets with coverage instrumentation");
    // `--target` keeps the instrumentation off build scripts and proc macros.
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    if !run(cargo()
        .args([
            "build",
            "--release",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--bins",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--target", &host])
        .env("RUSTFLAGS", flags))
    {
        return ExitCode::FAILURE;
    }
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for t in &targets {
        let corpus = target_dir.join("corpus").join(t);
        let artifacts = target_dir.join("artifacts").join(t);
        for d in [&corpus, &artifacts] {
            if let Err(e) = std::fs::create_dir_all(d) {
                eprintln!("{}: {e}", d.display());
                return ExitCode::FAILURE;
            }
        }
        eprintln!("==> Fuzzing {t} for {seconds} s");
        let output = Command::new(target_dir.join(&host).join("release").join(t))
            .current_dir(root())
            .arg(&corpus)
            .arg(root().join("fuzz").join("seeds").join(t))
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1")
            .output();
        let output = match output {
            Ok(o) => o,
            Err(e) => {
                eprintln!("could not run the {t} target: {e}");
                return ExitCode::FAILURE;
            }
        };
        let log = String::from_utf8_lossy(&output.stderr);
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into());
        let corpus_size = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
        if output.status.success() {
            summary.push(format!(
                "  {t:<20} ok: {runs} inputs in {seconds} s, corpus {corpus_size}"
            ));
        } else {
            eprintln!(
                "{}",
                log.lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            summary.push(format!(
                "  {t:<20} FOUND A CRASH after {runs} inputs: copy the file from {} to fuzz/regressions/{t}/ (a unit test replays it), then fix",
                artifacts.display()
            ));
            failed.push(t.clone());
        }
    }
    println!("Fuzzing, {seconds} s per target:");
    for line in &summary {
        println!("{line}");
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some(c @ ("demo" | "up" | "invoke")) => local_stack(c, &args[1..], false),
        // Figures of the code itself need the release profile (the one Lambda runs).
        Some(
            c @ ("bench" | "bench-fleet" | "bench-notification" | "bench-coldstart" | "soak"
            | "bench-payouts" | "soak-payouts"),
        ) => local_stack(c, &args[1..], true),
        Some("fuzz") => fuzz(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  demo   build and run the main job locally (bank feed, then a Payments Out batch paid)\n  up     build and serve the local stack until Ctrl-C\n  invoke <function> [event] [--env NAME=VALUE] [--unset NAME]  run one function once against `up`'s stack and print its answer (default event: events/<function>.json)\n  bench  the statement pipeline draining a backlog against the sandbox at 10 requests/s (release build)\n  bench-fleet  the statement pipeline under a bank's day: many accounts, a trickle each (release build)\n  bench-payouts  Payments Out: batches of 2,000 payments, acknowledgement/first PATCH/outcome latencies, calls per batch (release build)\n  soak-payouts  Payments Out under faults and killed consumers: nothing paid twice or lost, Sage and the bank agree (release build)\n  bench-notification  measure /notification validation and a load run (release build)\n  bench-coldstart     cold start and footprint of each function vs hello world (release build)\n  soak   200 accounts x 500 transactions through ingest under faults (release build)\n  fuzz   [--seconds N] [target...] run the libFuzzer targets (default 600 s each)\n  test   everything CI runs: fmt, clippy, tests, template checks, sam build"
            );
            ExitCode::from(2)
        }
    }
}
