//! In-memory implementations of the pipeline's ports, for unit tests of the use cases: the
//! store keeps the table's conditions (a claim write holds only while its token does), the
//! queues keep every message with its due time, Banking Service keeps Sage's rules that the
//! pipeline relies on (one statement in flight per account, `DuplicateTransaction` for a
//! uniqueId it holds), and the clock moves only when a test moves it. Any call can be made to
//! fail once, to play a fault or a crash between two writes.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use connector_domain::account::{
    Account, AccountStatus, BackfillState, BankConsent, Claim, ClaimOutcome, ClaimPhase,
    ConsentRecord, CreateOutcome, ExternalLink, GrantedAccount, IngestFence, IngestStart, Release,
};
use connector_domain::authorisation::AuthorisationPatch;
use connector_domain::handshake::{
    BrowserSession, GraceSlot, Handshake, HandshakeRefusal, HandshakeState, PatchClaim,
};
use connector_domain::messages::{Kick, TimerMessage, WorkMessage};
use connector_domain::payouts::authorise::{
    Binding, Completion, ConsentAccount, ConsentView, LinkRecord, LoginSession,
};
use connector_domain::payouts::batches::{BankEvent, BatchRecord, BatchView, PaymentRecord, Watch};
use connector_domain::payouts::creditors::Creditor;
use connector_domain::payouts::onboarding::{AuthLink, SubscriptionChange, SubscriptionView};
use connector_domain::payouts::parties::DebtorAccount;
use connector_domain::ports::{
    AccountRegistry, AccountStore, BankBalances, BankCallError, BankHistory, BankLogin,
    BankPayments, BankReader, BankSignIn, BatchApi, BatchChange, BatchStore, BindingStore,
    BoxFuture, CallError, Cancelled as BankCancelled, Clock, ConsentCache, FoundAccount,
    GrantStore, HandshakeStore, HistoryError, HistoryPage, IngestStore, LinkStore, LoginError,
    Once, OnceClaims, OpenItem, OpenKind, OpenWork, PartyStore, PayoutsApiPort, PutOutcome,
    QueueError, StatementApi, StatementApis, StoreError, SubmitError, Submitted, Timers,
    TransactionStore,
};
use connector_domain::statement::Balance;
use connector_domain::statement::{
    FailureDetail, StatementRequest, StatementResource, StatementStatus,
};
use connector_domain::stored::{StoredTransaction, TransactionState, position_after};
use connector_domain::transaction::Transaction;
use serde_json::Value;
use uuid::Uuid;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lets other tasks run before a fake answers, so that concurrent deliveries interleave at
/// every port call as they would against a real service.
async fn interleave() {
    tokio::task::yield_now().await;
}

/// A clock that moves only when told.
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        let mut now = lock(&self.0);
        *now = (*now).max(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.0)
    }
}

/// The table.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<StoreState>,
}

#[derive(Default)]
struct StoreState {
    accounts: BTreeMap<Uuid, Account>,
    transactions: HashMap<Uuid, BTreeMap<String, StoredTransaction>>,
    grants: HashMap<String, GrantedAccount>,
    /// The next call of this name fails with this error.
    faults: HashMap<&'static str, VecDeque<StoreError>>,
    /// Do-once claims: key -> (payload hash, completed, lease end).
    once: HashMap<String, (String, bool, DateTime<Utc>)>,
    /// Authorisation links by subscription.
    links: HashMap<Uuid, AuthLink>,
    /// Each link's login session, completion and whether it was PATCHed, by link id.
    link_states: HashMap<String, LinkState>,
    bindings: HashMap<Uuid, Binding>,
    debtors: BTreeMap<(Uuid, String), DebtorAccount>,
    creditors: BTreeMap<(Uuid, String), Creditor>,
    batches: HashMap<Uuid, BatchRecord>,
    /// By payment id (ordered, so that listings are stable).
    payments: BTreeMap<Uuid, PaymentRecord>,
    open: BTreeMap<(u8, String), OpenItem>,
    /// Open items marked touched.
    touched: BTreeSet<(u8, String)>,
    feed_read_to: u64,
    sync_leases: HashMap<Uuid, DateTime<Utc>>,
    /// Announced authorisations and their bank.
    handshakes: HashMap<Uuid, Handshake>,
    /// Grace-wait leases: holder token and lease end, per slot.
    grace: BTreeMap<u32, (String, DateTime<Utc>)>,
    consents: HashMap<String, ConsentRecord>,
}

impl StoreState {
    fn batch_payments(&self, batch_id: Uuid) -> impl Iterator<Item = &PaymentRecord> {
        self.payments
            .values()
            .filter(move |p| p.batch_id == batch_id)
    }
}

type LinkState = (Option<LoginSession>, Option<Completion>, bool);

impl MemoryStore {
    pub fn put_account(&self, account: Account) {
        lock(&self.state)
            .accounts
            .insert(account.bank_account_id, account);
    }

    pub fn put_pending(&self, id: Uuid, transactions: Vec<StoredTransaction>) {
        let mut s = lock(&self.state);
        let stored = s.transactions.entry(id).or_default();
        for t in transactions {
            stored.insert(t.transaction.unique_id.clone(), t);
        }
    }

    pub fn account(&self, id: Uuid) -> Account {
        lock(&self.state).accounts[&id].clone()
    }

    pub fn find_account(&self, id: Uuid) -> Option<Account> {
        lock(&self.state).accounts.get(&id).cloned()
    }

    pub fn put_grant(&self, grant: GrantedAccount) {
        lock(&self.state)
            .grants
            .insert(grant.external_id.clone(), grant);
    }

    /// Announced authorisations and their bank.
    /// Announced authorisations and their bank.
    pub fn handshake_bank(&self, id: Uuid) -> Option<Option<Uuid>> {
        lock(&self.state).handshakes.get(&id).map(|h| h.bank_id)
    }

    pub fn stored_handshake(&self, id: Uuid) -> Option<Handshake> {
        lock(&self.state).handshakes.get(&id).cloned()
    }

    pub fn transactions(&self, id: Uuid) -> Vec<StoredTransaction> {
        lock(&self.state)
            .transactions
            .get(&id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The next call to `method` fails with `error`.
    pub fn fail_next(&self, method: &'static str, error: StoreError) {
        lock(&self.state)
            .faults
            .entry(method)
            .or_default()
            .push_back(error);
    }

    fn fault(&self, method: &'static str) -> Result<(), StoreError> {
        match lock(&self.state)
            .faults
            .get_mut(method)
            .and_then(VecDeque::pop_front)
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs `f` on the state after letting other tasks run and checking for a planned fault.
    fn with<'a, T: Send + 'a>(
        &'a self,
        method: &'static str,
        f: impl FnOnce(&mut StoreState) -> T + Send + 'a,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(async move {
            interleave().await;
            self.fault(method)?;
            Ok(f(&mut lock(&self.state)))
        })
    }
}

fn holds(account: Option<&Account>, token: &str) -> bool {
    account
        .and_then(|a| a.in_flight.as_ref())
        .is_some_and(|c| c.token == token)
}

fn pending_after<'a>(
    s: &'a StoreState,
    id: Uuid,
    after: Option<&'a str>,
) -> impl Iterator<Item = &'a StoredTransaction> + 'a {
    let mut pending: Vec<&StoredTransaction> = s
        .transactions
        .get(&id)
        .into_iter()
        .flat_map(|m| m.values())
        .filter(move |t| {
            t.state == TransactionState::Pending
                && t.position
                    .as_deref()
                    .is_some_and(|p| after.is_none_or(|a| p > a))
        })
        .collect();
    pending.sort_by(|a, b| a.position.cmp(&b.position));
    pending.into_iter()
}

impl AccountStore for MemoryStore {
    fn get_account(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Account>, StoreError>> {
        self.with("get_account", move |s| s.accounts.get(&id).cloned())
    }

    fn accounts(&self) -> BoxFuture<'_, Result<Vec<Account>, StoreError>> {
        self.with("accounts", |s| s.accounts.values().cloned().collect())
    }

    fn claim_account<'a>(
        &'a self,
        id: Uuid,
        claim: &'a Claim,
    ) -> BoxFuture<'a, Result<ClaimOutcome, StoreError>> {
        self.with("claim_account", move |s| match s.accounts.get_mut(&id) {
            Some(a) if a.status == AccountStatus::Cancelled => ClaimOutcome::Gone,
            Some(a) if a.in_flight.is_some() => ClaimOutcome::Busy,
            Some(a) => {
                a.in_flight = Some(claim.clone());
                ClaimOutcome::Claimed(Box::new(a.clone()))
            }
            None => ClaimOutcome::Gone,
        })
    }

    fn update_claim<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        claim: &'a Claim,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.with("update_claim", move |s| match s.accounts.get_mut(&id) {
            Some(a) if holds(Some(a), token) => {
                a.in_flight = Some(claim.clone());
                true
            }
            _ => false,
        })
    }

    fn advance_poll<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        seen: u32,
        overdue: bool,
        due: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.with("advance_poll", move |s| {
            let Some(claim) = s
                .accounts
                .get_mut(&id)
                .and_then(|a| a.in_flight.as_mut())
                .filter(|c| c.token == token)
            else {
                return false;
            };
            match &mut claim.phase {
                ClaimPhase::Posted(p) if p.poll_attempt == seen => {
                    p.poll_attempt = seen + 1;
                    p.overdue = overdue;
                    p.next_poll_at = due;
                    true
                }
                _ => false,
            }
        })
    }

    fn release_account<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        release: &'a Release,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.with("release_account", move |s| {
            if !holds(s.accounts.get(&id), token) {
                return false;
            }
            let Some(a) = s.accounts.get_mut(&id) else {
                return false;
            };
            a.in_flight = None;
            if let Some(w) = &release.delivered_through {
                a.delivered_through = Some(w.clone());
            }
            if release.newest_delivered.is_some() {
                a.newest_delivered = release.newest_delivered;
            }
            if release.success_at.is_some() {
                a.last_success_at = release.success_at;
            }
            if let Some(as_of) = release.balance_sent_as_of {
                a.balance_sent_as_of_ms = Some(as_of.timestamp_millis());
            }
            if release.auth_required_sent {
                a.auth_required_owed = false;
            }
            a.delivered_count += release.delivered;
            true
        })
    }

    fn commit_horizon<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        hi: &'a str,
        seen_next_seq: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.with("commit_horizon", move |s| {
            if !holds(s.accounts.get(&id), token) {
                return false;
            }
            let Some(a) = s.accounts.get_mut(&id) else {
                return false;
            };
            if a.next_seq != seen_next_seq {
                return false;
            }
            match a.horizon.as_deref() {
                Some(h) if h >= hi => true,
                _ => {
                    a.horizon = Some(hi.to_string());
                    true
                }
            }
        })
    }

    fn clear_expired_ingests<'a>(
        &'a self,
        account: &'a Account,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("clear_expired_ingests", move |s| {
            if let Some(a) = s.accounts.get_mut(&account.bank_account_id) {
                a.ingesting
                    .retain(|_, f| f.expires_at_ms > now.timestamp_millis());
            }
        })
    }

    fn cancel_account<'a>(
        &'a self,
        id: Uuid,
        external_id: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<Account>, StoreError>> {
        self.with("cancel_account", move |s| {
            let before = s.accounts.get(&id).cloned();
            // A tombstone when the account was never seen (a `deleted` overtook its `created`).
            let a = s.accounts.entry(id).or_insert_with(|| {
                let mut t =
                    Account::new(id, external_id.unwrap_or_default().into(), None, None, now);
                t.backfill = BackfillState::Done;
                t
            });
            a.status = AccountStatus::Cancelled;
            a.cancelled_at.get_or_insert(now);
            before
        })
    }

    fn set_account_status(
        &self,
        id: Uuid,
        status: AccountStatus,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.with("set_account_status", move |s| {
            match s.accounts.get_mut(&id) {
                Some(a) if a.status != AccountStatus::Cancelled => {
                    a.status = status;
                    a.auth_required_owed = status == AccountStatus::AuthRequired;
                    true
                }
                _ => false,
            }
        })
    }
}

impl TransactionStore for MemoryStore {
    fn park_new<'a>(
        &'a self,
        id: Uuid,
        transactions: &'a [Transaction],
        reason: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("park_new", move |s| {
            let stored = s.transactions.entry(id).or_default();
            for t in transactions {
                stored
                    .entry(t.unique_id.clone())
                    .or_insert_with(|| StoredTransaction {
                        seq: 0,
                        state: TransactionState::Parked,
                        transaction: t.clone(),
                        statement_id: None,
                        reason: Some(reason.to_string()),
                        received_at: now,
                        position: None,
                    });
            }
        })
    }

    fn pending_transactions<'a>(
        &'a self,
        id: Uuid,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredTransaction>, StoreError>> {
        self.with("pending_transactions", move |s| {
            pending_after(s, id, after).take(limit).cloned().collect()
        })
    }

    fn count_pending<'a>(
        &'a self,
        id: Uuid,
        after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.with("count_pending", move |s| {
            pending_after(s, id, after).count() as u64
        })
    }

    fn transactions_by_ids<'a>(
        &'a self,
        id: Uuid,
        unique_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<StoredTransaction>, StoreError>> {
        self.with("transactions_by_ids", move |s| {
            let Some(stored) = s.transactions.get(&id) else {
                return Vec::new();
            };
            unique_ids
                .iter()
                .filter_map(|u| stored.get(u).cloned())
                .collect()
        })
    }

    fn park_transactions<'a>(
        &'a self,
        id: Uuid,
        unique_ids: &'a [String],
        reason: &'a str,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("park_transactions", move |s| {
            let Some(stored) = s.transactions.get_mut(&id) else {
                return;
            };
            for u in unique_ids {
                if let Some(t) = stored
                    .get_mut(u)
                    .filter(|t| t.state != TransactionState::Delivered)
                {
                    t.state = TransactionState::Parked;
                    t.reason = Some(reason.to_string());
                    t.position = None;
                }
            }
        })
    }

    fn park_all_pending<'a>(
        &'a self,
        id: Uuid,
        after: Option<&'a str>,
        reason: &'a str,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        self.with("park_all_pending", move |s| {
            let ids: Vec<String> = pending_after(s, id, after)
                .map(|t| t.transaction.unique_id.clone())
                .collect();
            let stored = s.transactions.entry(id).or_default();
            for u in &ids {
                if let Some(t) = stored.get_mut(u) {
                    t.state = TransactionState::Parked;
                    t.reason = Some(reason.to_string());
                    t.position = None;
                }
            }
            ids.len()
        })
    }

    fn mark_held<'a>(
        &'a self,
        id: Uuid,
        unique_ids: &'a [String],
        statement_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("mark_held", move |s| {
            let stored = s.transactions.entry(id).or_default();
            for u in unique_ids {
                if let Some(t) = stored.get_mut(u) {
                    t.state = TransactionState::Delivered;
                    t.statement_id = Some(statement_id.to_string());
                    t.position = None;
                }
            }
        })
    }
}

impl GrantStore for MemoryStore {
    fn granted_account<'a>(
        &'a self,
        external_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<GrantedAccount>, StoreError>> {
        self.with("granted_account", move |s| {
            s.grants.get(external_id).cloned()
        })
    }

    fn granted_since(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<GrantedAccount>, StoreError>> {
        self.with("granted_since", move |s| {
            s.grants
                .values()
                .filter(|g| g.granted_at.is_some_and(|at| at >= from && at <= to))
                .cloned()
                .collect()
        })
    }
}

impl IngestStore for MemoryStore {
    fn begin_ingest(
        &self,
        id: Uuid,
        count: u64,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Option<IngestStart>, StoreError>> {
        self.with("begin_ingest", move |s| {
            let a = s
                .accounts
                .get_mut(&id)
                .filter(|a| a.status != AccountStatus::Cancelled)?;
            a.next_seq += count;
            let token = Uuid::new_v4().simple().to_string();
            let expires_at_ms = now.timestamp_millis() + lease.as_millis() as i64;
            a.ingesting
                .insert(token.clone(), IngestFence { expires_at_ms });
            Some(IngestStart {
                first_seq: a.next_seq + 1 - count,
                token,
                horizon: a.horizon.clone(),
            })
        })
    }

    fn put_transactions<'a>(
        &'a self,
        id: Uuid,
        transactions: &'a [Transaction],
        first_seq: u64,
        horizon: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<PutOutcome>, StoreError>> {
        self.with("put_transactions", move |s| {
            let stored = s.transactions.entry(id).or_default();
            let mut out = Vec::new();
            for (i, t) in transactions.iter().enumerate() {
                if stored.contains_key(&t.unique_id) {
                    out.push(PutOutcome::Duplicate);
                    continue;
                }
                let seq = first_seq + i as u64;
                stored.insert(
                    t.unique_id.clone(),
                    StoredTransaction {
                        seq,
                        state: TransactionState::Pending,
                        transaction: t.clone(),
                        statement_id: None,
                        reason: None,
                        received_at: now,
                        position: Some(position_after(t, seq, horizon)),
                    },
                );
                out.push(PutOutcome::Stored);
            }
            out
        })
    }

    fn update_balances<'a>(
        &'a self,
        id: Uuid,
        ledger: Option<&'a Balance>,
        available: Option<&'a Balance>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("update_balances", move |s| {
            let Some(a) = s.accounts.get_mut(&id) else {
                return;
            };
            let newer = |held: &Option<Balance>, new: &Balance| {
                held.as_ref().is_none_or(|h| h.as_of <= new.as_of)
            };
            if let Some(l) = ledger.filter(|l| newer(&a.ledger, l)) {
                a.ledger = Some(l.clone());
                a.ledger_as_of_ms = Some(l.as_of.timestamp_millis());
            }
            if let Some(v) = available.filter(|v| newer(&a.available, v)) {
                a.available = Some(v.clone());
            }
        })
    }

    fn end_ingest<'a>(&'a self, id: Uuid, token: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("end_ingest", move |s| {
            if let Some(a) = s.accounts.get_mut(&id) {
                a.ingesting.remove(token);
            }
        })
    }
}

impl AccountRegistry for MemoryStore {
    fn create_account<'a>(
        &'a self,
        account: &'a Account,
    ) -> BoxFuture<'a, Result<CreateOutcome, StoreError>> {
        self.with("create_account", move |s| {
            match s.accounts.get(&account.bank_account_id) {
                Some(a) if a.status == AccountStatus::Cancelled => CreateOutcome::Tombstoned,
                Some(_) => CreateOutcome::AlreadyExists,
                None => {
                    s.accounts.insert(account.bank_account_id, account.clone());
                    CreateOutcome::Created
                }
            }
        })
    }

    fn set_backfill<'a>(
        &'a self,
        id: Uuid,
        state: BackfillState,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.with("set_backfill", move |s| match s.accounts.get_mut(&id) {
                Some(a) => {
                    a.backfill = state;
                    a.backfill_cursor = cursor.map(str::to_string);
                    Ok(())
                }
                // The table's write is conditional on the account item.
                None => Err(StoreError::ConditionFailed),
            })
            .await?
        })
    }

    fn accounts_for_external_id<'a>(
        &'a self,
        external_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ExternalLink>, StoreError>> {
        self.with("accounts_for_external_id", move |s| {
            s.accounts
                .values()
                .filter(|a| a.external_id == external_id)
                .map(|a| ExternalLink {
                    bank_account_id: a.bank_account_id,
                    cancelled: a.status == AccountStatus::Cancelled,
                })
                .collect()
        })
    }

    fn announce_handshake(
        &self,
        id: Uuid,
        bank_id: Option<Uuid>,
        received_at: DateTime<Utc>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.with("announce_handshake", move |s| {
            if s.handshakes.contains_key(&id) {
                return false;
            }
            s.handshakes.insert(
                id,
                Handshake {
                    authorisation_id: id,
                    bank_id,
                    received_at,
                    expires_at: received_at + TimeDelta::from_std(ttl).unwrap_or_default(),
                    state: HandshakeState::Announced,
                    browser: None,
                    patch_lease_until: None,
                },
            );
            true
        })
    }
}

/// Why a handshake may not be used now (the table's reading after a refused write).
fn refusal(h: Option<&Handshake>, now: DateTime<Utc>) -> Option<HandshakeRefusal> {
    match h {
        None => Some(HandshakeRefusal::Unknown),
        Some(h) => h.refusal(now),
    }
}

impl HandshakeStore for MemoryStore {
    fn handshake(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Handshake>, StoreError>> {
        self.with("handshake", move |s| s.handshakes.get(&id).cloned())
    }

    fn open_handshake<'a>(
        &'a self,
        id: Uuid,
        session: &'a BrowserSession,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Result<Handshake, HandshakeRefusal>, StoreError>> {
        self.with("open_handshake", move |s| {
            if let Some(r) = refusal(s.handshakes.get(&id), now) {
                return Err(r);
            }
            let h = s.handshakes.get_mut(&id).ok_or(HandshakeRefusal::Unknown)?;
            h.state = HandshakeState::Opened;
            h.browser = Some(session.clone());
            h.patch_lease_until = None;
            Ok(h.clone())
        })
    }

    fn claim_handshake(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Result<PatchClaim, HandshakeRefusal>, StoreError>> {
        self.with("claim_handshake", move |s| {
            if let Some(r) = refusal(s.handshakes.get(&id), now) {
                return Err(r);
            }
            let h = s.handshakes.get_mut(&id).ok_or(HandshakeRefusal::Unknown)?;
            if h.browser.is_none() {
                return Err(HandshakeRefusal::Unknown);
            }
            h.state = HandshakeState::Patching;
            h.patch_lease_until = Some(now + TimeDelta::from_std(lease).unwrap_or_default());
            Ok(PatchClaim {
                authorisation_id: id,
                token: Uuid::new_v4().simple().to_string(),
            })
        })
    }

    fn complete_handshake<'a>(
        &'a self,
        claim: &'a PatchClaim,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.with("complete_handshake", move |s| {
            settle(s, claim, HandshakeState::Completed)
        })
    }

    fn release_handshake<'a>(
        &'a self,
        claim: &'a PatchClaim,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.with("release_handshake", move |s| {
            settle(s, claim, HandshakeState::Opened)
        })
    }

    fn take_grace_slot(
        &self,
        slots: u32,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Option<GraceSlot>, StoreError>> {
        self.with("take_grace_slot", move |s| {
            let index = (0..slots.max(1))
                .find(|i| s.grace.get(i).is_none_or(|(_, until)| *until <= now))?;
            let token = Uuid::new_v4().simple().to_string();
            let until = now + TimeDelta::from_std(lease).unwrap_or_default();
            s.grace.insert(index, (token.clone(), until));
            Some(GraceSlot { index, token })
        })
    }

    fn release_grace_slot<'a>(
        &'a self,
        slot: &'a GraceSlot,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("release_grace_slot", move |s| {
            if s.grace
                .get(&slot.index)
                .is_some_and(|(t, _)| *t == slot.token)
            {
                s.grace.remove(&slot.index);
            }
        })
    }
}

/// Ends a claim (to `completed`, or back to `opened`) while it is the one held. The fake keeps
/// one claim per handshake, so "held" is "still patching"; the token is the table's business.
fn settle(s: &mut StoreState, claim: &PatchClaim, to: HandshakeState) -> bool {
    match s.handshakes.get_mut(&claim.authorisation_id) {
        Some(h) if h.state == HandshakeState::Patching => {
            h.state = to;
            h.patch_lease_until = None;
            true
        }
        _ => false,
    }
}

/// The bank's sign-in: an authorize URL carrying what it was given, and a code that grants
/// `consent` when it comes back with the verifier it was asked with.
pub struct FakeSignIn {
    pub consent: String,
    /// The verifier the last sign-in URL was made for.
    pub verifier: Mutex<Option<String>>,
}

impl BankSignIn for FakeSignIn {
    fn new_verifier(&self) -> String {
        Uuid::new_v4().simple().to_string()
    }

    fn sign_in_url(
        &self,
        redirect_uri: &str,
        state: &str,
        verifier: &str,
        renew_consent: Option<&str>,
    ) -> Result<String, BankCallError> {
        *lock(&self.verifier) = Some(verifier.to_string());
        Ok(format!(
            "https://bank.test/authorize?redirect_uri={redirect_uri}&state={state}&renew={}",
            renew_consent.unwrap_or("")
        ))
    }

    fn granted_consent<'a>(
        &'a self,
        code: &'a str,
        _redirect_uri: &'a str,
        verifier: &'a str,
    ) -> BoxFuture<'a, Result<String, BankCallError>> {
        Box::pin(async move {
            let asked = lock(&self.verifier).clone();
            if code == "good-code" && asked.as_deref() == Some(verifier) {
                Ok(self.consent.clone())
            } else {
                Err(BankCallError::Refused("invalid_grant".into()))
            }
        })
    }
}

/// A history read's answer, by `externalId` and the cursor asked with.
type HistoryAnswers = HashMap<(String, Option<String>), Result<HistoryPage, HistoryError>>;

impl ConsentCache for MemoryStore {
    fn cached_consent<'a>(
        &'a self,
        consent_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConsentRecord>, StoreError>> {
        self.with("cached_consent", move |s| {
            s.consents.get(consent_id).cloned()
        })
    }

    fn cache_consent<'a>(
        &'a self,
        consent: &'a ConsentRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("cache_consent", move |s| {
            s.consents
                .insert(consent.consent_id.clone(), consent.clone());
        })
    }

    fn put_granted_account<'a>(
        &'a self,
        account: &'a GrantedAccount,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("put_granted_account", move |s| {
            s.grants
                .insert(account.external_id.clone(), account.clone());
        })
    }
}

/// The bank's consents as `/availableaccounts` reads them: one answer, given after a delay.
pub struct LiveConsent {
    pub answer: Mutex<Result<BankConsent, BankCallError>>,
    pub delay: Duration,
    /// Consent reads asked for.
    pub reads: std::sync::atomic::AtomicUsize,
}

impl LiveConsent {
    pub fn new(answer: Result<BankConsent, BankCallError>, delay: Duration) -> Self {
        Self {
            answer: Mutex::new(answer),
            delay,
            reads: Default::default(),
        }
    }
}

impl BankReader for LiveConsent {
    fn consent<'a>(
        &'a self,
        _consent_id: &'a str,
    ) -> BoxFuture<'a, Result<BankConsent, BankCallError>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            lock(&self.answer).clone()
        })
    }

    fn balances<'a>(
        &'a self,
        _consent_id: &'a str,
        _external_id: &'a str,
    ) -> BoxFuture<'a, Result<BankBalances, BankCallError>> {
        Box::pin(async { Err(BankCallError::Unavailable("not in this test".into())) })
    }

    fn consent_active<'a>(
        &'a self,
        _consent_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, BankCallError>> {
        Box::pin(async move { Ok(lock(&self.answer).as_ref().is_ok_and(|c| c.is_active(now))) })
    }
}

/// The bank's history of each account, page by page.
#[derive(Default)]
pub struct FakeHistory {
    pages: Mutex<HistoryAnswers>,
    pub asked: Mutex<Vec<(String, chrono::NaiveDate, Option<String>)>>,
}

impl FakeHistory {
    /// What a read of `external_id` after `cursor` answers.
    pub fn page(
        &self,
        external_id: &str,
        cursor: Option<&str>,
        answer: Result<HistoryPage, HistoryError>,
    ) {
        lock(&self.pages).insert((external_id.into(), cursor.map(str::to_string)), answer);
    }
}

impl BankHistory for FakeHistory {
    fn history<'a>(
        &'a self,
        _consent_id: &'a str,
        external_id: &'a str,
        from: chrono::NaiveDate,
        cursor: Option<&'a str>,
        _limit: u32,
    ) -> BoxFuture<'a, Result<HistoryPage, HistoryError>> {
        Box::pin(async move {
            interleave().await;
            lock(&self.asked).push((external_id.into(), from, cursor.map(str::to_string)));
            lock(&self.pages)
                .get(&(external_id.to_string(), cursor.map(str::to_string)))
                .cloned()
                .unwrap_or(Err(HistoryError::NotFound))
        })
    }
}

/// A message sent to a queue, with when it becomes visible.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    Kick(Kick),
    Timer(TimerMessage),
    Work(WorkMessage),
}

/// The queues: every message kept in due order (then sending order).
pub struct MemoryQueues {
    clock: Arc<ManualClock>,
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    seq: u64,
    waiting: BTreeMap<(DateTime<Utc>, u64), Sent>,
    /// What the next sends of each kind ("kick", "timer", "work") do: `false` fails.
    script: HashMap<&'static str, VecDeque<bool>>,
}

impl MemoryQueues {
    pub fn new(clock: Arc<ManualClock>) -> Self {
        Self {
            clock,
            state: Mutex::default(),
        }
    }

    /// The next `n` sends of `kind` fail.
    pub fn fail_next(&self, kind: &'static str, n: usize) {
        self.script(kind, &vec![false; n]);
    }

    /// The next sends of `kind` succeed (`true`) or fail (`false`) in this order.
    pub fn script(&self, kind: &'static str, outcomes: &[bool]) {
        lock(&self.state)
            .script
            .entry(kind)
            .or_default()
            .extend(outcomes);
    }

    /// Puts a message back (a redelivery), visible after `delay`.
    pub fn redeliver(&self, message: Sent, delay: Duration) {
        let due = self.clock.now() + TimeDelta::from_std(delay).unwrap_or_default();
        self.push(message, due);
    }

    /// Takes the message due first, with its due time.
    pub fn pop(&self) -> Option<(DateTime<Utc>, Sent)> {
        let mut s = lock(&self.state);
        let key = *s.waiting.keys().next()?;
        s.waiting.remove(&key).map(|m| (key.0, m))
    }

    /// Loses every waiting message (a consumer dying with them, a purge).
    pub fn lose_all(&self) {
        lock(&self.state).waiting.clear();
    }

    pub fn waiting(&self) -> Vec<Sent> {
        lock(&self.state).waiting.values().cloned().collect()
    }

    fn push(&self, message: Sent, due: DateTime<Utc>) {
        let mut s = lock(&self.state);
        s.seq += 1;
        let seq = s.seq;
        s.waiting.insert((due, seq), message);
    }

    fn send(
        &self,
        kind: &'static str,
        message: Sent,
        delay: Duration,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            interleave().await;
            let ok = lock(&self.state)
                .script
                .get_mut(kind)
                .and_then(VecDeque::pop_front)
                .unwrap_or(true);
            if !ok {
                return Err(QueueError::Unavailable(format!("{kind} send failed")));
            }
            let delay = delay.min(Duration::from_secs(900));
            let due = self.clock.now() + TimeDelta::from_std(delay).unwrap_or_default();
            self.push(message, due);
            Ok(())
        })
    }
}

impl Timers for MemoryQueues {
    fn kick<'a>(&'a self, kick: &'a Kick) -> BoxFuture<'a, Result<(), QueueError>> {
        self.send("kick", Sent::Kick(kick.clone()), Duration::ZERO)
    }

    fn send_timer<'a>(
        &'a self,
        message: &'a TimerMessage,
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        self.send("timer", Sent::Timer(message.clone()), delay)
    }

    fn send_work<'a>(&'a self, message: &'a WorkMessage) -> BoxFuture<'a, Result<(), QueueError>> {
        self.send("work", Sent::Work(message.clone()), Duration::ZERO)
    }
}

/// Banking Service's statements: accepted, processed after a number of polls, and failed with
/// `DuplicateTransaction` for uniqueIds it already holds, as Sage does. It refuses a second
/// statement for an account with one still unfinished (409), and records anything the
/// connector should never do.
pub struct FakeBankingService {
    clock: Arc<ManualClock>,
    state: Mutex<ServiceState>,
}

#[derive(Default)]
struct ServiceState {
    next_id: u32,
    statements: BTreeMap<String, FakeStatement>,
    /// uniqueIds held, per account, in the order they were accepted.
    held: HashMap<Uuid, Vec<String>>,
    /// GETs a statement takes before it is finished: Sage's processing, as the connector sees
    /// it. Unpolled, a statement finishes anyway after `PROCESSING_LIMIT`.
    polls_to_finish: u32,
    post_faults: VecDeque<CallError>,
    get_faults: VecDeque<CallError>,
    /// Terminal results given instead of the natural one, in order.
    outcomes: VecDeque<(StatementStatus, Vec<FailureDetail>)>,
    /// Accounts Banking Service reports cancelled.
    cancelled: Vec<Uuid>,
    /// GETs under way right now, per statement (a statement polled twice at once is a fault).
    polling: HashMap<String, u32>,
    pub violations: Vec<String>,
    /// Authorisation PATCHes received, and the answers planned for the next ones.
    patches: Vec<(Uuid, AuthorisationPatch)>,
    patch_faults: VecDeque<CallError>,
}

/// However little it is polled, a statement finishes this long after it was posted.
const PROCESSING_LIMIT: TimeDelta = TimeDelta::seconds(60);

/// A statement as Banking Service holds it.
#[derive(Debug, Clone)]
pub struct FakeStatement {
    pub account: Uuid,
    pub posted_at: DateTime<Utc>,
    pub unique_ids: Vec<String>,
    pub gets: u32,
    pub status: StatementStatus,
    pub details: Vec<FailureDetail>,
    pub deleted: bool,
}

impl FakeBankingService {
    pub fn new(clock: Arc<ManualClock>, polls_to_finish: u32) -> Self {
        Self {
            clock,
            state: Mutex::new(ServiceState {
                polls_to_finish,
                ..ServiceState::default()
            }),
        }
    }

    /// Statements past their processing limit finish.
    fn process(&self, s: &mut ServiceState) {
        let now = self.clock.now();
        let due: Vec<String> = s
            .statements
            .iter()
            .filter(|(_, st)| !st.status.is_terminal() && now - st.posted_at >= PROCESSING_LIMIT)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            Self::finish(s, &id);
        }
    }

    pub fn fail_next_post(&self, e: CallError) {
        lock(&self.state).post_faults.push_back(e);
    }

    pub fn fail_next_get(&self, e: CallError) {
        lock(&self.state).get_faults.push_back(e);
    }

    /// The next statement to finish ends with this status and these details.
    pub fn next_outcome(&self, status: StatementStatus, details: Vec<FailureDetail>) {
        lock(&self.state).outcomes.push_back((status, details));
    }

    pub fn cancel(&self, account: Uuid) {
        lock(&self.state).cancelled.push(account);
    }

    /// Holds `unique_id` already (a statement the connector lost track of delivered it).
    pub fn hold(&self, account: Uuid, unique_id: &str) {
        lock(&self.state)
            .held
            .entry(account)
            .or_default()
            .push(unique_id.to_string());
    }

    pub fn statements(&self) -> Vec<FakeStatement> {
        lock(&self.state).statements.values().cloned().collect()
    }

    pub fn held(&self, account: Uuid) -> Vec<String> {
        lock(&self.state)
            .held
            .get(&account)
            .cloned()
            .unwrap_or_default()
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    fn post(&self, request: &StatementRequest) -> Result<String, CallError> {
        let mut s = lock(&self.state);
        if let Some(e) = s.post_faults.pop_front() {
            return Err(e);
        }
        self.process(&mut s);
        let account = request.data.account_details[0].bank_account_id;
        if s.cancelled.contains(&account) {
            return Err(CallError::Conflict {
                message: "bank account cancelled".into(),
            });
        }
        let busy = s
            .statements
            .values()
            .any(|st| st.account == account && !st.status.is_terminal());
        if busy {
            return Err(CallError::Conflict {
                message: "a statement is in flight".into(),
            });
        }
        s.next_id += 1;
        let id = format!("st-{:04}", s.next_id);
        let unique_ids = request
            .data
            .transaction_details
            .iter()
            .map(|t| t.unique_id.clone())
            .collect();
        s.statements.insert(
            id.clone(),
            FakeStatement {
                account,
                posted_at: self.clock.now(),
                unique_ids,
                gets: 0,
                status: StatementStatus::Processing,
                details: Vec::new(),
                deleted: false,
            },
        );
        Ok(id)
    }

    /// Processing ends: held uniqueIds fail as duplicates, else the statement succeeds and
    /// Banking Service holds its transactions.
    fn finish(s: &mut ServiceState, id: &str) {
        let Some(st) = s.statements.get(id).cloned() else {
            return;
        };
        let (status, details) = match s.outcomes.pop_front() {
            Some(o) => o,
            None => {
                let held = s.held.get(&st.account).cloned().unwrap_or_default();
                let dups: Vec<FailureDetail> = st
                    .unique_ids
                    .iter()
                    .filter(|u| held.contains(u))
                    .map(|u| FailureDetail {
                        code: "DuplicateTransaction".into(),
                        target: Some(u.clone()),
                        message: None,
                    })
                    .collect();
                if dups.is_empty() {
                    (StatementStatus::Succeeded, Vec::new())
                } else {
                    (StatementStatus::Failed, dups)
                }
            }
        };
        if status == StatementStatus::Succeeded {
            let held = s.held.entry(st.account).or_default();
            let twice: Vec<String> = st
                .unique_ids
                .iter()
                .filter(|u| held.contains(u))
                .map(|u| format!("{u} delivered twice"))
                .collect();
            held.extend(st.unique_ids.iter().cloned());
            s.violations.extend(twice);
        }
        if let Some(st) = s.statements.get_mut(id) {
            st.status = status;
            st.details = details;
        }
    }

    fn begin_get(&self, id: &str) -> Result<(), CallError> {
        let mut s = lock(&self.state);
        if let Some(e) = s.get_faults.pop_front() {
            return Err(e);
        }
        let polling = s.polling.entry(id.to_string()).or_default();
        *polling += 1;
        if *polling > 1 {
            s.violations.push(format!("{id} polled twice at once"));
        }
        Ok(())
    }

    fn end_get(&self, id: &str) -> Result<StatementResource, CallError> {
        let mut s = lock(&self.state);
        self.process(&mut s);
        if let Some(n) = s.polling.get_mut(id) {
            *n -= 1;
        }
        let polls_to_finish = s.polls_to_finish;
        let Some(st) = s.statements.get_mut(id).filter(|st| !st.deleted) else {
            return Err(CallError::NotFound {
                summary: "NotFound".into(),
            });
        };
        st.gets += 1;
        let finishes = st.gets >= polls_to_finish && !st.status.is_terminal();
        if finishes {
            Self::finish(&mut s, id);
        }
        let st = &s.statements[id];
        Ok(StatementResource {
            id: id.to_string(),
            principal_id: None,
            status: st.status.clone(),
            details: (!st.details.is_empty()).then(|| st.details.clone()),
        })
    }
}

impl FakeBankingService {
    /// The authorisation PATCHes received, in order.
    pub fn patches(&self) -> Vec<(Uuid, AuthorisationPatch)> {
        lock(&self.state).patches.clone()
    }

    /// The next authorisation PATCH fails with `error` (nothing recorded).
    pub fn fail_patch(&self, error: CallError) {
        lock(&self.state).patch_faults.push_back(error);
    }
}

impl StatementApi for FakeBankingService {
    fn patch_authorisation<'a>(
        &'a self,
        authorisation_id: Uuid,
        patch: &'a AuthorisationPatch,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            interleave().await;
            let mut s = lock(&self.state);
            if let Some(e) = s.patch_faults.pop_front() {
                return Err(e);
            }
            s.patches.push((authorisation_id, patch.clone()));
            Ok(())
        })
    }

    fn post_statement<'a>(
        &'a self,
        request: &'a StatementRequest,
    ) -> BoxFuture<'a, Result<String, CallError>> {
        Box::pin(async move {
            interleave().await;
            self.post(request)
        })
    }

    fn get_statement<'a>(
        &'a self,
        statement_id: &'a str,
    ) -> BoxFuture<'a, Result<StatementResource, CallError>> {
        Box::pin(async move {
            self.begin_get(statement_id)?;
            // The GET takes a while: a second delivery polling the same statement meanwhile
            // would be seen.
            interleave().await;
            self.end_get(statement_id)
        })
    }

    fn delete_statement<'a>(
        &'a self,
        statement_id: &'a str,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            interleave().await;
            let mut s = lock(&self.state);
            match s.statements.get_mut(statement_id) {
                Some(st) if st.status == StatementStatus::Failed => {
                    st.deleted = true;
                    Ok(())
                }
                Some(_) => Err(CallError::Conflict {
                    message: "only a failed statement can be deleted".into(),
                }),
                None => Err(CallError::NotFound {
                    summary: "NotFound".into(),
                }),
            }
        })
    }

    fn query_account<'a>(
        &'a self,
        _bank_id: Uuid,
        _external_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<FoundAccount>, CallError>> {
        Box::pin(async move {
            interleave().await;
            let s = lock(&self.state);
            Ok(s.cancelled.first().map(|id| FoundAccount {
                bank_account_id: *id,
                status: "cancelled".into(),
                requested_start_date: None,
            }))
        })
    }
}

/// One Banking Service for every bank.
pub struct OneService(pub Arc<FakeBankingService>);

impl StatementApis for OneService {
    fn for_bank(&self, _bank: Option<Uuid>) -> Arc<dyn StatementApi> {
        self.0.clone()
    }

    fn per_bank(&self) -> bool {
        false
    }
}

/// A bank whose balance reads fail (the tests give balances with the transactions).
pub struct NoBank;

impl BankReader for NoBank {
    fn consent<'a>(
        &'a self,
        _consent_id: &'a str,
    ) -> BoxFuture<'a, Result<BankConsent, BankCallError>> {
        Box::pin(async { Err(BankCallError::Unavailable("no bank in this test".into())) })
    }

    fn balances<'a>(
        &'a self,
        _consent_id: &'a str,
        _external_id: &'a str,
    ) -> BoxFuture<'a, Result<BankBalances, BankCallError>> {
        Box::pin(async { Err(BankCallError::Unavailable("no bank in this test".into())) })
    }

    fn consent_active<'a>(
        &'a self,
        _consent_id: &'a str,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, BankCallError>> {
        Box::pin(async { Ok(true) })
    }
}

impl OnceClaims for MemoryStore {
    fn claim_once<'a>(
        &'a self,
        key: &'a str,
        payload_hash: &'a str,
        lease: Duration,
        _keep: Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Once, StoreError>> {
        self.with("claim_once", move |s| match s.once.get(key) {
            Some((hash, _, _)) if hash != payload_hash => Once::Conflict,
            Some((_, true, _)) => Once::Completed,
            // As the table's condition: a lease that ran out may be taken over.
            Some((_, false, until)) if *until >= now => Once::InProgress,
            _ => {
                let until = now + chrono::TimeDelta::from_std(lease).unwrap_or_default();
                s.once
                    .insert(key.to_string(), (payload_hash.to_string(), false, until));
                Once::New
            }
        })
    }

    fn complete_claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("complete_claim", move |s| {
            if let Some(claim) = s.once.get_mut(key) {
                claim.1 = true;
            }
        })
    }

    fn abandon_claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("abandon_claim", move |s| {
            s.once.remove(key);
        })
    }
}

impl LinkStore for MemoryStore {
    fn link_for(
        &self,
        subscription_id: Uuid,
    ) -> BoxFuture<'_, Result<Option<AuthLink>, StoreError>> {
        self.with("link_for", move |s| s.links.get(&subscription_id).cloned())
    }

    fn record_link<'a>(
        &'a self,
        link: &'a AuthLink,
    ) -> BoxFuture<'a, Result<AuthLink, StoreError>> {
        self.with("record_link", move |s| {
            s.links
                .entry(link.subscription_id)
                .or_insert_with(|| link.clone())
                .clone()
        })
    }

    fn link<'a>(&'a self, link_id: &'a str) -> BoxFuture<'a, Result<Option<AuthLink>, StoreError>> {
        self.with("link", move |s| {
            s.links.values().find(|l| l.link_id == link_id).cloned()
        })
    }

    fn link_record<'a>(
        &'a self,
        link_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<LinkRecord>, StoreError>> {
        self.with("link_record", move |s| {
            let link = s.links.values().find(|l| l.link_id == link_id).cloned()?;
            let (session, completion, patched) =
                s.link_states.get(link_id).cloned().unwrap_or_default();
            Some(LinkRecord {
                link,
                session,
                completion,
                patched,
            })
        })
    }

    fn begin_login<'a>(
        &'a self,
        link_id: &'a str,
        session: &'a LoginSession,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.with("begin_login", move |s| {
            if !s.links.values().any(|l| l.link_id == link_id) {
                return false;
            }
            let state = s.link_states.entry(link_id.to_string()).or_default();
            if state.1.is_some() {
                return false;
            }
            state.0 = Some(session.clone());
            true
        })
    }

    fn complete_link<'a>(
        &'a self,
        link_id: &'a str,
        completion: &'a Completion,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.with("complete_link", move |s| {
            if !s.links.values().any(|l| l.link_id == link_id) {
                return false;
            }
            let state = s.link_states.entry(link_id.to_string()).or_default();
            if state.1.is_some() {
                return false;
            }
            state.1 = Some(completion.clone());
            true
        })
    }

    fn mark_patched<'a>(&'a self, link_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("mark_patched", move |s| {
            s.link_states.entry(link_id.to_string()).or_default().2 = true;
        })
    }
}

impl PartyStore for MemoryStore {
    fn put_creditor<'a>(&'a self, creditor: &'a Creditor) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("put_creditor", move |s| {
            s.creditors.insert(
                (creditor.subscription_id, creditor.creditor_id.clone()),
                creditor.clone(),
            );
        })
    }

    fn creditor<'a>(
        &'a self,
        subscription_id: Uuid,
        creditor_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Creditor>, StoreError>> {
        self.with("creditor", move |s| {
            s.creditors
                .get(&(subscription_id, creditor_id.to_string()))
                .cloned()
        })
    }

    fn creditors(&self, subscription_id: Uuid) -> BoxFuture<'_, Result<Vec<Creditor>, StoreError>> {
        self.with("creditors", move |s| {
            s.creditors
                .range((subscription_id, String::new())..)
                .take_while(|((sub, _), _)| *sub == subscription_id)
                .map(|(_, c)| c.clone())
                .collect()
        })
    }

    fn put_debtor<'a>(
        &'a self,
        account: &'a DebtorAccount,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("put_debtor", move |s| {
            s.debtors.insert(
                (account.subscription_id, account.debtor_account_id.clone()),
                account.clone(),
            );
        })
    }

    fn debtor<'a>(
        &'a self,
        subscription_id: Uuid,
        debtor_account_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<DebtorAccount>, StoreError>> {
        self.with("debtor", move |s| {
            s.debtors
                .get(&(subscription_id, debtor_account_id.to_string()))
                .cloned()
        })
    }

    fn debtors(
        &self,
        subscription_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<DebtorAccount>, StoreError>> {
        self.with("debtors", move |s| {
            s.debtors
                .range((subscription_id, String::new())..)
                .take_while(|((sub, _), _)| *sub == subscription_id)
                .map(|(_, a)| a.clone())
                .collect()
        })
    }
}

impl BatchStore for MemoryStore {
    fn record_batch<'a>(
        &'a self,
        batch: &'a BatchRecord,
        payments: &'a [PaymentRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("record_batch", move |s| {
            for p in payments {
                s.payments.insert(p.payment_id, p.clone());
            }
            s.batches.insert(batch.batch_id, batch.clone());
        })
    }

    fn batch(&self, batch_id: Uuid) -> BoxFuture<'_, Result<Option<BatchRecord>, StoreError>> {
        self.with("batch", move |s| s.batches.get(&batch_id).cloned())
    }

    fn note_decision_patched(&self, batch_id: Uuid) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let found = self
                .with("note_decision_patched", move |s| {
                    s.batches
                        .get_mut(&batch_id)
                        .map(|b| b.decision_patched = true)
                        .is_some()
                })
                .await?;
            // As DynamoDB's condition refuses an update of a batch without a record.
            found.then_some(()).ok_or(StoreError::ConditionFailed)
        })
    }

    fn payments(&self, batch_id: Uuid) -> BoxFuture<'_, Result<Vec<PaymentRecord>, StoreError>> {
        self.with("payments", move |s| {
            s.batch_payments(batch_id).cloned().collect()
        })
    }

    fn payments_owing(
        &self,
        batch_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<PaymentRecord>, StoreError>> {
        self.with("payments_owing", move |s| {
            s.batch_payments(batch_id)
                .filter(|p| p.watch() == Some(Watch::Owing))
                .cloned()
                .collect()
        })
    }

    fn any_moving(&self, batch_id: Uuid) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.with("any_moving", move |s| {
            s.batch_payments(batch_id)
                .any(|p| p.watch() == Some(Watch::Moving))
        })
    }

    fn payment(
        &self,
        payment_id: Uuid,
    ) -> BoxFuture<'_, Result<Option<PaymentRecord>, StoreError>> {
        self.with("payment", move |s| s.payments.get(&payment_id).cloned())
    }

    fn save_payment<'a>(
        &'a self,
        record: &'a PaymentRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            interleave().await;
            self.fault("save_payment")?;
            let mut s = lock(&self.state);
            let current = s.payments.get(&record.payment_id).map(|p| p.version);
            if current != Some(record.version.saturating_sub(1)) {
                return Err(StoreError::ConditionFailed);
            }
            s.payments.insert(record.payment_id, record.clone());
            Ok(())
        })
    }

    fn lease_sync(
        &self,
        batch_id: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.with("lease_sync", move |s| {
            let held = s.sync_leases.get(&batch_id).is_some_and(|u| *u >= now);
            if !held {
                s.sync_leases.insert(batch_id, until);
            }
            !held
        })
    }

    fn release_sync(&self, batch_id: Uuid) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with("release_sync", move |s| {
            s.sync_leases.remove(&batch_id);
        })
    }
}

impl OpenWork for MemoryStore {
    fn open<'a>(&'a self, item: &'a OpenItem) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("open", move |s| {
            s.open
                .insert((item.kind as u8, item.id.clone()), item.clone());
        })
    }

    fn touch<'a>(&'a self, item: &'a OpenItem) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("touch", move |s| {
            let key = (item.kind as u8, item.id.clone());
            s.touched.insert(key.clone());
            s.open.entry(key).or_insert_with(|| item.clone());
        })
    }

    fn untouch<'a>(&'a self, kind: OpenKind, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("untouch", move |s| {
            s.touched.remove(&(kind as u8, id.to_string()));
        })
    }

    fn close<'a>(&'a self, kind: OpenKind, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.with("close", move |s| {
            let key = (kind as u8, id.to_string());
            let untouched = !s.touched.contains(&key);
            if untouched {
                s.open.remove(&key);
            }
            untouched
        })
    }

    fn due(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<Vec<OpenItem>, StoreError>> {
        self.with("due", move |s| {
            s.open
                .values()
                .filter(|i| i.due_at <= now)
                .cloned()
                .collect()
        })
    }

    fn feed_read_to(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.with("feed_read_to", |s| s.feed_read_to)
    }

    fn set_feed_read_to(&self, event_seq: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with("set_feed_read_to", move |s| s.feed_read_to = event_seq)
    }
}

impl BindingStore for MemoryStore {
    fn bind<'a>(&'a self, binding: &'a Binding) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with("bind", move |s| {
            s.bindings.insert(binding.subscription_id, binding.clone());
        })
    }

    fn binding(&self, subscription_id: Uuid) -> BoxFuture<'_, Result<Option<Binding>, StoreError>> {
        self.with("binding", move |s| {
            s.bindings.get(&subscription_id).cloned()
        })
    }

    fn binding_by_consent<'a>(
        &'a self,
        consent_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Binding>, StoreError>> {
        self.with("binding_by_consent", move |s| {
            s.bindings
                .values()
                .find(|b| b.consent_id == consent_id)
                .cloned()
        })
    }
}

/// Payments Out's subscriptions, with Sage's transition table enforced (a 409 otherwise).
#[derive(Default)]
pub struct FakePayouts {
    pub subscriptions: Mutex<HashMap<Uuid, SubscriptionView>>,
    pub patches: Mutex<Vec<SubscriptionChange>>,
    pub configuration: Mutex<Value>,
    /// The next PATCHes fail with these, in order.
    pub fail_patches: Mutex<VecDeque<CallError>>,
    /// Messages posted: (op, subscription, correlation id, data).
    pub messages: Mutex<Vec<PostedMessage>>,
    /// The next messages fail with these, in order (nothing is recorded for them).
    pub fail_messages: Mutex<VecDeque<CallError>>,
    pub batches: Mutex<HashMap<Uuid, BatchView>>,
    pub batch_patches: Mutex<Vec<BatchChange>>,
}

/// Payments Out's batches: PATCHes applied as Sage applies them (atomic; an illegal payment
/// move is a 409 and nothing changes).
impl BatchApi for FakePayouts {
    fn get_batch<'a>(
        &'a self,
        batch_id: Uuid,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<BatchView, CallError>> {
        let found = lock(&self.batches).get(&batch_id).cloned();
        Box::pin(async move {
            found.ok_or(CallError::NotFound {
                summary: "NotFound".into(),
            })
        })
    }

    fn patch_batch<'a>(
        &'a self,
        batch_id: Uuid,
        _: Option<&'a str>,
        change: &'a BatchChange,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let mut batches = lock(&self.batches);
            let Some(batch) = batches.get_mut(&batch_id) else {
                return Err(CallError::NotFound {
                    summary: "NotFound".into(),
                });
            };
            let legal = change.payments.iter().all(|c| {
                batch
                    .payments
                    .iter()
                    .find(|p| p.payment_id == c.payment_id)
                    .is_some_and(|p| p.status.can_move_to(c.status))
            });
            if !legal {
                return Err(CallError::Conflict {
                    message: "InvalidStatusTransition".into(),
                });
            }
            for c in &change.payments {
                if let Some(p) = batch
                    .payments
                    .iter_mut()
                    .find(|p| p.payment_id == c.payment_id)
                {
                    p.status = c.status;
                }
            }
            batch.status = change.status;
            lock(&self.batch_patches).push(change.clone());
            Ok(())
        })
    }
}

pub type PostedMessage = (String, Uuid, Option<String>, Value);

impl PayoutsApiPort for FakePayouts {
    fn get_subscription<'a>(
        &'a self,
        id: Uuid,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SubscriptionView, CallError>> {
        let found = lock(&self.subscriptions).get(&id).cloned();
        Box::pin(async move {
            found.ok_or(CallError::NotFound {
                summary: "NotFound".into(),
            })
        })
    }

    fn patch_subscription<'a>(
        &'a self,
        id: Uuid,
        _: Option<&'a str>,
        change: &'a SubscriptionChange,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            if let Some(e) = lock(&self.fail_patches).pop_front() {
                return Err(e);
            }
            let mut subs = lock(&self.subscriptions);
            let Some(s) = subs.get_mut(&id) else {
                return Err(CallError::NotFound {
                    summary: "NotFound".into(),
                });
            };
            if !s.status.can_move_to(change.status) {
                return Err(CallError::Conflict {
                    message: "InvalidStatusTransition".into(),
                });
            }
            s.status = change.status;
            lock(&self.patches).push(change.clone());
            Ok(())
        })
    }

    fn post_message<'a>(
        &'a self,
        op: &'a str,
        subscription_id: Uuid,
        correlation_id: Option<&'a str>,
        data: &'a Value,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        if let Some(e) = lock(&self.fail_messages).pop_front() {
            return Box::pin(async move { Err(e) });
        }
        lock(&self.messages).push((
            op.to_string(),
            subscription_id,
            correlation_id.map(str::to_string),
            data.clone(),
        ));
        Box::pin(async { Ok(()) })
    }

    fn provider_configuration(&self) -> BoxFuture<'_, Result<Value, CallError>> {
        let c = lock(&self.configuration).clone();
        Box::pin(async move { Ok(c) })
    }
}

/// A stand-in for KMS in unit tests: reversible, and visibly not the plaintext.
#[derive(Default)]
pub struct FakeSealer;

impl connector_domain::ports::Sealer for FakeSealer {
    fn seal<'a>(
        &'a self,
        plaintext: &'a [u8],
    ) -> BoxFuture<'a, Result<String, connector_domain::ports::SealError>> {
        let hex: String = plaintext.iter().rev().map(|b| format!("{b:02x}")).collect();
        Box::pin(async move { Ok(format!("sealed:{hex}")) })
    }

    fn open<'a>(
        &'a self,
        sealed: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, connector_domain::ports::SealError>> {
        Box::pin(async move {
            let hex = sealed.strip_prefix("sealed:").unwrap_or_default();
            let mut bytes: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect();
            bytes.reverse();
            Ok(bytes)
        })
    }
}

/// The bank as seen after the customer's login: one consent (`status`, until 2030) sharing one
/// USD account, `acc_1` numbered `40001` — or, when `unusable`, a consent unknown to the bank or
/// ended, whose every read is `LoginError::Consent`. No login happens through it.
pub struct FakeConsents {
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub unusable: bool,
}

impl FakeConsents {
    pub fn new(status: &str) -> Self {
        Self {
            status: status.into(),
            expires_at: "2030-01-01T00:00:00Z".parse().expect("a date"),
            unusable: false,
        }
    }

    pub fn unusable() -> Self {
        Self {
            unusable: true,
            ..Self::new("revoked")
        }
    }
}

impl BankLogin for FakeConsents {
    fn authorize_url(&self, _: &str, _: &str, _: &str, _: &str) -> Result<String, LoginError> {
        unreachable!("no login here")
    }

    fn exchange_code<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(String, String), LoginError>> {
        unreachable!("no login here")
    }

    fn consent<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ConsentView, LoginError>> {
        if self.unusable {
            return Box::pin(
                async move { Err(LoginError::Consent(format!("{id}: consent_revoked"))) },
            );
        }
        let status = self.status.clone();
        let expires_at = self.expires_at;
        Box::pin(async move {
            Ok(ConsentView {
                consent_id: id.into(),
                customer_id: "cust-1".into(),
                status,
                expires_at,
                accounts: vec![ConsentAccount {
                    account_id: "acc_1".into(),
                    identifier: "40001".into(),
                    bank_code: None,
                    currency: Some("USD".into()),
                }],
            })
        })
    }
}

/// The bank's payments: counts submissions per payment (each body must carry the consent
/// `cns-1`); refuses or conflicts on the payments named; answers a read with the payment's
/// state as set (or fails it for the payments named unreadable); cancels what it holds and is
/// not executing.
#[derive(Default)]
pub struct FakeBankPayments {
    pub submissions: Mutex<HashMap<Uuid, usize>>,
    pub refuse: Mutex<std::collections::HashSet<Uuid>>,
    pub conflict: Mutex<std::collections::HashSet<Uuid>>,
    pub down: Mutex<bool>,
    /// What a read of a payment answers.
    pub states: Mutex<HashMap<Uuid, BankEvent>>,
    /// Payments whose read fails (503).
    pub unreadable: Mutex<std::collections::HashSet<Uuid>>,
    /// Payments too far along to cancel.
    pub executing: Mutex<std::collections::HashSet<Uuid>>,
    /// The bank's change feed as a test publishes it (empty: nothing new since the last read).
    pub feed: Mutex<Vec<BankEvent>>,
    /// The `since` of every read of the feed.
    pub feed_since: Mutex<Vec<Option<DateTime<Utc>>>>,
}

impl BankPayments for FakeBankPayments {
    fn submit<'a>(
        &'a self,
        payment_id: Uuid,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Submitted, SubmitError>> {
        Box::pin(async move {
            assert_eq!(body["consentId"], "cns-1");
            if *lock(&self.down) {
                return Err(SubmitError::Unavailable("503".into()));
            }
            if lock(&self.conflict).contains(&payment_id) {
                return Err(SubmitError::Conflict);
            }
            *lock(&self.submissions).entry(payment_id).or_default() += 1;
            if lock(&self.refuse).contains(&payment_id) {
                return Ok(Submitted::Refused("unknown_account".into()));
            }
            Ok(Submitted::Accepted)
        })
    }

    fn state(&self, payment_id: Uuid) -> BoxFuture<'_, Result<Option<BankEvent>, SubmitError>> {
        let answer = if lock(&self.unreadable).contains(&payment_id) {
            Err(SubmitError::Unavailable("503".into()))
        } else {
            Ok(lock(&self.states).get(&payment_id).cloned())
        };
        Box::pin(async move { answer })
    }

    /// Cancels what it holds and is not executing; the cancellation is the payment's next
    /// event.
    fn cancel(&self, payment_id: Uuid) -> BoxFuture<'_, Result<BankCancelled, SubmitError>> {
        let answer = if !lock(&self.submissions).contains_key(&payment_id) {
            BankCancelled::Unknown
        } else if lock(&self.executing).contains(&payment_id) {
            BankCancelled::NotCancellable
        } else {
            let mut states = lock(&self.states);
            let seq = states.get(&payment_id).map_or(1, |e| e.event_seq) + 1;
            let mut cancelled = payouts_world::event(payment_id, seq, "cancelled");
            cancelled.reason_code = Some("CANC".into());
            states.insert(payment_id, cancelled);
            BankCancelled::Cancelled
        };
        Box::pin(async move { Ok(answer) })
    }

    /// `feed`, as a bank whose `eventSeq` counts across its payments (`since` noted in
    /// `feed_since`, the fake's events carrying no time); fails while `down`.
    fn changed_after(
        &self,
        after: u64,
        since: Option<DateTime<Utc>>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<BankEvent>, SubmitError>> {
        lock(&self.feed_since).push(since);
        let answer = if *lock(&self.down) {
            Err(SubmitError::Unavailable("503".into()))
        } else {
            let mut changed: Vec<BankEvent> = lock(&self.feed)
                .iter()
                .filter(|e| e.event_seq > after)
                .cloned()
                .collect();
            changed.sort_by_key(|e| e.event_seq);
            changed.truncate(limit);
            Ok(changed)
        };
        Box::pin(async move { answer })
    }
}

/// A Payments Out world on the fakes: one subscription bound to the consent `cns-1` with an
/// active USD debtor account `dac_1`, one batch of it at Sage, and the use cases built on them
/// (each call builds a fresh use case on the same fakes).
pub(crate) mod payouts_world {
    use connector_domain::payouts::batches::PaymentView;
    use connector_domain::payouts::checks::Amount;
    use connector_domain::payouts::parties::PartyStatus;
    use connector_domain::payouts::status::{BatchStatus, PaymentStatus};
    use serde_json::json;

    use super::*;
    use crate::payouts_batches::Batches;
    use crate::payouts_onboarding::Onboarding;
    use crate::payouts_reconciler::PayoutsReconciler;

    /// `STUCK_AFTER_S` of every use case here.
    pub(crate) const STUCK_AFTER: TimeDelta = TimeDelta::minutes(15);

    pub(crate) struct World {
        pub(crate) batches: Batches,
        pub(crate) payouts: Arc<FakePayouts>,
        pub(crate) bank: Arc<FakeBankPayments>,
        pub(crate) store: Arc<MemoryStore>,
        pub(crate) clock: Arc<ManualClock>,
        pub(crate) subscription_id: Uuid,
        pub(crate) batch_id: Uuid,
        pub(crate) payment_ids: Vec<Uuid>,
    }

    /// When the world starts.
    pub(crate) fn now() -> DateTime<Utc> {
        "2026-03-01T09:00:00Z".parse().expect("a date")
    }

    /// A USD payment from `dac_1` (an amount of "0" fails its checks).
    pub(crate) fn payment(amount: &str) -> PaymentView {
        PaymentView {
            payment_id: Uuid::new_v4(),
            status: PaymentStatus::Received,
            amount: Amount::from_literal(amount),
            currency: "USD".into(),
            local_instrument: Some("ACH".into()),
            requested_execution_date: Some("2026-03-02".into()),
            document: json!({"debtor": {"debtorAccountId": "dac_1"},
                "creditor": {"creditorId": null, "name": "Northwind"},
                "remittanceInformation": {"reference": "BILL-1"}}),
        }
    }

    /// The bank's event `seq` of a payment, completed now.
    pub(crate) fn event(payment_id: Uuid, seq: u64, status: &str) -> BankEvent {
        BankEvent {
            event_id: format!("{payment_id}-{seq}"),
            payment_id,
            status: status.into(),
            event_seq: seq,
            completed_at: Some(now()),
            reason_code: None,
            reason_message: None,
        }
    }

    /// The world, with one batch of these amounts at Sage (`Received`).
    pub(crate) async fn world(amounts: &[&str]) -> World {
        let store = Arc::new(MemoryStore::default());
        let payouts = Arc::new(FakePayouts::default());
        *lock(&payouts.configuration) = json!({"maximumPaymentCount": 1000});
        let subscription_id = Uuid::new_v4();
        store
            .bind(&Binding {
                subscription_id,
                customer_id: "cust-1".into(),
                consent_id: "cns-1".into(),
                bound_at: now(),
            })
            .await
            .expect("bound");
        store
            .put_debtor(&DebtorAccount {
                subscription_id,
                debtor_account_id: "dac_1".into(),
                status: PartyStatus::Active,
                status_reason: None,
                bank_account_id: Some("acc_1".into()),
                currency: Some("USD".into()),
                debtor: json!({}),
                legal_entity: None,
                updated_at: now(),
            })
            .await
            .expect("put");
        let bank = Arc::new(FakeBankPayments::default());
        let clock = Arc::new(ManualClock::new(now()));
        let batches = batches_on(&payouts, &store, &bank, &clock);
        let mut w = World {
            batches,
            payouts,
            bank,
            store,
            clock,
            subscription_id,
            batch_id: Uuid::nil(),
            payment_ids: Vec::new(),
        };
        (w.batch_id, w.payment_ids) = w.add_batch(amounts);
        w
    }

    /// The batches' use case on the world's fakes.
    fn batches_on(
        payouts: &Arc<FakePayouts>,
        store: &Arc<MemoryStore>,
        bank: &Arc<FakeBankPayments>,
        clock: &Arc<ManualClock>,
    ) -> Batches {
        Batches {
            api: payouts.clone(),
            batches: payouts.clone(),
            store: store.clone(),
            checks: store.clone(),
            parties: store.clone(),
            bindings: store.clone(),
            consents: Arc::new(FakeConsents::new("active")),
            bank: bank.clone(),
            clock: clock.clone(),
            supported_currencies: vec!["USD".into()],
            bank_concurrency: 2,
            open: store.clone(),
            stuck_after: STUCK_AFTER,
            outcome_window: Duration::ZERO,
            submit_budget: Duration::from_secs(30),
            requeue: None,
        }
    }

    impl World {
        /// Another batch of the subscription at Sage (`Received`): its id and its payments'.
        pub(crate) fn add_batch(&self, amounts: &[&str]) -> (Uuid, Vec<Uuid>) {
            let payments: Vec<PaymentView> = amounts.iter().map(|a| payment(a)).collect();
            let payment_ids = payments.iter().map(|p| p.payment_id).collect();
            let batch_id = Uuid::new_v4();
            lock(&self.payouts.batches).insert(
                batch_id,
                BatchView {
                    batch_id,
                    subscription_id: Some(self.subscription_id),
                    status: BatchStatus::Received,
                    payments,
                },
            );
            (batch_id, payment_ids)
        }

        /// The onboarding use case on the world's fakes (links live 7 days).
        pub(crate) fn onboarding(&self) -> Onboarding {
            Onboarding {
                api: self.payouts.clone(),
                links: self.store.clone(),
                clock: self.clock.clone(),
                link_ttl: TimeDelta::days(7),
                open: self.store.clone(),
            }
        }

        /// The reconciler on the world's fakes; the bank's consents read `active`.
        pub(crate) fn reconciler(&self) -> PayoutsReconciler {
            PayoutsReconciler {
                open: self.store.clone(),
                batches: batches_on(&self.payouts, &self.store, &self.bank, &self.clock),
                onboarding: self.onboarding(),
                links: self.store.clone(),
                api: self.payouts.clone(),
                bindings: self.store.clone(),
                consents: Arc::new(FakeConsents::new("active")),
                clock: self.clock.clone(),
                stuck_after: STUCK_AFTER,
            }
        }
    }

    /// A batch's status and its payments' as Sage shows them.
    pub(crate) fn batch_at_sage(w: &World, batch_id: Uuid) -> (BatchStatus, Vec<PaymentStatus>) {
        let b = lock(&w.payouts.batches)[&batch_id].clone();
        (b.status, b.payments.iter().map(|p| p.status).collect())
    }

    /// [`batch_at_sage`] of the world's first batch.
    pub(crate) fn at_sage(w: &World) -> (BatchStatus, Vec<PaymentStatus>) {
        batch_at_sage(w, w.batch_id)
    }
}
