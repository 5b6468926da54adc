//! Sage elsewhere: the local stack's connector pointed at an external Banking Service and Sage ID
//! (Sage's remote sandbox, or another sandbox process) instead of the built-in sandbox, whose
//! demo bank it keeps using. The settings are the template's own parameters, written as a bank
//! later writes them for `sam deploy --parameter-overrides` (docs/external-sage.md).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use crate::template::Template;

/// What Banking Service needs from the file: without any of these the connector would still
/// talk to the built-in sandbox.
pub const REQUIRED: [&str; 7] = [
    "BankingServiceUrl",
    "SageIdIssuer",
    "SageIdAudience",
    "NotificationAudience",
    "SageIdClientId",
    "SageIdClientSecretArn",
    "ProviderApiKeyArn",
];

/// Template parameters that override the local stack's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SageParameters {
    pub values: BTreeMap<String, String>,
}

impl SageParameters {
    /// Reads `Name=Value` lines (blank lines and `#` comments skipped; the value may be quoted).
    pub fn load(path: &Path, template: &Template) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the Sage parameters file {}", path.display()))?;
        Self::parse(&text, template).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str, template: &Template) -> Result<Self> {
        let mut values = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| anyhow!("line {}: expected Name=Value", n + 1))?;
            let name = name.trim();
            if !template.parameters.contains_key(name) {
                let known: Vec<&str> = template.parameters.keys().map(String::as_str).collect();
                bail!(
                    "line {}: {name} is not a parameter of template.yaml (known: {})",
                    n + 1,
                    known.join(", ")
                );
            }
            values.insert(name.to_string(), unquote(value.trim()).to_string());
        }
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|k| values.get(*k).is_none_or(|v| v.is_empty()))
            .collect();
        if !missing.is_empty() {
            bail!(
                "missing {} (Banking Service's URL, Sage ID's issuer, the audiences, your client id and secret, the API key)",
                missing.join(", ")
            );
        }
        Ok(Self { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The bank's id at Bank Sync, when the file names one (else the stack registers the bank).
    pub fn bank_id(&self) -> Result<Option<uuid::Uuid>> {
        self.get("BankingServiceBankId")
            .map(|id| uuid::Uuid::parse_str(id).context("BankingServiceBankId is not a UUID"))
            .transpose()
    }

    /// Whether Payments Out, too, is elsewhere.
    pub fn payments_out(&self) -> bool {
        self.get("PaymentsOutUrl").is_some()
    }

    /// Sage ID's token endpoint, as the connector derives it.
    pub fn token_url(&self) -> String {
        let issuer = self.get("SageIdIssuer").unwrap_or_default();
        format!(
            "{}oauth/token",
            connector_sage::banks::normalise_issuer(issuer)
        )
    }
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPLETE: &str = "\
# Sage's sandbox
BankingServiceUrl=https://papi.example
SageIdIssuer=https://id.example/
SageIdAudience=provider-aud
NotificationAudience=\"connector-aud\"
SageIdClientId=client
SageIdClientSecretArn=secret
ProviderApiKeyArn=key
";

    #[test]
    fn a_complete_file_overrides_the_parameters_it_names() {
        let t = Template::load().unwrap();
        let p = SageParameters::parse(COMPLETE, &t).unwrap();
        assert_eq!(p.get("NotificationAudience"), Some("connector-aud"));
        assert_eq!(p.token_url(), "https://id.example/oauth/token");
        assert_eq!(p.bank_id().unwrap(), None);
        assert!(!p.payments_out());
    }

    #[test]
    fn unknown_names_missing_settings_and_bad_ids_are_refused_with_what_is_wrong() {
        let t = Template::load().unwrap();
        let unknown = SageParameters::parse("SageUrl=https://x\n", &t).unwrap_err();
        assert!(
            format!("{unknown:#}").contains("SageUrl is not a parameter"),
            "{unknown:#}"
        );
        let partial = SageParameters::parse("BankingServiceUrl=https://x\n", &t).unwrap_err();
        assert!(
            format!("{partial:#}").contains("missing SageIdIssuer"),
            "{partial:#}"
        );
        let no_equals = SageParameters::parse("BankingServiceUrl\n", &t).unwrap_err();
        assert!(format!("{no_equals:#}").contains("line 1"), "{no_equals:#}");
        let bad_id = SageParameters::parse(&format!("{COMPLETE}BankingServiceBankId=7\n"), &t)
            .unwrap()
            .bank_id()
            .unwrap_err();
        assert!(format!("{bad_id:#}").contains("not a UUID"));
    }
}
