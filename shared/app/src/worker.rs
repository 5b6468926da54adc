//! The notification worker: acts on notifications (spec §5 required actions) and pulls each new
//! account's history page by page (backfill).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use connector_domain::account::{Account, AccountStatus, BackfillState, CreateOutcome};
use connector_domain::messages::{Kick, KickReason, WorkMessage};
use connector_domain::notification::{NotificationAction, parse_start_date};
use connector_domain::ports::{
    BankHistory, Clock, HistoryError, RegistryStore, StatementApis, Timers,
};
use connector_domain::statement::Balance;
use connector_domain::transaction::{Transaction, dated_in_future};
use tracing::Instrument;
use uuid::Uuid;

use crate::batch::MessageError;

/// Records per backfill page.
const BACKFILL_PAGE: u32 = 500;

/// The worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The backfill's window when neither the notification nor Banking Service gives a start.
    pub default_window: Duration,
    /// The bank this deployment serves, when it serves one (`BANKING_SERVICE_BANK_ID`).
    pub single_bank: Option<Uuid>,
    /// The authorisation handshake's lifetime (spec §4.2: 20 minutes).
    pub handshake_ttl: Duration,
}

pub struct NotificationWorker {
    /// Accounts, their transactions, grants and announced authorisations (the table).
    pub store: Arc<dyn RegistryStore>,
    /// The push and work queues.
    pub queues: Arc<dyn Timers>,
    /// The Bank Data API, for the backfill.
    pub bank: Arc<dyn BankHistory>,
    /// Banking Service's Provider API per bank (for an account's start date).
    pub providers: Arc<dyn StatementApis>,
    pub clock: Arc<dyn Clock>,
    pub settings: WorkerSettings,
}

fn retry(e: impl std::fmt::Display) -> MessageError {
    MessageError::Retry(e.to_string())
}

impl NotificationWorker {
    /// `deadline`: the invocation's (bounds how long a crash mid-backfill fences the account).
    pub async fn handle(
        &self,
        message: WorkMessage,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<(), MessageError> {
        match message {
            WorkMessage::Notification {
                key,
                action,
                received_at,
                verified_bank_id,
            } => {
                let span = tracing::info_span!("notification", notification = %key);
                self.act(action, received_at, verified_bank_id)
                    .instrument(span)
                    .await
            }
            WorkMessage::BackfillPage {
                bank_account_id,
                cursor,
            } => self.backfill_page(bank_account_id, cursor, deadline).await,
        }
    }

    async fn act(
        &self,
        action: NotificationAction,
        received_at: DateTime<Utc>,
        verified_bank_id: Option<Uuid>,
    ) -> Result<(), MessageError> {
        match action {
            NotificationAction::AuthorisationCreated {
                authorisation_id,
                bank_id,
            } => {
                let new = self
                    .store
                    .announce_handshake(
                        authorisation_id,
                        bank_id.or(verified_bank_id),
                        received_at,
                        self.settings.handshake_ttl,
                    )
                    .await
                    .map_err(retry)?;
                tracing::info!(authorisationId = %authorisation_id, new, "authorisation announced");
                Ok(())
            }
            NotificationAction::BankAccountCreated {
                bank_account_id,
                external_id,
                requested_start_date,
                bank_id,
            } => {
                let Some(external_id) = external_id else {
                    return Err(MessageError::Poison(
                        "bankAccount created without additionalData.externalId".into(),
                    ));
                };
                self.account_created(
                    bank_account_id,
                    external_id,
                    requested_start_date,
                    bank_id,
                    verified_bank_id,
                )
                .await
            }
            NotificationAction::BankAccountDeleted {
                bank_account_id,
                external_id,
                ..
            } => self.account_deleted(bank_account_id, external_id).await,
        }
    }

    async fn account_created(
        &self,
        id: Uuid,
        external_id: String,
        requested_start_date: Option<DateTime<Utc>>,
        bank_id: Option<Uuid>,
        verified_bank_id: Option<Uuid>,
    ) -> Result<(), MessageError> {
        let bank_id = crate::bank_id::resolve(
            self.store.as_ref(),
            &external_id,
            bank_id,
            verified_bank_id,
            self.settings.single_bank,
        )
        .await
        .map_err(retry)?;
        let start = match requested_start_date {
            Some(d) => d,
            None => {
                self.start_date_from_banking_service(bank_id, &external_id)
                    .await
            }
        };
        let account = Account::new(
            id,
            external_id.clone(),
            bank_id,
            Some(start),
            self.clock.now(),
        );
        let outcome = self.store.create_account(&account).await.map_err(retry)?;
        tracing::info!(bankAccountId = %id, externalId = %external_id, ?outcome, "bank account created");
        let resume_cursor = match outcome {
            CreateOutcome::Created => None,
            CreateOutcome::Tombstoned => return Ok(()),
            CreateOutcome::AlreadyExists => {
                // A redelivery; if the first attempt stopped before its backfill began, go on.
                match self.store.get_account(id).await.map_err(retry)? {
                    Some(a)
                        if a.backfill == BackfillState::Pending
                            && a.status != AccountStatus::Cancelled =>
                    {
                        a.backfill_cursor
                    }
                    _ => return Ok(()),
                }
            }
        };
        self.queues
            .send_work(&WorkMessage::BackfillPage {
                bank_account_id: id,
                cursor: resume_cursor,
            })
            .await
            .map_err(retry)
    }

    /// `requestedStartDate` was missing: ask Banking Service, else use the default window.
    async fn start_date_from_banking_service(
        &self,
        bank_id: Option<Uuid>,
        external_id: &str,
    ) -> DateTime<Utc> {
        let fallback = self.clock.now()
            - TimeDelta::from_std(self.settings.default_window).unwrap_or(TimeDelta::days(90));
        let Some(bank_id) = bank_id else {
            return fallback;
        };
        match self
            .providers
            .for_bank(Some(bank_id))
            .query_account(bank_id, external_id)
            .await
        {
            Ok(Some(found)) => found
                .requested_start_date
                .as_deref()
                .and_then(parse_start_date)
                .unwrap_or(fallback),
            Ok(None) => fallback,
            Err(e) => {
                tracing::warn!(error = %e, "account query failed; using the default window");
                fallback
            }
        }
    }

    async fn account_deleted(
        &self,
        id: Uuid,
        external_id: Option<String>,
    ) -> Result<(), MessageError> {
        let now = self.clock.now();
        let before = self
            .store
            .cancel_account(id, external_id.as_deref(), now)
            .await
            .map_err(retry)?;
        let watermark = before.as_ref().and_then(|a| a.delivered_through.clone());
        let parked = self
            .store
            .park_all_pending(id, watermark.as_deref(), "AccountCancelled", now)
            .await
            .map_err(retry)?;
        crate::metrics::parked("AccountCancelled", parked);
        tracing::info!(
            bankAccountId = %id,
            existed = before.is_some(),
            parked,
            "bank account offboarded"
        );
        Ok(())
    }

    async fn backfill_page(
        &self,
        id: Uuid,
        cursor: Option<String>,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<(), MessageError> {
        let Some(account) = self.store.get_account(id).await.map_err(retry)? else {
            return Err(MessageError::Poison(format!(
                "backfill for unknown account {id}"
            )));
        };
        if account.status == AccountStatus::Cancelled || account.backfill == BackfillState::Done {
            return Ok(());
        }
        let Some(granted) = self
            .store
            .granted_account(&account.external_id)
            .await
            .map_err(retry)?
        else {
            // No consent on record for this externalId (for example an account created outside
            // the /auth flow): nothing to pull; ingest still delivers new transactions.
            tracing::warn!(bankAccountId = %id, "no consent known for the account: backfill skipped");
            return self.finish_backfill(id).await;
        };
        let from = account
            .requested_start_date
            .unwrap_or_else(|| self.clock.now())
            .date_naive();
        let page = match self
            .bank
            .history(
                &granted.consent_id,
                &granted.external_id,
                from,
                cursor.as_deref(),
                BACKFILL_PAGE,
            )
            .await
        {
            Ok(p) => p,
            Err(HistoryError::ConsentExpired) => return self.pause_for_consent(id).await,
            Err(HistoryError::NotFound) => {
                tracing::warn!(bankAccountId = %id, "the bank does not know the account: backfill skipped");
                return self.finish_backfill(id).await;
            }
            Err(e) => return Err(retry(e)),
        };
        let now = self.clock.now();
        let transactions = self.park_future_dated(id, page.transactions, now).await?;
        let ledger = page.balances.as_ref().map(|b| Balance {
            amount: b.ledger,
            as_of: b.as_of,
        });
        let available = page.balances.as_ref().and_then(|b| {
            b.available.map(|amount| Balance {
                amount,
                as_of: b.as_of,
            })
        });
        crate::ingest::store_for_account(
            self.store.as_ref(),
            id,
            &transactions,
            ledger.as_ref().map(|l| (l, available.as_ref())),
            now,
            crate::ingest::fence_until(deadline, now),
        )
        .await
        .map_err(retry)?;
        match page.next_cursor {
            Some(next) => self.next_page(id, next).await,
            None => self.finish_backfill(id).await,
        }
    }

    /// The consent is over: the account owes Banking Service an `authRequired` statement; the
    /// backfill resumes from its cursor after re-authorisation.
    async fn pause_for_consent(&self, id: Uuid) -> Result<(), MessageError> {
        self.store
            .set_account_status(id, AccountStatus::AuthRequired)
            .await
            .map_err(retry)?;
        self.kick(id, KickReason::Backfill).await
    }

    /// Parks the records dated in the future (refused as `/ingest` refuses them, kept for an
    /// operator to see); the others.
    async fn park_future_dated(
        &self,
        id: Uuid,
        page: Vec<Transaction>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transaction>, MessageError> {
        let (future, transactions): (Vec<Transaction>, Vec<Transaction>) = page
            .into_iter()
            .partition(|t| dated_in_future(t, now).is_some());
        if !future.is_empty() {
            let ids: Vec<String> = future.iter().map(|t| t.unique_id.clone()).collect();
            tracing::warn!(bankAccountId = %id, count = ids.len(), "backfill records dated in the future parked");
            self.store
                .park_new(id, &future, "DatePostedInFuture", now)
                .await
                .map_err(retry)?;
            crate::metrics::parked("DatePostedInFuture", ids.len());
        }
        Ok(transactions)
    }

    /// Records the cursor, then asks for the page after it.
    async fn next_page(&self, id: Uuid, next: String) -> Result<(), MessageError> {
        self.store
            .set_backfill(id, BackfillState::Pending, Some(&next))
            .await
            .map_err(retry)?;
        self.queues
            .send_work(&WorkMessage::BackfillPage {
                bank_account_id: id,
                cursor: Some(next),
            })
            .await
            .map_err(retry)
    }

    async fn finish_backfill(&self, id: Uuid) -> Result<(), MessageError> {
        self.store
            .set_backfill(id, BackfillState::Done, None)
            .await
            .map_err(retry)?;
        tracing::info!(bankAccountId = %id, "backfill done");
        self.kick(id, KickReason::Backfill).await
    }

    async fn kick(&self, id: Uuid, reason: KickReason) -> Result<(), MessageError> {
        self.queues
            .kick(&Kick {
                bank_account_id: id,
                claim: None,
                attempt: None,
                reason,
            })
            .await
            .map_err(retry)
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
