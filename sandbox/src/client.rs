//! A typed client of a running sandbox's `/_sandbox/...` API (control, inspection, driver),
//! for tests that run the sandbox out of process (or in process, over HTTP).

use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::bank::{AccountSummary, BankTransaction, CustomerView, NewCustomer};
use crate::driver::http::DriverFailure;
use crate::driver::{
    CreatedAccount, DriverError, NotificationRequest, OnboardOptions, OnboardOutcome, ProbeOutcome,
    ProbeVariant, ReauthOptions, ReauthOutcome,
};
use crate::model::*;
use crate::product::CandidateView;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{method} {url}: {error}")]
    Http {
        method: String,
        url: String,
        error: String,
    },
    #[error("{method} {url}: status {status}: {body}")]
    Status {
        method: String,
        url: String,
        status: u16,
        body: String,
    },
    #[error("driver check failed: {0}")]
    Driver(DriverError),
    #[error("{url}: cannot decode the answer: {error}")]
    Decode { url: String, error: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

#[derive(Clone, Debug)]
pub struct SandboxClient {
    base: String,
    http: reqwest::Client,
}

impl SandboxClient {
    pub fn new(base_url: impl Into<String>) -> Self {
        let base = base_url.into().trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_default();
        SandboxClient { base, http }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Http {
            method: method.to_string(),
            url: url.clone(),
            error: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Http {
            method: method.to_string(),
            url: url.clone(),
            error: e.to_string(),
        })?;
        if status == 422
            && let Ok(f) = serde_json::from_slice::<DriverFailure>(&bytes)
        {
            return Err(ClientError::Driver(f.error));
        }
        if !(200..300).contains(&status) {
            return Err(ClientError::Status {
                method: method.to_string(),
                url,
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            error: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(reqwest::Method::GET, path, None).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    // -------------------------------------------------------------- state

    pub async fn reset(&self) -> Result<(), ClientError> {
        self.post::<_, serde_json::Value>("/_sandbox/reset", &serde_json::json!({}))
            .await
            .map(|_| ())
    }

    pub async fn load_fixtures(&self, f: &Fixtures) -> Result<(), ClientError> {
        self.post::<_, serde_json::Value>("/_sandbox/fixtures", f)
            .await
            .map(|_| ())
    }

    pub async fn banks(&self) -> Result<Vec<BankView>, ClientError> {
        self.get("/_sandbox/banks").await
    }

    pub async fn accounts(&self) -> Result<Vec<AccountView>, ClientError> {
        self.get("/_sandbox/bankaccounts").await
    }

    pub async fn account(&self, id: Uuid) -> Result<AccountView, ClientError> {
        self.get(&format!("/_sandbox/bankaccounts/{id}")).await
    }

    /// The account's store in order, with sequence ids (`transactionId`) and `statementId`.
    pub async fn stored_transactions(
        &self,
        id: Uuid,
    ) -> Result<Vec<StoredTransaction>, ClientError> {
        self.get(&format!("/_sandbox/bankaccounts/{id}/transactions"))
            .await
    }

    /// The product view (with `transactionNarrative`), a page of 100 from `start_index`.
    pub async fn product_transactions(
        &self,
        id: Uuid,
        start_index: u64,
    ) -> Result<Vec<StoredTransaction>, ClientError> {
        self.get(&format!(
            "/_sandbox/bankaccounts/{id}/product-transactions?startIndex={start_index}"
        ))
        .await
    }

    /// Creates an account as the product would (`pending`) and sends `resourceCreated/bankAccount`.
    pub async fn create_account(
        &self,
        req: &CreateAccountRequest,
    ) -> Result<CreateAccountResponse, ClientError> {
        self.post("/_sandbox/bankaccounts", req).await
    }

    /// The product deletes the account: `cancelled`, store deleted, `resourceDeleted` sent.
    pub async fn delete_account(&self, id: Uuid) -> Result<CreateAccountResponse, ClientError> {
        self.call::<(), _>(
            reqwest::Method::DELETE,
            &format!("/_sandbox/bankaccounts/{id}"),
            None,
        )
        .await
    }

    pub async fn statements(
        &self,
        principal_id: Option<Uuid>,
    ) -> Result<Vec<StatementView>, ClientError> {
        match principal_id {
            Some(p) => {
                self.get(&format!("/_sandbox/statements?principalId={p}"))
                    .await
            }
            None => self.get("/_sandbox/statements").await,
        }
    }

    pub async fn statement(&self, id: Uuid) -> Result<StatementView, ClientError> {
        self.get(&format!("/_sandbox/statements/{id}")).await
    }

    /// Waits (polling the inspection API, not the Provider API) until the statement is terminal.
    pub async fn wait_statement_terminal(
        &self,
        id: Uuid,
        timeout: Duration,
    ) -> Result<StatementView, ClientError> {
        let start = Instant::now();
        loop {
            let s = self.statement(id).await?;
            if s.status.is_terminal() {
                return Ok(s);
            }
            if start.elapsed() > timeout {
                return Err(ClientError::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A statement in `accepting` (holds the account's in-flight lock).
    pub async fn create_accepting_statement(
        &self,
        principal_id: Uuid,
    ) -> Result<StatementView, ClientError> {
        self.post(
            "/_sandbox/statements",
            &AcceptingStatementRequest { principal_id },
        )
        .await
    }

    pub async fn submit_statement(&self, id: Uuid) -> Result<StatementView, ClientError> {
        self.post(
            &format!("/_sandbox/statements/{id}/submit"),
            &serde_json::json!({}),
        )
        .await
    }

    /// A token like Banking Service's notification bearer, in any variant (`None` for `Missing`).
    pub async fn mint_notification_token(
        &self,
        variant: crate::sageid::TokenVariant,
    ) -> Result<Option<String>, ClientError> {
        let v: serde_json::Value = self
            .post(
                "/_sandbox/tokens/notification",
                &serde_json::json!({ "variant": variant }),
            )
            .await?;
        Ok(v["token"].as_str().map(str::to_string))
    }

    pub async fn authorisations(&self) -> Result<Vec<AuthorisationView>, ClientError> {
        self.get("/_sandbox/authorisations").await
    }

    pub async fn authorisation(&self, id: Uuid) -> Result<AuthorisationView, ClientError> {
        self.get(&format!("/_sandbox/authorisations/{id}")).await
    }

    /// Creates an authorisation (a re-authorisation when `bank_account_id` is set), optionally announced.
    pub async fn create_authorisation(
        &self,
        bank_id: Uuid,
        bank_account_id: Option<Uuid>,
        notify: bool,
    ) -> Result<AuthorisationView, ClientError> {
        #[derive(serde::Deserialize)]
        struct Created {
            authorisation: AuthorisationView,
        }
        let body = serde_json::json!({ "bankId": bank_id, "bankAccountId": bank_account_id, "notify": notify });
        let c: Created = self.post("/_sandbox/authorisations", &body).await?;
        Ok(c.authorisation)
    }

    pub async fn notifications(&self) -> Result<Vec<NotificationAttempt>, ClientError> {
        self.get("/_sandbox/notifications").await
    }

    pub async fn requests(&self) -> Result<Vec<RequestLogEntry>, ClientError> {
        self.get("/_sandbox/requests").await
    }

    pub async fn violations(&self) -> Result<Vec<Violation>, ClientError> {
        self.get("/_sandbox/violations").await
    }

    /// Free-text fields of accepted statements longer than Banking Service stores them (stored
    /// truncated). Not violations: Banking Service accepts them; the connector should not send them.
    pub async fn overlong_fields(&self) -> Result<Vec<OverlongField>, ClientError> {
        self.get("/_sandbox/overlong-fields").await
    }

    pub async fn metrics(&self) -> Result<MetricsView, ClientError> {
        self.get("/_sandbox/metrics").await
    }

    pub async fn set_faults(&self, faults: &FaultSet) -> Result<(), ClientError> {
        self.call::<_, FaultSet>(reqwest::Method::PUT, "/_sandbox/faults", Some(faults))
            .await
            .map(|_| ())
    }

    pub async fn clear_faults(&self) -> Result<(), ClientError> {
        self.call::<(), FaultSet>(reqwest::Method::DELETE, "/_sandbox/faults", None)
            .await
            .map(|_| ())
    }

    pub async fn set_clock(&self, req: &ClockRequest) -> Result<ClockView, ClientError> {
        self.post("/_sandbox/clock", req).await
    }

    /// Returns how many token ids were revoked.
    pub async fn revoke_tokens(&self, req: &RevokeRequest) -> Result<u64, ClientError> {
        let v: serde_json::Value = self.post("/_sandbox/tokens/revoke", req).await?;
        Ok(v.get("revoked")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0))
    }

    /// Rotates the signing key; returns the new JWKS (current + previous).
    pub async fn rotate_keys(&self) -> Result<serde_json::Value, ClientError> {
        self.post("/_sandbox/keys/rotate", &serde_json::json!({}))
            .await
    }

    // -------------------------------------------------------------- demo bank control

    pub async fn bank_customers(&self) -> Result<Vec<CustomerView>, ClientError> {
        self.get("/_sandbox/bank/customers").await
    }

    pub async fn create_customer(&self, req: &NewCustomer) -> Result<CustomerView, ClientError> {
        self.post("/_sandbox/bank/customers", req).await
    }

    /// Opens an account at the bank; it joins the customer's consents.
    pub async fn open_bank_account(
        &self,
        customer: &str,
        kind: &str,
        name: Option<&str>,
    ) -> Result<AccountSummary, ClientError> {
        let body = serde_json::json!({ "type": kind, "name": name });
        self.post(
            &format!("/_sandbox/bank/customers/{customer}/accounts"),
            &body,
        )
        .await
    }

    /// Generates `count` new, later-dated booked transactions and returns them.
    pub async fn generate_transactions(
        &self,
        account_id: &str,
        count: usize,
    ) -> Result<Vec<BankTransaction>, ClientError> {
        self.post(
            &format!("/_sandbox/bank/accounts/{account_id}/transactions"),
            &serde_json::json!({ "count": count }),
        )
        .await
    }

    /// Every transaction of a bank account (booked and pending), in booking order.
    pub async fn bank_transactions(
        &self,
        account_id: &str,
    ) -> Result<Vec<BankTransaction>, ClientError> {
        self.get(&format!(
            "/_sandbox/bank/accounts/{account_id}/transactions"
        ))
        .await
    }

    pub async fn expire_consent(&self, consent_id: &str) -> Result<(), ClientError> {
        self.post::<_, serde_json::Value>(
            &format!("/_sandbox/bank/consents/{consent_id}/expire"),
            &serde_json::json!({}),
        )
        .await
        .map(|_| ())
    }

    pub async fn revoke_consent(&self, consent_id: &str) -> Result<(), ClientError> {
        self.post::<_, serde_json::Value>(
            &format!("/_sandbox/bank/consents/{consent_id}/revoke"),
            &serde_json::json!({}),
        )
        .await
        .map(|_| ())
    }

    // -------------------------------------------------------------- driver

    pub async fn onboard(&self, opts: &OnboardOptions) -> Result<OnboardOutcome, ClientError> {
        self.post("/_sandbox/driver/onboard", opts).await
    }

    pub async fn reauth(
        &self,
        bank_account_id: Uuid,
        opts: &ReauthOptions,
    ) -> Result<ReauthOutcome, ClientError> {
        let mut body = serde_json::to_value(opts).unwrap_or_default();
        if let Some(m) = body.as_object_mut() {
            m.insert("bankAccountId".into(), serde_json::json!(bank_account_id));
        }
        self.post("/_sandbox/driver/reauth", &body).await
    }

    pub async fn available_accounts(
        &self,
        bank_account_id: Uuid,
    ) -> Result<Vec<CandidateView>, ClientError> {
        self.post(
            "/_sandbox/driver/available-accounts",
            &serde_json::json!({ "bankAccountId": bank_account_id }),
        )
        .await
    }

    pub async fn link(
        &self,
        candidate_id: Uuid,
        requested_start_date: &str,
    ) -> Result<CreatedAccount, ClientError> {
        let body = serde_json::json!({ "bankAccountCandidateId": candidate_id, "requestedStartDate": requested_start_date });
        self.post("/_sandbox/driver/link", &body).await
    }

    pub async fn driver_delete(
        &self,
        bank_account_id: Uuid,
    ) -> Result<CreateAccountResponse, ClientError> {
        self.post(
            "/_sandbox/driver/delete",
            &serde_json::json!({ "bankAccountId": bank_account_id }),
        )
        .await
    }

    pub async fn send_notification(
        &self,
        req: &NotificationRequest,
    ) -> Result<DeliveryReport, ClientError> {
        self.post("/_sandbox/driver/notify", req).await
    }

    pub async fn probe_auth(
        &self,
        variant: ProbeVariant,
        bank_id: Option<Uuid>,
    ) -> Result<ProbeOutcome, ClientError> {
        self.post(
            "/_sandbox/driver/probe",
            &serde_json::json!({ "variant": variant, "bankId": bank_id }),
        )
        .await
    }
}
