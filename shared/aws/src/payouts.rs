//! Payments Out's records in the table: each subscription's authorisation link, under the
//! subscription (`PO#SUB#{subscriptionId}`, written first and conditionally, so that one link is
//! ever minted per subscription) and under the link (`PO#LINK#{linkId}`, for the authorisation
//! page to find its subscription, with the customer's login session and, once used, its
//! completion); and who each authorised subscription pays from (`PO#SUB#…` / `BINDING`, and
//! `PO#CONSENT#{consentId}` for the bank's consent events).

use connector_domain::payouts::authorise::{Binding, Completion, LinkRecord, LoginSession};
use connector_domain::payouts::batches::{BatchRecord, PaymentRecord, Watch};
use connector_domain::payouts::creditors::Creditor;
use connector_domain::payouts::onboarding::AuthLink;
use connector_domain::payouts::parties::DebtorAccount;
use connector_domain::ports::{OpenItem, OpenKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::table::{StoreError, Table, from_sdk};

const SK: &str = "LINK";

fn by_subscription(id: Uuid) -> String {
    format!("PO#SUB#{id}")
}

fn by_link(link_id: &str) -> String {
    format!("PO#LINK#{link_id}")
}

const BINDING_SK: &str = "BINDING";

fn by_consent(consent_id: &str) -> String {
    format!("PO#CONSENT#{consent_id}")
}

#[derive(Serialize, Deserialize)]
struct LinkItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    link: AuthLink,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<LoginSession>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completion: Option<Completion>,
    #[serde(default)]
    patched: bool,
}

impl LinkItem {
    fn new(pk: String, link: AuthLink) -> Self {
        Self {
            pk,
            sk: SK.into(),
            link,
            session: None,
            completion: None,
            patched: false,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct BindingItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    binding: Binding,
}

impl Table {
    pub async fn link_for(&self, subscription_id: Uuid) -> Result<Option<AuthLink>, StoreError> {
        Ok(self
            .get_as::<LinkItem>(by_subscription(subscription_id), SK)
            .await?
            .map(|i| i.link))
    }

    pub async fn link(&self, link_id: &str) -> Result<Option<AuthLink>, StoreError> {
        Ok(self
            .get_as::<LinkItem>(by_link(link_id), SK)
            .await?
            .map(|i| i.link))
    }

    /// Records the link under the subscription unless one is there, then under the link id
    /// (a crash between the two leaves the second for the retry, which finds the first).
    pub async fn record_link(&self, link: &AuthLink) -> Result<AuthLink, StoreError> {
        let new = LinkItem::new(by_subscription(link.subscription_id), link.clone());
        let recorded = if self.put_new(&new).await? {
            link.clone()
        } else {
            self.link_for(link.subscription_id)
                .await?
                .ok_or_else(|| StoreError::corrupt("a link vanished after it was refused"))?
        };
        // Only if absent: a retry must not wipe a login or completion recorded meanwhile.
        self.put_new(&LinkItem::new(by_link(&recorded.link_id), recorded.clone()))
            .await?;
        Ok(recorded)
    }

    pub async fn link_record(&self, link_id: &str) -> Result<Option<LinkRecord>, StoreError> {
        Ok(self
            .get_as::<LinkItem>(by_link(link_id), SK)
            .await?
            .map(|i| LinkRecord {
                link: i.link,
                session: i.session,
                completion: i.completion,
                patched: i.patched,
            }))
    }

    /// Sets one member of an unused link's record; `false` when the link is used or unknown.
    async fn set_on_open_link(
        &self,
        link_id: &str,
        name: &str,
        value: aws_sdk_dynamodb::types::AttributeValue,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(by_link(link_id), SK)))
            .update_expression("SET #member = :value")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(completion)")
            .expression_attribute_names("#member", name)
            .expression_attribute_values(":value", value)
            .send()
            .await;
        crate::table::condition_held(result)
    }

    pub async fn begin_login(
        &self,
        link_id: &str,
        session: &LoginSession,
    ) -> Result<bool, StoreError> {
        let value = serde_dynamo::to_attribute_value(session).map_err(StoreError::corrupt)?;
        self.set_on_open_link(link_id, "session", value).await
    }

    pub async fn complete_link(
        &self,
        link_id: &str,
        completion: &Completion,
    ) -> Result<bool, StoreError> {
        let value = serde_dynamo::to_attribute_value(completion).map_err(StoreError::corrupt)?;
        self.set_on_open_link(link_id, "completion", value).await
    }

    pub async fn mark_patched(&self, link_id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(by_link(link_id), SK)))
            .update_expression("SET patched = :yes")
            .condition_expression("attribute_exists(completion)")
            .expression_attribute_values(
                ":yes",
                aws_sdk_dynamodb::types::AttributeValue::Bool(true),
            )
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(())
    }

    /// Under the consent first: a crash before the second write leaves the subscription
    /// unbound, which the page's retry (or the worker) writes again.
    pub async fn bind(&self, binding: &Binding) -> Result<(), StoreError> {
        self.put_as(&BindingItem {
            pk: by_consent(&binding.consent_id),
            sk: BINDING_SK.into(),
            binding: binding.clone(),
        })
        .await?;
        self.put_as(&BindingItem {
            pk: by_subscription(binding.subscription_id),
            sk: BINDING_SK.into(),
            binding: binding.clone(),
        })
        .await
    }

    pub async fn binding(&self, subscription_id: Uuid) -> Result<Option<Binding>, StoreError> {
        Ok(self
            .get_as::<BindingItem>(by_subscription(subscription_id), BINDING_SK)
            .await?
            .map(|i| i.binding))
    }

    pub async fn binding_by_consent(
        &self,
        consent_id: &str,
    ) -> Result<Option<Binding>, StoreError> {
        Ok(self
            .get_as::<BindingItem>(by_consent(consent_id), BINDING_SK)
            .await?
            .map(|i| i.binding))
    }
}

fn debtor_sk(debtor_account_id: &str) -> String {
    format!("DEBT#{debtor_account_id}")
}

#[derive(Serialize, Deserialize)]
struct DebtorItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    account: DebtorAccount,
}

impl Table {
    /// Under the subscription (`PO#SUB#…` / `DEBT#{debtorAccountId}`), so that a list query is
    /// one query of the subscription's partition.
    pub async fn put_debtor(&self, account: &DebtorAccount) -> Result<(), StoreError> {
        self.put_as(&DebtorItem {
            pk: by_subscription(account.subscription_id),
            sk: debtor_sk(&account.debtor_account_id),
            account: account.clone(),
        })
        .await
    }

    pub async fn debtor(
        &self,
        subscription_id: Uuid,
        debtor_account_id: &str,
    ) -> Result<Option<DebtorAccount>, StoreError> {
        Ok(self
            .get_as::<DebtorItem>(
                by_subscription(subscription_id),
                &debtor_sk(debtor_account_id),
            )
            .await?
            .map(|i| i.account))
    }

    pub async fn debtors(&self, subscription_id: Uuid) -> Result<Vec<DebtorAccount>, StoreError> {
        let items: Vec<DebtorItem> = self
            .query_as(by_subscription(subscription_id), Some("DEBT#"))
            .await?;
        Ok(items.into_iter().map(|i| i.account).collect())
    }
}

fn batch_pk(batch_id: Uuid) -> String {
    format!("PO#BATCH#{batch_id}")
}

fn payment_sk(payment_id: Uuid) -> String {
    format!("PAY#{payment_id}")
}

fn payment_lookup_pk(payment_id: Uuid) -> String {
    format!("PO#PAY#{payment_id}")
}

#[derive(Serialize, Deserialize)]
struct BatchItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    batch: BatchRecord,
}

/// A payment under its batch. Its `pendingKey` puts it in the table's sparse `pending` index
/// (which holds Banking Service's pending transactions in their own partitions) while its
/// batch's windows need it: under [`OWING`] or [`MOVING`] as its [`PaymentRecord::watch`] says.
#[derive(Serialize, Deserialize)]
struct PaymentItem {
    pk: String,
    sk: String,
    #[serde(
        rename = "pendingKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    watch: Option<String>,
    #[serde(flatten)]
    payment: PaymentRecord,
}

const OWING: &str = "OWING#";
const MOVING: &str = "MOVING#";

impl PaymentItem {
    fn of(payment: &PaymentRecord) -> Self {
        let prefix = |w| match w {
            Watch::Owing => OWING,
            Watch::Moving => MOVING,
        };
        PaymentItem {
            pk: batch_pk(payment.batch_id),
            sk: payment_sk(payment.payment_id),
            watch: payment
                .watch()
                .map(|w| format!("{}{}", prefix(w), payment.payment_id)),
            payment: payment.clone(),
        }
    }
}

/// Where a bank event finds its payment's batch.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentLookup {
    pk: String,
    sk: String,
    batch_id: Uuid,
}

impl Table {
    /// The payments (each under its batch, and its batch under its id), then the batch.
    pub async fn record_batch(
        &self,
        batch: &BatchRecord,
        payments: &[PaymentRecord],
    ) -> Result<(), StoreError> {
        let mut items = Vec::with_capacity(payments.len() * 2);
        for p in payments {
            items.push(crate::table::to_item(&PaymentItem::of(p))?);
            items.push(crate::table::to_item(&PaymentLookup {
                pk: payment_lookup_pk(p.payment_id),
                sk: "PAY".into(),
                batch_id: p.batch_id,
            })?);
        }
        self.write_all(items).await?;
        self.put_as(&BatchItem {
            pk: batch_pk(batch.batch_id),
            sk: "BATCH".into(),
            batch: batch.clone(),
        })
        .await
    }

    /// BatchWriteItem in slices of 25, writing again what DynamoDB left unprocessed.
    async fn write_all(&self, items: Vec<crate::table::Item>) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        for chunk in items.chunks(25) {
            let mut requests = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(|e| StoreError::Refused(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for attempt in 0u32.. {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.name, requests)
                    .send()
                    .await
                    .map_err(from_sdk)?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.name))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if attempt >= 8 {
                    return Err(StoreError::Unavailable(
                        "DynamoDB left writes unprocessed".into(),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
        Ok(())
    }

    pub async fn batch_record(&self, batch_id: Uuid) -> Result<Option<BatchRecord>, StoreError> {
        Ok(self
            .get_as::<BatchItem>(batch_pk(batch_id), "BATCH")
            .await?
            .map(|i| i.batch))
    }

    pub async fn batch_payments(&self, batch_id: Uuid) -> Result<Vec<PaymentRecord>, StoreError> {
        let items: Vec<PaymentItem> = self.query_as(batch_pk(batch_id), Some("PAY#")).await?;
        Ok(items.into_iter().map(|i| i.payment).collect())
    }

    pub async fn payments_owing(&self, batch_id: Uuid) -> Result<Vec<PaymentRecord>, StoreError> {
        let items: Vec<PaymentItem> =
            crate::table::all_items(self.watch_query(batch_id, OWING)).await?;
        Ok(items.into_iter().map(|i| i.payment).collect())
    }

    pub async fn any_payment_moving(&self, batch_id: Uuid) -> Result<bool, StoreError> {
        let page = self
            .watch_query(batch_id, MOVING)
            .limit(1)
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(!page.items().is_empty())
    }

    /// The batch's payments under one watch, strongly consistent (the index is local).
    fn watch_query(
        &self,
        batch_id: Uuid,
        prefix: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        use crate::table::s;
        self.client
            .query()
            .table_name(&self.name)
            .index_name(crate::table::PENDING_INDEX)
            .key_condition_expression("pk = :pk AND begins_with(pendingKey, :watch)")
            .expression_attribute_values(":pk", s(batch_pk(batch_id)))
            .expression_attribute_values(":watch", s(prefix))
            .consistent_read(true)
    }

    pub async fn payment_record(
        &self,
        payment_id: Uuid,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let Some(lookup) = self
            .get_as::<PaymentLookup>(payment_lookup_pk(payment_id), "PAY")
            .await?
        else {
            return Ok(None);
        };
        Ok(self
            .get_as::<PaymentItem>(batch_pk(lookup.batch_id), &payment_sk(payment_id))
            .await?
            .map(|i| i.payment))
    }

    /// An update of the batch's own item (`BATCH`), whose attributes the lease and the
    /// decision note each set alone.
    fn update_batch_item(
        &self,
        batch_id: Uuid,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(batch_pk(batch_id), "BATCH")))
    }

    /// The batch's outcome-PATCH lease (`syncLease`, epoch milliseconds).
    pub async fn lease_sync(
        &self,
        batch_id: Uuid,
        until: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        use aws_sdk_dynamodb::types::AttributeValue;
        let result = self
            .update_batch_item(batch_id)
            .update_expression("SET syncLease = :until")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(syncLease) OR syncLease < :now)",
            )
            .expression_attribute_values(
                ":until",
                AttributeValue::N(until.timestamp_millis().to_string()),
            )
            .expression_attribute_values(
                ":now",
                AttributeValue::N(now.timestamp_millis().to_string()),
            )
            .send()
            .await;
        crate::table::condition_held(result)
    }

    /// One attribute of the batch's item: its lease, written beside it, stays as it is.
    pub async fn note_decision_patched(&self, batch_id: Uuid) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::AttributeValue;
        self.update_batch_item(batch_id)
            .update_expression("SET decisionPatched = :sent")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":sent", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(())
    }

    pub async fn release_sync(&self, batch_id: Uuid) -> Result<(), StoreError> {
        self.update_batch_item(batch_id)
            .update_expression("REMOVE syncLease")
            .condition_expression("attribute_exists(pk)")
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(())
    }

    /// Writes the record if the stored one is the version before it.
    pub async fn save_payment(&self, record: &PaymentRecord) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::AttributeValue;
        let item = crate::table::to_item(&PaymentItem::of(record))?;
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("#version = :previous")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(
                ":previous",
                AttributeValue::N(record.version.saturating_sub(1).to_string()),
            )
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(())
    }
}

/// The Payments Out reconciler's open work, in one partition it reads whole.
const OPEN_PK: &str = "PO#OPEN";

/// Marks an item touched since it was last opened (see [`Table::close_work`]).
const TOUCHED: &str = "touched";

fn open_sk(kind: OpenKind, id: &str) -> String {
    format!("{kind:?}#{id}")
}

#[derive(Serialize, Deserialize)]
struct OpenRecord {
    pk: String,
    sk: String,
    #[serde(flatten)]
    item: OpenItem,
}

impl Table {
    /// An update, not a put: the item's touch mark stays.
    pub async fn open_work(&self, item: &OpenItem) -> Result<(), StoreError> {
        self.set_work(item, "SET #kind = :kind, #id = :id, #due = :due")?
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(())
    }

    /// Each attribute written only where the item lacks it: one already there keeps its due
    /// time. The touch mark is set either way.
    pub async fn touch_work(&self, item: &OpenItem) -> Result<(), StoreError> {
        self.set_work(
            item,
            "SET #kind = if_not_exists(#kind, :kind), #id = if_not_exists(#id, :id), \
             #due = if_not_exists(#due, :due), #touched = :touched",
        )?
        .expression_attribute_names("#touched", TOUCHED)
        .expression_attribute_values(
            ":touched",
            aws_sdk_dynamodb::types::AttributeValue::Bool(true),
        )
        .send()
        .await
        .map_err(from_sdk)?;
        Ok(())
    }

    /// An update of the item by `expression`, which names its attributes `#kind`, `#id` and
    /// `#due` and their values in `item` `:kind`, `:id` and `:due`.
    fn set_work(
        &self,
        item: &OpenItem,
        expression: &str,
    ) -> Result<
        aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
        StoreError,
    > {
        let mut values = crate::table::to_item(item)?;
        let mut update = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(OPEN_PK, open_sk(item.kind, &item.id))))
            .update_expression(expression);
        for (placeholder, name, value) in [
            ("#kind", "kind", ":kind"),
            ("#id", "id", ":id"),
            ("#due", "dueAt", ":due"),
        ] {
            let v = values
                .remove(name)
                .ok_or_else(|| StoreError::Refused(format!("open work without {name}")))?;
            update = update
                .expression_attribute_names(placeholder, name)
                .expression_attribute_values(value, v);
        }
        Ok(update)
    }

    /// Only an item that is there: an update would otherwise create one without attributes.
    pub async fn untouch_work(&self, kind: OpenKind, id: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(OPEN_PK, open_sk(kind, id))))
            .update_expression("REMOVE #touched")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#touched", TOUCHED)
            .send()
            .await;
        match result.map_err(from_sdk) {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deleted only while it is not marked touched.
    pub async fn close_work(&self, kind: OpenKind, id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(OPEN_PK, open_sk(kind, id))))
            .condition_expression("attribute_not_exists(#touched)")
            .expression_attribute_names("#touched", TOUCHED)
            .send()
            .await;
        crate::table::condition_held(result)
    }

    /// One item of open work, due or not (the operator tool asks whether the reconciler still
    /// watches a batch or a link).
    pub async fn open_item(
        &self,
        kind: OpenKind,
        id: &str,
    ) -> Result<Option<OpenItem>, StoreError> {
        Ok(self
            .get_as::<OpenRecord>(OPEN_PK.into(), &open_sk(kind, id))
            .await?
            .map(|r| r.item))
    }

    pub async fn due_work(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<OpenItem>, StoreError> {
        let items: Vec<OpenRecord> = self.query_as(OPEN_PK.into(), None).await?;
        Ok(items
            .into_iter()
            .map(|r| r.item)
            .filter(|open| open.due_at <= now)
            .collect())
    }
}

/// How far the reconciler has read the bank's change feed: one item of its own.
const FEED_PK: &str = "PO#FEED";
const FEED_SK: &str = "BANK";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeedMark {
    pk: String,
    sk: String,
    read_to: u64,
}

impl Table {
    pub async fn feed_read_to(&self) -> Result<u64, StoreError> {
        Ok(self
            .get_as::<FeedMark>(FEED_PK.into(), FEED_SK)
            .await?
            .map_or(0, |m| m.read_to))
    }

    /// Only one reconciler runs at a time (its schedule), so a plain write is enough.
    pub async fn set_feed_read_to(&self, event_seq: u64) -> Result<(), StoreError> {
        self.put_as(&FeedMark {
            pk: FEED_PK.into(),
            sk: FEED_SK.into(),
            read_to: event_seq,
        })
        .await
    }
}

fn creditor_sk(creditor_id: &str) -> String {
    format!("CRED#{creditor_id}")
}

#[derive(Serialize, Deserialize)]
struct CreditorItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    creditor: Creditor,
}

impl Table {
    /// Under the subscription (`PO#SUB#…` / `CRED#{creditorId}`), its bank account sealed.
    pub async fn put_creditor(&self, creditor: &Creditor) -> Result<(), StoreError> {
        self.put_as(&CreditorItem {
            pk: by_subscription(creditor.subscription_id),
            sk: creditor_sk(&creditor.creditor_id),
            creditor: creditor.clone(),
        })
        .await
    }

    pub async fn creditor(
        &self,
        subscription_id: Uuid,
        creditor_id: &str,
    ) -> Result<Option<Creditor>, StoreError> {
        Ok(self
            .get_as::<CreditorItem>(by_subscription(subscription_id), &creditor_sk(creditor_id))
            .await?
            .map(|i| i.creditor))
    }

    pub async fn creditors(&self, subscription_id: Uuid) -> Result<Vec<Creditor>, StoreError> {
        let items: Vec<CreditorItem> = self
            .query_as(by_subscription(subscription_id), Some("CRED#"))
            .await?;
        Ok(items.into_iter().map(|i| i.creditor).collect())
    }
}
