//! `sandbox`: run the simulator, or drive a running one (`sandbox driver ...`).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sandbox::client::{ClientError, SandboxClient};
use sandbox::driver::{
    AccountPick, NotificationRequest, NotificationSpec, OnboardOptions, ProbeVariant, ReauthOptions,
};
use sandbox::model::HeaderVariant;
use sandbox::{CustomHeader, Sandbox, SandboxConfig, TokenVariant};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "sandbox",
    about = "Local simulator of Sage Banking Service, Sage ID and a demo bank"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (loopback unless real credentials are configured).
    #[arg(long, env = "SANDBOX_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Provider API requests per second per API key (default 10, as Sage; 0 disables the
    /// limit, as --fast does).
    #[arg(long, env = "SANDBOX_RATE_LIMIT")]
    rate_limit: Option<f64>,
    /// Requests a key may send at once before the rate limit holds it back (token bucket size;
    /// default 10).
    #[arg(long, env = "SANDBOX_BURST")]
    burst: Option<u32>,
    /// Access token lifetime in seconds (default 28800: 8 hours).
    #[arg(long, env = "SANDBOX_TOKEN_LIFETIME_S")]
    token_lifetime_s: Option<u64>,
    /// Milliseconds a statement waits as `queued` before processing starts (default 100;
    /// --fast: 0).
    #[arg(long, env = "SANDBOX_QUEUE_DELAY_MS")]
    queue_delay_ms: Option<u64>,
    /// Fixed milliseconds of a statement's processing (default 200; --fast: 0).
    #[arg(long, env = "SANDBOX_PROCESSING_DELAY_MS")]
    processing_delay_ms: Option<u64>,
    /// Processing microseconds added per transaction of a statement (default 500; --fast: 0).
    #[arg(long, env = "SANDBOX_PER_TXN_US")]
    per_txn_us: Option<u64>,
    /// Seed of the sandbox's randomness: signing keys, ids, demo data (default 42; the
    /// same seed gives the same run).
    #[arg(long, env = "SANDBOX_SEED")]
    seed: Option<u64>,
    /// Name of the custom header sent with every notification, as registered by the bank (default
    /// none; needs --custom-header-value).
    #[arg(long, env = "SANDBOX_CUSTOM_HEADER_NAME")]
    custom_header_name: Option<String>,
    /// Its value (the connector's NOTIFICATION_HEADER_VALUE; default none).
    #[arg(long, env = "SANDBOX_CUSTOM_HEADER_VALUE")]
    custom_header_value: Option<String>,
    /// `aud` of the tokens sent to the connector (its NOTIFICATION_AUDIENCE; default
    /// local-connector).
    #[arg(long, env = "SANDBOX_NOTIFICATION_AUDIENCE")]
    notification_audience: Option<String>,
    /// Probability (0 to 1) that each optional `additionalData` field (`bankId`,
    /// `requestedStartDate`, the `externalId` of a deletion) is left out of the notifications sent
    /// in the flows, as Banking Service may; 0 sends them all.
    #[arg(
        long,
        env = "SANDBOX_OMIT_OPTIONAL_RATE",
        default_value_t = 0.0,
        value_parser = rate
    )]
    omit_optional_rate: f64,
    /// No statement delays, no rate limit, short notification back-off, instant settlement.
    #[arg(long, env = "SANDBOX_FAST")]
    fast: bool,
    #[command(flatten)]
    po: sandbox::payments_out::cli::PoArgs,
}

fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number from 0 to 1")),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Drive a running sandbox (Banking Service's outbound side).
    Driver {
        #[arg(long, env = "SANDBOX_URL", default_value = "http://127.0.0.1:8080")]
        sandbox_url: String,
        #[command(subcommand)]
        action: DriverCommand,
    },
}

#[derive(Subcommand)]
enum DriverCommand {
    /// Onboard: authorisation, notification, browser at /auth, create accounts.
    Onboard {
        #[arg(long)]
        bank_id: Option<Uuid>,
        #[arg(long, default_value = "demo")]
        username: String,
        #[arg(long, default_value = "demo")]
        password: String,
        #[arg(long)]
        start_date: Option<String>,
        /// Create all PATCHed accounts, only the first, or none.
        #[arg(long, default_value = "all")]
        create: String,
    },
    /// Re-authorise the consent behind an account.
    Reauth {
        #[arg(long)]
        bank_account_id: Uuid,
        #[arg(long, default_value = "demo")]
        username: String,
        #[arg(long, default_value = "demo")]
        password: String,
    },
    /// Call the connector's /availableaccounts for an account.
    AvailableAccounts {
        #[arg(long)]
        bank_account_id: Uuid,
    },
    /// Link a candidate returned by available-accounts.
    Link {
        #[arg(long)]
        candidate_id: Uuid,
        #[arg(long)]
        start_date: String,
    },
    /// Delete (cancel) an account and send resourceDeleted.
    Delete {
        #[arg(long)]
        bank_account_id: Uuid,
    },
    /// Send one notification (negative variants included).
    Notify {
        /// authorisation | bank-account-created | bank-account-deleted | raw
        #[arg(long, default_value = "authorisation")]
        kind: String,
        #[arg(long)]
        bank_id: Option<Uuid>,
        #[arg(long)]
        bank_account_id: Option<Uuid>,
        #[arg(long, default_value = "ext")]
        external_id: String,
        #[arg(long, default_value = "2025-01-01T00:00:00.000Z")]
        start_date: String,
        #[arg(long, default_value = "{}")]
        body: String,
        /// valid, missing, expired, notYetValid, otherIssuer, otherAudience, noScope, unknownKid,
        /// foreignKey, algNone, hs256PublicKey, garbage
        #[arg(long, default_value = "valid")]
        token: String,
        /// configured, missing, wrongValue
        #[arg(long, default_value = "configured")]
        header: String,
    },
    /// Probe /auth: unknownAuthorisationId, reusedAuthorisationId, expiredAuthorisationId,
    /// bankMismatch, foreignRedirectUri, reservedCharactersState, redirectUriWithQuery, missingState.
    Probe {
        #[arg(long)]
        variant: String,
        #[arg(long)]
        bank_id: Option<Uuid>,
    },
    /// Payments Out: the product's side (organisations, subscriptions, batches, messages).
    Po {
        #[command(subcommand)]
        action: sandbox::payments_out::cli::PoCommand,
    },
}

fn config(a: &ServeArgs) -> SandboxConfig {
    let mut c = if a.fast {
        SandboxConfig::fast()
    } else {
        SandboxConfig::default()
    };
    if let Some(v) = a.rate_limit {
        c.ratelimit_rate_per_s = v;
    }
    if let Some(v) = a.burst {
        c.ratelimit_burst = v;
    }
    if let Some(v) = a.token_lifetime_s {
        c.token_lifetime_s = v;
    }
    if let Some(v) = a.queue_delay_ms {
        c.statement_queue_delay_ms = v;
    }
    if let Some(v) = a.processing_delay_ms {
        c.statement_processing_delay_ms = v;
    }
    if let Some(v) = a.per_txn_us {
        c.statement_per_txn_us = v;
    }
    if let Some(v) = a.seed {
        c.seed = v;
    }
    if let (Some(name), Some(value)) = (&a.custom_header_name, &a.custom_header_value) {
        c.custom_header = Some(CustomHeader {
            name: name.clone(),
            value: value.clone(),
        });
    }
    if let Some(v) = &a.notification_audience {
        c.notification_audience = v.clone();
    }
    a.po.apply(&mut c.payments_out);
    c.omitting_optional_fields(a.omit_optional_rate)
}

fn enum_arg<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|_| format!("unknown {what}: {v}"))
}

fn print<T: serde::Serialize>(r: Result<T, ClientError>) -> ExitCode {
    match r {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn drive(url: String, action: DriverCommand) -> ExitCode {
    let c = SandboxClient::new(url);
    let run = async {
        Ok::<ExitCode, String>(match action {
            DriverCommand::Onboard {
                bank_id,
                username,
                password,
                start_date,
                create,
            } => {
                let create = match create.as_str() {
                    "all" => AccountPick::All,
                    "first" => AccountPick::First,
                    "none" => AccountPick::None,
                    other => {
                        return Err(format!("--create must be all, first or none, not {other}"));
                    }
                };
                let opts = OnboardOptions {
                    bank_id,
                    username,
                    password,
                    requested_start_date: start_date,
                    create,
                    ..OnboardOptions::default()
                };
                print(c.onboard(&opts).await)
            }
            DriverCommand::Reauth {
                bank_account_id,
                username,
                password,
            } => {
                let opts = ReauthOptions {
                    username,
                    password,
                    ..ReauthOptions::default()
                };
                print(c.reauth(bank_account_id, &opts).await)
            }
            DriverCommand::AvailableAccounts { bank_account_id } => {
                print(c.available_accounts(bank_account_id).await)
            }
            DriverCommand::Link {
                candidate_id,
                start_date,
            } => print(c.link(candidate_id, &start_date).await),
            DriverCommand::Delete { bank_account_id } => {
                print(c.driver_delete(bank_account_id).await)
            }
            DriverCommand::Notify {
                kind,
                bank_id,
                bank_account_id,
                external_id,
                start_date,
                body,
                token,
                header,
            } => {
                let token: TokenVariant = enum_arg("token variant", &token)?;
                let header: HeaderVariant = enum_arg("header variant", &header)?;
                let account =
                    || bank_account_id.ok_or_else(|| "--bank-account-id is required".to_string());
                let notification = match kind.as_str() {
                    "authorisation" => NotificationSpec::AuthorisationCreated {
                        authorisation_id: None,
                    },
                    "bank-account-created" => NotificationSpec::BankAccountCreated {
                        bank_account_id: account()?,
                        external_id,
                        requested_start_date: start_date,
                    },
                    "bank-account-deleted" => NotificationSpec::BankAccountDeleted {
                        bank_account_id: account()?,
                        external_id,
                    },
                    "raw" => NotificationSpec::Raw { body },
                    other => return Err(format!("unknown kind {other}")),
                };
                let req = NotificationRequest {
                    bank_id,
                    notification,
                    token,
                    header,
                    retry: false,
                    delivery: Default::default(),
                };
                print(c.send_notification(&req).await)
            }
            DriverCommand::Probe { variant, bank_id } => {
                let v: ProbeVariant = enum_arg("probe variant", &variant)?;
                print(c.probe_auth(v, bank_id).await)
            }
            DriverCommand::Po { action } => {
                sandbox::payments_out::cli::run(c.base_url().to_string(), action).await?;
                ExitCode::SUCCESS
            }
        })
    };
    match run.await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    if let Some(Command::Driver {
        sandbox_url,
        action,
    }) = cli.command
    {
        return drive(sandbox_url, action).await;
    }
    let sb = match Sandbox::start(cli.serve.listen, config(&cli.serve)).await {
        Ok(sb) => sb,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("sandbox listening on {}", sb.base_url());
    let _ = tokio::signal::ctrl_c().await;
    sb.shutdown().await;
    ExitCode::SUCCESS
}
