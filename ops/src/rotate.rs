//! `rotate-secret`: stores a new value of one of the connector's secrets in Secrets Manager.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Args, ValueEnum};
use serde_json::json;

use crate::config::{Config, SECRET_ARN_PREFIX, require};
use crate::terminal::confirm;
use crate::{OpsError, Result, aws_error, print_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecretName {
    /// SAGE_ID_CLIENT_SECRET: the Sage ID client secret.
    SageIdClientSecret,
    /// PROVIDER_API_KEY: the Provider API key (x-api-key).
    ProviderApiKey,
    /// BANK_CLIENT_SECRET: the connector's secret at the bank.
    BankClientSecret,
    /// NOTIFICATION_HEADER_VALUE: the custom notification header's value.
    NotificationHeader,
    /// POS_API_KEY: Payments Out's API key (x-api-key).
    PayoutsApiKey,
    /// POS_HEADER_VALUE: the custom header value Payments Out sends.
    PayoutsHeader,
    /// POS_SAGE_ID_CLIENT_SECRET: Payments Out's own Sage ID client secret.
    PayoutsSageIdClientSecret,
}

impl SecretName {
    pub fn variable(self) -> &'static str {
        match self {
            SecretName::SageIdClientSecret => "SAGE_ID_CLIENT_SECRET",
            SecretName::ProviderApiKey => "PROVIDER_API_KEY",
            SecretName::BankClientSecret => "BANK_CLIENT_SECRET",
            SecretName::NotificationHeader => "NOTIFICATION_HEADER_VALUE",
            SecretName::PayoutsApiKey => "POS_API_KEY",
            SecretName::PayoutsHeader => "POS_HEADER_VALUE",
            SecretName::PayoutsSageIdClientSecret => "POS_SAGE_ID_CLIENT_SECRET",
        }
    }

    fn value(self, config: &Config) -> &Option<String> {
        match self {
            SecretName::SageIdClientSecret => &config.sage_id_client_secret,
            SecretName::ProviderApiKey => &config.provider_api_key,
            SecretName::BankClientSecret => &config.bank_client_secret,
            SecretName::NotificationHeader => &config.notification_header_value,
            SecretName::PayoutsApiKey => &config.pos_api_key,
            SecretName::PayoutsHeader => &config.pos_header_value,
            SecretName::PayoutsSageIdClientSecret => &config.pos_sage_id_client_secret,
        }
    }
}

const ABOUT: &str = "Store a new value of one of the connector's secrets (PutSecretValue)";
const LONG: &str = "\
Store a new value of one of the connector's secrets in Secrets Manager (PutSecretValue on the
secret whose ARN is in the matching variable — the value the functions were deployed with):

  sage-id-client-secret          SAGE_ID_CLIENT_SECRET
  provider-api-key               PROVIDER_API_KEY
  bank-client-secret             BANK_CLIENT_SECRET
  notification-header            NOTIFICATION_HEADER_VALUE
  payouts-api-key                POS_API_KEY
  payouts-header                 POS_HEADER_VALUE
  payouts-sage-id-client-secret  POS_SAGE_ID_CLIENT_SECRET

The variable must hold a Secrets Manager ARN; a plain value is refused (change such a value in
the stack's parameters instead). The new value comes from --value-file (one trailing newline is
dropped) or from standard input with --value-stdin, and is never printed. Asks for confirmation
unless --yes.

When the functions use the new value: each running function reads its secrets again every 5
minutes, and within seconds after the party it sends one to refuses it (a 401 or 403 from Sage
ID, Banking Service, Payments Out or the bank; a notification whose custom header no longer
matches). No redeploy is needed; to switch at once, start fresh instances by updating the
functions (`sam deploy`, or any change of their configuration). Until the switch keep the old
credential valid where it is checked:
  - sage-id-client-secret: the Sage ID token shared by all functions (cached in the table) was
    obtained with the old secret and stays in use until it nears expiry;
  - notification-header, payouts-header: Sage sends the value registered with it; a function
    accepts the new value once it has read it (at once on the first mismatch), so store the new
    value first, then have Sage switch.

Example: connector-ops rotate-secret provider-api-key --value-file ./new-key.txt
         pass show sage/client-secret | connector-ops rotate-secret sage-id-client-secret --value-stdin --yes";

#[derive(Debug, Args)]
#[command(about = ABOUT, long_about = LONG)]
#[command(group(ArgGroup::new("source").required(true).args(["value_file", "value_stdin"])))]
pub struct RotateArgs {
    /// Which secret.
    #[arg(value_enum)]
    pub secret: SecretName,
    /// Read the new value from this file.
    #[arg(long, value_name = "PATH")]
    pub value_file: Option<PathBuf>,
    /// Read the new value from standard input.
    #[arg(long)]
    pub value_stdin: bool,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The value without one trailing line break; never empty.
fn clean(mut raw: String, from: &str) -> Result<String> {
    if raw.ends_with('\n') {
        raw.pop();
        if raw.ends_with('\r') {
            raw.pop();
        }
    }
    if raw.trim().is_empty() {
        return Err(OpsError::Usage(format!(
            "the new value from {from} is empty"
        )));
    }
    Ok(raw)
}

pub async fn rotate(config: &Config, args: RotateArgs) -> Result<()> {
    let var = args.secret.variable();
    let arn = require(args.secret.value(config), var)?;
    if !arn.starts_with(SECRET_ARN_PREFIX) {
        return Err(OpsError::Usage(format!(
            "{var} is not a Secrets Manager ARN (it holds the value itself): nothing to rotate here; \
             change the stack's parameter instead"
        )));
    }
    let value = match (&args.value_file, args.value_stdin) {
        (Some(path), _) => {
            let raw = std::fs::read_to_string(path).map_err(|e| {
                OpsError::Usage(format!("cannot read --value-file {}: {e}", path.display()))
            })?;
            clean(raw, &path.display().to_string())?
        }
        (None, true) => {
            let mut raw = String::new();
            std::io::stdin()
                .read_to_string(&mut raw)
                .map_err(|e| OpsError::Usage(format!("cannot read standard input: {e}")))?;
            clean(raw, "standard input")?
        }
        (None, false) => {
            return Err(OpsError::Usage(
                "give the new value with --value-file PATH or --value-stdin".into(),
            ));
        }
    };
    let sdk = config.sdk().await?;
    confirm(&format!("store a new value for {var} in {arn}"), args.yes)?;
    let out = aws_sdk_secretsmanager::Client::new(&sdk)
        .put_secret_value()
        .secret_id(arn)
        .secret_string(value)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("PutSecretValue on {arn}"))?;
    let version = out.version_id().unwrap_or("?").to_string();
    if args.json {
        return print_json(&json!({
            "variable": var,
            "secretArn": arn,
            "versionId": version,
        }));
    }
    println!("Stored a new value of {var} in {arn} (version {version}); the value is not shown.");
    println!(
        "Running functions use it within 5 minutes, and within seconds after the old value is refused \
         — see `connector-ops rotate-secret --help`."
    );
    Ok(())
}
