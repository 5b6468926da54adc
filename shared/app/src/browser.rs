//! `/auth` and `/authrefresh` (spec §4.2–4.4, invariant 7): the customer's browser arrives from
//! Banking Service, signs in at the bank, and is sent back to Sage after the
//! `PATCH /v1/authorisations/{id}`.
//!
//! Three steps per flow: `GET` validates and shows a short page (rotating a UI token), `POST`
//! sends the browser to the bank's login (OpenID Connect with PKCE), and the bank's callback
//! exchanges the code, reports to Banking Service and redirects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use connector_domain::account::{AccountStatus, BackfillState, BankConsent};
use connector_domain::authorisation::{
    AuthorisationPatch, AuthorisationPatchData, AuthorisationStatus, PatchedAccount,
};
use connector_domain::handshake::{BrowserSession, Flow, Handshake, HandshakeRefusal};
use connector_domain::messages::{Kick, KickReason, WorkMessage};
use connector_domain::ports::{
    BankReader, BankSignIn, BrowserStore, CallError, Clock, ExpectedKey, StatementApi,
    StatementApis, Timers,
};
use connector_domain::redirect::{RedirectAllowList, StartLink, with_state};
use connector_domain::transaction::truncate_chars;
use subtle::ConstantTimeEq;
use tracing::Instrument;
use uuid::Uuid;

use crate::pages;

/// How long a claim for the PATCH holds the handshake: longer than the `/auth` and
/// `/authrefresh` functions may run (their `Timeout` in `template.yaml`, 20 s), so a live holder
/// never loses it, and a dead one's claim lapses soon after.
pub const PATCH_LEASE: Duration = Duration::from_secs(60);

/// Waits for a notification not stored yet (spec §4.2 step 6) that may run at once across all
/// instances: each holds an instance for up to `AUTH_GRACE_S`, so without a bound cheap
/// requests with made-up ids would multiply Lambda time. Beyond it the browser gets a page
/// that comes back every `RETRY_EVERY` until the grace period is over.
pub const GRACE_WAITS: u32 = 4;

/// How soon the retry page loads again; also how much of the grace period each reload uses.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The query parameter counting the retry page's reloads.
pub const RETRY_PARAM: &str = "grace_retry";
/// The longest `Retry-After` a PATCH retry waits for: the customer's browser is waiting, and
/// the function's timeout (20 s) bounds the whole attempt.
const MAX_PATCH_WAIT: Duration = Duration::from_secs(5);

/// What `find_handshake` learnt.
enum Lookup {
    Found(Box<Handshake>),
    /// Still unknown after the grace period.
    Unknown,
    /// Unknown, the grace period not over, and no wait free: the browser asks again.
    Retry {
        round: u32,
    },
}

/// What to answer the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageOutcome {
    Page {
        status: u16,
        html: String,
    },
    /// `303 See Other`.
    Redirect {
        location: String,
    },
}

fn page(status: u16, title: &str, message: &str, back: Option<&str>) -> PageOutcome {
    PageOutcome::Page {
        status,
        html: pages::error_page(title, message, back),
    }
}

fn invalid_link() -> PageOutcome {
    page(
        400,
        "This link is not valid",
        "Please start again from your Sage product.",
        None,
    )
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    use sha2::Digest;
    let da = sha2::Sha256::digest(a.as_bytes());
    let db = sha2::Sha256::digest(b.as_bytes());
    bool::from(da.as_slice().ct_eq(db.as_slice()))
}

/// Whether a caller presented the expected key (compared in constant time); always when no key
/// is configured (IAM decided already), never when one is and none was presented.
pub(crate) async fn key_accepted(
    expected: Option<&Arc<dyn ExpectedKey>>,
    presented: Option<&str>,
) -> bool {
    match (expected, presented) {
        (None, _) => true,
        (Some(key), Some(presented)) => same_secret(&key.current().await, presented),
        (Some(_), None) => false,
    }
}

pub struct BrowserFlows {
    /// Handshakes, grants, consents and accounts (the table).
    pub store: Arc<dyn BrowserStore>,
    /// The work and push queues (a re-authorised account resumes).
    pub queues: Arc<dyn Timers>,
    /// Banking Service's Provider API per bank, for the PATCH.
    pub providers: Arc<dyn StatementApis>,
    /// The bank's consents, and its sign-in.
    pub bank: Arc<dyn BankReader>,
    pub sign_in: Arc<dyn BankSignIn>,
    pub clock: Arc<dyn Clock>,
    pub allow: RedirectAllowList,
    pub pages: crate::pages::PagePolicy,
    pub grace: Duration,
    pub public_base: PublicBase,
    pub bank_name: String,
    /// Attempts of the PATCH while the browser waits.
    pub patch_retries: u32,
}

/// Runs one step of a flow in its log span; an unexpected failure becomes a plain error page.
async fn guarded(
    flow: Flow,
    step: impl std::future::Future<Output = Result<PageOutcome, String>>,
) -> PageOutcome {
    let span =
        tracing::info_span!("browser", flow = ?flow, authorisationId = tracing::field::Empty);
    match step.instrument(span).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "browser flow failed");
            page(
                500,
                "Something went wrong",
                "Please try again in a moment.",
                None,
            )
        }
    }
}

/// The request as the flow needs it.
pub struct BrowserRequest<'a> {
    pub params: &'a HashMap<String, String>,
    /// The connector's public base URL (see `PublicBase`), for the bank's callback URL.
    pub origin: String,
}

/// Where the connector's own public URLs start (the bank's callback to `/auth/callback`). Never
/// from the request's `Host` header, which the client chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicBase {
    /// `PUBLIC_BASE_URL`: a custom domain in front of API Gateway, or the local API.
    Configured(String),
    /// On Lambda without `PUBLIC_BASE_URL`: `https://` and the domain API Gateway served the
    /// request on (`requestContext.domainName`).
    ApiGateway,
}

impl PublicBase {
    /// The base URL for a request API Gateway served on `gateway_domain`; `None` when it is
    /// needed and API Gateway named no usable domain.
    pub fn origin(&self, gateway_domain: Option<&str>) -> Option<String> {
        match self {
            Self::Configured(base) => Some(base.clone()),
            Self::ApiGateway => {
                let domain = gateway_domain?;
                let plain = !domain.is_empty()
                    && domain.len() <= 253
                    && domain
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
                plain.then(|| format!("https://{}", domain.to_ascii_lowercase()))
            }
        }
    }
}

/// A browser request as the pages see it; the Lambda glue reads it off API Gateway's event.
pub struct PageRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The route's `{linkId}` when API Gateway matched one.
    pub link_id: Option<&'a str>,
    pub query: HashMap<String, String>,
    pub body: &'a [u8],
    /// The domain API Gateway served the request on (`requestContext.domainName`).
    pub gateway_domain: Option<&'a str>,
}

/// The largest form a page accepts.
pub const MAX_FORM: usize = 16 * 1024;

impl PageRequest<'_> {
    /// The body as a form's fields.
    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(self.body)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl BrowserFlows {
    fn path(flow: Flow) -> &'static str {
        match flow {
            Flow::Auth => "/auth",
            Flow::AuthRefresh => "/authrefresh",
        }
    }

    fn callback_url(flow: Flow, origin: &str) -> String {
        format!(
            "{}{}/callback",
            origin.trim_end_matches('/'),
            Self::path(flow)
        )
    }

    /// Waits out the race between the notification and the browser (spec §4.2 step 6), holding
    /// one of `GRACE_WAITS` slots; `round` is the retry page's reload count, each worth
    /// `RETRY_EVERY` of the grace period.
    async fn find_handshake(&self, id: Uuid, round: u32) -> Result<Lookup, String> {
        if let Some(h) = self.store.handshake(id).await.map_err(|e| e.to_string())? {
            return Ok(Lookup::Found(Box::new(h)));
        }
        let left = self.grace.saturating_sub(RETRY_EVERY * round);
        if left.is_zero() {
            return Ok(Lookup::Unknown);
        }
        let Some(slot) = self
            .store
            .take_grace_slot(GRACE_WAITS, self.clock.now(), left + Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?
        else {
            tracing::info!(round, "every grace wait is taken: the page will retry");
            return Ok(Lookup::Retry { round: round + 1 });
        };
        let found = self.wait_for_handshake(id, left).await;
        if let Err(e) = self.store.release_grace_slot(&slot).await {
            tracing::warn!(error = %e, "could not release a grace wait; its lease ends it");
        }
        Ok(match found? {
            Some(h) => Lookup::Found(Box::new(h)),
            None => Lookup::Unknown,
        })
    }

    async fn wait_for_handshake(
        &self,
        id: Uuid,
        wait: Duration,
    ) -> Result<Option<Handshake>, String> {
        let started = std::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(h) = self.store.handshake(id).await.map_err(|e| e.to_string())? {
                return Ok(Some(h));
            }
            if started.elapsed() >= wait {
                return Ok(None);
            }
        }
    }

    /// The page that loads this start link again, one round later.
    fn retry_page(params: &HashMap<String, String>, round: u32) -> PageOutcome {
        let mut pairs: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, _)| k.as_str() != RETRY_PARAM)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pairs.sort();
        let round = round.to_string();
        pairs.push((RETRY_PARAM, &round));
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        PageOutcome::Page {
            status: 200,
            html: pages::retry_page(
                "Connecting to your bank",
                "We are waiting for Sage to confirm this request. This page will try again in a moment.",
                &format!("?{query}"),
                RETRY_EVERY.as_secs().max(1),
            ),
        }
    }

    fn refusal_page(r: HandshakeRefusal) -> PageOutcome {
        match r {
            HandshakeRefusal::Unknown => page(
                403,
                "We could not find this request",
                "Please start again from your Sage product.",
                None,
            ),
            HandshakeRefusal::Expired => page(
                410,
                "This request has expired",
                "The link is valid for 20 minutes. Please start again from your Sage product.",
                None,
            ),
            HandshakeRefusal::Completed => page(
                409,
                "This request is already complete",
                "Your bank connection was already set up with this link. Please return to your Sage product.",
                None,
            ),
            HandshakeRefusal::InProgress => page(
                409,
                "This request is being completed",
                "Your bank connection is being set up in another window or tab. Please return to your Sage product, or try again in a minute.",
                None,
            ),
        }
    }

    /// `GET /auth` or `GET /authrefresh`.
    pub async fn start(&self, flow: Flow, req: &BrowserRequest<'_>) -> PageOutcome {
        guarded(flow, self.try_start(flow, req)).await
    }

    async fn try_start(&self, flow: Flow, req: &BrowserRequest<'_>) -> Result<PageOutcome, String> {
        let p = req.params;
        let link = match StartLink::parse(
            |k| p.get(k).map(String::as_str),
            flow == Flow::AuthRefresh,
            &self.allow,
        ) {
            Ok(link) => link,
            Err(e) => {
                tracing::warn!(reason = %e, "start link refused");
                return Ok(invalid_link());
            }
        };
        let StartLink {
            authorisation_id,
            redirect: redirect_url,
            state,
            bank,
            external_id,
            cross_check,
        } = link;
        tracing::Span::current().record(
            "authorisationId",
            tracing::field::display(&authorisation_id),
        );
        let round = p
            .get(RETRY_PARAM)
            .and_then(|r| r.parse::<u32>().ok())
            .unwrap_or(0);
        let handshake = match self.find_handshake(authorisation_id, round).await? {
            Lookup::Found(h) => *h,
            Lookup::Unknown => {
                tracing::warn!("unknown authorisation_id");
                return Ok(Self::refusal_page(HandshakeRefusal::Unknown));
            }
            Lookup::Retry { round } => return Ok(Self::retry_page(p, round)),
        };
        if let (Some(b), Some(expected)) = (bank, handshake.bank_id)
            && b != expected
        {
            tracing::warn!("bank does not match the authorisation");
            return Ok(page(
                403,
                "We could not find this request",
                "Please start again from your Sage product.",
                None,
            ));
        }
        if let Some(ext) = &external_id {
            let Some(_) = self
                .store
                .granted_account(ext)
                .await
                .map_err(|e| e.to_string())?
            else {
                tracing::warn!(externalId = %ext, "re-authorisation for an unknown account");
                return Ok(page(
                    403,
                    "We could not find this account",
                    "Please start again from your Sage product.",
                    None,
                ));
            };
            // `bankaccount` is a cross-check only (spec §4.4 Decision): a bankAccountId of this
            // externalId, or the bankId.
            if let Some(cross) = cross_check {
                let links = self
                    .store
                    .accounts_for_external_id(ext)
                    .await
                    .map_err(|e| e.to_string())?;
                let known = links.iter().any(|l| l.bank_account_id == cross)
                    || handshake.bank_id == Some(cross);
                if !known {
                    tracing::warn!("bankaccount does not belong to externalId");
                    return Ok(page(
                        403,
                        "We could not find this account",
                        "Please start again from your Sage product.",
                        None,
                    ));
                }
            }
        }
        let session = BrowserSession {
            flow,
            redirect_uri: redirect_url.to_string(),
            client_state: state.clone(),
            ui_token: random_token(),
            bank_state: random_token(),
            pkce_verifier: self.sign_in.new_verifier(),
            external_id,
            bank_id: handshake.bank_id.or(bank),
        };
        match self
            .store
            .open_handshake(authorisation_id, &session, self.clock.now())
            .await
            .map_err(|e| e.to_string())?
        {
            Ok(_) => Ok(PageOutcome::Page {
                status: 200,
                html: pages::consent_page(
                    Self::path(flow),
                    &self.bank_name,
                    flow == Flow::AuthRefresh,
                    &authorisation_id.to_string(),
                    &session.ui_token,
                ),
            }),
            Err(r) => Ok(Self::refusal_page(r)),
        }
    }

    /// `POST /auth` or `POST /authrefresh`: the customer chose to continue or to cancel.
    pub async fn proceed(&self, flow: Flow, req: &BrowserRequest<'_>) -> PageOutcome {
        guarded(flow, self.try_proceed(flow, req)).await
    }

    /// The handshake of a form or callback, if it is still usable by this browser.
    async fn usable(
        &self,
        id: Uuid,
        flow: Flow,
    ) -> Result<Result<(Handshake, BrowserSession), PageOutcome>, String> {
        let Some(h) = self.store.handshake(id).await.map_err(|e| e.to_string())? else {
            return Ok(Err(Self::refusal_page(HandshakeRefusal::Unknown)));
        };
        if let Some(refusal) = h.refusal(self.clock.now()) {
            return Ok(Err(Self::refusal_page(refusal)));
        }
        match h.browser.clone() {
            Some(s) if s.flow == flow => Ok(Ok((h, s))),
            _ => Ok(Err(invalid_link())),
        }
    }

    async fn try_proceed(
        &self,
        flow: Flow,
        req: &BrowserRequest<'_>,
    ) -> Result<PageOutcome, String> {
        let p = req.params;
        let Some(Ok(id)) = p.get("authorisation_id").map(|v| Uuid::parse_str(v.trim())) else {
            return Ok(invalid_link());
        };
        tracing::Span::current().record("authorisationId", tracing::field::display(&id));
        let (_, session) = match self.usable(id, flow).await? {
            Ok(x) => x,
            Err(page) => return Ok(page),
        };
        // Only the newest page load's form works (spec §4.2 step 5).
        if !same_secret(
            p.get("ui_token").map(String::as_str).unwrap_or(""),
            &session.ui_token,
        ) {
            return Ok(page(
                409,
                "This page is out of date",
                "It was opened again in another tab or window. Please use the newest one, or start again from your Sage product.",
                None,
            ));
        }
        if p.get("action").map(String::as_str) == Some("cancel") {
            return self
                .report(
                    flow,
                    id,
                    &session,
                    AuthorisationStatus::Cancelled,
                    Vec::new(),
                )
                .await;
        }
        let renew = match flow {
            Flow::Auth => None,
            Flow::AuthRefresh => {
                let ext = session.external_id.clone().unwrap_or_default();
                self.store
                    .granted_account(&ext)
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|g| g.consent_id)
            }
        };
        let location = self
            .sign_in
            .sign_in_url(
                &Self::callback_url(flow, &req.origin),
                &format!("{id}.{}", session.bank_state),
                &session.pkce_verifier,
                renew.as_deref(),
            )
            .map_err(|e| e.to_string())?;
        Ok(PageOutcome::Redirect { location })
    }

    /// `GET /auth/callback` or `GET /authrefresh/callback`: back from the bank.
    pub async fn callback(&self, flow: Flow, req: &BrowserRequest<'_>) -> PageOutcome {
        guarded(flow, self.try_callback(flow, req)).await
    }

    async fn try_callback(
        &self,
        flow: Flow,
        req: &BrowserRequest<'_>,
    ) -> Result<PageOutcome, String> {
        let p = req.params;
        let Some((id_text, secret)) = p.get("state").and_then(|s| s.split_once('.')) else {
            return Ok(invalid_link());
        };
        let Ok(id) = Uuid::parse_str(id_text) else {
            return Ok(invalid_link());
        };
        tracing::Span::current().record("authorisationId", tracing::field::display(&id));
        let (handshake, session) = match self.usable(id, flow).await? {
            Ok(x) => x,
            Err(page) => return Ok(page),
        };
        if !same_secret(secret, &session.bank_state) {
            return Ok(invalid_link());
        }
        if let Some(error) = p.get("error") {
            if p.get("error_description").map(String::as_str) == Some("consent_owner_mismatch") {
                tracing::warn!("re-authorisation by a customer who does not own the account");
                return Ok(self.not_owner(&session));
            }
            let status = if error == "access_denied" {
                AuthorisationStatus::Cancelled
            } else {
                AuthorisationStatus::Error
            };
            return self.report(flow, id, &session, status, Vec::new()).await;
        }
        let Some(code) = p.get("code").filter(|c| !c.is_empty() && c.len() <= 2048) else {
            return Ok(invalid_link());
        };
        let callback = Self::callback_url(flow, &req.origin);
        let consent_id = match self
            .sign_in
            .granted_consent(code, &callback, &session.pkce_verifier)
            .await
        {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "code exchange failed");
                return self
                    .report(flow, id, &session, AuthorisationStatus::Error, Vec::new())
                    .await;
            }
        };
        let consent = match self.bank.consent(&consent_id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "consent read failed");
                return self
                    .report(flow, id, &session, AuthorisationStatus::Error, Vec::new())
                    .await;
            }
        };
        match flow {
            Flow::Auth => {
                self.remember(&consent, handshake.bank_id.or(session.bank_id))
                    .await?;
                let accounts = patched_accounts(&consent);
                if accounts.is_empty() {
                    return self
                        .report(
                            flow,
                            id,
                            &session,
                            AuthorisationStatus::Cancelled,
                            Vec::new(),
                        )
                        .await;
                }
                self.report(flow, id, &session, AuthorisationStatus::Success, accounts)
                    .await
            }
            Flow::AuthRefresh => {
                let ext = session.external_id.clone().unwrap_or_default();
                let grant = self
                    .store
                    .granted_account(&ext)
                    .await
                    .map_err(|e| e.to_string())?
                    .filter(|g| {
                        g.customer_id == consent.customer_id && g.consent_id == consent.consent_id
                    });
                let Some(grant) = grant else {
                    tracing::warn!("renewed consent does not cover the account");
                    return Ok(self.not_owner(&session));
                };
                let bank_id = grant.bank_id.or(handshake.bank_id).or(session.bank_id);
                self.remember(&consent, bank_id).await?;
                self.report(flow, id, &session, AuthorisationStatus::Success, Vec::new())
                    .await
            }
        }
    }

    fn not_owner(&self, session: &BrowserSession) -> PageOutcome {
        let back = url::Url::parse(&session.redirect_uri)
            .ok()
            .map(|u| with_state(&u, &session.client_state));
        page(
            403,
            "This account belongs to someone else",
            "Please sign in as the customer who connected this account.",
            back.as_deref(),
        )
    }

    /// The Provider API client of the authorisation's bank (as its notification named it, or as
    /// the settings that verified it told); read only when some bank has a client of its own.
    async fn provider_for_handshake(&self, id: Uuid) -> Result<Arc<dyn StatementApi>, String> {
        let bank = if self.providers.per_bank() {
            self.store
                .handshake(id)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|h| h.bank_id)
        } else {
            None
        };
        Ok(self.providers.for_bank(bank))
    }

    /// Records what the bank granted: the consent and, per account, its consent (used by the
    /// backfill, `/availableaccounts` and re-authorisation).
    async fn remember(&self, consent: &BankConsent, bank_id: Option<Uuid>) -> Result<(), String> {
        let record = consent.record(bank_id, self.clock.now());
        for g in &record.accounts {
            self.store
                .put_granted_account(g)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.store
            .cache_consent(&record)
            .await
            .map_err(|e| e.to_string())
    }

    /// Claims the handshake, PATCHes the outcome, completes the handshake once the PATCH
    /// succeeded (spec §4.3 step 3), then sends the browser back.
    async fn report(
        &self,
        flow: Flow,
        id: Uuid,
        session: &BrowserSession,
        status: AuthorisationStatus,
        accounts: Vec<PatchedAccount>,
    ) -> Result<PageOutcome, String> {
        let back = url::Url::parse(&session.redirect_uri)
            .map(|u| with_state(&u, &session.client_state))
            .map_err(|e| e.to_string())?;
        let claim = match self
            .store
            .claim_handshake(id, self.clock.now(), PATCH_LEASE)
            .await
            .map_err(|e| e.to_string())?
        {
            Ok(claim) => claim,
            Err(r) => return Ok(Self::refusal_page(r)),
        };
        let patch = AuthorisationPatch {
            data: AuthorisationPatchData {
                status,
                bank_accounts: accounts,
            },
        };
        let provider = self.provider_for_handshake(id).await?;
        let mut attempt = 0;
        loop {
            match provider.patch_authorisation(id, &patch).await {
                Ok(()) => break,
                Err(e)
                    if retry_wait(&e).is_some_and(|w| w <= MAX_PATCH_WAIT)
                        && attempt + 1 < self.patch_retries =>
                {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "PATCH authorisation failed; retrying");
                    // Banking Service's Retry-After when it names one: the customer waits.
                    let wait = match e {
                        CallError::RateLimited {
                            retry_after: Some(w),
                        } => w,
                        _ => Duration::from_millis(300 * u64::from(attempt)),
                    };
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "PATCH authorisation failed");
                    match self.store.release_handshake(&claim).await {
                        Ok(true) => {}
                        Ok(false) => tracing::error!("the claim on the handshake was lost"),
                        Err(e) => tracing::error!(error = %e, "could not release the handshake"),
                    }
                    return Ok(page(
                        500,
                        "We could not finish connecting your bank",
                        "Sage could not be reached. You can return to Sage and try again.",
                        Some(&back),
                    ));
                }
            }
        }
        // Banking Service has the outcome: the browser goes back whatever happens here. If the
        // completion is not written, the claim lapses and a late retry's PATCH is refused by
        // Banking Service as already completed.
        match self.store.complete_handshake(&claim).await {
            Ok(true) => {}
            Ok(false) => tracing::error!("the claim on the handshake lapsed before completion"),
            Err(e) => tracing::error!(error = %e, "could not complete the handshake"),
        }
        tracing::info!(?status, "authorisation reported to Banking Service");
        if flow == Flow::AuthRefresh && status == AuthorisationStatus::Success {
            self.resume(session).await?;
        }
        Ok(PageOutcome::Redirect { location: back })
    }

    /// A renewed consent covers every account under it: they leave `authRequired` and push.
    async fn resume(&self, session: &BrowserSession) -> Result<(), String> {
        let ext = session.external_id.clone().unwrap_or_default();
        let Some(granted) = self
            .store
            .granted_account(&ext)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let consent = self
            .store
            .cached_consent(&granted.consent_id)
            .await
            .map_err(|e| e.to_string())?;
        let externals: Vec<String> = consent
            .map(|c| c.accounts.into_iter().map(|a| a.external_id).collect())
            .unwrap_or_else(|| vec![ext]);
        for external in externals {
            for link in self
                .store
                .accounts_for_external_id(&external)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|l| !l.cancelled)
            {
                let id = link.bank_account_id;
                if !self
                    .store
                    .set_account_status(id, AccountStatus::Active)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    continue;
                }
                let account = self
                    .store
                    .get_account(id)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(a) = account.filter(|a| a.backfill == BackfillState::Pending) {
                    self.queues
                        .send_work(&WorkMessage::BackfillPage {
                            bank_account_id: id,
                            cursor: a.backfill_cursor,
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                } else {
                    self.queues
                        .kick(&Kick {
                            bank_account_id: id,
                            claim: None,
                            attempt: None,
                            reason: KickReason::Reauthorised,
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                }
                tracing::info!(bankAccountId = %id, "account resumed after re-authorisation");
            }
        }
        Ok(())
    }
}

/// The accounts of a consent as `PATCH /v1/authorisations` lists them (spec §6.3 limits).
pub fn patched_accounts(consent: &BankConsent) -> Vec<PatchedAccount> {
    consent
        .accounts
        .iter()
        .filter(|a| !a.account_id.is_empty())
        .map(|a| PatchedAccount {
            bank_account_external_id: truncate_chars(&a.account_id, 255),
            account_name: truncate_chars(
                if a.name.is_empty() {
                    "Account"
                } else {
                    &a.name
                },
                128,
            ),
            bank_identifier: truncate_chars(
                a.bank_code
                    .as_deref()
                    .filter(|c| !c.is_empty())
                    .unwrap_or(&consent.customer_id),
                64,
            ),
            branch_identifier: a
                .branch
                .as_deref()
                .filter(|b| !b.is_empty())
                .map(|b| truncate_chars(b, 128)),
            account_identifier: truncate_chars(
                if a.identifier.is_empty() {
                    &a.account_id
                } else {
                    &a.identifier
                },
                64,
            ),
        })
        .collect()
}

/// The `Retry-After` of a PATCH failure worth retrying (zero when it names none); `None` when
/// retrying cannot help.
fn retry_wait(e: &CallError) -> Option<Duration> {
    match e {
        CallError::RateLimited { retry_after } => Some(retry_after.unwrap_or(Duration::ZERO)),
        CallError::Transient(_) => Some(Duration::ZERO),
        _ => None,
    }
}

/// The step of `flow` a browser request asks for, and its outcome.
pub async fn answer(flows: &BrowserFlows, flow: Flow, req: &PageRequest<'_>) -> PageOutcome {
    let Some(origin) = flows.public_base.origin(req.gateway_domain) else {
        tracing::error!("no public base URL: API Gateway named no domain for the request");
        return PageOutcome::Page {
            status: 500,
            html: pages::error_page(
                "Something went wrong",
                "Please try again in a moment.",
                None,
            ),
        };
    };
    match req.method {
        "GET" => {
            let step = BrowserRequest {
                params: &req.query,
                origin,
            };
            if req.path.ends_with("/callback") {
                flows.callback(flow, &step).await
            } else {
                flows.start(flow, &step).await
            }
        }
        "POST" if req.body.len() > MAX_FORM => PageOutcome::Page {
            status: 413,
            html: pages::error_page(
                "Request too large",
                "Please start again from your Sage product.",
                None,
            ),
        },
        "POST" => {
            let form = req.form();
            let step = BrowserRequest {
                params: &form,
                origin,
            };
            flows.proceed(flow, &step).await
        }
        _ => PageOutcome::Page {
            status: 405,
            html: pages::error_page(
                "Not allowed",
                "Please start again from your Sage product.",
                None,
            ),
        },
    }
}

#[cfg(test)]
#[path = "browser_tests.rs"]
mod flow_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_base_url_is_configured_or_api_gateways_domain() {
        let gateway = "abc123.execute-api.eu-west-1.amazonaws.com";
        assert_eq!(
            PublicBase::ApiGateway.origin(Some(gateway)).as_deref(),
            Some("https://abc123.execute-api.eu-west-1.amazonaws.com")
        );
        let custom = PublicBase::Configured("https://connector.examplebank.com".into());
        assert_eq!(
            custom.origin(Some(gateway)).as_deref(),
            Some("https://connector.examplebank.com")
        );
        // No domain from API Gateway, or not a plain host name: no URL at all.
        assert_eq!(PublicBase::ApiGateway.origin(None), None);
        assert_eq!(PublicBase::ApiGateway.origin(Some("evil.example/x?")), None);
        assert_eq!(PublicBase::ApiGateway.origin(Some("")), None);
    }

    #[test]
    fn the_retry_page_reloads_the_same_link_one_round_later() {
        let params: HashMap<String, String> = [
            ("bank", "b1"),
            ("authorisation_id", "a1"),
            ("redirect_uri", "https://x.sagebankdrive.com/r?q=1"),
            ("state", "s \"1\""),
            (RETRY_PARAM, "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let PageOutcome::Page { status, html } = BrowserFlows::retry_page(&params, 3) else {
            panic!("a page");
        };
        assert_eq!(status, 200);
        assert!(
            html.contains(
                "content=\"1;url=?authorisation_id=a1&amp;bank=b1&amp;redirect_uri=https%3A%2F%2Fx.sagebankdrive.com%2Fr%3Fq%3D1&amp;state=s+%221%22&amp;grace_retry=3\""
            ),
            "{html}"
        );
    }
}
