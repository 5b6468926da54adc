//! `local-stack up` serves the connector locally; `local-stack demo` also runs the main job.

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use local_stack::fauxqs::SqsEmulator;
use local_stack::stack::{LOCAL_INGEST_KEY, default_bin_dir};
use local_stack::{LocalStack, Options};

#[derive(Parser)]
#[command(
    about = "The Sage Banking Service connector on one machine: DynamoDB Local + moto + sandbox + the real function binaries"
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
        /// Talk to an external Sage (e.g. Sage's sandbox) instead of the built-in one: a file of
        /// template parameters, `Name=Value` per line (docs/external-sage.md).
        #[arg(long, value_name = "FILE")]
        sage: Option<std::path::PathBuf>,
    },
    /// Install what the browser tests need when missing (Chromium and ChromeDriver with
    /// apt-get as root, axe-core with npm) and print where they are.
    BrowserTools,
    /// Invoke one function once against the stack `up` serves, with the environment that stack
    /// gives it, and print its answer (what `sam local invoke` does with a container engine).
    Invoke {
        /// The function (a directory of functions/, e.g. notification).
        function: String,
        /// The event (JSON); default: events/<function>.json.
        event: Option<std::path::PathBuf>,
        /// Set a variable on top of the stack's environment (NAME=VALUE; repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Remove a variable from it, e.g. to see the function's start-up error (repeatable).
        #[arg(long, value_name = "NAME")]
        unset: Vec<String>,
    },
    /// Start the stack, onboard an account, backfill it, push new transactions, watch them
    /// reach the sandbox, then stop.
    Demo {
        /// New transactions the bank pushes after the backfill.
        #[arg(long, default_value_t = 50)]
        transactions: usize,
        /// Run it against an external Sage that is a sandbox (this repository's, elsewhere): a
        /// file of template parameters, as for `up --sage` (docs/external-sage.md).
        #[arg(long, value_name = "FILE")]
        sage: Option<std::path::PathBuf>,
    },
    /// Measure the statement pipeline against the sandbox at Sage's default rate limit.
    Bench {
        #[arg(long, default_value_t = 6)]
        accounts: usize,
        /// Transactions per account.
        #[arg(long, default_value_t = 2000)]
        transactions: usize,
        #[command(flatten)]
        load: PipelineLoad,
    },
    /// A bank's day: many accounts each receiving a trickle of transactions (Poisson arrivals),
    /// more than Sage's rate allows as separate statements; statements/s against the bound,
    /// transactions per statement, ingest-to-success latency.
    BenchFleet {
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// Mean transactions per account per minute.
        #[arg(long, default_value_t = 2.0)]
        per_minute: f64,
        /// Seconds of arrivals.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Seconds of warm-up before the steady-state window (default: one cycle of the rate
        /// limit, accounts / (rps / 2)).
        #[arg(long)]
        warmup: Option<u64>,
        #[command(flatten)]
        load: PipelineLoad,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Cold start and footprint of every function's binary beside a hello-world
    /// `lambda_runtime` binary (run the release build: `cargo xtask bench-coldstart`).
    BenchColdstart {
        /// Rounds: in each, every function starts right after a start of hello-lambda (paired ratios).
        #[arg(long, default_value_t = 15)]
        runs: usize,
    },
    /// Soak with faults: many accounts' transactions through ingest while Banking Service
    /// fails (5xx, dropped answers, 429s, token expiry) and consumers are killed; then every
    /// transaction is checked at Banking Service (lost, duplicated, order, in flight, latency).
    Soak {
        #[arg(long, default_value_t = 200)]
        accounts: usize,
        /// Transactions per account.
        #[arg(long, default_value_t = 500)]
        transactions: usize,
        /// Share of Provider API and Sage ID requests answered 503.
        #[arg(long, default_value_t = 0.05)]
        error_rate: f64,
        /// Share of statement POSTs whose answer is dropped after Banking Service stored it.
        #[arg(long, default_value_t = 0.02)]
        drop_rate: f64,
        /// Lifetime of Sage ID access tokens, seconds.
        #[arg(long, default_value_t = 60)]
        token_lifetime_s: u64,
        /// Seconds between two kills of a random consumer instance.
        #[arg(long, default_value_t = 20)]
        kill_every_s: u64,
        /// Give up after this many minutes.
        #[arg(long, default_value_t = 180)]
        limit_min: u64,
    },
    /// Payments Out figures: batches of many payments through the stack at Sage's rate limit
    /// (acknowledgement, first PATCH, outcome latencies; Provider API calls per batch).
    BenchPayouts {
        #[arg(long, default_value_t = 3)]
        batches: usize,
        /// Payments per batch (Sage's largest: 2,000).
        #[arg(long, default_value_t = 2000)]
        payments: usize,
        /// Payments of a batch paid first and left out of the figures, so that they show the
        /// steady state rather than DynamoDB Local's JIT compiling and the functions' first
        /// starts (0: measure a cold stack).
        #[arg(long, default_value_t = 500)]
        warmup: usize,
        #[command(flatten)]
        emulator: Emulator,
    },
    /// Payments Out under faults and killed consumers: nothing paid twice, nothing lost, Sage
    /// and the bank agree, no contract violation.
    SoakPayouts {
        #[arg(long, default_value_t = 4)]
        subscriptions: usize,
        /// Batches per subscription.
        #[arg(long, default_value_t = 2)]
        batches: usize,
        /// Payments per batch (Sage's largest: 2,000).
        #[arg(long, default_value_t = 500)]
        payments: usize,
        /// Share of Provider and messaging calls answered 503.
        #[arg(long, default_value_t = 0.05)]
        error_rate: f64,
        /// Seconds between two consumer kills.
        #[arg(long, default_value_t = 15)]
        kill_every_s: u64,
    },
    /// Measure /notification: validation per request on one core (use a release build), then
    /// a load run against the local stack at increasing rates.
    BenchNotification {
        /// Validations timed in the micro-benchmark.
        #[arg(long, default_value_t = 20_000)]
        iterations: u64,
        /// Request rates of the load run, per second.
        #[arg(long, value_delimiter = ',', default_value = "25,50,100,200")]
        rates: Vec<u32>,
        /// Seconds per rate.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Instances of each HTTP function (Lambda would scale them out).
        #[arg(long, default_value_t = 8)]
        instances: usize,
        /// Only the micro-benchmark.
        #[arg(long)]
        no_load: bool,
    },
}

/// The sandbox's pace and the stack's consumers for the pipeline benchmarks.
#[derive(clap::Args)]
struct PipelineLoad {
    /// Provider API requests per second the sandbox allows.
    #[arg(long, default_value_t = 10.0)]
    rps: f64,
    /// Banking Service's processing latency: fixed part (ms) and per transaction (µs).
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
    #[arg(long, default_value_t = 500)]
    per_txn_us: u64,
    #[command(flatten)]
    emulator: Emulator,
}

#[derive(clap::Args)]
struct Emulator {
    /// The SQS emulator: moto (the tests' one; the default but for bench-fleet) or fauxqs, which
    /// stays fast with thousands of accounts' messages in a queue (bench-fleet's default).
    #[arg(long, value_enum)]
    sqs: Option<SqsEmulator>,
}

impl Emulator {
    fn or(&self, default: SqsEmulator) -> SqsEmulator {
        self.sqs.unwrap_or(default)
    }
}

impl PipelineLoad {
    fn apply(&self, options: &mut Options) {
        options.sandbox.ratelimit_rate_per_s = self.rps;
        options.sandbox.statement_processing_delay_ms = self.latency_ms;
        options.sandbox.statement_per_txn_us = self.per_txn_us;
        options.max_consumer_concurrency = 8;
        options.sqs = self.emulator.or(SqsEmulator::Moto);
    }
}

fn print_urls(stack: &LocalStack) {
    println!("Connector API        {}", stack.api_url);
    for path in [
        "/notification",
        "/auth",
        "/authrefresh",
        "/availableaccounts",
        "/ingest",
        "/notifications (Payments Out)",
        "/subscription (Payments Out)",
        "/authorise/{linkId} (Payments Out)",
        "/bank/payment-events (Payments Out)",
        "/bank/consent-events (Payments Out)",
    ] {
        println!("  {}{path}", stack.api_url);
    }
    match &stack.sage {
        None => println!(
            "Sandbox (Banking Service, Payments Out, Sage ID) {}",
            stack.sandbox.base_url()
        ),
        Some(sage) => {
            let get = |k| sage.get(k).unwrap_or("-");
            println!(
                "External Banking Service           {}",
                get("BankingServiceUrl")
            );
            println!("External Sage ID                   {}", get("SageIdIssuer"));
            if sage.payments_out() {
                println!(
                    "External Payments Out              {}",
                    get("PaymentsOutUrl")
                );
            } else {
                println!(
                    "Sandbox (Payments Out)             {}",
                    stack.sandbox.base_url()
                );
            }
            println!(
                "Register with Sage: {}/notification, /auth, /authrefresh, /availableaccounts (at the URL Sage reaches: PublicBaseUrl)",
                sage.get("PublicBaseUrl").unwrap_or(&stack.api_url)
            );
        }
    }
    println!(
        "Demo bank (Bank Data API)          {}",
        stack.sandbox.bank_api_url()
    );
    println!("DynamoDB + SQS (metered endpoint)  {}", stack.aws_endpoint);
    println!(
        "  access key (this stack's tables)  {}",
        stack.aws_access_key
    );
    println!("Registered bank id                 {}", stack.bank_id);
    println!("Ingest API key                     {LOCAL_INGEST_KEY}");
}

/// `--sage FILE`, read and checked against template.yaml.
fn external_sage(
    file: Option<&std::path::Path>,
) -> Result<Option<local_stack::external::SageParameters>> {
    let Some(file) = file else { return Ok(None) };
    let template = local_stack::template::Template::load()?;
    Ok(Some(local_stack::external::SageParameters::load(
        file, &template,
    )?))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut options = Options::new(default_bin_dir()?);
    match cli.command {
        Command::Up { port, logs, sage } => {
            options.api_port = port;
            options.echo_logs = logs;
            options.sage = external_sage(sage.as_deref())?;
            // Listening before the URLs are printed: a Ctrl-C right after them must not be
            // lost (tokio's `ctrl_c()` only registers when first polled).
            let mut interrupt =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
            println!("Starting the local stack…");
            let stack = LocalStack::start(options).await?;
            print_urls(&stack);
            if let Err(e) = local_stack::invoke::record(&stack) {
                eprintln!("note: `cargo xtask invoke` will not find this stack: {e:#}");
            }
            println!(
                "Function logs in {}. Ctrl-C stops everything.",
                Options::new(default_bin_dir()?).log_dir.display()
            );
            interrupt.recv().await;
            println!("Stopping…");
            local_stack::invoke::forget();
            stack.shutdown().await;
            println!("Stopped.");
        }
        Command::BrowserTools => {
            let t = local_stack::browser::ensure_installed()?;
            println!(
                "chromium {}\nchromedriver {}\naxe-core {}",
                t.chromium.display(),
                t.chromedriver.display(),
                t.axe_js.display()
            );
        }
        Command::Invoke {
            function,
            event,
            set,
            unset,
        } => {
            let answer = local_stack::invoke::invoke(&local_stack::invoke::InvokeOptions {
                function: function.clone(),
                event,
                set,
                unset,
                bin_dir: default_bin_dir()?,
            })
            .await?;
            match answer {
                local_stack::invoke::Answer::Response(v) => {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                local_stack::invoke::Answer::FunctionError(v) => {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    anyhow::bail!("{function} answered with a function error");
                }
            }
        }
        Command::BenchPayouts {
            batches,
            payments,
            warmup,
            emulator,
        } => {
            options.sqs = emulator.or(SqsEmulator::Moto);
            options.max_consumer_concurrency = 8;
            // The bank pushes an event per payment step: Lambda would scale out for them.
            options.http_instances = 8;
            // Every delivery and push stays in the log the figures are read from.
            options.sandbox.log_capacity = 200_000;
            println!("==> Starting the local stack");
            let stack = LocalStack::start(options).await?;
            let report = local_stack::payouts_bench::run(
                &stack,
                &local_stack::payouts_bench::PayoutsBenchOptions {
                    batches,
                    payments,
                    warmup,
                    progress: true,
                },
            )
            .await;
            stack.shutdown().await;
            local_stack::payouts_bench::print(&report?);
        }
        Command::SoakPayouts {
            subscriptions,
            batches,
            payments,
            error_rate,
            kill_every_s,
        } => {
            local_stack::payouts_soak::configure(&mut options);
            println!("==> Starting the local stack");
            let stack = LocalStack::start(options).await?;
            let report = local_stack::payouts_soak::run(
                &stack,
                &local_stack::payouts_soak::PayoutsSoakOptions {
                    subscriptions,
                    batches,
                    payments,
                    error_rate,
                    kill_every: std::time::Duration::from_secs(kill_every_s),
                    progress: true,
                    ..Default::default()
                },
            )
            .await;
            stack.shutdown().await;
            let report = report?;
            local_stack::payouts_soak::print(&report);
            if !report.passed() {
                anyhow::bail!("the Payments Out soak failed");
            }
        }
        Command::Bench {
            accounts,
            transactions,
            load,
        } => {
            load.apply(&mut options);
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
        Command::BenchFleet {
            accounts,
            per_minute,
            seconds,
            warmup,
            load,
            seed,
        } => {
            load.apply(&mut options);
            // moto rescans a queue's every message on each receive: with a fleet's delayed
            // timers it, not the connector, would be the limit.
            options.sqs = load.emulator.or(SqsEmulator::Fauxqs);
            // The bank's ingest requests arrive all day: Lambda would scale the function out.
            options.http_instances = 8;
            println!("==> Starting the local stack");
            let stack = LocalStack::start(options).await?;
            let cycle = (accounts as f64 / (load.rps / 2.0)).ceil() as u64;
            let report = local_stack::fleet_bench::run(
                &stack,
                &local_stack::fleet_bench::FleetOptions {
                    accounts,
                    per_minute,
                    seconds,
                    warmup: warmup.unwrap_or(cycle).min(seconds / 2),
                    senders: 32,
                    seed,
                    progress: true,
                },
            )
            .await;
            stack.shutdown().await;
            local_stack::fleet_bench::print(&report?);
        }
        Command::Soak {
            accounts,
            transactions,
            error_rate,
            drop_rate,
            token_lifetime_s,
            kill_every_s,
            limit_min,
        } => {
            local_stack::soak::configure(&mut options);
            println!("==> Starting the local stack");
            let stack = LocalStack::start(options).await?;
            let report = local_stack::soak::run(
                &stack,
                &local_stack::soak::SoakOptions {
                    accounts,
                    transactions,
                    error_rate,
                    drop_rate,
                    token_lifetime_s,
                    kill_every: Duration::from_secs(kill_every_s.max(1)),
                    limit: Duration::from_secs(limit_min * 60),
                    ..Default::default()
                },
            )
            .await;
            stack.shutdown().await;
            let report = report?;
            local_stack::soak::print(&report);
            if !report.passed() {
                anyhow::bail!("the soak found lost, duplicated or reordered transactions");
            }
        }
        Command::BenchColdstart { runs } => {
            if cfg!(debug_assertions) {
                println!("note: a debug build; for figures run `cargo xtask bench-coldstart`");
            }
            let bin_dir = options.bin_dir.clone();
            println!(
                "==> Starting the local stack (the emulators and the sandbox answer first calls)"
            );
            let stack = LocalStack::start(options).await?;
            println!("==> Cold-starting each binary {runs} times, one at a time");
            let results = local_stack::coldstart::run(
                &stack,
                &bin_dir,
                &local_stack::moto::repo_root(),
                runs.max(1),
            )
            .await;
            stack.shutdown().await;
            local_stack::coldstart::print(&results?, runs.max(1));
        }
        Command::BenchNotification {
            iterations,
            rates,
            seconds,
            instances,
            no_load,
        } => {
            if cfg!(debug_assertions) {
                println!(
                    "note: a debug build; for figures run `cargo run --release -p local-stack -- bench-notification`"
                );
            }
            let micro = local_stack::notification_bench::micro(iterations).await?;
            local_stack::notification_bench::print_micro(&micro);
            if !no_load {
                options.http_instances = instances;
                println!("==> Starting the local stack for the load run");
                let stack = LocalStack::start(options).await?;
                let steps = local_stack::notification_bench::load(&stack, &rates, seconds).await;
                stack.shutdown().await;
                local_stack::notification_bench::print_load(&steps?, instances);
            }
        }
        Command::Demo { transactions, sage } => {
            options.api_port = 0;
            options.sage = external_sage(sage.as_deref())?;
            println!(
                "==> Starting the local stack (DynamoDB Local, moto, sandbox, every function of template.yaml)"
            );
            let stack = LocalStack::start(options).await?;
            print_urls(&stack);
            if let Err(e) = local_stack::invoke::record(&stack) {
                eprintln!("note: `cargo xtask invoke` will not find this stack: {e:#}");
            }
            if let Err(e) = stack.sage_client().banks().await {
                stack.shutdown().await;
                anyhow::bail!(
                    "the demo plays Sage's product through a sandbox's /_sandbox API, which the external Banking Service does not answer ({e}); with Sage's own sandbox, run `up --sage` and add the bank account in a Sage product (docs/external-sage.md)"
                );
            }
            // Payments Out elsewhere has no product the demo can play.
            let payouts_here = !stack.sage.as_ref().is_some_and(|s| s.payments_out());
            let both = async {
                let banking = local_stack::demo::run(&stack, transactions, true).await?;
                let payouts = if payouts_here {
                    Some(local_stack::demo::payments_out(&stack, 5, true).await?)
                } else {
                    println!("==> Payments Out is external: its part of the demo is skipped");
                    None
                };
                anyhow::Ok((banking, payouts))
            };
            let outcome = tokio::select! {
                r = both => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            };
            stack.shutdown().await;
            match outcome {
                Some(Ok((report, payouts)))
                    if report.violations == 0
                        && report.delivered == report.backfilled + report.pushed
                        && payouts
                            .as_ref()
                            .is_none_or(|p| p.violations == 0 && p.batch_status == "Paid") =>
                {
                    println!("==> Demo succeeded.");
                }
                Some(Ok(reports)) => anyhow::bail!("demo finished with problems: {reports:?}"),
                Some(Err(e)) => return Err(e),
                None => println!("Interrupted."),
            }
            // Give the terminal a clean last line after the children's exit.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
