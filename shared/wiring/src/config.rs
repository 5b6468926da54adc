//! The configuration contract (design §5): environment variables with the same names on Lambda
//! and locally. A missing or malformed value stops the function at start-up with a message that
//! names the variable.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use connector_domain::ports::BoxFuture;
use connector_sage::Secret;
use connector_sage::secret::SecretFetch;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing environment variable {name}: {hint}")]
    Missing { name: String, hint: &'static str },
    #[error("environment variable {name} is malformed: {reason}")]
    Invalid { name: String, reason: String },
    #[error("could not read secret {name} from Secrets Manager: {reason}")]
    Secret { name: String, reason: String },
}

fn hint(name: &str) -> &'static str {
    match name {
        "TABLE_NAME" => "the DynamoDB table's name (template output TableName)",
        "NOTIFICATIONS_QUEUE_URL" | "PUSH_QUEUE_URL" | "POLL_QUEUE_URL" => "an SQS queue URL",
        "BANKING_SERVICE_URL" => {
            "the Provider API base URL, e.g. https://papi-snd01-eu-west-1.sagebanking-sandbox.cloud"
        }
        "SAGE_ID_TOKEN_URL" => {
            "Sage ID's token endpoint, e.g. https://id-shadow.sage.com/oauth/token"
        }
        "SAGE_ID_ISSUER" => "Sage ID's issuer ending with '/', e.g. https://id-shadow.sage.com/",
        "SAGE_ID_AUDIENCE" => "the Provider API audience, e.g. sfdsbanking/sfdsBankingProvider-Pre",
        "SAGE_ID_CLIENT_ID" => "the client id Sage issued",
        "SAGE_ID_CLIENT_SECRET" => "the client secret, or a Secrets Manager ARN",
        "PROVIDER_API_KEY" => "the x-api-key Sage issued, or a Secrets Manager ARN",
        "NOTIFICATION_AUDIENCE" => "the audience of Banking Service's notification tokens",
        "REDIRECT_HOST_ALLOWLIST" => {
            "comma-separated hosts, e.g. *.sagebankdrive.com,money.sage.com"
        }
        "BANK_API_URL" => "the Bank Data API base URL",
        "BANK_CLIENT_ID" | "BANK_CLIENT_SECRET" => "the connector's credentials at the bank",
        _ => "see the configuration table in the README",
    }
}

/// The longest duration a variable may configure: far beyond any sensible timer or window, and
/// short enough that adding it to a date or to another duration can never overflow.
pub const MAX_CONFIGURED_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Reads variables from a source (the process environment, or a map in tests).
pub struct Env {
    lookup: Lookup,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            lookup: Box::new(|name| std::env::var(name).ok()),
        }
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self {
            lookup: Box::new(move |name| map.get(name).cloned()),
        }
    }

    /// The value, trimmed; empty counts as absent.
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.optional(name).ok_or_else(|| ConfigError::Missing {
            name: name.into(),
            hint: hint(name),
        })
    }

    pub fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name: name.into(),
                reason: e.to_string(),
            }),
        }
    }

    /// A comma-separated list (empty entries dropped); empty when unset.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.optional(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An optional UUID (e.g. `BANKING_SERVICE_BANK_ID`); malformed is an error.
    pub fn optional_uuid(&self, name: &str) -> Result<Option<uuid::Uuid>, ConfigError> {
        self.optional(name)
            .map(|v| {
                uuid::Uuid::parse_str(&v).map_err(|e| ConfigError::Invalid {
                    name: name.into(),
                    reason: format!("not a UUID: {e}"),
                })
            })
            .transpose()
    }

    pub fn url(&self, name: &str) -> Result<String, ConfigError> {
        let v = self.required(name)?;
        let parsed = url::Url::parse(&v).map_err(|e| ConfigError::Invalid {
            name: name.into(),
            reason: format!("not an absolute URL ({e})"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::Invalid {
                name: name.into(),
                reason: "must be an http(s) URL".into(),
            });
        }
        Ok(v)
    }

    /// A duration given in seconds (fractions allowed). Negative, not a number, or longer than
    /// [`MAX_CONFIGURED_DURATION`] is a configuration error naming the variable, never a panic.
    pub fn duration_secs(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        let secs: f64 = self.parse_or(name, default.as_secs_f64())?;
        Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| *d <= MAX_CONFIGURED_DURATION)
            .ok_or_else(|| ConfigError::Invalid {
                name: name.into(),
                reason: format!(
                    "`{secs}` is not a number of seconds between 0 and {}",
                    MAX_CONFIGURED_DURATION.as_secs()
                ),
            })
    }

    /// A duration given in whole days, with the same bounds as [`Env::duration_secs`].
    pub fn duration_days(&self, name: &str, default_days: u64) -> Result<Duration, ConfigError> {
        let days: u64 = self.parse_or(name, default_days)?;
        days.checked_mul(24 * 3600)
            .map(Duration::from_secs)
            .filter(|d| *d <= MAX_CONFIGURED_DURATION)
            .ok_or_else(|| ConfigError::Invalid {
                name: name.into(),
                reason: format!(
                    "`{days}` days is longer than {} days",
                    MAX_CONFIGURED_DURATION.as_secs() / (24 * 3600)
                ),
            })
    }

    pub fn flag(&self, name: &str) -> Result<bool, ConfigError> {
        match self
            .optional(name)
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false" | "0" | "no") => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some(other) => Err(ConfigError::Invalid {
                name: name.into(),
                reason: format!("`{other}` is not true or false"),
            }),
        }
    }

    /// A secret given as a value or as a Secrets Manager ARN (resolved once, at start-up).
    pub async fn secret(&self, name: &str, secrets: &SecretSource) -> Result<Secret, ConfigError> {
        let value = self.required(name)?;
        secrets.resolve(name, value).await
    }

    pub async fn optional_secret(
        &self,
        name: &str,
        secrets: &SecretSource,
    ) -> Result<Option<Secret>, ConfigError> {
        match self.optional(name) {
            None => Ok(None),
            Some(v) => secrets.resolve(name, v).await.map(Some),
        }
    }
}

/// Resolves `arn:aws:secretsmanager:…` values; other values are used as given.
pub struct SecretSource {
    sdk: Option<aws_config::SdkConfig>,
}

impl SecretSource {
    pub fn new(sdk: Option<aws_config::SdkConfig>) -> Self {
        Self { sdk }
    }

    /// `value` as a secret: fetched when it is an ARN, else the value itself; `name` (a variable,
    /// or where in `BANKS_CONFIG`) is what an error names.
    pub async fn resolve_named(&self, name: &str, value: String) -> Result<Secret, ConfigError> {
        self.resolve(name, value).await
    }

    async fn resolve(&self, name: &str, value: String) -> Result<Secret, ConfigError> {
        if !value.starts_with("arn:aws:secretsmanager:") {
            return Ok(Secret::new(value));
        }
        let Some(sdk) = &self.sdk else {
            return Err(ConfigError::Secret {
                name: name.into(),
                reason: "no AWS configuration to reach Secrets Manager".into(),
            });
        };
        let stored = Arc::new(StoredSecret {
            client: aws_sdk_secretsmanager::Client::new(sdk),
            arn: value,
        });
        let first = stored.read().await.map_err(|reason| ConfigError::Secret {
            name: name.into(),
            reason,
        })?;
        Ok(Secret::fetched(first, stored, SECRET_TTL))
    }
}

/// How long a function uses a secret read from Secrets Manager before it reads it again; a
/// refusal by the party it is sent to (401/403) reads it again sooner. A rotation therefore
/// reaches running functions within this time, without a redeploy.
pub const SECRET_TTL: Duration = Duration::from_secs(300);

/// A secret kept in Secrets Manager.
struct StoredSecret {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
}

impl StoredSecret {
    async fn read(&self) -> Result<String, String> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.arn)
            .send()
            .await
            .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string())?;
        out.secret_string()
            .map(|s| s.trim().to_string())
            .ok_or_else(|| "the secret has no string value".to_string())
    }
}

impl SecretFetch for StoredSecret {
    fn fetch(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(self.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable() {
        let env = Env::from_pairs(&[
            ("PROVIDER_RATE_LIMIT_RPS", "fast"),
            ("BANK_API_URL", "bank"),
        ]);
        let missing = env.required("TABLE_NAME").unwrap_err().to_string();
        assert!(missing.contains("TABLE_NAME"), "{missing}");
        let bad = env
            .parse_or("PROVIDER_RATE_LIMIT_RPS", 10.0f64)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("PROVIDER_RATE_LIMIT_RPS"), "{bad}");
        let url = env.url("BANK_API_URL").unwrap_err().to_string();
        assert!(url.contains("BANK_API_URL"), "{url}");
    }

    #[test]
    fn durations_out_of_range_are_errors_naming_the_variable() {
        for bad in ["-1", "NaN", "inf", "-inf", "1e30", "3155760001", "soon"] {
            let env = Env::from_pairs(&[("POLL_MAX_DELAY_S", bad)]);
            match env.duration_secs("POLL_MAX_DELAY_S", Duration::from_secs(15)) {
                Err(e @ ConfigError::Invalid { .. }) => {
                    assert!(e.to_string().contains("POLL_MAX_DELAY_S"), "{bad}: {e}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        for bad in ["-1", "213503982334601", "18446744073709551615", "1.5"] {
            let env = Env::from_pairs(&[("TOO_OLD_DAYS", bad)]);
            match env.duration_days("TOO_OLD_DAYS", 14) {
                Err(e @ ConfigError::Invalid { .. }) => {
                    assert!(e.to_string().contains("TOO_OLD_DAYS"), "{bad}: {e}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn durations_in_range_and_defaults() {
        let env = Env::from_pairs(&[
            ("POLL_MAX_DELAY_S", "0.25"),
            ("RETRY_BASE_DELAY_S", "0"),
            ("TOO_OLD_DAYS", "7"),
        ]);
        let d = |name| env.duration_secs(name, Duration::from_secs(15)).unwrap();
        assert_eq!(d("POLL_MAX_DELAY_S"), Duration::from_millis(250));
        assert_eq!(d("RETRY_BASE_DELAY_S"), Duration::ZERO);
        assert_eq!(d("PARKED_POLL_S"), Duration::from_secs(15));
        assert_eq!(
            env.duration_days("TOO_OLD_DAYS", 14).unwrap(),
            Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(
            Env::from_pairs(&[])
                .duration_days("TOO_OLD_DAYS", 14)
                .unwrap(),
            Duration::from_secs(14 * 24 * 3600)
        );
        let max = MAX_CONFIGURED_DURATION.as_secs().to_string();
        let env = Env::from_pairs(&[("STATEMENT_MAX_AGE_S", max.as_str())]);
        assert_eq!(
            env.duration_secs("STATEMENT_MAX_AGE_S", Duration::ZERO)
                .unwrap(),
            MAX_CONFIGURED_DURATION
        );
    }

    #[test]
    fn empty_counts_as_missing() {
        let env = Env::from_pairs(&[("TABLE_NAME", "  ")]);
        assert!(matches!(
            env.required("TABLE_NAME"),
            Err(ConfigError::Missing { .. })
        ));
    }
}
