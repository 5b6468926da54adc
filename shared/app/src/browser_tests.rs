//! `/auth` and `/authrefresh` through their ports, against the in-memory fakes: the three steps
//! of each flow, single use of a handshake, the newest tab's form only, the PATCH retried while
//! the browser waits and given back when Banking Service cannot be reached, and re-authorised
//! accounts resumed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use connector_domain::account::{
    Account, AccountStatus, BackfillState, BankConsent, ConsentedAccount, GrantedAccount,
};
use connector_domain::authorisation::AuthorisationStatus;
use connector_domain::handshake::{BrowserSession, Flow, HandshakeState};
use connector_domain::messages::KickReason;
use connector_domain::ports::{AccountRegistry, CallError, GrantStore};
use connector_domain::redirect::RedirectAllowList;
use uuid::Uuid;

use super::{BrowserFlows, BrowserRequest, PageOutcome, PublicBase};
use crate::fakes::{
    FakeBankingService, FakeSignIn, LiveConsent, ManualClock, MemoryQueues, MemoryStore,
    OneService, Sent,
};

const BANK: Uuid = Uuid::from_u128(0xb4c);
const AUTH: Uuid = Uuid::from_u128(0xa07);
const BACK: &str = "https://app.sage.com/back";

fn now() -> DateTime<Utc> {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

struct World {
    store: Arc<MemoryStore>,
    queues: Arc<MemoryQueues>,
    service: Arc<FakeBankingService>,
    flows: BrowserFlows,
}

fn consent() -> BankConsent {
    let account = |id: &str, name: &str| ConsentedAccount {
        account_id: id.into(),
        name: name.into(),
        kind: "business".into(),
        identifier: format!("id-{id}"),
        branch: None,
        bank_code: None,
    };
    BankConsent {
        consent_id: "cns-1".into(),
        customer_id: "cust-1".into(),
        status: "active".into(),
        expires_at: now() + chrono::TimeDelta::days(90),
        accounts: vec![account("acc-1", "Operating"), account("acc-2", "")],
    }
}

async fn world() -> World {
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(MemoryStore::default());
    let queues = Arc::new(MemoryQueues::new(clock.clone()));
    let service = Arc::new(FakeBankingService::new(clock.clone(), 1));
    store
        .announce_handshake(AUTH, Some(BANK), now(), Duration::from_secs(20 * 60))
        .await
        .unwrap();
    let flows = BrowserFlows {
        store: store.clone(),
        queues: queues.clone(),
        providers: Arc::new(OneService(service.clone())),
        bank: Arc::new(LiveConsent::new(Ok(consent()), Duration::ZERO)),
        sign_in: Arc::new(FakeSignIn {
            consent: "cns-1".into(),
            verifier: Mutex::new(None),
        }),
        clock,
        allow: RedirectAllowList::parse("*.sage.com", false).unwrap(),
        pages: crate::pages::PagePolicy {
            frame_ancestors: "'self'".into(),
            allow_http_loopback: false,
        },
        grace: Duration::ZERO,
        public_base: PublicBase::Configured("https://connector.test".into()),
        bank_name: "Demo Bank".into(),
        patch_retries: 3,
    };
    World {
        store,
        queues,
        service,
        flows,
    }
}

fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn status(outcome: &PageOutcome) -> u16 {
    match outcome {
        PageOutcome::Page { status, .. } => *status,
        PageOutcome::Redirect { .. } => 303,
    }
}

impl World {
    async fn step(&self, flow: Flow, which: &str, pairs: &[(&str, &str)]) -> PageOutcome {
        let p = params(pairs);
        let req = BrowserRequest {
            params: &p,
            origin: "https://connector.test".into(),
        };
        match which {
            "start" => self.flows.start(flow, &req).await,
            "proceed" => self.flows.proceed(flow, &req).await,
            _ => self.flows.callback(flow, &req).await,
        }
    }

    async fn open_auth(&self) -> BrowserSession {
        let id = AUTH.to_string();
        let bank = BANK.to_string();
        let page = self
            .step(
                Flow::Auth,
                "start",
                &[
                    ("authorisation_id", &id),
                    ("redirect_uri", BACK),
                    ("state", "s1"),
                    ("bank", &bank),
                ],
            )
            .await;
        assert_eq!(status(&page), 200, "{page:?}");
        self.session()
    }

    fn session(&self) -> BrowserSession {
        self.store
            .stored_handshake(AUTH)
            .and_then(|h| h.browser)
            .expect("a browser session")
    }

    async fn continue_to_bank(&self, flow: Flow, session: &BrowserSession) -> PageOutcome {
        let id = AUTH.to_string();
        self.step(
            flow,
            "proceed",
            &[
                ("authorisation_id", &id),
                ("ui_token", &session.ui_token),
                ("action", "continue"),
            ],
        )
        .await
    }

    async fn back_from_bank(
        &self,
        flow: Flow,
        session: &BrowserSession,
        code: &str,
    ) -> PageOutcome {
        let state = format!("{AUTH}.{}", session.bank_state);
        self.step(flow, "callback", &[("state", &state), ("code", code)])
            .await
    }

    fn patched(&self) -> Vec<(AuthorisationStatus, usize)> {
        self.service
            .patches()
            .iter()
            .map(|(id, p)| {
                assert_eq!(*id, AUTH);
                (p.data.status, p.data.bank_accounts.len())
            })
            .collect()
    }
}

#[tokio::test]
async fn onboarding_reports_the_consents_accounts_once_and_sends_the_browser_back() {
    let w = world().await;
    let session = w.open_auth().await;
    match w.continue_to_bank(Flow::Auth, &session).await {
        PageOutcome::Redirect { location } => {
            assert!(
                location.starts_with("https://bank.test/authorize"),
                "{location}"
            );
            assert!(location.contains("https://connector.test/auth/callback"));
            assert!(location.contains(&format!("{AUTH}.{}", session.bank_state)));
        }
        other => panic!("a redirect to the bank expected, got {other:?}"),
    }
    let back = w.back_from_bank(Flow::Auth, &session, "good-code").await;
    assert_eq!(
        back,
        PageOutcome::Redirect {
            location: format!("{BACK}?state=s1")
        }
    );
    assert_eq!(w.patched(), vec![(AuthorisationStatus::Success, 2)]);
    let grant = w.store.granted_account("acc-2").await.unwrap().unwrap();
    assert_eq!(
        (grant.consent_id.as_str(), grant.bank_id),
        ("cns-1", Some(BANK)),
        "each account of the consent is granted, under the authorisation's bank"
    );
    assert_eq!(
        w.store.stored_handshake(AUTH).unwrap().state,
        HandshakeState::Completed
    );
    // The same callback again (a reload, a second tab): refused, no second PATCH.
    let again = w.back_from_bank(Flow::Auth, &session, "good-code").await;
    assert_eq!(status(&again), 409);
    assert_eq!(w.service.patches().len(), 1);
}

#[tokio::test]
async fn only_the_newest_pages_form_goes_on() {
    let w = world().await;
    let first = w.open_auth().await;
    let newest = w.open_auth().await;
    assert_ne!(
        first.ui_token, newest.ui_token,
        "each load rotates the token"
    );
    assert_eq!(status(&w.continue_to_bank(Flow::Auth, &first).await), 409);
    assert_eq!(status(&w.continue_to_bank(Flow::Auth, &newest).await), 303);
}

#[tokio::test]
async fn a_rate_limited_patch_is_retried_while_the_browser_waits() {
    let w = world().await;
    let session = w.open_auth().await;
    w.continue_to_bank(Flow::Auth, &session).await;
    w.service.fail_patch(CallError::RateLimited {
        retry_after: Some(Duration::from_millis(10)),
    });
    w.service.fail_patch(CallError::Transient("502".into()));
    let back = w.back_from_bank(Flow::Auth, &session, "good-code").await;
    assert_eq!(status(&back), 303);
    assert_eq!(w.patched(), vec![(AuthorisationStatus::Success, 2)]);
}

#[tokio::test]
async fn when_banking_service_cannot_be_reached_the_handshake_is_given_back_for_a_retry() {
    let w = world().await;
    let session = w.open_auth().await;
    w.continue_to_bank(Flow::Auth, &session).await;
    for _ in 0..3 {
        w.service.fail_patch(CallError::Transient("503".into()));
    }
    let failed = w.back_from_bank(Flow::Auth, &session, "good-code").await;
    assert_eq!(status(&failed), 500);
    assert_eq!(
        w.store.stored_handshake(AUTH).unwrap().state,
        HandshakeState::Opened,
        "released, not completed"
    );
    // A refusal is not retried: a 400 ends the attempt at once.
    w.service.fail_patch(CallError::Invalid {
        summary: "InvalidPropertyValue".into(),
    });
    assert_eq!(
        status(&w.back_from_bank(Flow::Auth, &session, "good-code").await),
        500
    );
    // The customer tries again: the same handshake reports once.
    let back = w.back_from_bank(Flow::Auth, &session, "good-code").await;
    assert_eq!(status(&back), 303);
    assert_eq!(w.patched(), vec![(AuthorisationStatus::Success, 2)]);
}

#[tokio::test]
async fn a_cancel_or_a_refusal_at_the_bank_is_reported_as_such() {
    let w = world().await;
    let session = w.open_auth().await;
    let id = AUTH.to_string();
    let cancelled = w
        .step(
            Flow::Auth,
            "proceed",
            &[
                ("authorisation_id", &id),
                ("ui_token", &session.ui_token),
                ("action", "cancel"),
            ],
        )
        .await;
    assert_eq!(status(&cancelled), 303);
    assert_eq!(w.patched(), vec![(AuthorisationStatus::Cancelled, 0)]);

    for (error, expected) in [
        ("access_denied", AuthorisationStatus::Cancelled),
        ("server_error", AuthorisationStatus::Error),
    ] {
        let w = world().await;
        let session = w.open_auth().await;
        let state = format!("{AUTH}.{}", session.bank_state);
        w.step(
            Flow::Auth,
            "callback",
            &[("state", &state), ("error", error)],
        )
        .await;
        assert_eq!(w.patched(), vec![(expected, 0)], "{error}");
    }
    // A code the bank does not honour is an error, never a success.
    let w = world().await;
    let session = w.open_auth().await;
    w.continue_to_bank(Flow::Auth, &session).await;
    w.back_from_bank(Flow::Auth, &session, "stolen-code").await;
    assert_eq!(w.patched(), vec![(AuthorisationStatus::Error, 0)]);
}

#[tokio::test]
async fn a_forged_state_or_an_unknown_authorisation_gets_a_refusal_page() {
    let w = world().await;
    let mut session = w.open_auth().await;
    session.bank_state = "forged".into();
    assert_eq!(
        status(&w.back_from_bank(Flow::Auth, &session, "good-code").await),
        400
    );
    let other = Uuid::from_u128(0xdead).to_string();
    let bank = BANK.to_string();
    let unknown = w
        .step(
            Flow::Auth,
            "start",
            &[
                ("authorisation_id", &other),
                ("redirect_uri", BACK),
                ("state", "s1"),
                ("bank", &bank),
            ],
        )
        .await;
    assert_eq!(status(&unknown), 403);
    let elsewhere = w
        .step(
            Flow::Auth,
            "start",
            &[
                ("authorisation_id", &AUTH.to_string()),
                ("redirect_uri", "https://evil.test/"),
                ("state", "s1"),
                ("bank", &bank),
            ],
        )
        .await;
    assert_eq!(
        status(&elsewhere),
        400,
        "a return address off the allow-list"
    );
    assert!(w.service.patches().is_empty());
}

#[tokio::test]
async fn a_reauthorisation_renews_the_consent_and_resumes_the_paused_account() {
    let w = world().await;
    let account = Uuid::from_u128(0xacc);
    let mut a = Account::new(account, "acc-1".into(), Some(BANK), Some(now()), now());
    a.status = AccountStatus::AuthRequired;
    a.backfill = BackfillState::Done;
    w.store.put_account(a);
    w.store.put_grant(GrantedAccount {
        external_id: "acc-1".into(),
        consent_id: "cns-1".into(),
        customer_id: "cust-1".into(),
        name: "Operating".into(),
        kind: "business".into(),
        identifier: "id-acc-1".into(),
        branch: None,
        bank_code: None,
        bank_id: Some(BANK),
        granted_at: Some(now()),
    });
    let id = AUTH.to_string();
    let page = w
        .step(
            Flow::AuthRefresh,
            "start",
            &[
                ("authorisation_id", &id),
                ("redirect_uri", BACK),
                ("state", "s2"),
                ("externalId", "acc-1"),
            ],
        )
        .await;
    assert_eq!(status(&page), 200, "{page:?}");
    let session = w.session();
    match w.continue_to_bank(Flow::AuthRefresh, &session).await {
        PageOutcome::Redirect { location } => {
            assert!(
                location.contains("renew=cns-1"),
                "the consent is renewed: {location}"
            )
        }
        other => panic!("{other:?}"),
    }
    let back = w
        .back_from_bank(Flow::AuthRefresh, &session, "good-code")
        .await;
    assert_eq!(status(&back), 303, "{back:?}");
    assert_eq!(w.patched(), vec![(AuthorisationStatus::Success, 0)]);
    assert_eq!(w.store.account(account).status, AccountStatus::Active);
    let kicks: Vec<KickReason> = std::iter::from_fn(|| w.queues.pop())
        .filter_map(|(_, m)| match m {
            Sent::Kick(k) if k.bank_account_id == account => Some(k.reason),
            _ => None,
        })
        .collect();
    assert_eq!(kicks, vec![KickReason::Reauthorised]);
}
