//! Logs as JSON lines (CloudWatch reads them with the function's JSON `LoggingConfig`).

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber once; `RUST_LOG` (or `AWS_LAMBDA_LOG_LEVEL`) sets the level.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| {
            std::env::var("AWS_LAMBDA_LOG_LEVEL")
                .ok()
                .map(|l| l.to_lowercase())
        })
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::new(filter))
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// Stops the process when start-up fails, with one clear log line (and the same on stderr for
/// people running a binary by hand). Lambda reports it as an init error.
pub fn fail_start(function: &str, error: &dyn std::fmt::Display) -> ! {
    tracing::error!(function, error = %error, "cannot start");
    eprintln!("{function}: cannot start: {error}");
    std::process::exit(2)
}
