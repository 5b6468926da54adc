//! Several banks in one deployment (spec §2 Decision: configuration keyed per bank). The
//! single set of variables (`BANKING_SERVICE_URL`, `SAGE_ID_*`, `PROVIDER_API_KEY`,
//! `NOTIFICATION_*`) is every bank's default; `BANKS_CONFIG` overrides any of spec §2's keys
//! for a `bankId`. docs/configuration.md describes the format and why it was chosen.
//!
//! Pure: parsing, validation and merging. Secrets stay references ([`SecretRef`]: a value, or a
//! Secrets Manager ARN) until the caller resolves them.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use uuid::Uuid;

/// A secret as configured: the value itself (locally), or a Secrets Manager ARN. `Debug`
/// shows an ARN (it is no secret) and redacts anything else.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct SecretRef(String);

/// Where a Secrets Manager ARN starts; any other value is the secret itself.
pub const SECRET_ARN_PREFIX: &str = "arn:aws:secretsmanager:";

impl SecretRef {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().trim().to_string())
    }

    pub fn is_arn(&self) -> bool {
        self.0.starts_with(SECRET_ARN_PREFIX)
    }

    /// The reference: an ARN, or the secret value (for the one place that resolves it).
    pub fn reference(&self) -> &str {
        &self.0
    }

    /// What may be printed: the ARN, or `[value]`.
    pub fn shown(&self) -> &str {
        if self.is_arn() { &self.0 } else { "[value]" }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

/// One bank's overrides: any key of spec §2's per-bank configuration, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BankOverride {
    /// Sage's region of the bank (`eu-west-1`/`us-east-1` in the sandbox, `eu`/`us` in
    /// production); gives the Provider API base when `providerApiBase` is not set.
    pub region: Option<String>,
    pub provider_api_base: Option<String>,
    /// Ending with `/`; the token endpoint is `{issuer}oauth/token`, the JWKS
    /// `{issuer}.well-known/jwks.json`.
    pub sage_id_issuer: Option<String>,
    pub provider_audience: Option<String>,
    pub notification_audience: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_ref: Option<SecretRef>,
    pub api_key_ref: Option<SecretRef>,
    /// Empty (with an empty value) = this bank's notifications carry no custom header.
    pub custom_header_name: Option<String>,
    pub custom_header_value_ref: Option<SecretRef>,
}

/// Every bank's overrides, by `bankId`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BanksConfig {
    pub banks: BTreeMap<Uuid, BankOverride>,
}

/// What the Provider API calls of one bank use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderSettings {
    pub region: Option<String>,
    pub base_url: String,
    pub token_url: String,
    pub audience: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    pub api_key: SecretRef,
}

/// What a notification (or `/availableaccounts` call) for one bank is verified against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotificationSettings {
    /// Ending with `/`.
    pub issuer: String,
    pub audience: String,
    pub custom_header: Option<(String, SecretRef)>,
}

fn is_http_url(v: &str) -> bool {
    url::Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// `issuer` with its closing `/`.
pub fn normalise_issuer(issuer: &str) -> String {
    let issuer = issuer.trim();
    if issuer.ends_with('/') {
        issuer.to_string()
    } else {
        format!("{issuer}/")
    }
}

/// The Provider API base of a Sage region (spec §2): the sandbox's
/// `https://papi-snd01-{region}.sagebanking-sandbox.cloud` or production's
/// `https://{region}-banking.fabric.sage.com/provider`.
pub fn provider_api_base(environment: &str, region: &str) -> Option<String> {
    match environment {
        "sandbox" => Some(format!(
            "https://papi-snd01-{region}.sagebanking-sandbox.cloud"
        )),
        "production" => Some(format!("https://{region}-banking.fabric.sage.com/provider")),
        _ => None,
    }
}

impl BanksConfig {
    /// Parses and checks `BANKS_CONFIG`: a JSON object from `bankId` to [`BankOverride`].
    /// Errors name the bank and the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| format!("not a JSON object of bankId to settings: {e}"))?;
        let mut banks = BTreeMap::new();
        for (key, value) in raw {
            let id = Uuid::parse_str(key.trim())
                .map_err(|_| format!("`{key}` is not a bankId (a UUID)"))?;
            let o: BankOverride = serde_json::from_value(value)
                .map_err(|e| format!("bank {id}: {e} (keys: {})", KEYS.join(", ")))?;
            o.check().map_err(|e| format!("bank {id}: {e}"))?;
            if banks.insert(id, o).is_some() {
                return Err(format!("bank {id} is configured twice"));
            }
        }
        Ok(Self { banks })
    }

    pub fn is_empty(&self) -> bool {
        self.banks.is_empty()
    }

    /// Every secret reference the overrides name.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SecretRef> {
        self.banks.values().flat_map(|o| {
            [
                &o.client_secret_ref,
                &o.api_key_ref,
                &o.custom_header_value_ref,
            ]
            .into_iter()
            .flatten()
        })
    }
}

/// The keys a bank may override, as written in `BANKS_CONFIG`.
pub const KEYS: &[&str] = &[
    "region",
    "providerApiBase",
    "sageIdIssuer",
    "providerAudience",
    "notificationAudience",
    "clientId",
    "clientSecretRef",
    "apiKeyRef",
    "customHeaderName",
    "customHeaderValueRef",
];

impl BankOverride {
    fn check(&self) -> Result<(), String> {
        let texts = [
            ("region", &self.region),
            ("providerApiBase", &self.provider_api_base),
            ("sageIdIssuer", &self.sage_id_issuer),
            ("providerAudience", &self.provider_audience),
            ("notificationAudience", &self.notification_audience),
            ("clientId", &self.client_id),
        ];
        for (name, v) in texts {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!("{name} is empty (leave it out to use the default)"));
            }
        }
        for (name, v) in [
            ("clientSecretRef", &self.client_secret_ref),
            ("apiKeyRef", &self.api_key_ref),
        ] {
            if v.as_ref().is_some_and(|v| v.reference().is_empty()) {
                return Err(format!("{name} is empty (leave it out to use the default)"));
            }
        }
        if let Some(r) = &self.region
            && !r
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "region `{r}` is not a Sage region such as us-east-1"
            ));
        }
        for (name, v) in [
            ("providerApiBase", &self.provider_api_base),
            ("sageIdIssuer", &self.sage_id_issuer),
        ] {
            if let Some(v) = v
                && !is_http_url(v.trim())
            {
                return Err(format!("{name} `{v}` is not an absolute http(s) URL"));
            }
        }
        // A client id without its secret (or the reverse) would pair one bank's id with the
        // default client's secret: refuse it rather than fail at Sage ID.
        if self.client_id.is_some() != self.client_secret_ref.is_some() {
            return Err("clientId and clientSecretRef go together".into());
        }
        let name = self.custom_header_name.as_deref().map(str::trim);
        let value = self
            .custom_header_value_ref
            .as_ref()
            .map(|v| v.reference().is_empty());
        match (name, value) {
            (None, None) | (Some(""), Some(true)) => {}
            (Some(n), Some(false)) if !n.is_empty() => {
                http::HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| format!("customHeaderName `{n}` is not a header name"))?;
            }
            _ => {
                return Err(
                    "customHeaderName and customHeaderValueRef go together (both empty: no header)"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// This bank's Provider API settings: `default` with the overrides applied. `environment`
    /// (`sandbox`/`production`) turns a `region` into a base URL when none is given.
    pub fn provider(
        &self,
        default: &ProviderSettings,
        environment: Option<&str>,
    ) -> Result<ProviderSettings, String> {
        let base_url = match (&self.provider_api_base, &self.region) {
            (Some(base), _) => base.trim().to_string(),
            (None, Some(region)) => environment
                .and_then(|e| provider_api_base(e, region))
                .ok_or_else(|| {
                    "region without providerApiBase needs CONNECTOR_ENVIRONMENT (sandbox or production)"
                        .to_string()
                })?,
            (None, None) => default.base_url.clone(),
        };
        let token_url = match &self.sage_id_issuer {
            Some(issuer) => format!("{}oauth/token", normalise_issuer(issuer)),
            None => default.token_url.clone(),
        };
        let (client_id, client_secret) = match (&self.client_id, &self.client_secret_ref) {
            (Some(id), Some(secret)) => (id.trim().to_string(), secret.clone()),
            _ => (default.client_id.clone(), default.client_secret.clone()),
        };
        Ok(ProviderSettings {
            region: self.region.clone().or_else(|| default.region.clone()),
            base_url,
            token_url,
            audience: self
                .provider_audience
                .as_deref()
                .map(|a| a.trim().to_string())
                .unwrap_or_else(|| default.audience.clone()),
            client_id,
            client_secret,
            api_key: self
                .api_key_ref
                .clone()
                .unwrap_or_else(|| default.api_key.clone()),
        })
    }

    /// What this bank's notifications are verified against: `default` with the overrides.
    pub fn notification(&self, default: &NotificationSettings) -> NotificationSettings {
        let custom_header = match (&self.custom_header_name, &self.custom_header_value_ref) {
            (Some(name), Some(value)) if !name.trim().is_empty() => {
                Some((name.trim().to_string(), value.clone()))
            }
            (Some(_), Some(_)) => None,
            _ => default.custom_header.clone(),
        };
        NotificationSettings {
            issuer: self
                .sage_id_issuer
                .as_deref()
                .map(normalise_issuer)
                .unwrap_or_else(|| default.issuer.clone()),
            audience: self
                .notification_audience
                .as_deref()
                .map(|a| a.trim().to_string())
                .unwrap_or_else(|| default.audience.clone()),
            custom_header,
        }
    }

    /// Whether the override touches the notification side at all.
    pub fn overrides_notifications(&self) -> bool {
        self.sage_id_issuer.is_some()
            || self.notification_audience.is_some()
            || self.custom_header_name.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "5f775565-62d9-4d03-aca0-5365ad75ac07";
    const B: &str = "3993ba12-039d-43a5-a5ae-1493e5ac1ff8";

    fn default_provider() -> ProviderSettings {
        ProviderSettings {
            region: None,
            base_url: "https://papi-snd01-eu-west-1.sagebanking-sandbox.cloud".into(),
            token_url: "https://id-shadow.sage.com/oauth/token".into(),
            audience: "sfdsbanking/sfdsBankingProvider-Pre".into(),
            client_id: "eu-client".into(),
            client_secret: SecretRef::new("eu-secret"),
            api_key: SecretRef::new("eu-key"),
        }
    }

    fn default_notification() -> NotificationSettings {
        NotificationSettings {
            issuer: "https://id-shadow.sage.com/".into(),
            audience: "eu-connector".into(),
            custom_header: Some(("X-Eu".into(), SecretRef::new("eu-header"))),
        }
    }

    #[test]
    fn every_key_of_the_spec_can_be_set_per_bank() {
        let text = format!(
            r#"{{
            "{A}": {{
                "region": "us-east-1",
                "sageIdIssuer": "https://id-us.example",
                "providerAudience": "us-audience",
                "notificationAudience": "us-connector",
                "clientId": "us-client",
                "clientSecretRef": "arn:aws:secretsmanager:us-east-1:123456789012:secret:us-client-AbC123",
                "apiKeyRef": "arn:aws:secretsmanager:us-east-1:123456789012:secret:us-key-AbC123",
                "customHeaderName": "X-Us",
                "customHeaderValueRef": "us-header"
            }},
            "{B}": {{ "providerApiBase": "https://papi.example/b" }}
        }}"#
        );
        let config = BanksConfig::parse(&text).unwrap();
        assert_eq!(config.banks.len(), 2);
        let a = &config.banks[&Uuid::parse_str(A).unwrap()];
        let p = a.provider(&default_provider(), Some("sandbox")).unwrap();
        assert_eq!(
            p.base_url,
            "https://papi-snd01-us-east-1.sagebanking-sandbox.cloud"
        );
        assert_eq!(p.token_url, "https://id-us.example/oauth/token");
        assert_eq!(p.audience, "us-audience");
        assert_eq!(p.client_id, "us-client");
        assert!(p.client_secret.is_arn() && p.api_key.is_arn());
        let n = a.notification(&default_notification());
        assert_eq!(n.issuer, "https://id-us.example/");
        assert_eq!(n.audience, "us-connector");
        assert_eq!(
            n.custom_header,
            Some(("X-Us".into(), SecretRef::new("us-header")))
        );
        // Production regions name Sage's production hosts.
        let p = a.provider(&default_provider(), Some("production")).unwrap();
        assert_eq!(
            p.base_url,
            "https://us-east-1-banking.fabric.sage.com/provider"
        );

        // What a bank does not override is the default.
        let b = &config.banks[&Uuid::parse_str(B).unwrap()];
        let p = b.provider(&default_provider(), None).unwrap();
        assert_eq!(
            p,
            ProviderSettings {
                base_url: "https://papi.example/b".into(),
                ..default_provider()
            }
        );
        assert_eq!(
            b.notification(&default_notification()),
            default_notification()
        );
        assert!(!b.overrides_notifications());
    }

    #[test]
    fn a_bank_may_turn_the_custom_header_off() {
        let text = format!(r#"{{"{A}": {{"customHeaderName": "", "customHeaderValueRef": ""}}}}"#);
        let config = BanksConfig::parse(&text).unwrap();
        let n = config.banks.values().next().unwrap();
        assert_eq!(n.notification(&default_notification()).custom_header, None);
    }

    #[test]
    fn mistakes_are_refused_naming_the_bank_and_the_key() {
        for (body, expected) in [
            (r#"{"clientId": "x"}"#, "clientSecretRef"),
            (r#"{"clientSecretRef": "x"}"#, "clientId"),
            (r#"{"customHeaderName": "X-A"}"#, "customHeaderValueRef"),
            (
                r#"{"customHeaderName": "bad header", "customHeaderValueRef": "v"}"#,
                "customHeaderName",
            ),
            (r#"{"providerApiBase": "papi.example"}"#, "providerApiBase"),
            (r#"{"sageIdIssuer": "ftp://id.example/"}"#, "sageIdIssuer"),
            (r#"{"region": "US East"}"#, "region"),
            (r#"{"providerAudience": " "}"#, "providerAudience"),
            (r#"{"apiKey": "x"}"#, "apiKey"),
        ] {
            let err = BanksConfig::parse(&format!(r#"{{"{A}": {body}}}"#)).unwrap_err();
            assert!(err.contains(A), "{body}: {err}");
            assert!(err.contains(expected), "{body}: {err}");
        }
        let err = BanksConfig::parse(r#"{"bank-1": {}}"#).unwrap_err();
        assert!(err.contains("bank-1"), "{err}");
        assert!(BanksConfig::parse("[1]").is_err());
        // A region needs to know which of Sage's environments it is in.
        let config = BanksConfig::parse(&format!(r#"{{"{A}": {{"region": "us"}}}}"#)).unwrap();
        let err = config
            .banks
            .values()
            .next()
            .unwrap()
            .provider(&default_provider(), None);
        assert!(err.unwrap_err().contains("CONNECTOR_ENVIRONMENT"));
    }

    #[test]
    fn secrets_never_reach_debug_output() {
        let text = format!(
            r#"{{"{A}": {{"clientId": "c", "clientSecretRef": "plain-secret",
                "apiKeyRef": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:k-AbC123"}}}}"#
        );
        let shown = format!("{:?}", BanksConfig::parse(&text).unwrap());
        assert!(!shown.contains("plain-secret"), "{shown}");
        assert!(shown.contains("secret:k-AbC123"), "ARNs are shown: {shown}");
    }
}
