//! What the connector remembers of the bank's side: which consent each `externalId` belongs to,
//! and the last account list of each consent (the fallback when the bank is unreachable).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::table::{StoreError, Table, from_item, s, to_item};

/// An account a customer granted, as the connector announced it in `PATCH /v1/authorisations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantedAccount {
    /// Our `bankAccountExternalId`: the bank's stable, opaque account id.
    pub external_id: String,
    pub consent_id: String,
    pub customer_id: String,
    pub name: String,
    pub kind: String,
    pub identifier: String,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub bank_code: Option<String>,
    /// Banking Service's bank the account was granted through (for account queries).
    #[serde(default)]
    pub bank_id: Option<Uuid>,
    #[serde(default)]
    pub granted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentRecord {
    pub consent_id: String,
    pub customer_id: String,
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub accounts: Vec<GrantedAccount>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct Wrapped<T> {
    pk: String,
    sk: String,
    #[serde(flatten)]
    inner: T,
}

impl Table {
    pub async fn put_granted_account(&self, account: &GrantedAccount) -> Result<(), StoreError> {
        let item = to_item(&Wrapped {
            pk: format!("EXT#{}", account.external_id),
            sk: "META".into(),
            inner: account.clone(),
        })?;
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
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

    /// Every granted account (reconciliation; scans, so it runs on a schedule only).
    pub async fn granted_accounts(&self) -> Result<Vec<GrantedAccount>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.name)
                .filter_expression("sk = :meta AND begins_with(pk, :ext)")
                .expression_attribute_values(":meta", s("META"))
                .expression_attribute_values(":ext", s("EXT#"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            for item in page.items.unwrap_or_default() {
                out.push(from_item::<Wrapped<GrantedAccount>>(item)?.inner);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    pub async fn put_consent(&self, consent: &ConsentRecord) -> Result<(), StoreError> {
        let item = to_item(&Wrapped {
            pk: format!("CONSENT#{}", consent.consent_id),
            sk: "CONSENT".into(),
            inner: consent.clone(),
        })?;
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    pub async fn consent(&self, consent_id: &str) -> Result<Option<ConsentRecord>, StoreError> {
        Ok(self
            .get_as::<Wrapped<ConsentRecord>>(format!("CONSENT#{consent_id}"), "CONSENT")
            .await?
            .map(|w| w.inner))
    }
}
