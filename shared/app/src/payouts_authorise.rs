//! The authorisation page (docs/payments-out.md §7): the customer opens the link onboarding
//! PATCHed into the subscription, agrees, logs in at the bank (authorisation code with PKCE),
//! and the consent the bank gives decides the subscription — `Authorised`, `Pending` while the
//! bank reviews it by hand, or `Rejected`. The link is single use: the decision is recorded on
//! it conditionally before Payments Out is told, and a PATCH that fails here is left to the
//! worker, queued at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connector_domain::payouts::authorise::{
    self, Binding, Completion, LOGIN_SCOPE, LinkRecord, LinkState, LoginSession, MAX_STATE,
    login_state, parse_login_state,
};
use connector_domain::payouts::notification::PayoutsWork;
use connector_domain::payouts::onboarding::SubscriptionChange;
use connector_domain::payouts::status::SubscriptionStatus;
use connector_domain::ports::{
    BankLogin, BindingStore, Clock, LinkStore, LoginError, OpenItem, OpenKind, OpenWork,
    PayoutsApiPort, PayoutsQueue, StoreError,
};
use connector_domain::redirect::{RedirectAllowList, with_state};
use sha2::Digest;

use crate::browser::{MAX_FORM, PageOutcome, PageRequest, same_secret};
use crate::pages;

/// The page's use cases, on ports.
pub struct Authorise {
    pub links: Arc<dyn LinkStore>,
    pub bindings: Arc<dyn BindingStore>,
    pub bank: Arc<dyn BankLogin>,
    pub api: Arc<dyn PayoutsApiPort>,
    /// Where a PATCH that failed here goes, for the worker to finish.
    pub queue: Arc<dyn PayoutsQueue>,
    pub clock: Arc<dyn Clock>,
    /// Hosts the product may ask to be sent back to (`RETURN_HOST_ALLOWLIST`).
    pub returns: RedirectAllowList,
    pub bank_name: String,
    /// Attempts of the PATCH while the customer waits, and the pause between them.
    pub patch_attempts: u32,
    pub patch_pause: Duration,
    /// Where the reconciler finds a `Pending` decision to look at again.
    pub open: Arc<dyn OpenWork>,
    /// How soon the reconciler re-reads a consent under the bank's review (`STUCK_AFTER_S`).
    pub stuck_after: chrono::TimeDelta,
}

/// Why a step ended on an error page (logged; the customer sees only the page).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("bank: {0}")]
    Bank(#[from] LoginError),
}

fn page(status: u16, title: &str, message: &str) -> PageOutcome {
    PageOutcome::Page {
        status,
        html: pages::error_page(title, message, None),
    }
}

fn unknown_link() -> PageOutcome {
    page(
        404,
        "This link is not valid",
        "Please open the authorisation link from your Sage product again.",
    )
}

fn used_link() -> PageOutcome {
    page(
        409,
        "This link has already been used",
        "Your Sage product shows whether payments are authorised.",
    )
}

fn expired_link() -> PageOutcome {
    page(
        410,
        "This link has expired",
        "Please ask for a new authorisation from your Sage product.",
    )
}

fn bad_return() -> PageOutcome {
    page(
        400,
        "This link is not valid",
        "Please start again from your Sage product.",
    )
}

fn invalid_sign_in() -> PageOutcome {
    page(
        400,
        "This sign-in is no longer valid",
        "Please open the authorisation link from your Sage product again.",
    )
}

fn random_text<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; N]>())
}

/// The product's return address and state, checked.
struct Return {
    url: Option<String>,
    state: Option<String>,
}

impl Authorise {
    /// `GET /authorise/{linkId}`: the page, or why the link cannot be used.
    /// `origin`: the connector's public base URL, under which the page's own URLs are.
    pub async fn start(
        &self,
        link_id: &str,
        params: &HashMap<String, String>,
        origin: &str,
    ) -> PageOutcome {
        self.guarded(self.try_start(link_id, params, origin)).await
    }

    /// `POST /authorise/{linkId}`: continue to the bank, or cancel.
    pub async fn proceed(
        &self,
        link_id: &str,
        form: &HashMap<String, String>,
        origin: &str,
    ) -> PageOutcome {
        self.guarded(self.try_proceed(link_id, form, origin)).await
    }

    /// `GET /authorise/callback`: back from the bank.
    pub async fn callback(&self, params: &HashMap<String, String>, origin: &str) -> PageOutcome {
        self.guarded(self.try_callback(params, origin)).await
    }

    async fn guarded(
        &self,
        step: impl std::future::Future<Output = Result<PageOutcome, Failure>>,
    ) -> PageOutcome {
        match step.await {
            Ok(p) => p,
            Err(Failure::Bank(LoginError::Unavailable(e)))
            | Err(Failure::Store(StoreError::Unavailable(e))) => {
                tracing::warn!(error = %e, "authorisation page: a dependency is unavailable");
                page(
                    503,
                    "Please try again",
                    "We could not reach your bank just now. Please open the link from your Sage product again in a moment.",
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "authorisation page failed");
                page(500, "Something went wrong", "Please try again in a moment.")
            }
        }
    }

    fn callback_url(origin: &str) -> String {
        format!("{}/authorise/callback", origin.trim_end_matches('/'))
    }

    /// The link when the customer may use it now, else the page saying why not.
    async fn open_link(&self, link_id: &str) -> Result<Result<LinkRecord, PageOutcome>, Failure> {
        if parse_login_state(&login_state(link_id, "x")).is_none() {
            return Ok(Err(unknown_link()));
        }
        let Some(record) = self.links.link_record(link_id).await? else {
            return Ok(Err(unknown_link()));
        };
        Ok(match record.state(self.clock.now()) {
            LinkState::Open => Ok(record),
            LinkState::Completed => Err(used_link()),
            LinkState::Expired => Err(expired_link()),
        })
    }

    fn checked_return(&self, params: &HashMap<String, String>) -> Option<Return> {
        let state = params.get("state").filter(|s| !s.is_empty()).cloned();
        if state.as_ref().is_some_and(|s| s.len() > MAX_STATE) {
            return None;
        }
        let url = match params.get("returnUrl").filter(|s| !s.is_empty()) {
            Some(u) => Some(self.returns.check(u).ok()?.to_string()),
            None => None,
        };
        Some(Return { url, state })
    }

    async fn try_start(
        &self,
        link_id: &str,
        params: &HashMap<String, String>,
        origin: &str,
    ) -> Result<PageOutcome, Failure> {
        if let Err(p) = self.open_link(link_id).await? {
            return Ok(p);
        }
        let Some(back) = self.checked_return(params) else {
            return Ok(bad_return());
        };
        let mut hidden = Vec::new();
        if let Some(u) = &back.url {
            hidden.push(("returnUrl", u.as_str()));
        }
        if let Some(s) = &back.state {
            hidden.push(("state", s.as_str()));
        }
        let action = format!("{}/authorise/{link_id}", origin.trim_end_matches('/'));
        Ok(PageOutcome::Page {
            status: 200,
            html: pages::authorise_page(&action, &self.bank_name, &hidden),
        })
    }

    async fn try_proceed(
        &self,
        link_id: &str,
        form: &HashMap<String, String>,
        origin: &str,
    ) -> Result<PageOutcome, Failure> {
        let record = match self.open_link(link_id).await? {
            Ok(r) => r,
            Err(p) => return Ok(p),
        };
        let Some(back) = self.checked_return(form) else {
            return Ok(bad_return());
        };
        if form.get("action").map(String::as_str) == Some("cancel") {
            let completion = authorise::cancelled(self.clock.now());
            return self.finish(&record, completion, &back).await;
        }
        let verifier = random_text::<32>();
        let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        let session = LoginSession {
            nonce: random_text::<18>(),
            verifier,
            return_url: back.url,
            return_state: back.state,
            started_at: self.clock.now(),
        };
        if !self.links.begin_login(link_id, &session).await? {
            return Ok(used_link());
        }
        let location = self.bank.authorize_url(
            &Self::callback_url(origin),
            &login_state(link_id, &session.nonce),
            &challenge,
            LOGIN_SCOPE,
        )?;
        Ok(PageOutcome::Redirect { location })
    }

    async fn try_callback(
        &self,
        params: &HashMap<String, String>,
        origin: &str,
    ) -> Result<PageOutcome, Failure> {
        let Some((link_id, nonce)) = params.get("state").and_then(|s| parse_login_state(s)) else {
            return Ok(invalid_sign_in());
        };
        let Some(record) = self.links.link_record(link_id).await? else {
            return Ok(invalid_sign_in());
        };
        let Some(session) = record
            .session
            .clone()
            .filter(|s| same_secret(&s.nonce, nonce))
        else {
            return Ok(invalid_sign_in());
        };
        if record.completion.is_some() {
            return Ok(used_link());
        }
        let now = self.clock.now();
        if !record.login_may_finish(now) {
            return Ok(expired_link());
        }
        let back = Return {
            url: session.return_url.clone(),
            state: session.return_state.clone(),
        };
        let Some(code) = params.get("code").filter(|c| !c.is_empty()) else {
            // The customer cancelled at the bank (`error=access_denied`), or the bank refused.
            tracing::info!(error = ?params.get("error"), "bank login ended without a code");
            return self.finish(&record, authorise::cancelled(now), &back).await;
        };
        let callback = Self::callback_url(origin);
        let completion = match self.consent(&record, &session, code, &callback).await {
            Ok((completion, binding)) => {
                if let Some(b) = binding {
                    self.bindings.bind(&b).await?;
                }
                completion
            }
            Err(LoginError::InvalidGrant) => return Ok(invalid_sign_in()),
            Err(LoginError::Consent(reason)) => {
                tracing::warn!(%reason, "the consent cannot be used");
                Completion {
                    status: SubscriptionStatus::Rejected,
                    reason: Some("ConsentRefused".into()),
                    completed_at: now,
                }
            }
            Err(e) => return Err(e.into()),
        };
        self.finish(&record, completion, &back).await
    }

    /// Exchanges the code and reads the consent: what it decides, and the binding to record
    /// when it may pay (now, or once the bank's review passes).
    async fn consent(
        &self,
        record: &LinkRecord,
        session: &LoginSession,
        code: &str,
        callback: &str,
    ) -> Result<(Completion, Option<Binding>), LoginError> {
        let (customer_id, consent_id) = self
            .bank
            .exchange_code(code, callback, &session.verifier)
            .await?;
        let consent = self.bank.consent(&consent_id).await?;
        let now = self.clock.now();
        let completion = authorise::decide(&consent, now);
        let binding = (completion.status != SubscriptionStatus::Rejected).then_some(Binding {
            subscription_id: record.link.subscription_id,
            customer_id,
            consent_id,
            bound_at: now,
        });
        Ok((completion, binding))
    }

    /// Uses the link up with the decision, tells Payments Out, and shows the outcome.
    async fn finish(
        &self,
        record: &LinkRecord,
        completion: Completion,
        back: &Return,
    ) -> Result<PageOutcome, Failure> {
        let link_id = record.link.link_id.as_str();
        if !self.links.complete_link(link_id, &completion).await? {
            return Ok(used_link());
        }
        let subscription_id = record.link.subscription_id;
        tracing::info!(%subscription_id, status = ?completion.status, reason = ?completion.reason, "subscription decided at the authorisation page");
        crate::metrics::count(
            "PayoutsAuthorisations",
            &[("Outcome", status_name(completion.status))],
        );
        if completion.status == SubscriptionStatus::Pending {
            let watch = OpenItem {
                kind: OpenKind::Link,
                id: link_id.to_string(),
                due_at: self.clock.now() + self.stuck_after,
            };
            if let Err(e) = self.open.open(&watch).await {
                tracing::warn!(error = %e, "the reconciler will look at this Pending decision at the link's expiry");
            }
        }
        self.tell_payments_out(subscription_id, link_id, &completion)
            .await;
        if let Some(url) = &back.url {
            let location = match (url::Url::parse(url), &back.state) {
                (Ok(u), Some(state)) => with_state(&u, state),
                _ => url.clone(),
            };
            return Ok(PageOutcome::Redirect { location });
        }
        Ok(outcome_page(&completion))
    }

    /// The PATCH, tried a few times while the customer waits; if it still fails, the worker
    /// finishes it from the recorded completion.
    async fn tell_payments_out(
        &self,
        subscription_id: uuid::Uuid,
        link_id: &str,
        completion: &Completion,
    ) {
        let change = decision_change(completion);
        for attempt in 1..=self.patch_attempts.max(1) {
            match self
                .api
                .patch_subscription(subscription_id, None, &change)
                .await
            {
                Ok(()) => {
                    if let Err(e) = self.links.mark_patched(link_id).await {
                        tracing::warn!(error = %e, "PATCHed, but not noted (a later PATCH repeats it harmlessly)");
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(%subscription_id, attempt, error = %e, "PATCH of the decision failed");
                    tokio::time::sleep(self.patch_pause).await;
                }
            }
        }
        let work = PayoutsWork::Subscription {
            subscription_id,
            organisation_id: None,
            provider_id: None,
            received_at: self.clock.now(),
        };
        if let Err(e) = self.queue.send(&work).await {
            tracing::error!(%subscription_id, error = %e, "the decision is recorded but neither PATCHed nor queued: the reconciler must finish it");
        }
    }
}

/// The page, its headers' policy.
pub struct AuthorisePage {
    pub flow: Authorise,
    pub pages: crate::pages::PagePolicy,
    /// Where the page's own URLs start (the form, the bank's callback).
    pub public_base: crate::browser::PublicBase,
}

impl AuthorisePage {
    /// The page's step a browser request asks for, and its outcome.
    pub async fn answer(&self, req: &PageRequest<'_>) -> PageOutcome {
        let Some(origin) = self.public_base.origin(req.gateway_domain) else {
            tracing::error!("no public base URL: API Gateway named no domain for the request");
            return page(500, "Something went wrong", "Please try again in a moment.");
        };
        let link_id = req
            .link_id
            .or_else(|| {
                let path = req.path.trim_end_matches('/');
                path.rsplit_once("/authorise/").map(|(_, id)| id)
            })
            .unwrap_or_default();
        match (req.method, link_id) {
            ("GET", "callback") => self.flow.callback(&req.query, &origin).await,
            ("GET", id) => self.flow.start(id, &req.query, &origin).await,
            ("POST", id) if req.body.len() <= MAX_FORM => {
                self.flow.proceed(id, &req.form(), &origin).await
            }
            ("POST", _) => page(
                413,
                "Request too large",
                "Please start again from your Sage product.",
            ),
            _ => page(
                405,
                "Not allowed",
                "Please start again from your Sage product.",
            ),
        }
    }
}

/// The PATCH that tells Payments Out a decision.
pub fn decision_change(completion: &Completion) -> SubscriptionChange {
    SubscriptionChange {
        status: completion.status,
        link: None,
        reason: completion.reason.clone(),
    }
}

fn status_name(status: SubscriptionStatus) -> &'static str {
    match status {
        SubscriptionStatus::Authorised => "authorised",
        SubscriptionStatus::Pending => "pending",
        _ => "rejected",
    }
}

fn outcome_page(completion: &Completion) -> PageOutcome {
    let (title, message) = match (completion.status, completion.reason.as_deref()) {
        (SubscriptionStatus::Authorised, _) => (
            "Payments authorised",
            "You can now send payments from your Sage product. You may close this page.",
        ),
        (SubscriptionStatus::Pending, _) => (
            "Your bank is reviewing your request",
            "Your Sage product will show when your bank has decided. You may close this page.",
        ),
        (_, Some("CustomerCancelled")) => (
            "Authorisation cancelled",
            "No payments will be sent to your bank. You may close this page.",
        ),
        _ => (
            "Payments not authorised",
            "Your bank did not give the permission payments need. Please contact your bank.",
        ),
    };
    page(200, title, message)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::{DateTime, TimeDelta, Utc};
    use connector_domain::payouts::authorise::{ConsentAccount, ConsentView};
    use connector_domain::payouts::onboarding::{AuthLink, SubscriptionView};
    use connector_domain::ports::{BoxFuture, CallError, QueueError};
    use uuid::Uuid;

    use super::*;
    use crate::fakes::{FakePayouts, ManualClock, MemoryStore};
    use crate::payouts_onboarding::{Onboarded, Onboarding};

    /// The bank: checks the PKCE pair and the callback URL, and answers one consent.
    struct Bank {
        challenge: Mutex<Option<String>>,
        consent_status: Mutex<String>,
        accounts: usize,
    }

    impl BankLogin for Bank {
        fn authorize_url(
            &self,
            redirect_uri: &str,
            state: &str,
            challenge: &str,
            scope: &str,
        ) -> Result<String, LoginError> {
            assert_eq!(redirect_uri, "https://po.bank.test/authorise/callback");
            assert_eq!(scope, "openid accounts payments");
            *self.challenge.lock().unwrap() = Some(challenge.to_string());
            Ok(format!("https://bank.test/oauth/authorize?state={state}"))
        }

        fn exchange_code<'a>(
            &'a self,
            code: &'a str,
            redirect_uri: &'a str,
            verifier: &'a str,
        ) -> BoxFuture<'a, Result<(String, String), LoginError>> {
            let expected = self.challenge.lock().unwrap().clone();
            Box::pin(async move {
                let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
                if code != "good"
                    || Some(challenge) != expected
                    || redirect_uri != "https://po.bank.test/authorise/callback"
                {
                    return Err(LoginError::InvalidGrant);
                }
                Ok(("cust-1".into(), "cns-1".into()))
            })
        }

        fn consent<'a>(
            &'a self,
            consent_id: &'a str,
        ) -> BoxFuture<'a, Result<ConsentView, LoginError>> {
            let status = self.consent_status.lock().unwrap().clone();
            Box::pin(async move {
                Ok(ConsentView {
                    consent_id: consent_id.into(),
                    customer_id: "cust-1".into(),
                    status,
                    expires_at: "2030-01-01T00:00:00Z".parse().unwrap(),
                    accounts: (0..self.accounts)
                        .map(|i| ConsentAccount {
                            account_id: format!("acc_{i}"),
                            identifier: format!("4000{i}"),
                            bank_code: None,
                            currency: Some("USD".into()),
                        })
                        .collect(),
                })
            })
        }
    }

    #[derive(Default)]
    struct Queue(Mutex<Vec<PayoutsWork>>);

    impl PayoutsQueue for Queue {
        fn send<'a>(&'a self, work: &'a PayoutsWork) -> BoxFuture<'a, Result<(), QueueError>> {
            self.0.lock().unwrap().push(work.clone());
            Box::pin(async { Ok(()) })
        }
    }

    struct World {
        page: Authorise,
        store: Arc<MemoryStore>,
        payouts: Arc<FakePayouts>,
        bank: Arc<Bank>,
        queue: Arc<Queue>,
        clock: Arc<ManualClock>,
        link: AuthLink,
    }

    const BASE: &str = "https://po.bank.test/";

    fn start_time() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    async fn world() -> World {
        let store = Arc::new(MemoryStore::default());
        let payouts = Arc::new(FakePayouts::default());
        let clock = Arc::new(ManualClock::new(start_time()));
        let subscription_id = Uuid::new_v4();
        payouts.subscriptions.lock().unwrap().insert(
            subscription_id,
            SubscriptionView {
                subscription_id,
                status: SubscriptionStatus::AwaitingAuthorisation,
                additional_data: None,
            },
        );
        let link = AuthLink::new([7; 16], subscription_id, start_time(), TimeDelta::days(7));
        store.record_link(&link).await.unwrap();
        let bank = Arc::new(Bank {
            challenge: Mutex::new(None),
            consent_status: Mutex::new("active".into()),
            accounts: 2,
        });
        let queue = Arc::new(Queue::default());
        let page = Authorise {
            links: store.clone(),
            bindings: store.clone(),
            bank: bank.clone(),
            api: payouts.clone(),
            queue: queue.clone(),
            clock: clock.clone(),
            returns: RedirectAllowList::parse("*.intacct.com", false).unwrap(),
            bank_name: "Example Bank".into(),
            patch_attempts: 2,
            patch_pause: Duration::ZERO,
            open: store.clone(),
            stuck_after: TimeDelta::minutes(15),
        };
        World {
            page,
            store,
            payouts,
            bank,
            queue,
            clock,
            link,
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

    fn text(outcome: &PageOutcome) -> &str {
        match outcome {
            PageOutcome::Page { html, .. } => html,
            PageOutcome::Redirect { location } => location,
        }
    }

    /// Continue on the page: the bank's `state`.
    async fn to_bank(w: &World, form: &[(&str, &str)]) -> String {
        let mut form = params(form);
        form.insert("action".into(), "continue".into());
        let out = w.page.proceed(&w.link.link_id, &form, BASE).await;
        let PageOutcome::Redirect { location } = out else {
            panic!("to the bank: {out:?}")
        };
        let state = location
            .split("state=")
            .nth(1)
            .expect("a state")
            .to_string();
        assert!(state.starts_with(&format!("{}.", w.link.link_id)));
        state
    }

    fn at_sage(w: &World) -> SubscriptionStatus {
        w.payouts.subscriptions.lock().unwrap()[&w.link.subscription_id].status
    }

    #[tokio::test]
    async fn a_customer_who_consents_authorises_the_subscription_once() {
        let w = world().await;
        let page = w.page.start(&w.link.link_id, &params(&[]), BASE).await;
        assert_eq!(status(&page), 200);
        assert!(text(&page).contains("Continue to Example Bank"));
        let state = to_bank(&w, &[]).await;
        let done = w
            .page
            .callback(&params(&[("code", "good"), ("state", &state)]), BASE)
            .await;
        assert_eq!(status(&done), 200, "{}", text(&done));
        assert!(text(&done).contains("Payments authorised"));
        assert_eq!(at_sage(&w), SubscriptionStatus::Authorised);
        let binding = w
            .store
            .binding(w.link.subscription_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (binding.customer_id.as_str(), binding.consent_id.as_str()),
            ("cust-1", "cns-1")
        );
        let record = w.store.link_record(&w.link.link_id).await.unwrap().unwrap();
        assert!(record.patched);

        // Single use: the link, and the bank's answer replayed.
        assert_eq!(
            status(&w.page.start(&w.link.link_id, &params(&[]), BASE).await),
            409
        );
        let replay = w
            .page
            .callback(&params(&[("code", "good"), ("state", &state)]), BASE)
            .await;
        assert_eq!(status(&replay), 409);
        assert_eq!(w.payouts.patches.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_product_gets_its_customer_back_with_its_state_on_an_allowed_host_only() {
        let w = world().await;
        let back = [
            ("returnUrl", "https://eu.intacct.com/po?x=1"),
            ("state", "s 1"),
        ];
        assert_eq!(
            status(&w.page.start(&w.link.link_id, &params(&back), BASE).await),
            200
        );
        for bad in [
            [("returnUrl", "https://evil.test/"), ("state", "s")],
            [("returnUrl", "http://eu.intacct.com/"), ("state", "s")],
        ] {
            assert_eq!(
                status(&w.page.start(&w.link.link_id, &params(&bad), BASE).await),
                400
            );
        }
        let long = "x".repeat(MAX_STATE + 1);
        assert_eq!(
            status(
                &w.page
                    .start(&w.link.link_id, &params(&[("state", &long)]), BASE)
                    .await
            ),
            400
        );
        let state = to_bank(&w, &back).await;
        let done = w
            .page
            .callback(&params(&[("code", "good"), ("state", &state)]), BASE)
            .await;
        assert_eq!(
            done,
            PageOutcome::Redirect {
                location: "https://eu.intacct.com/po?x=1&state=s+1".into()
            }
        );
    }

    #[tokio::test]
    async fn the_consent_decides_pending_or_rejected() {
        let w = world().await;
        *w.bank.consent_status.lock().unwrap() = "pending_review".into();
        let state = to_bank(&w, &[]).await;
        let done = w
            .page
            .callback(&params(&[("code", "good"), ("state", &state)]), BASE)
            .await;
        assert!(text(&done).contains("reviewing"));
        assert_eq!(at_sage(&w), SubscriptionStatus::Pending);
        assert!(
            w.store
                .binding(w.link.subscription_id)
                .await
                .unwrap()
                .is_some()
        );

        let w = world().await;
        *w.bank.consent_status.lock().unwrap() = "rejected".into();
        let state = to_bank(&w, &[]).await;
        w.page
            .callback(&params(&[("code", "good"), ("state", &state)]), BASE)
            .await;
        assert_eq!(at_sage(&w), SubscriptionStatus::Rejected);
        assert_eq!(
            w.payouts.patches.lock().unwrap()[0].reason.as_deref(),
            Some("ConsentRefused")
        );
        assert!(
            w.store
                .binding(w.link.subscription_id)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn cancelling_at_the_page_or_at_the_bank_rejects_the_subscription() {
        let w = world().await;
        let form = params(&[("action", "cancel")]);
        let out = w.page.proceed(&w.link.link_id, &form, BASE).await;
        assert!(text(&out).contains("cancelled"), "{out:?}");
        assert_eq!(at_sage(&w), SubscriptionStatus::Rejected);
        assert_eq!(
            w.payouts.patches.lock().unwrap()[0].reason.as_deref(),
            Some("CustomerCancelled")
        );

        let w = world().await;
        let state = to_bank(&w, &[]).await;
        w.page
            .callback(
                &params(&[("error", "access_denied"), ("state", &state)]),
                BASE,
            )
            .await;
        assert_eq!(at_sage(&w), SubscriptionStatus::Rejected);
    }

    #[tokio::test]
    async fn a_forged_or_stale_callback_changes_nothing() {
        let w = world().await;
        let state = to_bank(&w, &[]).await;
        let forged = format!("{}.{}", w.link.link_id, "AAAAAAAAAAAAAAAAAAAAAAAA");
        for p in [
            params(&[("code", "good"), ("state", &forged)]),
            params(&[("code", "good"), ("state", "nonsense")]),
            params(&[("code", "good")]),
        ] {
            assert_eq!(status(&w.page.callback(&p, BASE).await), 400);
        }
        // A code the bank refuses: the customer starts again; the link stays usable.
        let refused = w
            .page
            .callback(&params(&[("code", "bad"), ("state", &state)]), BASE)
            .await;
        assert_eq!(status(&refused), 400);
        // A second start replaces the session: the first login's state is no longer valid.
        let second = to_bank(&w, &[]).await;
        assert_eq!(
            status(
                &w.page
                    .callback(&params(&[("code", "good"), ("state", &state)]), BASE)
                    .await
            ),
            400
        );
        assert!(w.payouts.patches.lock().unwrap().is_empty());
        let done = w
            .page
            .callback(&params(&[("code", "good"), ("state", &second)]), BASE)
            .await;
        assert_eq!(status(&done), 200);
        assert_eq!(at_sage(&w), SubscriptionStatus::Authorised);
    }

    #[tokio::test]
    async fn an_expired_link_is_gone_but_a_login_begun_in_time_finishes() {
        let w = world().await;
        w.clock.set(w.link.expires_at - TimeDelta::minutes(1));
        let state = to_bank(&w, &[]).await;
        w.clock.set(w.link.expires_at + TimeDelta::minutes(5));
        assert_eq!(
            status(&w.page.start(&w.link.link_id, &params(&[]), BASE).await),
            410
        );
        let done = w
            .page
            .callback(&params(&[("code", "good"), ("state", &state)]), BASE)
            .await;
        assert_eq!(status(&done), 200);
        assert_eq!(at_sage(&w), SubscriptionStatus::Authorised);

        let w = world().await;
        w.clock.set(w.link.expires_at - TimeDelta::minutes(1));
        let state = to_bank(&w, &[]).await;
        w.clock.set(w.link.expires_at + TimeDelta::minutes(11));
        let late = w
            .page
            .callback(&params(&[("code", "good"), ("state", &state)]), BASE)
            .await;
        assert_eq!(status(&late), 410);
        assert_eq!(at_sage(&w), SubscriptionStatus::AwaitingAuthorisation);
        assert_eq!(
            status(&w.page.start("unknownLinkId", &params(&[]), BASE).await),
            404
        );
        assert_eq!(status(&w.page.start("../x", &params(&[]), BASE).await), 404);
    }

    #[tokio::test]
    async fn a_decision_payments_out_did_not_take_is_queued_and_the_worker_sends_it() {
        let w = world().await;
        for _ in 0..2 {
            w.payouts
                .fail_patches
                .lock()
                .unwrap()
                .push_back(CallError::Transient("503".into()));
        }
        let state = to_bank(&w, &[]).await;
        let done = w
            .page
            .callback(&params(&[("code", "good"), ("state", &state)]), BASE)
            .await;
        assert_eq!(
            status(&done),
            200,
            "the customer is told it worked: it is recorded"
        );
        assert_eq!(at_sage(&w), SubscriptionStatus::AwaitingAuthorisation);
        let queued = w.queue.0.lock().unwrap().clone();
        assert!(matches!(
            queued.as_slice(),
            [PayoutsWork::Subscription { subscription_id, .. }] if *subscription_id == w.link.subscription_id
        ));
        let worker = Onboarding {
            api: w.payouts.clone(),
            links: w.store.clone(),
            clock: w.clock.clone(),
            link_ttl: TimeDelta::days(7),
            open: w.store.clone(),
        };
        assert_eq!(
            worker.onboard(w.link.subscription_id, None).await.unwrap(),
            Onboarded::Decided(SubscriptionStatus::Authorised)
        );
        assert_eq!(at_sage(&w), SubscriptionStatus::Authorised);
        assert_eq!(
            worker.onboard(w.link.subscription_id, None).await.unwrap(),
            Onboarded::Already(SubscriptionStatus::Authorised),
            "sent once"
        );
    }
}
