//! The authorisation page's rules (docs/payments-out.md §7): what a link's state allows, the
//! bank login it starts, and the subscription status the customer's consent decides.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::onboarding::AuthLink;
use super::status::SubscriptionStatus;

/// The bank login scope Payments Out needs: the customer's accounts, and payments from them.
pub const LOGIN_SCOPE: &str = "openid accounts payments";

/// Longest `state` the product may pass through the page.
pub const MAX_STATE: usize = 512;

/// How long after a link's expiry a bank login begun before it may still finish.
pub const LOGIN_GRACE: TimeDelta = TimeDelta::minutes(10);

/// A bank login begun from a link: what the callback needs to finish it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginSession {
    /// Random, carried in the bank's `state` beside the link id and compared on the callback.
    pub nonce: String,
    /// The PKCE verifier, sent with the code.
    pub verifier: String,
    /// The product's allowed `returnUrl`, if it gave one.
    #[serde(default)]
    pub return_url: Option<String>,
    /// The product's `state`, appended to `return_url`.
    #[serde(default)]
    pub return_state: Option<String>,
    pub started_at: DateTime<Utc>,
}

/// What the customer's visit decided, recorded once on the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    /// `Authorised`, `Pending` or `Rejected`.
    pub status: SubscriptionStatus,
    #[serde(default)]
    pub reason: Option<String>,
    pub completed_at: DateTime<Utc>,
}

/// A link as the page reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    pub link: AuthLink,
    pub session: Option<LoginSession>,
    pub completion: Option<Completion>,
    /// Whether Payments Out has the completion's status (the PATCH succeeded).
    pub patched: bool,
}

/// What a link lets the customer do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Open,
    /// Past its expiry: 410, and the subscription is rejected by the reconciler.
    Expired,
    /// Used: 409.
    Completed,
}

impl LinkRecord {
    pub fn state(&self, now: DateTime<Utc>) -> LinkState {
        if self.completion.is_some() {
            LinkState::Completed
        } else if self.link.expired(now) {
            LinkState::Expired
        } else {
            LinkState::Open
        }
    }

    /// Whether a bank login that returns now may still finish: begun while the link was open,
    /// and back within [`LOGIN_GRACE`] of its expiry.
    pub fn login_may_finish(&self, now: DateTime<Utc>) -> bool {
        self.completion.is_none()
            && self
                .session
                .as_ref()
                .is_some_and(|s| s.started_at < self.link.expires_at)
            && now < self.link.expires_at + LOGIN_GRACE
    }
}

/// The bank's `state` of a login: the link id and the session's nonce. Link ids are URL-safe
/// base64, which has no `.`.
pub fn login_state(link_id: &str, nonce: &str) -> String {
    format!("{link_id}.{nonce}")
}

/// The link id and nonce of a bank `state`, if it is one of ours.
pub fn parse_login_state(state: &str) -> Option<(&str, &str)> {
    let (link, nonce) = state.split_once('.')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (plain(link) && plain(nonce)).then_some((link, nonce))
}

/// A customer's consent at the bank, as the page needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentView {
    pub consent_id: String,
    pub customer_id: String,
    /// The bank's status: `active`, `pending_review`, `rejected`, `revoked`, ...
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub accounts: Vec<ConsentAccount>,
}

/// An account the customer shared in the consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentAccount {
    /// The bank's id of the account (what payments name).
    pub account_id: String,
    /// The account number.
    pub identifier: String,
    /// The bank's code of the account (a routing number or sort code, where it has one).
    pub bank_code: Option<String>,
    pub currency: Option<String>,
}

/// The subscription status a consent decides, with the reason of a rejection.
pub fn decide(consent: &ConsentView, now: DateTime<Utc>) -> Completion {
    let (status, reason) = match consent.status.as_str() {
        _ if consent.expires_at <= now => (SubscriptionStatus::Rejected, Some("ConsentExpired")),
        "active" if consent.accounts.is_empty() => {
            (SubscriptionStatus::Rejected, Some("NoAccountsShared"))
        }
        "active" => (SubscriptionStatus::Authorised, None),
        "pending_review" => (SubscriptionStatus::Pending, None),
        _ => (SubscriptionStatus::Rejected, Some("ConsentRefused")),
    };
    Completion {
        status,
        reason: reason.map(str::to_string),
        completed_at: now,
    }
}

/// A completion when the customer cancels, at the page or at the bank.
pub fn cancelled(now: DateTime<Utc>) -> Completion {
    Completion {
        status: SubscriptionStatus::Rejected,
        reason: Some("CustomerCancelled".into()),
        completed_at: now,
    }
}

/// Who the subscription pays from: the customer and consent at the bank, bound when the
/// customer authorised it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    pub subscription_id: Uuid,
    pub customer_id: String,
    pub consent_id: String,
    pub bound_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn record(session_at: Option<&str>, completion: bool) -> LinkRecord {
        LinkRecord {
            link: AuthLink {
                link_id: "AbC-_1234567890abcdefgh".into(),
                subscription_id: Uuid::nil(),
                issued_at: at("2025-03-04T09:00:00Z"),
                expires_at: at("2025-03-11T09:00:00Z"),
            },
            session: session_at.map(|t| LoginSession {
                nonce: "n".into(),
                verifier: "v".into(),
                return_url: None,
                return_state: None,
                started_at: at(t),
            }),
            completion: completion.then(|| cancelled(at("2025-03-05T09:00:00Z"))),
            patched: false,
        }
    }

    #[test]
    fn a_link_is_open_until_it_expires_or_is_used() {
        let r = record(None, false);
        assert_eq!(r.state(at("2025-03-11T08:59:59Z")), LinkState::Open);
        assert_eq!(r.state(at("2025-03-11T09:00:00Z")), LinkState::Expired);
        let used = record(None, true);
        assert_eq!(used.state(at("2025-03-05T10:00:00Z")), LinkState::Completed);
        assert_eq!(used.state(at("2025-04-01T00:00:00Z")), LinkState::Completed);
    }

    #[test]
    fn a_login_begun_in_time_may_finish_within_the_grace() {
        let begun = record(Some("2025-03-11T08:59:00Z"), false);
        assert!(begun.login_may_finish(at("2025-03-11T09:05:00Z")));
        assert!(!begun.login_may_finish(at("2025-03-11T09:10:00Z")));
        assert!(
            !record(Some("2025-03-11T09:00:00Z"), false)
                .login_may_finish(at("2025-03-11T09:01:00Z"))
        );
        assert!(!record(None, false).login_may_finish(at("2025-03-05T09:00:00Z")));
        assert!(
            !record(Some("2025-03-05T09:00:00Z"), true)
                .login_may_finish(at("2025-03-05T09:01:00Z"))
        );
    }

    #[test]
    fn login_state_round_trips_and_refuses_anything_else() {
        let s = login_state("AbC-_12", "xY9");
        assert_eq!(parse_login_state(&s), Some(("AbC-_12", "xY9")));
        for bad in ["", ".", "abc", "a.", ".b", "a.b.c", "a b.c", "a.<b>"] {
            assert_eq!(parse_login_state(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_consent_decides_the_status() {
        let now = at("2025-03-05T09:00:00Z");
        let consent = |status: &str, accounts: usize, expires: &str| ConsentView {
            consent_id: "c".into(),
            customer_id: "u".into(),
            status: status.into(),
            expires_at: at(expires),
            accounts: (0..accounts)
                .map(|i| ConsentAccount {
                    account_id: format!("acc_{i}"),
                    identifier: format!("4000{i}"),
                    bank_code: None,
                    currency: Some("USD".into()),
                })
                .collect(),
        };
        let d = |c: ConsentView| {
            let c = decide(&c, now);
            (c.status, c.reason)
        };
        use SubscriptionStatus::*;
        assert_eq!(
            d(consent("active", 2, "2026-01-01T00:00:00Z")),
            (Authorised, None)
        );
        assert_eq!(
            d(consent("pending_review", 1, "2026-01-01T00:00:00Z")),
            (Pending, None)
        );
        assert_eq!(
            d(consent("active", 0, "2026-01-01T00:00:00Z")),
            (Rejected, Some("NoAccountsShared".into()))
        );
        assert_eq!(
            d(consent("rejected", 1, "2026-01-01T00:00:00Z")),
            (Rejected, Some("ConsentRefused".into()))
        );
        assert_eq!(
            d(consent("active", 1, "2025-03-05T09:00:00Z")),
            (Rejected, Some("ConsentExpired".into()))
        );
    }
}
