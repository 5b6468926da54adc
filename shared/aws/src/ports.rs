//! The table and the queues as the pipeline's ports (`connector_domain::ports`). Each method
//! hands over to the inherent one of the same name.

use std::time::Duration;

use chrono::{DateTime, Utc};
use connector_domain::account::{
    Account, AccountStatus, BackfillState, Claim, ClaimOutcome, ConsentRecord, CreateOutcome,
    ExternalLink, GrantedAccount, IngestStart, Release,
};
use connector_domain::handshake::{
    BrowserSession, GraceSlot, Handshake, HandshakeRefusal, PatchClaim,
};
use connector_domain::messages::{Kick, TimerMessage, WorkMessage};
use connector_domain::payouts::authorise::{Binding, Completion, LinkRecord, LoginSession};
use connector_domain::payouts::batches::{BatchRecord, PaymentRecord};
use connector_domain::payouts::creditors::Creditor;
use connector_domain::payouts::notification::PayoutsWork;
use connector_domain::payouts::onboarding::AuthLink;
use connector_domain::payouts::parties::DebtorAccount;
use connector_domain::ports::{
    AccountRegistry, AccountStore, BatchStore, BindingStore, BoxFuture, ConsentCache, GrantStore,
    HandshakeStore, IngestStore, LinkStore, Once, OnceClaims, OpenItem, OpenKind, OpenWork,
    PartyStore, PayoutsQueue, PutOutcome, QueueError, StoreError, Timers, TransactionStore,
};
use connector_domain::statement::Balance;
use connector_domain::stored::StoredTransaction;
use connector_domain::transaction::Transaction;
use uuid::Uuid;

use crate::Table;
use crate::queues::Queues;

impl AccountStore for Table {
    fn get_account(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Account>, StoreError>> {
        Box::pin(Table::get_account(self, id))
    }

    fn accounts(&self) -> BoxFuture<'_, Result<Vec<Account>, StoreError>> {
        Box::pin(Table::accounts(self))
    }

    fn claim_account<'a>(
        &'a self,
        id: Uuid,
        claim: &'a Claim,
    ) -> BoxFuture<'a, Result<ClaimOutcome, StoreError>> {
        Box::pin(Table::claim_account(self, id, claim))
    }

    fn update_claim<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        claim: &'a Claim,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Table::update_claim(self, id, token, claim))
    }

    fn advance_poll<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        seen: u32,
        overdue: bool,
        due: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Table::advance_poll(self, id, token, seen, overdue, due))
    }

    fn release_account<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        release: &'a Release,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Table::release_account(self, id, token, release))
    }

    fn commit_horizon<'a>(
        &'a self,
        id: Uuid,
        token: &'a str,
        hi: &'a str,
        seen_next_seq: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Table::commit_horizon(self, id, token, hi, seen_next_seq))
    }

    fn clear_expired_ingests<'a>(
        &'a self,
        account: &'a Account,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::clear_expired_ingests(self, account, now))
    }

    fn cancel_account<'a>(
        &'a self,
        id: Uuid,
        external_id: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<Account>, StoreError>> {
        Box::pin(Table::cancel_account(self, id, external_id, now))
    }

    fn set_account_status(
        &self,
        id: Uuid,
        status: AccountStatus,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(Table::set_account_status(self, id, status))
    }
}

impl TransactionStore for Table {
    fn park_new<'a>(
        &'a self,
        id: Uuid,
        transactions: &'a [Transaction],
        reason: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::park_new(self, id, transactions, reason, now))
    }

    fn pending_transactions<'a>(
        &'a self,
        id: Uuid,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredTransaction>, StoreError>> {
        Box::pin(Table::pending_transactions(self, id, after, limit))
    }

    fn count_pending<'a>(
        &'a self,
        id: Uuid,
        after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(Table::count_pending(self, id, after))
    }

    fn transactions_by_ids<'a>(
        &'a self,
        id: Uuid,
        unique_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<StoredTransaction>, StoreError>> {
        Box::pin(Table::transactions_by_ids(self, id, unique_ids))
    }

    fn park_transactions<'a>(
        &'a self,
        id: Uuid,
        unique_ids: &'a [String],
        reason: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::park_transactions(self, id, unique_ids, reason, now))
    }

    fn park_all_pending<'a>(
        &'a self,
        id: Uuid,
        after: Option<&'a str>,
        reason: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(Table::park_all_pending(self, id, after, reason, now))
    }

    fn mark_held<'a>(
        &'a self,
        id: Uuid,
        unique_ids: &'a [String],
        statement_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::mark_held(self, id, unique_ids, statement_id))
    }
}

impl GrantStore for Table {
    fn granted_account<'a>(
        &'a self,
        external_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<GrantedAccount>, StoreError>> {
        Box::pin(Table::granted_account(self, external_id))
    }

    fn granted_since(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<GrantedAccount>, StoreError>> {
        Box::pin(Table::granted_since(self, from, to))
    }
}

impl IngestStore for Table {
    fn begin_ingest(
        &self,
        id: Uuid,
        count: u64,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Option<IngestStart>, StoreError>> {
        Box::pin(Table::begin_ingest(self, id, count, lease, now))
    }

    fn put_transactions<'a>(
        &'a self,
        id: Uuid,
        transactions: &'a [Transaction],
        first_seq: u64,
        horizon: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<PutOutcome>, StoreError>> {
        Box::pin(Table::put_transactions(
            self,
            id,
            transactions,
            first_seq,
            horizon,
            now,
        ))
    }

    fn update_balances<'a>(
        &'a self,
        id: Uuid,
        ledger: Option<&'a Balance>,
        available: Option<&'a Balance>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::update_balances(self, id, ledger, available))
    }

    fn end_ingest<'a>(&'a self, id: Uuid, token: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::end_ingest(self, id, token))
    }
}

impl AccountRegistry for Table {
    fn create_account<'a>(
        &'a self,
        account: &'a Account,
    ) -> BoxFuture<'a, Result<CreateOutcome, StoreError>> {
        Box::pin(Table::create_account(self, account))
    }

    fn set_backfill<'a>(
        &'a self,
        id: Uuid,
        state: BackfillState,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::set_backfill(self, id, state, cursor))
    }

    fn accounts_for_external_id<'a>(
        &'a self,
        external_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ExternalLink>, StoreError>> {
        Box::pin(Table::accounts_for_external_id(self, external_id))
    }

    fn announce_handshake(
        &self,
        id: Uuid,
        bank_id: Option<Uuid>,
        received_at: DateTime<Utc>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(Table::announce_handshake(
            self,
            id,
            bank_id,
            received_at,
            ttl,
        ))
    }
}

impl ConsentCache for Table {
    fn cached_consent<'a>(
        &'a self,
        consent_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConsentRecord>, StoreError>> {
        Box::pin(Table::consent(self, consent_id))
    }

    fn cache_consent<'a>(
        &'a self,
        consent: &'a ConsentRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::put_consent(self, consent))
    }

    fn put_granted_account<'a>(
        &'a self,
        account: &'a GrantedAccount,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::put_granted_account(self, account))
    }
}

impl HandshakeStore for Table {
    fn handshake(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Handshake>, StoreError>> {
        Box::pin(Table::handshake(self, id))
    }

    fn open_handshake<'a>(
        &'a self,
        id: Uuid,
        session: &'a BrowserSession,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Result<Handshake, HandshakeRefusal>, StoreError>> {
        Box::pin(Table::open_handshake(self, id, session, now))
    }

    fn claim_handshake(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Result<PatchClaim, HandshakeRefusal>, StoreError>> {
        Box::pin(Table::claim_handshake(self, id, now, lease))
    }

    fn complete_handshake<'a>(
        &'a self,
        claim: &'a PatchClaim,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Table::complete_handshake(self, claim))
    }

    fn release_handshake<'a>(
        &'a self,
        claim: &'a PatchClaim,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Table::release_handshake(self, claim))
    }

    fn take_grace_slot(
        &self,
        slots: u32,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Option<GraceSlot>, StoreError>> {
        Box::pin(Table::take_grace_slot(self, slots, now, lease))
    }

    fn release_grace_slot<'a>(
        &'a self,
        slot: &'a GraceSlot,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::release_grace_slot(self, slot))
    }
}

impl Timers for Queues {
    fn kick<'a>(&'a self, kick: &'a Kick) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(Queues::kick(self, kick))
    }

    fn send_timer<'a>(
        &'a self,
        message: &'a TimerMessage,
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(Queues::send_timer(self, message, delay))
    }

    fn send_work<'a>(&'a self, message: &'a WorkMessage) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(Queues::send_work(self, message))
    }
}

impl OnceClaims for Table {
    fn claim_once<'a>(
        &'a self,
        key: &'a str,
        payload_hash: &'a str,
        lease: Duration,
        keep: Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Once, StoreError>> {
        Box::pin(async move {
            Ok(
                match Table::claim_once(self, key, payload_hash, lease, keep, now).await? {
                    crate::idempotency::Claim::New => Once::New,
                    crate::idempotency::Claim::Completed => Once::Completed,
                    crate::idempotency::Claim::InProgress => Once::InProgress,
                    crate::idempotency::Claim::Conflict => Once::Conflict,
                },
            )
        })
    }

    fn complete_claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::complete_claim(self, key))
    }

    fn abandon_claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::abandon_claim(self, key))
    }
}

impl PayoutsQueue for crate::queues::WorkQueue {
    fn send<'a>(&'a self, work: &'a PayoutsWork) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            let body =
                serde_json::to_string(work).map_err(|e| QueueError::Unavailable(e.to_string()))?;
            self.send_body(body).await
        })
    }

    fn send_after<'a>(
        &'a self,
        work: &'a PayoutsWork,
        delay: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            let body =
                serde_json::to_string(work).map_err(|e| QueueError::Unavailable(e.to_string()))?;
            self.send_body_after(body, delay).await
        })
    }
}

impl LinkStore for Table {
    fn link_for(
        &self,
        subscription_id: Uuid,
    ) -> BoxFuture<'_, Result<Option<AuthLink>, StoreError>> {
        Box::pin(Table::link_for(self, subscription_id))
    }

    fn record_link<'a>(
        &'a self,
        link: &'a AuthLink,
    ) -> BoxFuture<'a, Result<AuthLink, StoreError>> {
        Box::pin(Table::record_link(self, link))
    }

    fn link<'a>(&'a self, link_id: &'a str) -> BoxFuture<'a, Result<Option<AuthLink>, StoreError>> {
        Box::pin(Table::link(self, link_id))
    }

    fn link_record<'a>(
        &'a self,
        link_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<LinkRecord>, StoreError>> {
        Box::pin(Table::link_record(self, link_id))
    }

    fn begin_login<'a>(
        &'a self,
        link_id: &'a str,
        session: &'a LoginSession,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Table::begin_login(self, link_id, session))
    }

    fn complete_link<'a>(
        &'a self,
        link_id: &'a str,
        completion: &'a Completion,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Table::complete_link(self, link_id, completion))
    }

    fn mark_patched<'a>(&'a self, link_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::mark_patched(self, link_id))
    }
}

impl PartyStore for Table {
    fn put_creditor<'a>(&'a self, creditor: &'a Creditor) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::put_creditor(self, creditor))
    }

    fn creditor<'a>(
        &'a self,
        subscription_id: Uuid,
        creditor_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Creditor>, StoreError>> {
        Box::pin(Table::creditor(self, subscription_id, creditor_id))
    }

    fn creditors(&self, subscription_id: Uuid) -> BoxFuture<'_, Result<Vec<Creditor>, StoreError>> {
        Box::pin(Table::creditors(self, subscription_id))
    }

    fn put_debtor<'a>(
        &'a self,
        account: &'a DebtorAccount,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::put_debtor(self, account))
    }

    fn debtor<'a>(
        &'a self,
        subscription_id: Uuid,
        debtor_account_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<DebtorAccount>, StoreError>> {
        Box::pin(Table::debtor(self, subscription_id, debtor_account_id))
    }

    fn debtors(
        &self,
        subscription_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<DebtorAccount>, StoreError>> {
        Box::pin(Table::debtors(self, subscription_id))
    }
}

impl BatchStore for Table {
    fn record_batch<'a>(
        &'a self,
        batch: &'a BatchRecord,
        payments: &'a [PaymentRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::record_batch(self, batch, payments))
    }

    fn batch(&self, batch_id: Uuid) -> BoxFuture<'_, Result<Option<BatchRecord>, StoreError>> {
        Box::pin(Table::batch_record(self, batch_id))
    }

    fn note_decision_patched(&self, batch_id: Uuid) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Table::note_decision_patched(self, batch_id))
    }

    fn payments(&self, batch_id: Uuid) -> BoxFuture<'_, Result<Vec<PaymentRecord>, StoreError>> {
        Box::pin(Table::batch_payments(self, batch_id))
    }

    fn payments_owing(
        &self,
        batch_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<PaymentRecord>, StoreError>> {
        Box::pin(Table::payments_owing(self, batch_id))
    }

    fn any_moving(&self, batch_id: Uuid) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(Table::any_payment_moving(self, batch_id))
    }

    fn payment(
        &self,
        payment_id: Uuid,
    ) -> BoxFuture<'_, Result<Option<PaymentRecord>, StoreError>> {
        Box::pin(Table::payment_record(self, payment_id))
    }

    fn save_payment<'a>(
        &'a self,
        record: &'a PaymentRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::save_payment(self, record))
    }

    fn lease_sync(
        &self,
        batch_id: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(Table::lease_sync(self, batch_id, until, now))
    }

    fn release_sync(&self, batch_id: Uuid) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Table::release_sync(self, batch_id))
    }
}

impl OpenWork for Table {
    fn open<'a>(&'a self, item: &'a OpenItem) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::open_work(self, item))
    }

    fn touch<'a>(&'a self, item: &'a OpenItem) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::touch_work(self, item))
    }

    fn untouch<'a>(&'a self, kind: OpenKind, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::untouch_work(self, kind, id))
    }

    fn close<'a>(&'a self, kind: OpenKind, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Table::close_work(self, kind, id))
    }

    fn due(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<Vec<OpenItem>, StoreError>> {
        Box::pin(Table::due_work(self, now))
    }

    fn feed_read_to(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(Table::feed_read_to(self))
    }

    fn set_feed_read_to(&self, event_seq: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Table::set_feed_read_to(self, event_seq))
    }
}

impl BindingStore for Table {
    fn bind<'a>(&'a self, binding: &'a Binding) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Table::bind(self, binding))
    }

    fn binding(&self, subscription_id: Uuid) -> BoxFuture<'_, Result<Option<Binding>, StoreError>> {
        Box::pin(Table::binding(self, subscription_id))
    }

    fn binding_by_consent<'a>(
        &'a self,
        consent_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Binding>, StoreError>> {
        Box::pin(Table::binding_by_consent(self, consent_id))
    }
}
