//! `local-stack up` serves the connector locally; `local-stack demo` also runs the main job.

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use local_stack::stack::{LOCAL_INGEST_KEY, default_bin_dir};
use local_stack::{LocalStack, Options};

#[derive(Parser)]
#[command(
    about = "The Sage Banking Service connector on one machine: moto + sandbox + the real function binaries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the stack, print its URLs, serve until Ctrl-C.
    Up {
        /// Loopback port of the Connector API (0 = any free port).
        #[arg(long, default_value_t = 3000)]
        port: u16,
        /// Print every function's log lines.
        #[arg(long)]
        logs: bool,
    },
    /// Start the stack, onboard an account, backfill it, push new transactions, watch them
    /// reach the sandbox, then stop.
    Demo {
        /// New transactions the bank pushes after the backfill.
        #[arg(long, default_value_t = 50)]
        transactions: usize,
    },
    /// Measure the statement pipeline against the sandbox at Sage's default rate limit.
    Bench {
        #[arg(long, default_value_t = 6)]
        accounts: usize,
        /// Transactions per account.
        #[arg(long, default_value_t = 2000)]
        transactions: usize,
        /// Provider API requests per second the sandbox allows.
        #[arg(long, default_value_t = 10.0)]
        rps: f64,
        /// Banking Service's processing latency: fixed part (ms) and per transaction (µs).
        #[arg(long, default_value_t = 200)]
        latency_ms: u64,
        #[arg(long, default_value_t = 500)]
        per_txn_us: u64,
    },
}

fn print_urls(stack: &LocalStack) {
    println!("Connector API        {}", stack.api_url);
    for path in [
        "/notification",
        "/auth",
        "/authrefresh",
        "/availableaccounts",
        "/ingest",
    ] {
        println!("  {}{path}", stack.api_url);
    }
    println!(
        "Sandbox (Banking Service, Sage ID) {}",
        stack.sandbox.base_url()
    );
    println!(
        "Demo bank (Bank Data API)          {}",
        stack.sandbox.bank_api_url()
    );
    println!("DynamoDB + SQS (moto)              {}", stack.moto_endpoint);
    println!("Registered bank id                 {}", stack.bank_id);
    println!("Ingest API key                     {LOCAL_INGEST_KEY}");
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut options = Options::new(default_bin_dir()?);
    match cli.command {
        Command::Up { port, logs } => {
            options.api_port = port;
            options.echo_logs = logs;
            println!("Starting the local stack…");
            let stack = LocalStack::start(options).await?;
            print_urls(&stack);
            println!(
                "Function logs in {}. Ctrl-C stops everything.",
                Options::new(default_bin_dir()?).log_dir.display()
            );
            tokio::signal::ctrl_c().await?;
            println!("Stopping…");
            stack.shutdown().await;
        }
        Command::Bench {
            accounts,
            transactions,
            rps,
            latency_ms,
            per_txn_us,
        } => {
            options.sandbox.ratelimit_rate_per_s = rps;
            options.sandbox.statement_processing_delay_ms = latency_ms;
            options.sandbox.statement_per_txn_us = per_txn_us;
            options.max_consumer_concurrency = 8;
            options.meter_aws = true;
            println!("==> Starting the local stack");
            let stack = LocalStack::start(options).await?;
            let report = local_stack::bench::run(
                &stack,
                &local_stack::bench::BenchOptions {
                    accounts,
                    transactions,
                    progress: true,
                },
            )
            .await;
            stack.shutdown().await;
            local_stack::bench::print(&report?);
        }
        Command::Demo { transactions } => {
            options.api_port = 0;
            println!("==> Starting the local stack (moto, sandbox, 9 functions)");
            let stack = LocalStack::start(options).await?;
            print_urls(&stack);
            let outcome = tokio::select! {
                r = local_stack::demo::run(&stack, transactions, true) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            };
            stack.shutdown().await;
            match outcome {
                Some(Ok(report))
                    if report.violations == 0
                        && report.delivered == report.backfilled + report.pushed =>
                {
                    println!("==> Demo succeeded.");
                }
                Some(Ok(report)) => anyhow::bail!("demo finished with problems: {report:?}"),
                Some(Err(e)) => return Err(e),
                None => println!("Interrupted."),
            }
            // Give the terminal a clean last line after the children's exit.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
