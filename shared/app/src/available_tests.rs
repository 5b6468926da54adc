//! `/availableaccounts` through its ports: the live list from the bank (remembered), the last
//! known one when the bank fails or is slow, and nothing read for a refused caller.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use connector_domain::account::{BankConsent, ConsentRecord, ConsentedAccount, GrantedAccount};
use connector_domain::ports::{
    AuthRejection, BankCallError, BankingServiceAuth, BoxFuture, ConsentCache, GrantStore,
    VerifiedSender,
};
use http::HeaderMap;

use super::{AvailableAccounts, AvailableError};
use crate::fakes::{LiveConsent, ManualClock, MemoryStore};

fn now() -> DateTime<Utc> {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

struct Auth(Option<AuthRejection>);

impl BankingServiceAuth for Auth {
    fn several(&self) -> bool {
        false
    }

    fn verify<'a>(
        &'a self,
        _headers: &'a HeaderMap,
        _named: Option<uuid::Uuid>,
    ) -> BoxFuture<'a, Result<VerifiedSender, AuthRejection>> {
        let answer = self.0.clone().map_or(Ok(VerifiedSender::default()), Err);
        Box::pin(async move { answer })
    }
}

fn granted(external_id: &str, name: &str) -> GrantedAccount {
    GrantedAccount {
        external_id: external_id.into(),
        consent_id: "consent-1".into(),
        customer_id: "cust-1".into(),
        name: name.into(),
        kind: "business".into(),
        identifier: format!("id-{external_id}"),
        branch: None,
        bank_code: Some("021000021".into()),
        bank_id: None,
        granted_at: None,
    }
}

fn account(id: &str, name: &str, kind: &str) -> ConsentedAccount {
    ConsentedAccount {
        account_id: id.into(),
        name: name.into(),
        kind: kind.into(),
        identifier: String::new(),
        branch: Some("Main St".into()),
        bank_code: None,
    }
}

fn live(status: &str) -> BankConsent {
    BankConsent {
        consent_id: "consent-1".into(),
        customer_id: "cust-1".into(),
        status: status.into(),
        expires_at: now() + chrono::TimeDelta::days(30),
        accounts: vec![
            account("acc-1", "Operating", "business"),
            account("acc-new", "", "brokerage"),
        ],
    }
}

fn use_case(
    store: &Arc<MemoryStore>,
    answer: Result<BankConsent, BankCallError>,
    delay: Duration,
    rejection: Option<AuthRejection>,
) -> (AvailableAccounts, Arc<LiveConsent>) {
    let bank = Arc::new(LiveConsent::new(answer, delay));
    let a = AvailableAccounts {
        auth: Arc::new(Auth(rejection)),
        store: store.clone(),
        bank: bank.clone(),
        clock: Arc::new(ManualClock::new(now())),
    };
    (a, bank)
}

fn store_with_grant() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::default());
    store.put_grant(granted("acc-1", "Operating"));
    store
}

async fn ask(a: &AvailableAccounts, time: Duration) -> Result<Vec<String>, AvailableError> {
    Ok(a.handle(&HeaderMap::new(), Some("acc-1"), time)
        .await?
        .into_iter()
        .map(|x| {
            format!(
                "{}|{}|{}|{}|{}",
                x.external_id,
                x.account_name,
                x.account_type,
                x.bank_identifier,
                x.account_identifier
            )
        })
        .collect())
}

#[tokio::test]
async fn the_live_list_is_answered_in_the_specs_shape_and_remembered() {
    let store = store_with_grant();
    let (a, _) = use_case(&store, Ok(live("active")), Duration::ZERO, None);
    assert_eq!(
        ask(&a, Duration::from_secs(10)).await.unwrap(),
        vec![
            // No bank code: the customer id stands in; no identifier: the external id.
            "acc-1|Operating|business|cust-1|acc-1",
            // No name: "Account"; a type the spec does not know: "personal".
            "acc-new|Account|personal|cust-1|acc-new",
        ]
    );
    let new = store.granted_account("acc-new").await.unwrap().unwrap();
    assert_eq!(
        (new.consent_id.as_str(), new.granted_at),
        ("consent-1", Some(now())),
        "an account first seen here can be linked like one granted at onboarding"
    );
    let cached = store.cached_consent("consent-1").await.unwrap().unwrap();
    assert_eq!(cached.accounts.len(), 2);
}

#[tokio::test]
async fn a_failing_or_revoked_bank_answers_from_the_last_known_list() {
    let store = store_with_grant();
    store
        .cache_consent(&ConsentRecord {
            consent_id: "consent-1".into(),
            customer_id: "cust-1".into(),
            status: "active".into(),
            expires_at: now(),
            accounts: vec![granted("acc-1", "Operating"), granted("acc-2", "Payroll")],
            updated_at: now(),
        })
        .await
        .unwrap();
    for answer in [
        Err(BankCallError::Unavailable("503".into())),
        Ok(live("revoked")),
    ] {
        let (a, _) = use_case(&store, answer, Duration::ZERO, None);
        let ids: Vec<String> = ask(&a, Duration::from_secs(10))
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.split('|').next().unwrap().to_string())
            .collect();
        assert_eq!(ids, vec!["acc-1", "acc-2"]);
    }
    // Nothing cached yet: at least the account asked about.
    let store = store_with_grant();
    let (a, _) = use_case(
        &store,
        Err(BankCallError::Unavailable("503".into())),
        Duration::ZERO,
        None,
    );
    assert_eq!(ask(&a, Duration::from_secs(10)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_bank_slower_than_the_time_left_is_answered_for_from_the_cache_in_time() {
    let store = store_with_grant();
    let (a, _) = use_case(&store, Ok(live("active")), Duration::from_secs(30), None);
    let started = Instant::now();
    // 2.3 s left, of which ANSWER_RESERVE (2 s) is kept back: 0.3 s for the bank.
    let answer = ask(&a, Duration::from_millis(2300)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered without waiting for the bank: {:?}",
        started.elapsed()
    );
    assert_eq!(answer.len(), 1, "the granted account, from the fallback");
}

#[tokio::test]
async fn a_refused_caller_or_a_bad_external_id_gets_its_error_and_nothing_is_read() {
    let store = store_with_grant();
    let (refused, bank) = use_case(
        &store,
        Ok(live("active")),
        Duration::ZERO,
        Some(AuthRejection::Refused("token expired".into())),
    );
    assert!(matches!(
        ask(&refused, Duration::from_secs(10)).await,
        Err(AvailableError::Unauthorised(AuthRejection::Refused(_)))
    ));
    assert_eq!(
        bank.reads.load(Ordering::SeqCst),
        0,
        "the bank is not asked"
    );
    assert!(store.cached_consent("consent-1").await.unwrap().is_none());
    let (a, _) = use_case(&store, Ok(live("active")), Duration::ZERO, None);
    for (external_id, missing) in [(None, true), (Some("  "), true), (Some("acc-x"), false)] {
        let r = a
            .handle(&HeaderMap::new(), external_id, Duration::from_secs(10))
            .await;
        assert!(
            if missing {
                matches!(r, Err(AvailableError::MissingExternalId))
            } else {
                matches!(r, Err(AvailableError::UnknownExternalId))
            },
            "{external_id:?}: {r:?}"
        );
    }
}
