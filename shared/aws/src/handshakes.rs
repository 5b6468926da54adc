//! Authorisation handshakes (spec §4.2): announced by a notification, opened by the browser,
//! completed once by the PATCH.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::table::{StoreError, Table, epoch, to_item};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HandshakeState {
    Announced,
    Opened,
    Completed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    pub authorisation_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_id: Option<Uuid>,
    pub received_at: DateTime<Utc>,
    /// End of the handshake's 20 minutes (checked in code; TTL deletion is lazy).
    #[serde(rename = "validUntil")]
    pub expires_at: DateTime<Utc>,
    pub state: HandshakeState,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HandshakeItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    handshake: Handshake,
    /// The table's TTL attribute: the record goes a day after its handshake expired.
    expires_at: i64,
}

fn pk(id: Uuid) -> String {
    format!("AUTH#{id}")
}

impl Table {
    /// Stores an announced handshake; a repeated notification does not extend its expiry.
    /// Returns `false` when it was announced before.
    pub async fn announce_handshake(
        &self,
        id: Uuid,
        bank_id: Option<Uuid>,
        received_at: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let expires_at = received_at + TimeDelta::from_std(ttl).unwrap_or(TimeDelta::minutes(20));
        let item = to_item(&HandshakeItem {
            pk: pk(id),
            sk: "AUTH".into(),
            handshake: Handshake {
                authorisation_id: id,
                bank_id,
                received_at,
                expires_at,
                state: HandshakeState::Announced,
            },
            expires_at: epoch(expires_at) + 86_400,
        })?;
        let res = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(StoreError::from_sdk);
        match res {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn handshake(&self, id: Uuid) -> Result<Option<Handshake>, StoreError> {
        Ok(self
            .get_as::<HandshakeItem>(pk(id), "AUTH")
            .await?
            .map(|i| i.handshake))
    }
}
