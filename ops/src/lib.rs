//! The operator's command-line tool of the connector (`connector-ops`).
//!
//! It reads the same configuration contract as the functions (environment variables, each also a
//! flag) and talks to the same table, queues, Secrets Manager and Provider API. Exit codes:
//! 0 done; 1 failed while doing it (AWS or Banking Service error, account not found); 2 nothing
//! was done because of the invocation (missing or malformed configuration, an invalid input
//! file, a destructive step without confirmation).

pub mod account;
pub mod banks;
pub mod banks_config;
pub mod config;
pub mod payouts;
pub mod redrive;
pub mod rotate;
pub mod terminal;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use config::Config;

/// Why a command did not complete.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Configuration or input the operator must fix; nothing was done.
    #[error("{0}")]
    Usage(String),
    /// A destructive step was not confirmed; nothing was done.
    #[error("{0}")]
    Refused(String),
    /// Something failed while doing it.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl OpsError {
    pub fn exit_code(&self) -> u8 {
        match self {
            OpsError::Usage(_) | OpsError::Refused(_) => 2,
            OpsError::Failed(_) => 1,
        }
    }
}

pub type Result<T, E = OpsError> = std::result::Result<T, E>;

const ABOUT: &str = "Operator tool of the Sage Banking Service connector";

const LONG_ABOUT: &str = "\
Operator tool of the Sage Banking Service connector.

It reads the configuration contract the functions read (TABLE_NAME, the queue and DLQ URLs,
BANKING_SERVICE_URL, SAGE_ID_*, PROVIDER_API_KEY, ...), from the environment or from the flags
below, and uses the default AWS credential chain (AWS_ENDPOINT_URL points it at a local
emulator). Each command reads only the variables it needs; a missing one stops it with exit
code 2 and the variable's name.

Destructive commands (redrive, rotate-secret, bank-sync update/remove, repush --clear-claim)
ask \"Proceed? [y/N]\" on a terminal; without a terminal they need --yes, or refuse (exit 2).

Exit codes: 0 done; 1 failed while doing it; 2 nothing done (configuration, input, refused).";

#[derive(Debug, Parser)]
#[command(name = "connector-ops", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Show(account::ShowArgs),
    Parked(account::ParkedArgs),
    Repush(account::RepushArgs),
    Payouts(payouts::PayoutsArgs),
    Redrive(redrive::RedriveArgs),
    RotateSecret(rotate::RotateArgs),
    BankSync(banks::BankSyncArgs),
    /// Show each bank's effective settings from the defaults and BANKS_CONFIG (secrets as ARNs
    /// or `[value]`), checking them as the functions do at start-up; calls nothing.
    Banks(banks_config::BanksArgs),
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<()> {
    let config = cli.config;
    match cli.command {
        Command::Show(a) => account::show(&config, a).await,
        Command::Parked(a) => account::parked(&config, a).await,
        Command::Repush(a) => account::repush(&config, a).await,
        Command::Payouts(a) => payouts::payouts(&config, a).await,
        Command::Redrive(a) => redrive::redrive(&config, a).await,
        Command::RotateSecret(a) => rotate::rotate(&config, a).await,
        Command::BankSync(a) => banks::bank_sync(&config, a).await,
        Command::Banks(a) => banks_config::show(&config, a).await,
    }
}

/// Parses the arguments, runs the command, prints a one-line error and maps it to an exit code.
pub async fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = e.to_string().replace('\n', " ");
            eprintln!("connector-ops: error: {text}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// An AWS SDK error with its whole chain (the SDK's `Display` alone says only "service error").
pub(crate) fn aws_error<E: std::error::Error>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e))
}

/// `1 message`, `2 messages`.
pub(crate) fn count(n: impl Into<u64>, singular: &str, plural: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json(value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(anyhow::Error::from)?;
    println!("{text}");
    Ok(())
}
