//! The ports: what the Provider API client (rate limiter, shared token cache) and the statement
//! pipeline's use cases (the table, the queues, Banking Service's Provider API, the bank) need
//! from outside the domain. Implemented by `connector_aws` (DynamoDB and SQS, in production and
//! locally), `connector_sage` and `connector_bank`, and by the in-memory fakes of the use cases'
//! unit tests.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failure of the rate limiter or the shared token cache; the caller retries later (the
/// pipeline's own ports say more: [`StoreError`], [`QueueError`], [`CallError`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub String);

/// Keeps every Provider API call of every Lambda under one rate (spec §7.1 rule 9).
pub trait RateLimiter: Send + Sync {
    /// Waits for a slot, at most `max_wait`; `Ok(false)` when none came in time.
    fn acquire(&self, max_wait: Duration) -> BoxFuture<'_, Result<bool, PortError>>;
}

/// A Sage ID access token shared by every Lambda, so that the connector asks Sage ID for a new
/// one only when the shared one nears expiry or was refused (spec §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedToken {
    pub access_token: String,
    pub token_type: String,
    pub obtained_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub trait SharedTokenCache: Send + Sync {
    fn load(&self) -> BoxFuture<'_, Result<Option<CachedToken>, PortError>>;
    fn store(&self, token: &CachedToken) -> BoxFuture<'_, Result<(), PortError>>;
    /// Drops the shared token if it is still `access_token` (after a 401).
    fn invalidate(&self, access_token: &str) -> BoxFuture<'_, Result<(), PortError>>;
    /// Takes a short lease on refreshing, so that one caller refreshes while others wait.
    fn try_lease(&self, holder: &str, ttl: Duration) -> BoxFuture<'_, Result<bool, PortError>>;
}

// ---- The statement pipeline's ports: what the pusher, the poller and the reconciler need from
// ---- the table, the queues, Banking Service's Provider API and the bank.

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::account::{
    Account, AccountStatus, BackfillState, BankConsent, Claim, ClaimOutcome, ConsentRecord,
    CreateOutcome, ExternalLink, GrantedAccount, IngestStart, Release,
};
use crate::authorisation::AuthorisationPatch;
use crate::handshake::{BrowserSession, GraceSlot, Handshake, HandshakeRefusal, PatchClaim};
use crate::messages::{Kick, TimerMessage, WorkMessage};
use crate::statement::{Balance, StatementRequest, StatementResource};
use crate::stored::StoredTransaction;
use crate::transaction::Transaction;

/// A failure of the store, by what the caller should do with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A condition of the write did not hold (someone else got there first).
    #[error("the item is not in the expected state")]
    ConditionFailed,
    /// Throttling, a network fault or a service error: the caller may retry.
    #[error("the table is unavailable: {0}")]
    Unavailable(String),
    /// An item that does not decode: a bug or manual tampering; never retried blindly.
    #[error("an item is malformed: {0}")]
    Corrupt(String),
    /// The store refused the request itself (a validation error): retrying it cannot help.
    #[error("the table refused the request: {0}")]
    Refused(String),
    /// Access denied, or the table does not exist: only an operator can fix it.
    #[error("the table is misconfigured: {0}")]
    Configuration(String),
}

impl StoreError {
    pub fn corrupt(e: impl std::fmt::Display) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// A failure to send a message, by what the caller should do with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// Access denied, or no such queue: only an operator can fix it.
    #[error("queue misconfigured: {0}")]
    Configuration(String),
}

/// The accounts and their claims (invariant 1: one statement in flight per account). Every
/// claim write is conditional on the claim's token; `false` means it no longer holds.
pub trait AccountStore: Send + Sync {
    fn get_account(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Account>, StoreError>>;
    /// Every account (for the reconciler).
    fn accounts(&self) -> BoxFuture<'_, Result<Vec<Account>, StoreError>>;
    /// Takes the claim if the account exists, is not cancelled and has none.
    fn claim_account<'a>(
        &'a self,
        id: Uuid,
        claim: &'a Claim,
    ) -> BoxFuture<'a, Result<ClaimOutcome, StoreError>>;
    /// Replaces the claim while `token` holds it.
    fn update_claim<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        claim: &'a Claim,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Moves a posted claim's poll counter from `seen` to `seen + 1`, due at `due`.
    fn advance_poll<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        seen: u32,
        overdue: bool,
        due: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Removes the claim held by `token`, recording `release`.
    fn release_account<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        release: &'a Release,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Raises the horizon to `hi` for the claim `token`, unless an ingest began since the
    /// claim saw `seen_next_seq` (then `false`; its completion kicks again).
    fn commit_horizon<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        hi: &'a str,
        seen_next_seq: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Lifts the fences of ingests whose lease ran out by `now`.
    fn clear_expired_ingests<'a>(
        &'a self,
        account: &'a Account,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Offboards the account: a tombstone (created if the account was never seen), and its
    /// `externalId` link kept but marked cancelled. The account as it was, if it existed.
    fn cancel_account<'a>(
        &'a self,
        id: Uuid,
        external_id: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<Account>, StoreError>>;
    /// Sets the status (never reviving a cancelled account; `false` then).
    fn set_account_status(
        &self,
        id: Uuid,
        status: AccountStatus,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
}

/// The transactions of each account, in statement position order.
pub trait TransactionStore: Send + Sync {
    /// Up to `limit` pending transactions after the watermark `after`, in position order.
    fn pending_transactions<'a>(
        &'a self,
        id: Uuid,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredTransaction>, StoreError>>;
    fn count_pending<'a>(
        &'a self,
        id: Uuid,
        after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// The stored transactions with these `uniqueId`s, in the order given (missing ones left out).
    fn transactions_by_ids<'a>(
        &'a self,
        id: Uuid,
        unique_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<StoredTransaction>, StoreError>>;
    /// Takes pending transactions out of the position order with a reason.
    fn park_transactions<'a>(
        &'a self,
        id: Uuid,
        unique_ids: &'a [String],
        reason: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Keeps records refused before they were ever stored as parked (an item per `uniqueId`,
    /// left alone if one exists), for an operator to see.
    fn park_new<'a>(
        &'a self,
        id: Uuid,
        transactions: &'a [Transaction],
        reason: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Parks everything pending after `after`; how many.
    fn park_all_pending<'a>(
        &'a self,
        id: Uuid,
        after: Option<&'a str>,
        reason: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<usize, StoreError>>;
    /// Records that Banking Service already holds these (found duplicate by `statement_id`).
    fn mark_held<'a>(
        &'a self,
        id: Uuid,
        unique_ids: &'a [String],
        statement_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// The accounts customers granted at `/auth`.
pub trait GrantStore: Send + Sync {
    fn granted_account<'a>(
        &'a self,
        external_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<GrantedAccount>, StoreError>>;
    /// The newest grant of each `externalId` granted after `from` (never more than a few days
    /// back: grants are listed by day for that long), up to `to`.
    fn granted_since(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<GrantedAccount>, StoreError>>;
}

/// The consents' last known account lists, and the grants `/availableaccounts` learns of.
pub trait ConsentCache: Send + Sync {
    fn cached_consent<'a>(
        &'a self,
        consent_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConsentRecord>, StoreError>>;
    fn cache_consent<'a>(
        &'a self,
        consent: &'a ConsentRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn put_granted_account<'a>(
        &'a self,
        account: &'a GrantedAccount,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// The authorisation handshakes and the bounded waits for one not announced yet (see
/// `crate::handshake`). Each write is conditional: a refusal says why the browser may not go on.
pub trait HandshakeStore: Send + Sync {
    fn handshake(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Handshake>, StoreError>>;
    /// The browser opened (or reloaded) the page: records its session, rotating its UI token.
    fn open_handshake<'a>(
        &'a self,
        id: Uuid,
        session: &'a BrowserSession,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Result<Handshake, HandshakeRefusal>, StoreError>>;
    /// Claims an opened, unexpired handshake for the PATCH until `now + lease`.
    fn claim_handshake(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Result<PatchClaim, HandshakeRefusal>, StoreError>>;
    /// Completes a claimed handshake (`false`: the claim no longer holds).
    fn complete_handshake<'a>(
        &'a self,
        claim: &'a PatchClaim,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Gives a claim back after a failed PATCH.
    fn release_handshake<'a>(
        &'a self,
        claim: &'a PatchClaim,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// One of `slots` leases on waiting for an unannounced handshake; `None` when all are held.
    fn take_grace_slot(
        &self,
        slots: u32,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Option<GraceSlot>, StoreError>>;
    fn release_grace_slot<'a>(
        &'a self,
        slot: &'a GraceSlot,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// What `/auth` and `/authrefresh` read and write.
pub trait BrowserStore: HandshakeStore + AccountStore + AccountRegistry + AvailableStore {}
impl<T: HandshakeStore + AccountStore + AccountRegistry + AvailableStore> BrowserStore for T {}

/// The bank's sign-in for Banking Service's accounts (OpenID Connect with PKCE).
pub trait BankSignIn: Send + Sync {
    /// A new PKCE verifier (kept in the browser's session until the callback).
    fn new_verifier(&self) -> String;
    /// Where to send the browser; `renew_consent` asks the bank to extend that consent.
    fn sign_in_url(
        &self,
        redirect_uri: &str,
        state: &str,
        verifier: &str,
        renew_consent: Option<&str>,
    ) -> Result<String, BankCallError>;
    /// The consent id the bank's code grants.
    fn granted_consent<'a>(
        &'a self,
        code: &'a str,
        redirect_uri: &'a str,
        verifier: &'a str,
    ) -> BoxFuture<'a, Result<String, BankCallError>>;
}

/// What `/availableaccounts` reads and keeps.
pub trait AvailableStore: GrantStore + ConsentCache {}
impl<T: GrantStore + ConsentCache> AvailableStore for T {}

/// The one store the pipeline works on.
pub trait PipelineStore: AccountStore + TransactionStore + GrantStore {}
impl<T: AccountStore + TransactionStore + GrantStore> PipelineStore for T {}

/// Whether a transaction was new or already held (by `uniqueId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    Duplicate,
}

/// Taking transactions in (`/ingest` and the backfill): new transactions written under a fence
/// that keeps batch commits off while they land (see `Account::ingesting`).
pub trait IngestStore: Send + Sync {
    /// Reserves `count` sequence numbers and sets a fence for `lease`; `None` when the account
    /// is gone or cancelled.
    fn begin_ingest(
        &self,
        id: Uuid,
        count: u64,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Option<IngestStart>, StoreError>>;
    /// Stores the transactions (in arrival order) as pending from `first_seq`, positioned
    /// after `horizon`; a `uniqueId` held already is a duplicate and left untouched.
    fn put_transactions<'a>(
        &'a self,
        id: Uuid,
        transactions: &'a [Transaction],
        first_seq: u64,
        horizon: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<PutOutcome>, StoreError>>;
    /// Records the bank's balances (each only if newer than the one held).
    fn update_balances<'a>(
        &'a self,
        id: Uuid,
        ledger: Option<&'a Balance>,
        available: Option<&'a Balance>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Lifts the fence `token` once everything it covered is written.
    fn end_ingest<'a>(&'a self, id: Uuid, token: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// What the notification worker records beside the pipeline's claims: new accounts, their
/// backfill's progress and announced authorisations.
pub trait AccountRegistry: Send + Sync {
    fn create_account<'a>(
        &'a self,
        account: &'a Account,
    ) -> BoxFuture<'a, Result<CreateOutcome, StoreError>>;
    fn set_backfill<'a>(
        &'a self,
        id: Uuid,
        state: BackfillState,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The accounts linked to `external_id`, cancelled ones included.
    fn accounts_for_external_id<'a>(
        &'a self,
        external_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ExternalLink>, StoreError>>;
    /// Records an `authorisation` notification for `/auth` to find (`false`: seen before).
    fn announce_handshake(
        &self,
        id: Uuid,
        bank_id: Option<Uuid>,
        received_at: DateTime<Utc>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
}

/// The store the notification worker works on.
pub trait RegistryStore: PipelineStore + IngestStore + AccountRegistry {}
impl<T: PipelineStore + IngestStore + AccountRegistry> RegistryStore for T {}

/// The pipeline's queues: the per-account FIFO push queue, the timer queue and the work queue.
pub trait Timers: Send + Sync {
    fn kick<'a>(&'a self, kick: &'a Kick) -> BoxFuture<'a, Result<(), QueueError>>;
    /// Delivers `message` after `delay` (at most 15 minutes).
    fn send_timer<'a>(
        &'a self,
        message: &'a TimerMessage,
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>>;
    fn send_work<'a>(&'a self, message: &'a WorkMessage) -> BoxFuture<'a, Result<(), QueueError>>;
}

/// A failed Provider API call, by what the caller should do (spec §6.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 429: wait `Retry-After` (or back off) and retry.
    #[error("rate limited")]
    RateLimited { retry_after: Option<Duration> },
    /// 409 (statement in flight, account cancelled, ...).
    #[error("conflict: {message}")]
    Conflict { message: String },
    /// 400: retrying the request unchanged cannot help. `summary`: the first error's code and
    /// target.
    #[error("invalid: {summary}")]
    Invalid { summary: String },
    #[error("not found: {summary}")]
    NotFound { summary: String },
    /// Credentials, audience or API key refused: alarmed; only an operator can fix it.
    #[error("configuration: {0}")]
    Configuration(String),
    /// 5xx, no answer, no rate-limit slot, Sage ID unavailable: retry with back-off.
    #[error("transient: {0}")]
    Transient(String),
}

/// The account Banking Service has for an `externalId` (`POST /v1/accountqueries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundAccount {
    pub bank_account_id: Uuid,
    pub status: String,
    pub requested_start_date: Option<String>,
}

/// Banking Service's statements and accounts, for one bank.
pub trait StatementApi: Send + Sync {
    /// Posts a statement; its id.
    fn post_statement<'a>(
        &'a self,
        request: &'a StatementRequest,
    ) -> BoxFuture<'a, Result<String, CallError>>;
    fn get_statement<'a>(
        &'a self,
        statement_id: &'a str,
    ) -> BoxFuture<'a, Result<StatementResource, CallError>>;
    fn delete_statement<'a>(
        &'a self,
        statement_id: &'a str,
    ) -> BoxFuture<'a, Result<(), CallError>>;
    fn query_account<'a>(
        &'a self,
        bank_id: Uuid,
        external_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<FoundAccount>, CallError>>;
    /// Reports an authorisation's outcome (`PATCH /v1/authorisations/{id}`).
    fn patch_authorisation<'a>(
        &'a self,
        authorisation_id: Uuid,
        patch: &'a AuthorisationPatch,
    ) -> BoxFuture<'a, Result<(), CallError>>;
}

/// The Provider API client of each bank a deployment serves.
pub trait StatementApis: Send + Sync {
    /// The client of `bank` (the default one for `None` or a bank without its own).
    fn for_bank(&self, bank: Option<Uuid>) -> std::sync::Arc<dyn StatementApi>;
    /// Whether some bank has a client of its own (only then is an account's bank worth a read).
    fn per_bank(&self) -> bool;
}

/// An account's balances as the bank reports them now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankBalances {
    pub ledger: Decimal,
    pub available: Option<Decimal>,
    pub as_of: DateTime<Utc>,
}

/// A failed bank call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankCallError {
    /// Unreachable or failing: try again later.
    #[error("the bank is unavailable: {0}")]
    Unavailable(String),
    /// The bank answered no (consent over, unknown account, ...).
    #[error("the bank refused: {0}")]
    Refused(String),
}

/// What the pipeline reads from the Bank Data API.
pub trait BankReader: Send + Sync {
    fn balances<'a>(
        &'a self,
        consent_id: &'a str,
        external_id: &'a str,
    ) -> BoxFuture<'a, Result<BankBalances, BankCallError>>;
    /// The consent as the bank reports it now.
    fn consent<'a>(
        &'a self,
        consent_id: &'a str,
    ) -> BoxFuture<'a, Result<BankConsent, BankCallError>>;
    /// Whether the customer's consent still holds at `now` (`false`: expired, revoked or
    /// unknown to the bank).
    fn consent_active<'a>(
        &'a self,
        consent_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, BankCallError>>;
}

/// One page of an account's history at the bank, in the connector's vocabulary: its booked
/// transactions and the balances the bank reported with it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub transactions: Vec<Transaction>,
    pub balances: Option<BankBalances>,
    pub next_cursor: Option<String>,
}

/// A failed history read, by what the backfill does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The consent is over: the account owes Banking Service an `authRequired` statement.
    #[error("the consent has expired or was revoked")]
    ConsentExpired,
    /// The bank does not know the account: nothing to pull.
    #[error("not found at the bank")]
    NotFound,
    /// Anything else: try again later.
    #[error("the bank is unavailable: {0}")]
    Unavailable(String),
}

/// The account history the backfill pulls from the Bank Data API.
pub trait BankHistory: Send + Sync {
    /// Booked transactions from `from`, `limit` at most, after `cursor`.
    fn history<'a>(
        &'a self,
        consent_id: &'a str,
        external_id: &'a str,
        from: chrono::NaiveDate,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<HistoryPage, HistoryError>>;
}

/// The time, injected so that rules about it can be tested.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The key a caller must present on a route IAM does not guard (the bank's pushes off AWS,
/// `INGEST_API_KEY`): its current value, read again as the operator rotates it.
pub trait ExpectedKey: Send + Sync {
    fn current(&self) -> BoxFuture<'_, std::sync::Arc<str>>;
}

// ---- Deliveries from Sage (Payments Out's intake).

use crate::payouts::notification::PayoutsWork;

/// What a do-once claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Once {
    /// First time (or an earlier attempt's lease ran out): go ahead, then complete it.
    New,
    /// Done before: do nothing and answer as if done now.
    Completed,
    /// Another attempt holds the lease right now: try again later.
    InProgress,
    /// The same key came with a different payload.
    Conflict,
}

/// Do-once claims: one effect per key, however often a delivery is repeated.
pub trait OnceClaims: Send + Sync {
    /// Claims `key` for `lease`; the record is kept for `keep`.
    fn claim_once<'a>(
        &'a self,
        key: &'a str,
        payload_hash: &'a str,
        lease: Duration,
        keep: Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Once, StoreError>>;
    fn complete_claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Gives the claim up so that a retry of the delivery may take it.
    fn abandon_claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// The Payments Out worker's queue.
pub trait PayoutsQueue: Send + Sync {
    fn send<'a>(&'a self, work: &'a PayoutsWork) -> BoxFuture<'a, Result<(), QueueError>>;
    /// Delivered no sooner than `delay` from now (SQS: whole seconds, up to 15 minutes).
    fn send_after<'a>(
        &'a self,
        work: &'a PayoutsWork,
        delay: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        let _ = delay;
        self.send(work)
    }
}

/// Why a delivery's credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthRejection {
    /// The caller's fault (which check failed is logged, never the token): 401.
    #[error("refused: {0}")]
    Refused(String),
    /// The keys to check it could not be fetched: 503, so that the caller retries.
    #[error("cannot check now: {0}")]
    Unavailable(String),
}

/// Who sent a Banking Service delivery, as its verification established it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifiedSender {
    /// The bank whose settings (and only its) verified it; `None` for the default settings.
    pub bank_id: Option<Uuid>,
    /// The token's `jti`, for the logs.
    pub token_id: Option<String>,
}

/// Checks Banking Service's deliveries (custom header and Sage ID token) against the settings
/// of the banks a deployment serves.
pub trait BankingServiceAuth: Send + Sync {
    /// Whether several banks' settings are configured (then the `bankId` a body names chooses).
    fn several(&self) -> bool;
    fn verify<'a>(
        &'a self,
        headers: &'a http::HeaderMap,
        named: Option<Uuid>,
    ) -> BoxFuture<'a, Result<VerifiedSender, AuthRejection>>;
}

/// Checks a delivery's custom header and Sage ID token.
pub trait DeliveryAuth: Send + Sync {
    fn verify<'a>(
        &'a self,
        headers: &'a http::HeaderMap,
    ) -> BoxFuture<'a, Result<(), AuthRejection>>;
}

// ---- Payments Out's Provider API and the connector's subscription records.

use crate::payouts::onboarding::{AuthLink, SubscriptionChange, SubscriptionView};

/// What the Payments Out use cases need from Payments Out's Provider API.
pub trait PayoutsApiPort: Send + Sync {
    /// `application`: the product that introduced it (its `x-application`).
    fn get_subscription<'a>(
        &'a self,
        subscription_id: Uuid,
        application: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SubscriptionView, CallError>>;
    fn patch_subscription<'a>(
        &'a self,
        subscription_id: Uuid,
        application: Option<&'a str>,
        change: &'a SubscriptionChange,
    ) -> BoxFuture<'a, Result<(), CallError>>;
    /// The provider configuration, whole.
    fn provider_configuration(&self) -> BoxFuture<'_, Result<serde_json::Value, CallError>>;
    /// A provider message (`debtoraccountputs`, ...) to the product of `subscription_id`.
    fn post_message<'a>(
        &'a self,
        op: &'a str,
        subscription_id: Uuid,
        correlation_id: Option<&'a str>,
        data: &'a serde_json::Value,
        application: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), CallError>>;
}

use crate::payouts::batches::{BatchRecord, BatchView, PaymentRecord};
use crate::payouts::parties::DebtorAccount;
use crate::payouts::status::BatchStatus;

/// One payment's part of a batch PATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentChange {
    pub payment_id: Uuid,
    pub status: crate::payouts::status::PaymentStatus,
    pub reason: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A batch PATCH: the batch's status and the payments it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchChange {
    pub status: BatchStatus,
    pub reason: Option<String>,
    pub payments: Vec<PaymentChange>,
}

/// Payments Out's batches.
pub trait BatchApi: Send + Sync {
    fn get_batch<'a>(
        &'a self,
        batch_id: Uuid,
        application: Option<&'a str>,
    ) -> BoxFuture<'a, Result<BatchView, CallError>>;
    fn patch_batch<'a>(
        &'a self,
        batch_id: Uuid,
        application: Option<&'a str>,
        change: &'a BatchChange,
    ) -> BoxFuture<'a, Result<(), CallError>>;
}

/// The connector's records of batches and their payments.
pub trait BatchStore: Send + Sync {
    /// Records a checked batch's payments, then the batch (the batch's record marks the
    /// checks done).
    fn record_batch<'a>(
        &'a self,
        batch: &'a BatchRecord,
        payments: &'a [PaymentRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn batch(&self, batch_id: Uuid) -> BoxFuture<'_, Result<Option<BatchRecord>, StoreError>>;
    /// Notes on the batch's record that its decision PATCH was sent (`decision_patched`),
    /// leaving the rest of the record as it is.
    fn note_decision_patched(&self, batch_id: Uuid) -> BoxFuture<'_, Result<(), StoreError>>;
    fn payments(&self, batch_id: Uuid) -> BoxFuture<'_, Result<Vec<PaymentRecord>, StoreError>>;
    /// The batch's payments whose [`PaymentRecord::watch`] is `Owing`, read consistently: what
    /// a window sends, without reading the rest.
    fn payments_owing(
        &self,
        batch_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<PaymentRecord>, StoreError>>;
    /// Whether a payment of the batch is `Moving` ([`PaymentRecord::watch`]), read
    /// consistently: with the owing ones, whether the batch may have its final status.
    fn any_moving(&self, batch_id: Uuid) -> BoxFuture<'_, Result<bool, StoreError>>;
    fn payment(&self, payment_id: Uuid)
    -> BoxFuture<'_, Result<Option<PaymentRecord>, StoreError>>;
    /// Writes `record` (its version one above what was read) if the stored one still has
    /// `record.version - 1`: `ConditionFailed` otherwise.
    fn save_payment<'a>(
        &'a self,
        record: &'a PaymentRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Takes the batch's outcome-PATCH lease until `until` unless another holder's runs past
    /// `now`: whether it was taken.
    fn lease_sync(
        &self,
        batch_id: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
    fn release_sync(&self, batch_id: Uuid) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// What the bank answered a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Created, or an identical replay.
    Accepted,
    /// Refused, nothing created (422): the reasons.
    Refused(String),
}

/// What the bank answered a cancellation (`DELETE /v1/payments/{paymentId}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// Cancelled now, or before.
    Cancelled,
    /// Too late: the bank has executed it or is executing it (409).
    NotCancellable,
    /// The bank has no such payment (404).
    Unknown,
}

/// A failed submission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The same payment id with another body: never paid twice, an operator must look.
    #[error("the bank holds this payment with another body")]
    Conflict,
    #[error("the bank refused the connector's credentials")]
    Configuration,
    #[error("the bank is unavailable: {0}")]
    Unavailable(String),
}

/// The bank's payment rails.
pub trait BankPayments: Send + Sync {
    fn submit<'a>(
        &'a self,
        payment_id: Uuid,
        body: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<Submitted, SubmitError>>;
    /// The payment's state at the bank now, as the event that would have told it (`None`:
    /// unknown to the bank).
    fn state(
        &self,
        payment_id: Uuid,
    ) -> BoxFuture<'_, Result<Option<crate::payouts::batches::BankEvent>, SubmitError>>;
    /// Asks the bank to cancel the payment.
    fn cancel(&self, payment_id: Uuid) -> BoxFuture<'_, Result<Cancelled, SubmitError>>;
    /// The bank's change feed: its payments whose last event came after `after` (an
    /// `eventSeq`) and, when `since` is given, that changed at or after it; at most `limit`, in
    /// `eventSeq` order, each as the event that would have told its state now.
    fn changed_after(
        &self,
        after: u64,
        since: Option<DateTime<Utc>>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::payouts::batches::BankEvent>, SubmitError>>;
}

/// Work the Payments Out reconciler watches until it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OpenKind {
    /// A batch not yet final at Sage (id: the batch id).
    Batch,
    /// An authorisation link not yet used, or used with the customer's decision still to reach
    /// Sage or (`Pending`) with the bank still reviewing the consent (id: the link id).
    Link,
}

/// One piece of open work, looked at from `due_at`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenItem {
    pub kind: OpenKind,
    pub id: String,
    pub due_at: DateTime<Utc>,
}

/// The reconciler's list of open work.
pub trait OpenWork: Send + Sync {
    /// Adds the item, or moves its due time (its touch mark stays).
    fn open<'a>(&'a self, item: &'a OpenItem) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Adds the item if it is not there; one already there keeps its due time (a look already
    /// planned is not put off). Either way the item is marked touched.
    fn touch<'a>(&'a self, item: &'a OpenItem) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Clears the item's touch mark, if the item is there: a look does so before it reads.
    fn untouch<'a>(&'a self, kind: OpenKind, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Removes the item unless it is marked touched: `false`, leaving it, when it is (a look
    /// that cleared the mark and then read may have read before the touch's change).
    fn close<'a>(&'a self, kind: OpenKind, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Every item due at `now`.
    fn due(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<Vec<OpenItem>, StoreError>>;
    /// How far the bank's change feed has been read (an `eventSeq`; 0 before the first read).
    fn feed_read_to(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn set_feed_read_to(&self, event_seq: u64) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// A failed encryption or decryption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the key service is unavailable: {0}")]
    Unavailable(String),
    /// The key, or the right to use it, is missing: an operator must act.
    #[error("key configuration: {0}")]
    Configuration(String),
}

/// Encrypts what the connector keeps of a creditor's bank details (KMS on AWS).
pub trait Sealer: Send + Sync {
    /// The sealed form of `plaintext`, as text.
    fn seal<'a>(&'a self, plaintext: &'a [u8]) -> BoxFuture<'a, Result<String, SealError>>;
    fn open<'a>(&'a self, sealed: &'a str) -> BoxFuture<'a, Result<Vec<u8>, SealError>>;
}

/// The debtor accounts and creditors of each subscription.
pub trait PartyStore: Send + Sync {
    fn put_creditor<'a>(
        &'a self,
        creditor: &'a crate::payouts::creditors::Creditor,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn creditor<'a>(
        &'a self,
        subscription_id: Uuid,
        creditor_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::payouts::creditors::Creditor>, StoreError>>;
    /// Every creditor of the subscription, deleted ones included.
    fn creditors(
        &self,
        subscription_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<crate::payouts::creditors::Creditor>, StoreError>>;
    fn put_debtor<'a>(
        &'a self,
        account: &'a DebtorAccount,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn debtor<'a>(
        &'a self,
        subscription_id: Uuid,
        debtor_account_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<DebtorAccount>, StoreError>>;
    /// Every debtor account of the subscription, deleted ones included.
    fn debtors(
        &self,
        subscription_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<DebtorAccount>, StoreError>>;
}

/// The authorisation links minted for subscriptions.
pub trait LinkStore: Send + Sync {
    /// The link minted for `subscription_id`, if one was.
    fn link_for(
        &self,
        subscription_id: Uuid,
    ) -> BoxFuture<'_, Result<Option<AuthLink>, StoreError>>;
    /// Records `link` as the subscription's, unless it has one already: the one it has (so that
    /// two attempts of the same onboarding end with one link).
    fn record_link<'a>(&'a self, link: &'a AuthLink)
    -> BoxFuture<'a, Result<AuthLink, StoreError>>;
    fn link<'a>(&'a self, link_id: &'a str) -> BoxFuture<'a, Result<Option<AuthLink>, StoreError>>;
    /// The link with its login session and completion, as the page reads it.
    fn link_record<'a>(
        &'a self,
        link_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<LinkRecord>, StoreError>>;
    /// Records a bank login begun from the link (replacing an earlier one); `false` when the
    /// link is used or unknown.
    fn begin_login<'a>(
        &'a self,
        link_id: &'a str,
        session: &'a LoginSession,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Uses the link up with `completion`; `false` when it was used already (single use).
    fn complete_link<'a>(
        &'a self,
        link_id: &'a str,
        completion: &'a Completion,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Notes that Payments Out has the completion's status.
    fn mark_patched<'a>(&'a self, link_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

use crate::payouts::authorise::{Binding, Completion, ConsentView, LinkRecord, LoginSession};

/// Who each authorised subscription pays from.
pub trait BindingStore: Send + Sync {
    /// Records the binding under the subscription and under the consent (for the bank's
    /// consent events); a repeat overwrites it with the same.
    fn bind<'a>(&'a self, binding: &'a Binding) -> BoxFuture<'a, Result<(), StoreError>>;
    fn binding(&self, subscription_id: Uuid) -> BoxFuture<'_, Result<Option<Binding>, StoreError>>;
    fn binding_by_consent<'a>(
        &'a self,
        consent_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Binding>, StoreError>>;
}

/// A failed step of the customer's bank login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The code, verifier or redirect did not match (or the code was used): the customer
    /// starts again.
    #[error("the bank refused the grant")]
    InvalidGrant,
    /// The consent is unknown or over.
    #[error("the consent is not usable: {0}")]
    Consent(String),
    /// The connector's own credentials or URL: an operator must act.
    #[error("bank configuration: {0}")]
    Configuration(String),
    #[error("the bank is unavailable: {0}")]
    Unavailable(String),
}

/// The customer's login at the bank (OIDC authorisation code with PKCE) and the consent it
/// gives.
pub trait BankLogin: Send + Sync {
    /// Where to send the browser; `challenge` is the PKCE S256 challenge.
    fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        challenge: &str,
        scope: &str,
    ) -> Result<String, LoginError>;
    /// The code and verifier for the customer id and consent id.
    fn exchange_code<'a>(
        &'a self,
        code: &'a str,
        redirect_uri: &'a str,
        verifier: &'a str,
    ) -> BoxFuture<'a, Result<(String, String), LoginError>>;
    fn consent<'a>(&'a self, consent_id: &'a str)
    -> BoxFuture<'a, Result<ConsentView, LoginError>>;
}
