//! `connector-ops banks`: each bank's effective settings, as the functions build them from the
//! default variables and `BANKS_CONFIG` (README "Several banks in one deployment"). It checks
//! the configuration the way the functions do at start-up and calls nothing but Secrets Manager
//! (only when `BANKS_CONFIG` is itself an ARN).

use std::collections::HashMap;

use clap::Args;
use connector_sage::banks::{
    BanksConfig, NotificationSettings, ProviderSettings, SecretRef, normalise_issuer,
};
use serde_json::{Value, json};

use crate::config::{Config, SECRET_ARN_PREFIX, require, require_url, resolve_secret};
use crate::{OpsError, Result, print_json};

#[derive(Debug, Clone, Args)]
pub struct BanksArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The default Provider API settings (the single set of variables).
pub fn default_provider(config: &Config) -> Result<ProviderSettings> {
    Ok(ProviderSettings {
        region: None,
        base_url: require_url(&config.banking_service_url, "BANKING_SERVICE_URL")?.to_string(),
        token_url: require_url(&config.sage_id_token_url, "SAGE_ID_TOKEN_URL")?.to_string(),
        audience: require(&config.sage_id_audience, "SAGE_ID_AUDIENCE")?.to_string(),
        client_id: require(&config.sage_id_client_id, "SAGE_ID_CLIENT_ID")?.to_string(),
        client_secret: SecretRef::new(require(
            &config.sage_id_client_secret,
            "SAGE_ID_CLIENT_SECRET",
        )?),
        api_key: SecretRef::new(require(&config.provider_api_key, "PROVIDER_API_KEY")?),
    })
}

fn default_notification(config: &Config) -> Result<NotificationSettings> {
    let header = match (
        config.notification_header_name.as_deref().map(str::trim),
        config.notification_header_value.as_deref().map(str::trim),
    ) {
        (Some(n), Some(v)) if !n.is_empty() && !v.is_empty() => {
            Some((n.to_string(), SecretRef::new(v)))
        }
        _ => None,
    };
    Ok(NotificationSettings {
        issuer: normalise_issuer(require_url(&config.sage_id_issuer, "SAGE_ID_ISSUER")?),
        audience: require(&config.notification_audience, "NOTIFICATION_AUDIENCE")?.to_string(),
        custom_header: header,
    })
}

/// `BANKS_CONFIG`, read from Secrets Manager when it is an ARN, parsed and checked.
pub async fn load(config: &Config, sdk: &aws_config::SdkConfig) -> Result<BanksConfig> {
    let Some(text) = config
        .banks_config
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Ok(BanksConfig::default());
    };
    let text = if text.starts_with(SECRET_ARN_PREFIX) {
        resolve_secret(&Some(text.to_string()), "BANKS_CONFIG", sdk)
            .await?
            .expose()
            .to_string()
    } else {
        text.to_string()
    };
    parse(&text)
}

fn parse(text: &str) -> Result<BanksConfig> {
    BanksConfig::parse(text)
        .map_err(|e| OpsError::Usage(format!("configuration BANKS_CONFIG is malformed: {e}")))
}

/// One bank's row: its settings and which token and rate budget it shares.
fn row(
    bank: &str,
    p: &ProviderSettings,
    n: &NotificationSettings,
    tokens: &HashMap<String, Vec<String>>,
    budgets: &HashMap<String, Vec<String>>,
) -> Value {
    let token = connector_sage::token_scope(&p.token_url, &p.client_id, &p.audience);
    let budget = api_key_label(&p.api_key);
    json!({
        "bankId": bank,
        "region": p.region,
        "providerApiBase": p.base_url,
        "sageIdTokenUrl": p.token_url,
        "providerAudience": p.audience,
        "clientId": p.client_id,
        "clientSecretRef": p.client_secret.shown(),
        "apiKeyRef": p.api_key.shown(),
        "sageIdIssuer": n.issuer,
        "notificationAudience": n.audience,
        "customHeaderName": n.custom_header.as_ref().map(|h| h.0.clone()),
        "customHeaderValueRef": n.custom_header.as_ref().map(|h| h.1.shown().to_string()),
        "sharesTokenWith": others(tokens.get(&token), bank),
        "sharesRateLimitWith": others(budgets.get(&budget), bank),
    })
}

fn others(list: Option<&Vec<String>>, me: &str) -> Vec<String> {
    list.map(|l| l.iter().filter(|b| *b != me).cloned().collect())
        .unwrap_or_default()
}

/// What identifies a rate budget without resolving the key: its reference (one ARN, one key).
fn api_key_label(r: &SecretRef) -> String {
    connector_sage::rate_scope(&connector_sage::Secret::new(r.reference()))
}

pub async fn show(config: &Config, args: BanksArgs) -> Result<()> {
    let banks = match config.banks_config.as_deref().map(str::trim) {
        Some(t) if t.starts_with(SECRET_ARN_PREFIX) => load(config, &config.sdk().await?).await?,
        Some(t) if !t.is_empty() => parse(t)?,
        _ => BanksConfig::default(),
    };
    let out = rows(config, &banks)?;
    if args.json {
        return print_json(&json!({ "banks": out }));
    }
    println!(
        "{} configured; every other bankId uses the default settings.",
        crate::count(banks.banks.len() as u64, "bank", "banks")
    );
    for r in &out {
        println!();
        println!("{}", r["bankId"].as_str().unwrap_or(""));
        for key in [
            "region",
            "providerApiBase",
            "sageIdTokenUrl",
            "providerAudience",
            "clientId",
            "clientSecretRef",
            "apiKeyRef",
            "sageIdIssuer",
            "notificationAudience",
            "customHeaderName",
            "customHeaderValueRef",
            "sharesTokenWith",
            "sharesRateLimitWith",
        ] {
            let v = match &r[key] {
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                Value::Array(a) if a.is_empty() => "-".to_string(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            println!("  {key:<22} {v}");
        }
    }
    Ok(())
}

/// The default row and one per configured bank.
fn rows(config: &Config, banks: &BanksConfig) -> Result<Vec<Value>> {
    let default_p = default_provider(config)?;
    let default_n = default_notification(config)?;
    let mut rows: Vec<(String, ProviderSettings, NotificationSettings)> =
        vec![("default".into(), default_p.clone(), default_n.clone())];
    for (bank, o) in &banks.banks {
        let p = o
            .provider(&default_p, config.connector_environment.as_deref())
            .map_err(|e| {
                OpsError::Usage(format!("configuration BANKS_CONFIG: bank {bank}: {e}"))
            })?;
        rows.push((bank.to_string(), p, o.notification(&default_n)));
    }
    let mut tokens: HashMap<String, Vec<String>> = HashMap::new();
    let mut budgets: HashMap<String, Vec<String>> = HashMap::new();
    for (bank, p, _) in &rows {
        tokens
            .entry(connector_sage::token_scope(
                &p.token_url,
                &p.client_id,
                &p.audience,
            ))
            .or_default()
            .push(bank.clone());
        budgets
            .entry(api_key_label(&p.api_key))
            .or_default()
            .push(bank.clone());
    }
    Ok(rows
        .iter()
        .map(|(bank, p, n)| row(bank, p, n, &tokens, &budgets))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: &str = "5f775565-62d9-4d03-aca0-5365ad75ac07";
    const EU2: &str = "3993ba12-039d-43a5-a5ae-1493e5ac1ff8";

    #[test]
    fn each_bank_is_shown_with_what_it_shares_and_no_secret() {
        let config = Config {
            banking_service_url: Some(
                "https://papi-snd01-eu-west-1.sagebanking-sandbox.cloud".into(),
            ),
            sage_id_token_url: Some("https://id-shadow.sage.com/oauth/token".into()),
            sage_id_audience: Some("sfdsbanking/sfdsBankingProvider-Pre".into()),
            sage_id_client_id: Some("eu-client".into()),
            sage_id_client_secret: Some("plain-eu-secret".into()),
            provider_api_key: Some(
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:eu-key-AbC123".into(),
            ),
            sage_id_issuer: Some("https://id-shadow.sage.com/".into()),
            notification_audience: Some("connector".into()),
            connector_environment: Some("sandbox".into()),
            ..Config::default()
        };
        let banks = parse(&format!(
            r#"{{"{US}": {{"region": "us-east-1", "clientId": "us-client",
                 "clientSecretRef": "arn:aws:secretsmanager:us-east-1:123456789012:secret:us-AbC123"}},
                "{EU2}": {{"notificationAudience": "connector-2"}}}}"#
        ))
        .unwrap();
        let out = rows(&config, &banks).unwrap();
        assert_eq!(out.len(), 3);
        let text = serde_json::to_string(&out).unwrap();
        assert!(!text.contains("plain-eu-secret"), "{text}");
        let of = |bank: &str| out.iter().find(|r| r["bankId"] == bank).cloned().unwrap();
        let us = of(US);
        assert_eq!(
            us["providerApiBase"],
            "https://papi-snd01-us-east-1.sagebanking-sandbox.cloud"
        );
        assert_eq!(us["sharesTokenWith"], json!([]));
        // The US bank kept the default API key: one rate budget with the default (and EU2).
        assert_eq!(us["sharesRateLimitWith"], json!(["default", EU2]));
        let eu2 = of(EU2);
        assert_eq!(eu2["notificationAudience"], "connector-2");
        assert_eq!(eu2["sharesTokenWith"], json!(["default"]));
        // A region with no environment to place it in is refused, naming the bank.
        let err = rows(
            &Config {
                connector_environment: None,
                ..config
            },
            &banks,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("BANKS_CONFIG") && err.contains(US), "{err}");
    }
}
