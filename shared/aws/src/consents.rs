//! What the connector remembers of the bank's side: which consent each `externalId` belongs to,
//! and the last account list of each consent (the fallback when the bank is unreachable).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use connector_domain::account::{ConsentRecord, GrantedAccount};

use crate::table::{StoreError, Table, epoch, from_item, s};

#[derive(Serialize, Deserialize)]
struct Wrapped<T> {
    pk: String,
    sk: String,
    #[serde(flatten)]
    inner: T,
}

/// A grant filed under the day it was made, so that the reconciler reads the last day's grants
/// without scanning the table; expires after `KEEP_GRANT_DAYS`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DayItem<T> {
    pk: String,
    sk: String,
    expires_at: i64,
    #[serde(flatten)]
    inner: T,
}

const KEEP_GRANT_DAYS: i64 = 3;

fn grants_pk(day: chrono::NaiveDate) -> String {
    format!("GRANTED#{day}")
}

impl Table {
    pub async fn put_granted_account(&self, account: &GrantedAccount) -> Result<(), StoreError> {
        self.put_as(&Wrapped {
            pk: format!("EXT#{}", account.external_id),
            sk: "META".into(),
            inner: account.clone(),
        })
        .await?;
        if let Some(at) = account.granted_at {
            self.put_as(&DayItem {
                pk: grants_pk(at.date_naive()),
                sk: format!("EXT#{}", account.external_id),
                expires_at: epoch(at) + KEEP_GRANT_DAYS * 24 * 3600,
                inner: account.clone(),
            })
            .await?;
        }
        Ok(())
    }

    pub async fn granted_account(
        &self,
        external_id: &str,
    ) -> Result<Option<GrantedAccount>, StoreError> {
        Ok(self
            .get_as::<Wrapped<GrantedAccount>>(format!("EXT#{external_id}"), "META")
            .await?
            .map(|w| w.inner))
    }

    /// Accounts granted after `since` (at most `KEEP_GRANT_DAYS` back), newest grant of each
    /// `externalId`: one query per day instead of a scan of every item of the table.
    pub async fn granted_since(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<GrantedAccount>, StoreError> {
        let mut newest: std::collections::BTreeMap<String, GrantedAccount> = Default::default();
        let mut day = since.date_naive();
        while day <= now.date_naive() {
            let mut items = self
                .client
                .query()
                .table_name(&self.name)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(grants_pk(day)))
                .consistent_read(true)
                .into_paginator()
                .items()
                .send();
            while let Some(item) = items.try_next().await.map_err(crate::table::from_sdk)? {
                let g = from_item::<DayItem<GrantedAccount>>(item)?.inner;
                if g.granted_at.is_none_or(|t| t <= since) {
                    continue;
                }
                let keep = newest
                    .get(&g.external_id)
                    .is_none_or(|old| old.granted_at < g.granted_at);
                if keep {
                    newest.insert(g.external_id.clone(), g);
                }
            }
            let Some(next) = day.succ_opt() else { break };
            day = next;
        }
        Ok(newest.into_values().collect())
    }

    pub async fn put_consent(&self, consent: &ConsentRecord) -> Result<(), StoreError> {
        self.put_as(&Wrapped {
            pk: format!("CONSENT#{}", consent.consent_id),
            sk: "CONSENT".into(),
            inner: consent.clone(),
        })
        .await?;
        Ok(())
    }

    pub async fn consent(&self, consent_id: &str) -> Result<Option<ConsentRecord>, StoreError> {
        Ok(self
            .get_as::<Wrapped<ConsentRecord>>(format!("CONSENT#{consent_id}"), "CONSENT")
            .await?
            .map(|w| w.inner))
    }
}
