//! The bank's side: one small contract, `docs/bank-data-api.md`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, Utc};
use connector_domain::amount;
use connector_domain::payouts::authorise::{ConsentAccount, ConsentView};
use connector_domain::payouts::batches::BankEvent;
use connector_domain::ports::{BoxFuture, LoginError, SubmitError, Submitted};
use connector_sage::Secret;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod history;

#[derive(Debug, Clone)]
pub struct BankConfig {
    /// Base URL of the Bank Data API (`BANK_API_URL`).
    pub base_url: String,
    pub client_id: String,
    pub client_secret: Secret,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BankError {
    /// The customer's consent is over: the account needs re-authorisation.
    #[error("the consent has expired or was revoked")]
    ConsentExpired,
    #[error("not found at the bank")]
    NotFound,
    /// The authorization code, verifier or redirect did not match (also: code reused).
    #[error("the bank refused the grant")]
    InvalidGrant,
    /// Our client credentials were refused: configuration.
    #[error("the bank refused the connector's credentials")]
    Unauthorized,
    #[error("the bank is unavailable: {0}")]
    Unavailable(String),
    #[error("the bank answered something unexpected: {0}")]
    Unexpected(String),
}

/// PKCE pair (RFC 7636, S256).
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self::from_verifier(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The pair of a stored verifier.
    pub fn from_verifier(verifier: String) -> Self {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BankAccount {
    pub account_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub identifier: String,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub bank_code: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    pub consent_id: String,
    pub customer_id: String,
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub accounts: Vec<BankAccount>,
}

impl Consent {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.status == "active" && self.expires_at > now
    }
}

/// The answer of the token endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct GrantedConsent {
    pub consent_id: String,
    pub customer_id: String,
    #[serde(default)]
    pub consent_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankTransaction {
    pub transaction_id: String,
    pub booked_at: DateTime<Utc>,
    #[serde(with = "amount::decimal_string")]
    pub amount: Decimal,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub status: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub counterparty: Option<String>,
    #[serde(default, with = "amount::decimal_string_opt")]
    pub balance_after: Option<Decimal>,
    /// Where the transaction happened, as the Provider API's `coordinates`.
    #[serde(default)]
    pub coordinates: Option<serde_json::Value>,
    /// The bank's classification, as the Provider API's `category`.
    #[serde(default)]
    pub category: Option<serde_json::Value>,
    /// The bank's own name/value pairs (`providerAdditionalFields` at Banking Service).
    #[serde(default)]
    pub additional_fields: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankBalance {
    #[serde(with = "amount::decimal_string")]
    pub ledger: Decimal,
    #[serde(default, with = "amount::decimal_string_opt")]
    pub available: Option<Decimal>,
    pub as_of: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionPage {
    pub transactions: Vec<BankTransaction>,
    #[serde(default)]
    pub next_cursor: Option<String>,
    #[serde(default)]
    pub balance: Option<BankBalance>,
}

pub struct BankClient {
    http: reqwest::Client,
    config: BankConfig,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
}

impl BankClient {
    pub fn new(http: reqwest::Client, config: BankConfig) -> Self {
        Self { http, config }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.config.base_url.trim_end_matches('/'), path)
    }

    /// Where to send the customer's browser to log in (and consent, or renew `consent_id`).
    pub fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        pkce: &Pkce,
        renew_consent: Option<&str>,
    ) -> Result<url::Url, BankError> {
        self.authorize_url_for(
            redirect_uri,
            state,
            &pkce.challenge,
            "openid accounts transactions",
            renew_consent,
        )
    }

    /// As [`Self::authorize_url`], for `scope` (Payments Out asks for payments too).
    pub fn authorize_url_for(
        &self,
        redirect_uri: &str,
        state: &str,
        challenge: &str,
        scope: &str,
        renew_consent: Option<&str>,
    ) -> Result<url::Url, BankError> {
        let mut url = url::Url::parse(&self.url("/oauth/authorize"))
            .map_err(|e| BankError::Unexpected(format!("BANK_API_URL: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("state", state)
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("scope", scope);
            if let Some(c) = renew_consent {
                q.append_pair("consent_id", c);
            }
        }
        Ok(url)
    }

    /// Sends `request` with the connector's credentials at the bank (read again when stale).
    async fn send_authed(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let secret = self.config.client_secret.fresh().await;
        let response = request
            .basic_auth(&self.config.client_id, Some(&*secret))
            .send()
            .await?;
        self.note_refusal(response.status());
        Ok(response)
    }

    /// A 401/403 may mean the secret was rotated: the next call reads it again.
    fn note_refusal(&self, status: reqwest::StatusCode) {
        if matches!(status.as_u16(), 401 | 403) {
            self.config.client_secret.refused();
        }
    }

    async fn error_of(response: reqwest::Response) -> BankError {
        let status = response.status().as_u16();
        let code = response
            .json::<ErrorBody>()
            .await
            .ok()
            .and_then(|b| b.error)
            .unwrap_or_default();
        match (status, code.as_str()) {
            (403, "consent_expired" | "consent_revoked") => BankError::ConsentExpired,
            (404, _) => BankError::NotFound,
            (400, "invalid_grant") => BankError::InvalidGrant,
            (401, _) => BankError::Unauthorized,
            (s, _) if s >= 500 || s == 429 => BankError::Unavailable(format!("HTTP {s}")),
            (s, c) => BankError::Unexpected(format!("HTTP {s} {c}")),
        }
    }

    fn transport(e: reqwest::Error) -> BankError {
        BankError::Unavailable(if e.is_timeout() {
            "timed out".into()
        } else {
            "request failed".into()
        })
    }

    /// Exchanges the authorization code (with the PKCE verifier) for the consent.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<GrantedConsent, BankError> {
        let secret = self.config.client_secret.fresh().await;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", &*secret),
            ("code_verifier", verifier),
        ];
        let response = self
            .http
            .post(self.url("/oauth/token"))
            .form(&form)
            .send()
            .await
            .map_err(Self::transport)?;
        self.note_refusal(response.status());
        if !response.status().is_success() {
            return Err(Self::error_of(response).await);
        }
        response
            .json()
            .await
            .map_err(|e| BankError::Unexpected(format!("token answer: {e}")))
    }

    pub async fn consent(&self, consent_id: &str) -> Result<Consent, BankError> {
        let response = self
            .send_authed(
                self.http
                    .get(self.url(&format!("/v1/consents/{}", segment(consent_id)))),
            )
            .await
            .map_err(Self::transport)?;
        if !response.status().is_success() {
            return Err(Self::error_of(response).await);
        }
        response
            .json()
            .await
            .map_err(|e| BankError::Unexpected(format!("consent: {e}")))
    }

    pub async fn transactions(
        &self,
        consent_id: &str,
        account_id: &str,
        from: NaiveDate,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<TransactionPage, BankError> {
        let mut req = self
            .http
            .get(self.url(&format!(
                "/v1/accounts/{}/transactions",
                segment(account_id)
            )))
            .header("X-Consent-Id", consent_id)
            .query(&[
                ("from", from.format("%Y-%m-%d").to_string()),
                ("limit", limit.to_string()),
            ]);
        if let Some(c) = cursor {
            req = req.query(&[("cursor", c)]);
        }
        let response = self.send_authed(req).await.map_err(Self::transport)?;
        if !response.status().is_success() {
            return Err(Self::error_of(response).await);
        }
        response
            .json()
            .await
            .map_err(|e| BankError::Unexpected(format!("transactions: {e}")))
    }
}

impl BankClient {
    /// `GET /v1/accounts/{accountId}/balances`: the account's balances now.
    pub async fn balances(
        &self,
        consent_id: &str,
        account_id: &str,
    ) -> Result<BankBalance, BankError> {
        let response = self
            .send_authed(
                self.http
                    .get(self.url(&format!("/v1/accounts/{}/balances", segment(account_id))))
                    .header("X-Consent-Id", consent_id),
            )
            .await
            .map_err(Self::transport)?;
        if !response.status().is_success() {
            return Err(Self::error_of(response).await);
        }
        response
            .json()
            .await
            .map_err(|e| BankError::Unexpected(format!("balances: {e}")))
    }
}

/// Keeps an id from changing the request path.
fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// The client as the pipeline's port.
impl connector_domain::ports::BankReader for BankClient {
    fn balances<'a>(
        &'a self,
        consent_id: &'a str,
        external_id: &'a str,
    ) -> connector_domain::ports::BoxFuture<
        'a,
        Result<connector_domain::ports::BankBalances, connector_domain::ports::BankCallError>,
    > {
        use connector_domain::ports::{BankBalances, BankCallError};
        Box::pin(async move {
            match BankClient::balances(self, consent_id, external_id).await {
                Ok(b) => Ok(BankBalances {
                    ledger: b.ledger,
                    available: b.available,
                    as_of: b.as_of,
                }),
                Err(BankError::Unavailable(e)) => Err(BankCallError::Unavailable(e)),
                Err(e) => Err(BankCallError::Refused(e.to_string())),
            }
        })
    }

    fn consent<'a>(
        &'a self,
        consent_id: &'a str,
    ) -> connector_domain::ports::BoxFuture<
        'a,
        Result<connector_domain::account::BankConsent, connector_domain::ports::BankCallError>,
    > {
        use connector_domain::account::{BankConsent, ConsentedAccount};
        use connector_domain::ports::BankCallError;
        Box::pin(async move {
            let c = BankClient::consent(self, consent_id)
                .await
                .map_err(|e| match e {
                    BankError::Unavailable(e) => BankCallError::Unavailable(e),
                    e => BankCallError::Refused(e.to_string()),
                })?;
            Ok(BankConsent {
                consent_id: c.consent_id,
                customer_id: c.customer_id,
                status: c.status,
                expires_at: c.expires_at,
                accounts: c
                    .accounts
                    .into_iter()
                    .map(|a| ConsentedAccount {
                        account_id: a.account_id,
                        name: a.name,
                        kind: a.kind,
                        identifier: a.identifier,
                        branch: a.branch,
                        bank_code: a.bank_code,
                    })
                    .collect(),
            })
        })
    }

    fn consent_active<'a>(
        &'a self,
        consent_id: &'a str,
        now: DateTime<Utc>,
    ) -> connector_domain::ports::BoxFuture<'a, Result<bool, connector_domain::ports::BankCallError>>
    {
        use connector_domain::ports::BankCallError;
        Box::pin(async move {
            match self.consent(consent_id).await {
                Ok(c) => Ok(c.is_active(now)),
                Err(BankError::ConsentExpired | BankError::NotFound) => Ok(false),
                Err(e) => Err(BankCallError::Unavailable(e.to_string())),
            }
        })
    }
}

/// The sign-in of Banking Service's browser flows as their port.
impl connector_domain::ports::BankSignIn for BankClient {
    fn new_verifier(&self) -> String {
        Pkce::generate().verifier
    }

    fn sign_in_url(
        &self,
        redirect_uri: &str,
        state: &str,
        verifier: &str,
        renew_consent: Option<&str>,
    ) -> Result<String, connector_domain::ports::BankCallError> {
        BankClient::authorize_url(
            self,
            redirect_uri,
            state,
            &Pkce::from_verifier(verifier.to_string()),
            renew_consent,
        )
        .map(String::from)
        .map_err(|e| connector_domain::ports::BankCallError::Refused(e.to_string()))
    }

    fn granted_consent<'a>(
        &'a self,
        code: &'a str,
        redirect_uri: &'a str,
        verifier: &'a str,
    ) -> connector_domain::ports::BoxFuture<
        'a,
        Result<String, connector_domain::ports::BankCallError>,
    > {
        use connector_domain::ports::BankCallError;
        Box::pin(async move {
            BankClient::exchange_code(self, code, redirect_uri, verifier)
                .await
                .map(|g| g.consent_id)
                .map_err(|e| match e {
                    BankError::Unavailable(e) => BankCallError::Unavailable(e),
                    e => BankCallError::Refused(e.to_string()),
                })
        })
    }
}

/// The bank's payment rails (docs/bank-data-api.md §4) as the batches' port.
impl connector_domain::ports::BankPayments for BankClient {
    fn submit<'a>(
        &'a self,
        payment_id: uuid::Uuid,
        body: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<Submitted, SubmitError>> {
        Box::pin(async move {
            let response = self
                .send_authed(
                    self.http
                        .put(self.url(&format!("/v1/payments/{payment_id}")))
                        .json(body),
                )
                .await
                .map_err(|e| SubmitError::Unavailable(Self::transport(e).to_string()))?;
            match response.status().as_u16() {
                200 | 201 => Ok(Submitted::Accepted),
                422 => {
                    let refusal: serde_json::Value = response.json().await.unwrap_or_default();
                    let reasons = refusal["reasons"]
                        .as_array()
                        .map(|rs| {
                            rs.iter()
                                .filter_map(|r| r["code"].as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "invalid_payment".into());
                    Ok(Submitted::Refused(reasons))
                }
                409 => Err(SubmitError::Conflict),
                401 | 403 => Err(SubmitError::Configuration),
                s => Err(SubmitError::Unavailable(format!("HTTP {s}"))),
            }
        })
    }

    fn state(
        &self,
        payment_id: uuid::Uuid,
    ) -> BoxFuture<'_, Result<Option<BankEvent>, SubmitError>> {
        Box::pin(async move {
            let response = self
                .send_authed(
                    self.http
                        .get(self.url(&format!("/v1/payments/{payment_id}"))),
                )
                .await
                .map_err(|e| SubmitError::Unavailable(Self::transport(e).to_string()))?;
            match response.status().as_u16() {
                200 => {}
                404 => return Ok(None),
                401 | 403 => return Err(SubmitError::Configuration),
                s => return Err(SubmitError::Unavailable(format!("HTTP {s}"))),
            }
            let state: serde_json::Value = response
                .json()
                .await
                .map_err(|e| SubmitError::Unavailable(format!("payment state: {e}")))?;
            as_event(state).map(Some)
        })
    }

    fn cancel(
        &self,
        payment_id: uuid::Uuid,
    ) -> BoxFuture<'_, Result<connector_domain::ports::Cancelled, SubmitError>> {
        use connector_domain::ports::Cancelled;
        Box::pin(async move {
            let response = self
                .send_authed(
                    self.http
                        .delete(self.url(&format!("/v1/payments/{payment_id}"))),
                )
                .await
                .map_err(|e| SubmitError::Unavailable(Self::transport(e).to_string()))?;
            match response.status().as_u16() {
                200 | 204 => Ok(Cancelled::Cancelled),
                409 => Ok(Cancelled::NotCancellable),
                404 => Ok(Cancelled::Unknown),
                401 | 403 => Err(SubmitError::Configuration),
                s => Err(SubmitError::Unavailable(format!("HTTP {s}"))),
            }
        })
    }

    fn changed_after(
        &self,
        after: u64,
        since: Option<chrono::DateTime<chrono::Utc>>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<BankEvent>, SubmitError>> {
        Box::pin(async move {
            let mut query = format!("/v1/payments?cursor={after}&limit={limit}");
            if let Some(since) = since {
                let since = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                query += &format!("&updatedSince={since}");
            }
            let response = self
                .send_authed(self.http.get(self.url(&query)))
                .await
                .map_err(|e| SubmitError::Unavailable(Self::transport(e).to_string()))?;
            match response.status().as_u16() {
                200 => {}
                401 | 403 => return Err(SubmitError::Configuration),
                s => return Err(SubmitError::Unavailable(format!("HTTP {s}"))),
            }
            #[derive(serde::Deserialize)]
            struct Page {
                payments: Vec<serde_json::Value>,
            }
            let page: Page = response
                .json()
                .await
                .map_err(|e| SubmitError::Unavailable(format!("payment list: {e}")))?;
            // An entry that does not read as a payment of ours (say, a payment id that is not
            // a UUID) is logged and left out, so that it cannot hold the feed back.
            Ok(page
                .payments
                .into_iter()
                .filter_map(|entry| match as_event(entry.clone()) {
                    Ok(event) => Some(event),
                    Err(e) => {
                        tracing::warn!(%entry, error = %e, "an entry of the bank's payment list that does not read: left out");
                        None
                    }
                })
                .collect())
        })
    }
}

/// A payment's state as the bank shows it (`GET /v1/payments/{id}`, or an entry of the list),
/// read as the event that would have told it.
fn as_event(mut state: serde_json::Value) -> Result<BankEvent, SubmitError> {
    let payment_id = state["paymentId"].as_str().unwrap_or_default().to_string();
    state["eventId"] = format!("read-{payment_id}-{}", state["eventSeq"]).into();
    serde_json::from_value(state)
        .map_err(|e| SubmitError::Unavailable(format!("payment state: {e}")))
}

/// The client as the authorisation page's port.
impl connector_domain::ports::BankLogin for BankClient {
    fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        challenge: &str,
        scope: &str,
    ) -> Result<String, LoginError> {
        self.authorize_url_for(redirect_uri, state, challenge, scope, None)
            .map(String::from)
            .map_err(|e| LoginError::Configuration(e.to_string()))
    }

    fn exchange_code<'a>(
        &'a self,
        code: &'a str,
        redirect_uri: &'a str,
        verifier: &'a str,
    ) -> BoxFuture<'a, Result<(String, String), LoginError>> {
        Box::pin(async move {
            BankClient::exchange_code(self, code, redirect_uri, verifier)
                .await
                .map(|g| (g.customer_id, g.consent_id))
                .map_err(login_error)
        })
    }

    fn consent<'a>(
        &'a self,
        consent_id: &'a str,
    ) -> BoxFuture<'a, Result<ConsentView, LoginError>> {
        Box::pin(async move {
            let c = BankClient::consent(self, consent_id)
                .await
                .map_err(login_error)?;
            Ok(ConsentView {
                accounts: c
                    .accounts
                    .into_iter()
                    .map(|a| ConsentAccount {
                        account_id: a.account_id,
                        identifier: a.identifier,
                        bank_code: a.bank_code,
                        currency: a.currency,
                    })
                    .collect(),
                consent_id: c.consent_id,
                customer_id: c.customer_id,
                status: c.status,
                expires_at: c.expires_at,
            })
        })
    }
}

fn login_error(e: BankError) -> LoginError {
    match e {
        BankError::InvalidGrant => LoginError::InvalidGrant,
        BankError::ConsentExpired | BankError::NotFound => LoginError::Consent(e.to_string()),
        BankError::Unauthorized | BankError::Unexpected(_) => {
            LoginError::Configuration(e.to_string())
        }
        BankError::Unavailable(e) => LoginError::Unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_rfc_7636_s256() {
        // RFC 7636, Appendix B: the example verifier and its S256 challenge.
        let p = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(p.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn generated_verifiers_are_fresh_43_character_base64url() {
        let p = Pkce::generate();
        // 32 random bytes, base64url without padding: the 43 characters RFC 7636 §4.1 asks for
        // at least, from its unreserved set.
        assert_eq!(p.verifier.len(), 43);
        assert!(
            p.verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{}",
            p.verifier
        );
        assert_eq!(
            p.challenge,
            Pkce::from_verifier(p.verifier.clone()).challenge
        );
        assert_ne!(Pkce::generate().verifier, p.verifier);
    }
}
