//! Bank accounts: the `externalId` ↔ `bankAccountId` mapping, the pipeline state of each account
//! and its in-flight claim (invariant 1: at most one statement in flight per account).

use chrono::{DateTime, Utc};
use connector_domain::account::{
    Account, AccountStatus, BackfillState, Claim, ClaimOutcome, CreateOutcome, IngestFence,
    IngestStart, Release,
};
use connector_domain::statement::Balance;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::table::{Item, StoreError, Table, from_item, n, s};

#[derive(Serialize, Deserialize)]
struct AccountItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    account: Account,
}

pub use connector_domain::account::ExternalLink;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExternalLinkItem {
    pk: String,
    sk: String,
    bank_account_id: Uuid,
    cancelled: bool,
}

/// One item per account in one partition, written with the account: the reconciler lists the
/// accounts from here instead of scanning a table that also holds every transaction.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryItem {
    pk: String,
    sk: String,
    bank_account_id: Uuid,
}

const REGISTRY_PK: &str = "ACCOUNTS";

pub(crate) fn account_pk(id: Uuid) -> String {
    format!("ACCT#{id}")
}
const ACCOUNT_SK: &str = "ACCOUNT";

fn external_pk(external_id: &str) -> String {
    format!("EXT#{external_id}")
}

impl Table {
    pub async fn get_account(&self, id: Uuid) -> Result<Option<Account>, StoreError> {
        Ok(self
            .get_as::<AccountItem>(account_pk(id), ACCOUNT_SK)
            .await?
            .map(|i| i.account))
    }

    /// Records a new account; a redelivery or a reordered delivery changes nothing.
    pub async fn create_account(&self, account: &Account) -> Result<CreateOutcome, StoreError> {
        let created = self
            .put_new(&AccountItem {
                pk: account_pk(account.bank_account_id),
                sk: ACCOUNT_SK.into(),
                account: account.clone(),
            })
            .await?;
        let outcome = if created {
            CreateOutcome::Created
        } else {
            let existing = self.get_account(account.bank_account_id).await?;
            match existing.map(|a| a.status) {
                Some(AccountStatus::Cancelled) => return Ok(CreateOutcome::Tombstoned),
                _ => CreateOutcome::AlreadyExists,
            }
        };
        // Also when the account existed: a creation that died after its first write is
        // completed by the redelivery (both puts are idempotent).
        self.put_external_link(&account.external_id, account.bank_account_id, false)
            .await?;
        self.put_registry(account.bank_account_id).await?;
        Ok(outcome)
    }

    async fn put_registry(&self, id: Uuid) -> Result<(), StoreError> {
        self.put_as(&RegistryItem {
            pk: REGISTRY_PK.into(),
            sk: account_pk(id),
            bank_account_id: id,
        })
        .await
    }

    async fn put_external_link(
        &self,
        external_id: &str,
        id: Uuid,
        cancelled: bool,
    ) -> Result<(), StoreError> {
        self.put_as(&ExternalLinkItem {
            pk: external_pk(external_id),
            sk: account_pk(id),
            bank_account_id: id,
            cancelled,
        })
        .await
    }

    /// Every account ever linked to `external_id`, live or cancelled.
    pub async fn accounts_for_external_id(
        &self,
        external_id: &str,
    ) -> Result<Vec<ExternalLink>, StoreError> {
        let links: Vec<ExternalLinkItem> = self
            .query_as(external_pk(external_id), Some("ACCT#"))
            .await?;
        Ok(links
            .into_iter()
            .map(|link| ExternalLink {
                bank_account_id: link.bank_account_id,
                cancelled: link.cancelled,
            })
            .collect())
    }

    /// Offboarding (invariant 8): the account becomes a permanent tombstone. Works whether or not
    /// the account was created first (a `deleted` may overtake its `created`).
    /// Returns the account as it was, if it existed.
    pub async fn cancel_account(
        &self,
        id: Uuid,
        external_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Account>, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
            .update_expression(
                "SET #status = :cancelled, cancelledAt = if_not_exists(cancelledAt, :now), \
                 bankAccountId = if_not_exists(bankAccountId, :id), \
                 externalId = if_not_exists(externalId, :ext), \
                 backfill = if_not_exists(backfill, :done), createdAt = if_not_exists(createdAt, :now)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":cancelled", s("cancelled"))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":id", s(id.to_string()))
            .expression_attribute_values(":ext", s(external_id.unwrap_or_default()))
            .expression_attribute_values(":done", s("done"))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(crate::table::from_sdk)?;
        let before: Option<Account> = match out.attributes {
            Some(item) if item.contains_key("status") => {
                Some(from_item::<AccountItem>(item)?.account)
            }
            _ => None,
        };
        let ext = before
            .as_ref()
            .map(|a| a.external_id.clone())
            .or_else(|| external_id.map(str::to_string));
        if let Some(ext) = ext.filter(|e| !e.is_empty()) {
            self.put_external_link(&ext, id, true).await?;
        }
        Ok(before)
    }

    /// Starts an ingest of `count` transactions: hands out consecutive arrival sequence
    /// numbers and fences batch commits off until [`Table::end_ingest`] (or until `lease` runs
    /// out after a crash). `None` if the account is gone.
    pub async fn begin_ingest(
        &self,
        id: Uuid,
        count: u64,
        lease: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<IngestStart>, StoreError> {
        let token = Uuid::new_v4().simple().to_string();
        let fence = serde_dynamo::to_attribute_value(IngestFence {
            expires_at_ms: now.timestamp_millis() + lease.as_millis() as i64,
        })
        .map_err(StoreError::corrupt)?;
        let out = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
            .update_expression("ADD nextSeq :count SET ingesting.#token = :fence")
            .condition_expression("attribute_exists(pk) AND #status <> :cancelled")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#token", &token)
            .expression_attribute_values(":count", n(count))
            .expression_attribute_values(":fence", fence)
            .expression_attribute_values(":cancelled", s("cancelled"))
            // All new: the horizon is read in the same atomic step that sets the fence.
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(crate::table::from_sdk);
        match out {
            Ok(o) => {
                let item = o
                    .attributes
                    .ok_or_else(|| StoreError::corrupt("no attributes after begin_ingest"))?;
                let account = from_item::<AccountItem>(item)?.account;
                Ok(Some(IngestStart {
                    first_seq: account.next_seq + 1 - count,
                    token,
                    horizon: account.horizon,
                }))
            }
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Commits a claim to a batch whose highest position is `hi`: raises the horizon. Refused
    /// (`false`) when an ingest began since the claim (`next_seq` moved from `seen_next_seq`):
    /// it may have written positions the batch did not see; its completion kicks again.
    pub async fn commit_horizon(
        &self,
        id: Uuid,
        token: &str,
        hi: &str,
        seen_next_seq: u64,
    ) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
            .update_expression("SET horizon = :hi")
            .condition_expression(
                "inFlight.#token = :token AND (attribute_not_exists(nextSeq) OR nextSeq = :seen) \
                 AND (attribute_not_exists(horizon) OR horizon < :hi)",
            )
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":hi", s(hi))
            .expression_attribute_values(":seen", n(seen_next_seq))
            .send()
            .await
            .map_err(crate::table::from_sdk);
        match res {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed) => {
                // A horizon already at or past `hi` is fine (a resubmission of the same batch).
                let a = self.get_account(id).await?;
                Ok(a.is_some_and(|a| {
                    a.in_flight.is_some_and(|c| c.token == token)
                        && a.next_seq == seen_next_seq
                        && a.horizon.as_deref().is_some_and(|h| h >= hi)
                }))
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the fences of ingests whose lease ran out (they died midway; what they wrote is
    /// pending, and a retry of the request re-stores the rest).
    pub async fn clear_expired_ingests(
        &self,
        account: &Account,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for (token, fence) in &account.ingesting {
            if fence.expires_at_ms <= now.timestamp_millis() {
                tracing::warn!(bankAccountId = %account.bank_account_id, "clearing an expired ingest fence");
                self.end_ingest(account.bank_account_id, token).await?;
            }
        }
        Ok(())
    }

    /// Lifts an ingest's fence once everything it wrote is in place.
    pub async fn end_ingest(&self, id: Uuid, token: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
            .update_expression("REMOVE ingesting.#token")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#token", token)
            .send()
            .await
            .map_err(crate::table::from_sdk)
            .map(|_| ())
            .or_else(|e| match e {
                StoreError::ConditionFailed => Ok(()),
                e => Err(e),
            })
    }

    /// Records the bank's newest balances (older ones never overwrite newer ones).
    pub async fn update_balances(
        &self,
        id: Uuid,
        ledger: Option<&Balance>,
        available: Option<&Balance>,
    ) -> Result<(), StoreError> {
        for (attr, balance) in [("ledger", ledger), ("available", available)] {
            let Some(balance) = balance else { continue };
            let value = serde_dynamo::to_attribute_value(balance).map_err(StoreError::corrupt)?;
            let res = self
                .client
                .update_item()
                .table_name(&self.name)
                .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
                .update_expression("SET #b = :b, #ms = :ms")
                // A separate numeric as-of keeps the comparison exact whatever the text format.
                .condition_expression(
                    "attribute_exists(pk) AND (attribute_not_exists(#ms) OR #ms <= :ms)",
                )
                .expression_attribute_names("#b", attr)
                .expression_attribute_names("#ms", format!("{attr}AsOfMs"))
                .expression_attribute_values(":b", value)
                .expression_attribute_values(":ms", n(balance.as_of.timestamp_millis()))
                .send()
                .await
                .map_err(crate::table::from_sdk);
            match res {
                Ok(_) | Err(StoreError::ConditionFailed) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub async fn set_backfill(
        &self,
        id: Uuid,
        state: BackfillState,
        cursor: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(
                ":state",
                s(match state {
                    BackfillState::Pending => "pending",
                    BackfillState::Done => "done",
                }),
            );
        req = match cursor {
            Some(c) => req
                .update_expression("SET backfill = :state, backfillCursor = :cursor")
                .expression_attribute_values(":cursor", s(c)),
            None => req.update_expression("SET backfill = :state REMOVE backfillCursor"),
        };
        req.send().await.map_err(crate::table::from_sdk)?;
        Ok(())
    }

    /// Sets the account status; `auth_required_owed` is set with `AuthRequired` and cleared with
    /// `Active`. Never revives a cancelled account.
    pub async fn set_account_status(
        &self,
        id: Uuid,
        status: AccountStatus,
    ) -> Result<bool, StoreError> {
        let (status_text, owed) = match status {
            AccountStatus::Active => ("active", false),
            AccountStatus::AuthRequired => ("authRequired", true),
            AccountStatus::Cancelled => ("cancelled", false),
        };
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
            .update_expression("SET #status = :status, authRequiredOwed = :owed")
            .condition_expression("attribute_exists(pk) AND #status <> :cancelled")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status_text))
            .expression_attribute_values(
                ":owed",
                aws_sdk_dynamodb::types::AttributeValue::Bool(owed),
            )
            .expression_attribute_values(":cancelled", s("cancelled"))
            .send()
            .await;
        crate::table::condition_held(res)
    }

    /// Takes the account's in-flight claim (invariant 1). Only one caller can hold it.
    pub async fn claim_account(&self, id: Uuid, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        let value = serde_dynamo::to_attribute_value(claim).map_err(StoreError::corrupt)?;
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
            .update_expression("SET inFlight = :claim")
            .condition_expression(
                "attribute_exists(pk) AND attribute_not_exists(inFlight) AND #status <> :cancelled",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":claim", value)
            .expression_attribute_values(":cancelled", s("cancelled"))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(crate::table::from_sdk);
        match res {
            Ok(out) => {
                let item: Item = out
                    .attributes
                    .ok_or_else(|| StoreError::corrupt("no attributes after claim"))?;
                Ok(ClaimOutcome::Claimed(Box::new(
                    from_item::<AccountItem>(item)?.account,
                )))
            }
            Err(StoreError::ConditionFailed) => match self.get_account(id).await? {
                Some(a) if a.status != AccountStatus::Cancelled => Ok(ClaimOutcome::Busy),
                _ => Ok(ClaimOutcome::Gone),
            },
            Err(e) => Err(e),
        }
    }

    /// Replaces the claim, only while `token` still holds it. `false` if it no longer does.
    pub async fn update_claim(
        &self,
        id: Uuid,
        token: &str,
        claim: &Claim,
    ) -> Result<bool, StoreError> {
        let value = serde_dynamo::to_attribute_value(claim).map_err(StoreError::corrupt)?;
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
            .update_expression("SET inFlight = :claim")
            .condition_expression("inFlight.#token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":claim", value)
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        crate::table::condition_held(res)
    }

    /// Advances the poll counter from `seen` to `seen + 1` and records when that poll is due;
    /// `false` for a stale (duplicated) poll.
    pub async fn advance_poll(
        &self,
        id: Uuid,
        token: &str,
        seen: u32,
        overdue: bool,
        due: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let due = serde_dynamo::to_attribute_value(due).map_err(StoreError::corrupt)?;
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
            .update_expression(
                "SET inFlight.pollAttempt = :next, inFlight.overdue = :overdue, \
                 inFlight.nextPollAt = :due",
            )
            .condition_expression("inFlight.#token = :token AND inFlight.pollAttempt = :seen")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":seen", n(seen))
            .expression_attribute_values(":next", n(seen + 1))
            .expression_attribute_values(":due", due)
            .expression_attribute_values(
                ":overdue",
                aws_sdk_dynamodb::types::AttributeValue::Bool(overdue),
            )
            .send()
            .await;
        crate::table::condition_held(res)
    }

    /// Releases the claim held by `token`, recording the result. `false` if `token` no longer
    /// held it (a duplicate message already released it).
    pub async fn release_account(
        &self,
        id: Uuid,
        token: &str,
        release: &Release,
    ) -> Result<bool, StoreError> {
        let mut sets: Vec<String> = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
            .condition_expression("inFlight.#token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(token));
        if let Some(w) = &release.delivered_through {
            sets.push("deliveredThrough = :through".into());
            req = req.expression_attribute_values(":through", s(w));
        }
        if let Some(newest) = release.newest_delivered {
            sets.push("newestDelivered = :newest".into());
            req = req.expression_attribute_values(":newest", s(newest.to_rfc3339()));
        }
        if let Some(at) = release.success_at {
            sets.push("lastSuccessAt = :at".into());
            req = req.expression_attribute_values(":at", s(at.to_rfc3339()));
        }
        if let Some(as_of) = release.balance_sent_as_of {
            sets.push("balanceSentAsOfMs = :balance_sent".into());
            req = req.expression_attribute_values(":balance_sent", n(as_of.timestamp_millis()));
        }
        if release.auth_required_sent {
            sets.push("authRequiredOwed = :false".into());
            req = req.expression_attribute_values(
                ":false",
                aws_sdk_dynamodb::types::AttributeValue::Bool(false),
            );
        }
        let mut expr = if sets.is_empty() {
            "REMOVE inFlight".to_string()
        } else {
            format!("SET {} REMOVE inFlight", sets.join(", "))
        };
        if release.delivered > 0 {
            expr.push_str(" ADD deliveredCount :delivered");
            req = req.expression_attribute_values(":delivered", n(release.delivered));
        }
        let res = req.update_expression(expr).send().await;
        crate::table::condition_held(res)
    }

    /// Removes a stuck in-flight claim without recording any progress (the operator's way out
    /// when the claim's pusher or poller is gone for good). Only if the claim is still exactly
    /// the one the operator looked at — same token, phase, submission and poll counters — so a
    /// claim that moved on meanwhile is never cleared; `false` then, and nothing changes.
    ///
    /// Afterwards messages still carrying the old token are dropped as stale; the next push
    /// rebuilds the batch from the watermark, and transactions the cleared statement did get
    /// delivered come back as `DuplicateTransaction`, which counts as delivered.
    pub async fn clear_claim(&self, id: Uuid, seen: &Claim) -> Result<bool, StoreError> {
        let phase = s(seen.phase.name());
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(account_pk(id), ACCOUNT_SK)))
            .update_expression("REMOVE inFlight")
            .condition_expression(
                "inFlight.#token = :token AND inFlight.#phase = :phase \
                 AND inFlight.#attempt = :attempt AND inFlight.#poll = :poll",
            )
            .expression_attribute_names("#token", "token")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_names("#attempt", "attempt")
            .expression_attribute_names("#poll", "pollAttempt")
            .expression_attribute_values(":token", s(&seen.token))
            .expression_attribute_values(":phase", phase)
            .expression_attribute_values(":attempt", n(seen.attempt))
            .expression_attribute_values(":poll", n(seen.poll_attempt()))
            .send()
            .await;
        crate::table::condition_held(res)
    }

    /// Every account (for the reconciler): the registry's ids, then the account items, 100 to
    /// a request. Reads account items only — a scan would read every transaction of the table
    /// on every run (they are kept 400 days), and pay for all of them.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let registry: Vec<RegistryItem> = self.query_as(REGISTRY_PK.into(), None).await?;
        let ids: Vec<Uuid> = registry.into_iter().map(|r| r.bank_account_id).collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|id| Table::key(account_pk(*id), ACCOUNT_SK))
                .collect();
            let mut rounds = 0u32;
            while !keys.is_empty() {
                let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(StoreError::corrupt)?;
                let got = self
                    .client
                    .batch_get_item()
                    .request_items(&self.name, request)
                    .send()
                    .await
                    .map_err(crate::table::from_sdk)?;
                for item in got
                    .responses
                    .and_then(|mut r| r.remove(&self.name))
                    .unwrap_or_default()
                {
                    out.push(from_item::<AccountItem>(item)?.account);
                }
                // Keys DynamoDB did not get to (throttling, 16 MB): again, after a pause.
                keys = got
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.name))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    rounds += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50 << rounds.min(6))).await;
                }
            }
        }
        Ok(out)
    }
}
