//! The one DynamoDB table and what is shared by every kind of item in it.
//!
//! Key design (all items): `pk` / `sk` strings; `expiresAt` (epoch seconds) is the TTL attribute.
//! The local secondary index `pending` (`pk`, `pendingKey`) is sparse: only transactions in the
//! account's position order carry `pendingKey` (a parked transaction, or one found already held
//! by Banking Service, loses it); those at or below the account's watermark are delivered, so a
//! strongly consistent query on it for keys above the watermark returns the account's pending
//! transactions in statement order. In a Payments Out batch's partition, the payments its outcome
//! windows need carry it too (`OWING#…`, `MOVING#…`; see `payouts.rs`).
//!
//! What the reconciler lists on every run has its own partition, so that it never scans a table
//! holding every transaction: `ACCOUNTS` (one item per account, written right after the account;
//! a creation that died in between is completed when it is redelivered) and `GRANTED#<day>` (the
//! grants of that UTC day, expiring after 3 days). The operator's listing of parked transactions
//! reads the `PARKED` partition.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

pub type Item = HashMap<String, AttributeValue>;

/// Name of the sparse local secondary index over pending transactions (and, in their batches'
/// partitions, the Payments Out payments a window needs).
pub const PENDING_INDEX: &str = "pending";

pub use connector_domain::ports::StoreError;

/// An SDK error as the store's caller must treat it: a failed condition; a request DynamoDB
/// refuses whatever the moment (poison); access or table missing (configuration); the rest
/// transient.
pub(crate) fn from_sdk<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = |code: &str| format!("{code}: {}", err.message().unwrap_or(""));
    match err.code() {
        Some("ConditionalCheckFailedException") => StoreError::ConditionFailed,
        Some(code @ ("ValidationException" | "SerializationException")) => {
            StoreError::Refused(text(code))
        }
        Some(
            code @ ("AccessDeniedException"
            | "ResourceNotFoundException"
            | "UnrecognizedClientException"
            | "MissingAuthenticationTokenException"),
        ) => StoreError::Configuration(text(code)),
        Some(code) => StoreError::Unavailable(text(code)),
        None => StoreError::Unavailable(format!(
            "{}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&err)
        )),
    }
}

/// Whether a conditional write took effect: `false` when its condition failed, which callers
/// expect as one of two outcomes (someone else got there first); other errors as `from_sdk`.
pub(crate) fn condition_held<T, E, R>(sent: Result<T, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match sent.map_err(from_sdk) {
        Ok(_) => Ok(true),
        Err(StoreError::ConditionFailed) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The table, with its client built once per process.
#[derive(Clone, Debug)]
pub struct Table {
    pub(crate) client: Client,
    pub(crate) name: String,
}

impl Table {
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
        HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
    }

    pub(crate) async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(crate::table::from_sdk)?;
        Ok(out.item)
    }

    /// Writes `value` as a whole item unless one with its key exists: `true` when it was
    /// written, `false` when the item was there already.
    pub(crate) async fn put_new<T: serde::Serialize>(&self, value: &T) -> Result<bool, StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(to_item(value)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        condition_held(put)
    }

    /// Writes `value` as a whole item, unconditionally (it carries its own `pk` and `sk`).
    pub(crate) async fn put_as<T: serde::Serialize>(&self, value: &T) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(to_item(value)?))
            .send()
            .await
            .map_err(crate::table::from_sdk)?;
        Ok(())
    }

    /// Every item of partition `pk` (whose `sk` starts with `sk_prefix`, if given), read
    /// strongly consistent through the SDK's paginator.
    pub(crate) async fn query_as<T: serde::de::DeserializeOwned>(
        &self,
        pk: String,
        sk_prefix: Option<&str>,
    ) -> Result<Vec<T>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.name)
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true);
        query = match sk_prefix {
            Some(prefix) => query
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":prefix", s(prefix)),
            None => query.key_condition_expression("pk = :pk"),
        };
        all_items(query).await
    }

    pub(crate) async fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        pk: String,
        sk: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.get(pk, sk).await? {
            None => Ok(None),
            Some(item) => serde_dynamo::from_item(item)
                .map(Some)
                .map_err(StoreError::corrupt),
        }
    }
}

/// Every item `query` returns, decoded, page after page through the SDK's paginator.
pub(crate) async fn all_items<T: serde::de::DeserializeOwned>(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
) -> Result<Vec<T>, StoreError> {
    let mut items = query.into_paginator().items().send();
    let mut out = Vec::new();
    while let Some(item) = items.try_next().await.map_err(from_sdk)? {
        out.push(from_item(item)?);
    }
    Ok(out)
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn to_item<T: serde::Serialize>(value: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(value).map_err(StoreError::corrupt)
}

pub(crate) fn from_item<T: serde::de::DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(StoreError::corrupt)
}

pub(crate) fn epoch(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp()
}
