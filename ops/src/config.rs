//! The configuration contract of the functions (README "Configuration contract"), as flags that
//! default to the environment variables of the same name. Each command asks only for what it
//! needs; a missing value is a one-line error naming the variable (exit code 2).

use std::time::Duration;

use clap::Args;
use connector_aws::Table;
use connector_aws::queues::Queues;
use connector_sage::Secret;

use crate::{OpsError, Result, aws_error};

/// Where a Secrets Manager ARN starts; any other value of a secret variable is the secret itself.
pub const SECRET_ARN_PREFIX: &str = "arn:aws:secretsmanager:";

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Configuration (the functions' environment contract)")]
pub struct Config {
    /// DynamoDB table of the connector.
    #[arg(long, env = "TABLE_NAME", global = true, value_name = "NAME")]
    pub table_name: Option<String>,
    /// Notifications queue (standard).
    #[arg(
        long,
        env = "NOTIFICATIONS_QUEUE_URL",
        global = true,
        value_name = "URL"
    )]
    pub notifications_queue_url: Option<String>,
    /// Push queue (FIFO, group = bankAccountId).
    #[arg(long, env = "PUSH_QUEUE_URL", global = true, value_name = "URL")]
    pub push_queue_url: Option<String>,
    /// Poll queue (standard, delayed messages).
    #[arg(long, env = "POLL_QUEUE_URL", global = true, value_name = "URL")]
    pub poll_queue_url: Option<String>,
    /// Payments Out's work queue (standard; stack output PayoutsQueueUrl).
    #[arg(long, env = "PAYOUTS_QUEUE_URL", global = true, value_name = "URL")]
    pub payouts_queue_url: Option<String>,
    /// DLQ of the notifications queue (stack output NotificationsDlqUrl).
    #[arg(long, env = "NOTIFICATIONS_DLQ_URL", global = true, value_name = "URL")]
    pub notifications_dlq_url: Option<String>,
    /// DLQ of the push queue (stack output PushDlqUrl).
    #[arg(long, env = "PUSH_DLQ_URL", global = true, value_name = "URL")]
    pub push_dlq_url: Option<String>,
    /// DLQ of the poll queue (stack output PollDlqUrl).
    #[arg(long, env = "POLL_DLQ_URL", global = true, value_name = "URL")]
    pub poll_dlq_url: Option<String>,
    /// DLQ of Payments Out's work queue (stack output PayoutsDlqUrl).
    #[arg(long, env = "PAYOUTS_DLQ_URL", global = true, value_name = "URL")]
    pub payouts_dlq_url: Option<String>,
    /// Provider API base URL (paths start with /v1).
    #[arg(long, env = "BANKING_SERVICE_URL", global = true, value_name = "URL")]
    pub banking_service_url: Option<String>,
    /// Sage ID token endpoint.
    #[arg(long, env = "SAGE_ID_TOKEN_URL", global = true, value_name = "URL")]
    pub sage_id_token_url: Option<String>,
    /// Provider API audience.
    #[arg(long, env = "SAGE_ID_AUDIENCE", global = true, value_name = "AUDIENCE")]
    pub sage_id_audience: Option<String>,
    /// Sage ID client id.
    #[arg(long, env = "SAGE_ID_CLIENT_ID", global = true, value_name = "ID")]
    pub sage_id_client_id: Option<String>,
    /// Sage ID client secret, or the Secrets Manager ARN holding it.
    #[arg(
        long,
        env = "SAGE_ID_CLIENT_SECRET",
        global = true,
        hide_env_values = true,
        value_name = "VALUE|ARN"
    )]
    pub sage_id_client_secret: Option<String>,
    /// Provider API key (x-api-key), or the Secrets Manager ARN holding it.
    #[arg(
        long,
        env = "PROVIDER_API_KEY",
        global = true,
        hide_env_values = true,
        value_name = "VALUE|ARN"
    )]
    pub provider_api_key: Option<String>,
    /// Sage ID issuer (ending with '/'): the default issuer of the notification tokens.
    #[arg(long, env = "SAGE_ID_ISSUER", global = true, value_name = "URL")]
    pub sage_id_issuer: Option<String>,
    /// Audience of the notification tokens (the default of every bank).
    #[arg(
        long,
        env = "NOTIFICATION_AUDIENCE",
        global = true,
        value_name = "AUDIENCE"
    )]
    pub notification_audience: Option<String>,
    /// Name of the custom notification header (the default of every bank).
    #[arg(
        long,
        env = "NOTIFICATION_HEADER_NAME",
        global = true,
        value_name = "NAME"
    )]
    pub notification_header_name: Option<String>,
    /// Per-bank overrides of the settings above: JSON from bankId to settings, or the ARN of a
    /// secret holding it (README "Several banks in one deployment").
    #[arg(
        long,
        env = "BANKS_CONFIG",
        global = true,
        hide_env_values = true,
        value_name = "JSON|ARN"
    )]
    pub banks_config: Option<String>,
    /// sandbox or production: places a bank's `region` at Sage's host of that region.
    #[arg(long, env = "CONNECTOR_ENVIRONMENT", global = true, value_name = "ENV")]
    pub connector_environment: Option<String>,
    /// The connector's secret at the bank's Bank Data API (an ARN for rotate-secret).
    #[arg(
        long,
        env = "BANK_CLIENT_SECRET",
        global = true,
        hide_env_values = true,
        value_name = "VALUE|ARN"
    )]
    pub bank_client_secret: Option<String>,
    /// Value of the custom notification header (an ARN for rotate-secret).
    #[arg(
        long,
        env = "NOTIFICATION_HEADER_VALUE",
        global = true,
        hide_env_values = true,
        value_name = "VALUE|ARN"
    )]
    pub notification_header_value: Option<String>,
    /// Payments Out's API key (x-api-key), or the Secrets Manager ARN holding it.
    #[arg(
        long,
        env = "POS_API_KEY",
        global = true,
        hide_env_values = true,
        value_name = "VALUE|ARN"
    )]
    pub pos_api_key: Option<String>,
    /// Value of the custom header Payments Out sends (an ARN for rotate-secret).
    #[arg(
        long,
        env = "POS_HEADER_VALUE",
        global = true,
        hide_env_values = true,
        value_name = "VALUE|ARN"
    )]
    pub pos_header_value: Option<String>,
    /// Payments Out's own Sage ID client secret, when it has a client of its own (an ARN for
    /// rotate-secret).
    #[arg(
        long,
        env = "POS_SAGE_ID_CLIENT_SECRET",
        global = true,
        hide_env_values = true,
        value_name = "VALUE|ARN"
    )]
    pub pos_sage_id_client_secret: Option<String>,
    /// Provider API requests per second across every caller (shared with the functions).
    #[arg(
        long,
        env = "PROVIDER_RATE_LIMIT_RPS",
        global = true,
        value_name = "RPS"
    )]
    pub provider_rate_limit_rps: Option<f64>,
    /// A claim without progress for this many seconds is stale (as for the reconciler) [900].
    #[arg(
        long,
        env = "RECONCILE_STALE_AFTER_S",
        global = true,
        value_name = "SECONDS"
    )]
    pub reconcile_stale_after_s: Option<u64>,
    /// AWS endpoint override, e.g. http://127.0.0.1:5000 for the local stack's moto.
    #[arg(long, env = "AWS_ENDPOINT_URL", global = true, value_name = "URL")]
    pub aws_endpoint_url: Option<String>,
    /// AWS region (else the SDK's usual sources: AWS_DEFAULT_REGION, the profile).
    #[arg(long, env = "AWS_REGION", global = true, value_name = "REGION")]
    pub aws_region: Option<String>,
}

/// `TABLE_NAME` → `--table-name`.
fn flag_of(var: &str) -> String {
    format!("--{}", var.to_ascii_lowercase().replace('_', "-"))
}

fn hint(var: &str) -> &'static str {
    match var {
        "TABLE_NAME" => "the DynamoDB table's name (stack output TableName)",
        "NOTIFICATIONS_QUEUE_URL" | "PUSH_QUEUE_URL" | "POLL_QUEUE_URL" | "PAYOUTS_QUEUE_URL" => {
            "an SQS queue URL (stack outputs *QueueUrl)"
        }
        "NOTIFICATIONS_DLQ_URL" | "PUSH_DLQ_URL" | "POLL_DLQ_URL" | "PAYOUTS_DLQ_URL" => {
            "an SQS DLQ URL (stack outputs *DlqUrl)"
        }
        "BANKING_SERVICE_URL" => "the Provider API base URL",
        "SAGE_ID_TOKEN_URL" => "Sage ID's token endpoint",
        "SAGE_ID_AUDIENCE" => "the Provider API audience",
        "SAGE_ID_CLIENT_ID" => "the client id Sage issued",
        "SAGE_ID_CLIENT_SECRET" => "the client secret, or a Secrets Manager ARN",
        "PROVIDER_API_KEY" => "the x-api-key Sage issued, or a Secrets Manager ARN",
        "BANK_CLIENT_SECRET" => "the Secrets Manager ARN of the bank client secret",
        "NOTIFICATION_HEADER_VALUE" => "the Secrets Manager ARN of the notification header value",
        "AWS_REGION" => "the stack's AWS region",
        _ => "see the README's configuration table",
    }
}

/// The value, trimmed; empty counts as missing.
pub fn require<'a>(value: &'a Option<String>, var: &str) -> Result<&'a str> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            OpsError::Usage(format!(
                "missing configuration {var} (or {}): {}",
                flag_of(var),
                hint(var)
            ))
        })
}

/// An absolute http(s) URL.
pub fn require_url<'a>(value: &'a Option<String>, var: &str) -> Result<&'a str> {
    let v = require(value, var)?;
    match reqwest::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(v),
        _ => Err(OpsError::Usage(format!(
            "configuration {var} is malformed: `{v}` is not an absolute http(s) URL"
        ))),
    }
}

impl Config {
    /// The AWS SDK configuration: the default chain, the endpoint override, a region.
    pub async fn sdk(&self) -> Result<aws_config::SdkConfig> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(endpoint) = self.aws_endpoint_url.as_deref().filter(|e| !e.is_empty()) {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = self.aws_region.as_deref().filter(|r| !r.is_empty()) {
            loader = loader.region(aws_config::Region::new(region.to_string()));
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(OpsError::Usage(format!(
                "missing configuration AWS_REGION (or --aws-region): {}",
                hint("AWS_REGION")
            )));
        }
        Ok(sdk)
    }

    /// The SDK configuration and the table, TABLE_NAME checked first.
    pub async fn sdk_and_table(&self) -> Result<(aws_config::SdkConfig, Table)> {
        require(&self.table_name, "TABLE_NAME")?;
        let sdk = self.sdk().await?;
        let table = self.table(&sdk)?;
        Ok((sdk, table))
    }

    pub fn table(&self, sdk: &aws_config::SdkConfig) -> Result<Table> {
        let name = require(&self.table_name, "TABLE_NAME")?;
        Ok(Table::new(aws_sdk_dynamodb::Client::new(sdk), name))
    }

    /// The queues as the functions see them, with only the push queue (for kicks).
    pub fn push_queues(&self, sqs: aws_sdk_sqs::Client) -> Result<Queues> {
        let push = require_url(&self.push_queue_url, "PUSH_QUEUE_URL")?;
        Ok(Queues::new(
            sqs,
            String::new(),
            push.to_string(),
            String::new(),
        ))
    }

    pub fn stale_after(&self) -> Duration {
        Duration::from_secs(self.reconcile_stale_after_s.unwrap_or(900))
    }

    pub fn rate_limit_rps(&self) -> Result<f64> {
        let rps = self.provider_rate_limit_rps.unwrap_or(10.0);
        if rps.is_finite() && rps > 0.0 {
            Ok(rps)
        } else {
            Err(OpsError::Usage(
                "configuration PROVIDER_RATE_LIMIT_RPS is malformed: must be a positive number"
                    .into(),
            ))
        }
    }
}

/// A secret variable's value: used as given, or read from Secrets Manager when it is an ARN
/// (as the functions do at start-up).
pub async fn resolve_secret(
    value: &Option<String>,
    var: &str,
    sdk: &aws_config::SdkConfig,
) -> Result<Secret> {
    let v = require(value, var)?;
    if !v.starts_with(SECRET_ARN_PREFIX) {
        return Ok(Secret::new(v));
    }
    let out = aws_sdk_secretsmanager::Client::new(sdk)
        .get_secret_value()
        .secret_id(v)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("reading {var} from Secrets Manager: {:#}", aws_error(e)))?;
    out.secret_string()
        .map(|s| Secret::new(s.trim()))
        .ok_or_else(|| {
            OpsError::Failed(anyhow::anyhow!(
                "the secret of {var} has no string value in Secrets Manager"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_the_variable_and_the_flag() {
        let err = require(&None, "TABLE_NAME").unwrap_err().to_string();
        assert!(
            err.contains("TABLE_NAME") && err.contains("--table-name"),
            "{err}"
        );
        let blank = require(&Some("  ".into()), "PUSH_DLQ_URL").unwrap_err();
        assert_eq!(blank.exit_code(), 2);
        let bad = require_url(&Some("queue".into()), "PUSH_QUEUE_URL")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("PUSH_QUEUE_URL"), "{bad}");
    }
}
