//! Subscription onboarding (docs/payments-out.md §6): a new subscription's `additionalData`
//! checked against the provider's `Subscriptions` rules, then an authorisation link minted for
//! it, single use and short-lived, which the customer opens to consent at the bank.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::checks::RuleSet;
use super::status::SubscriptionStatus;

/// A subscription as Payments Out holds it (what onboarding reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionView {
    pub subscription_id: Uuid,
    pub status: SubscriptionStatus,
    /// JSON in a string, as Sage sends it.
    pub additional_data: Option<String>,
}

/// What onboarding asks Payments Out to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChange {
    pub status: SubscriptionStatus,
    pub link: Option<AuthLink>,
    /// The reason, for a rejection.
    pub reason: Option<String>,
}

/// The authorisation link of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthLink {
    /// 128 random bits, URL-safe base64: the link cannot be guessed.
    pub link_id: String,
    pub subscription_id: Uuid,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl AuthLink {
    /// A link from 16 random bytes, valid for `ttl` from `now`.
    pub fn new(
        random: [u8; 16],
        subscription_id: Uuid,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Self {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        // 128 bits in 22 characters of 6 bits (the last holds 2).
        let bits = u128::from_be_bytes(random);
        let link_id = (0..22)
            .map(|i| ALPHABET[((bits >> (i * 6)) & 0x3f) as usize] as char)
            .collect();
        Self {
            link_id,
            subscription_id,
            issued_at: now,
            expires_at: now + ttl,
        }
    }

    /// Where the customer opens it.
    pub fn url(&self, public_base_url: &str) -> String {
        format!(
            "{}/authorise/{}",
            public_base_url.trim_end_matches('/'),
            self.link_id
        )
    }

    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }
}

/// The subscription's `additionalData` against the provider's `Subscriptions` rules (paths
/// below `$.data.additionalData` address the parsed JSON string): the failing rule's reason.
pub fn check_subscription(additional_data: Option<&str>, rules: &RuleSet) -> Result<(), String> {
    let parsed = match additional_data {
        None => Value::Null,
        Some(text) => serde_json::from_str(text)
            .map_err(|_| "ValidationFailed: additionalData".to_string())?,
    };
    let document = serde_json::json!({ "additionalData": parsed });
    rules
        .check("Subscriptions", None, &document)
        .map_err(|rule| format!("ValidationFailed: {rule}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payouts::checks::Rule;
    use serde_json::json;

    #[test]
    fn links_are_unguessable_ids_with_a_lifetime() {
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let sub = Uuid::nil();
        let a = AuthLink::new([7; 16], sub, now, TimeDelta::days(7));
        let b = AuthLink::new([8; 16], sub, now, TimeDelta::days(7));
        assert_eq!(a.link_id.len(), 22);
        assert_ne!(a.link_id, b.link_id);
        assert!(
            a.link_id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(
            a.url("https://po.eb.test/"),
            format!("https://po.eb.test/authorise/{}", a.link_id)
        );
        assert!(!a.expired(now + TimeDelta::days(6)));
        assert!(a.expired(now + TimeDelta::days(7)));
    }

    #[test]
    fn additional_data_is_checked_against_the_subscription_rules() {
        let rule = Rule::from_config(
            &json!({"ruleId": "eb-tax-id", "validation": {"apiPath": "Subscriptions",
                "jsonPath": "$.data.additionalData.taxId", "optionality": "Required",
                "regex": "^[0-9]{2}-[0-9]{7}$"}}),
            None,
        )
        .unwrap();
        let rules = RuleSet::new(vec![rule]);
        assert_eq!(
            check_subscription(Some(r#"{"taxId":"12-3456789"}"#), &rules),
            Ok(())
        );
        assert_eq!(
            check_subscription(Some(r#"{"taxId":"123"}"#), &rules),
            Err("ValidationFailed: eb-tax-id".into())
        );
        assert_eq!(
            check_subscription(None, &rules),
            Err("ValidationFailed: eb-tax-id".into())
        );
        assert_eq!(
            check_subscription(Some("not json"), &rules),
            Err("ValidationFailed: additionalData".into())
        );
        assert_eq!(check_subscription(None, &RuleSet::default()), Ok(()));
        let config = json!({"accountType": {"validationRules": [{"ruleId": "r", "validation":
            {"apiPath": "Subscriptions", "jsonPath": "$.data.additionalData.legalName",
             "optionality": "Required"}}]}});
        let from_config = RuleSet::from_provider_config(&config).unwrap();
        assert!(check_subscription(Some("{}"), &from_config).is_err());
    }
}
