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
    #[serde(rename = "validUntil", with = "chrono::serde::ts_milliseconds")]
    pub expires_at: DateTime<Utc>,
    pub state: HandshakeState,
    /// Set when the browser opens it (spec §4.2 step 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<BrowserSession>,
}

/// Which page opened a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Flow {
    Auth,
    AuthRefresh,
}

/// What the browser's visit brought and what the bank round trip needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowserSession {
    pub flow: Flow,
    pub redirect_uri: String,
    pub client_state: String,
    /// Rotated on every page load: only the newest tab's form works.
    pub ui_token: String,
    /// The secret half of the `state` sent to the bank.
    pub bank_state: String,
    pub pkce_verifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// Why a browser may not use a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
    Unknown,
    Expired,
    Completed,
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
                browser: None,
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

impl Table {
    /// The browser opened (or reloaded) the page: records its session, rotating the UI token.
    /// Only for an unexpired, not completed handshake (atomic).
    pub async fn open_handshake(
        &self,
        id: Uuid,
        session: &BrowserSession,
        now: DateTime<Utc>,
    ) -> Result<Result<Handshake, HandshakeRefusal>, StoreError> {
        let value = serde_dynamo::to_attribute_value(session).map_err(StoreError::corrupt)?;
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(pk(id), "AUTH")))
            .update_expression("SET #state = :opened, browser = :session")
            .condition_expression(
                "attribute_exists(pk) AND #state <> :completed AND validUntil > :now",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":opened", crate::table::s("opened"))
            .expression_attribute_values(":completed", crate::table::s("completed"))
            .expression_attribute_values(":session", value)
            .expression_attribute_values(":now", crate::table::n(now.timestamp_millis()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(StoreError::from_sdk);
        match res {
            Ok(out) => {
                let item = out
                    .attributes
                    .ok_or_else(|| StoreError::corrupt("no attributes after opening"))?;
                Ok(Ok(crate::table::from_item::<HandshakeItem>(item)?.handshake))
            }
            Err(StoreError::ConditionFailed) => Ok(Err(self.refusal(id, now).await?)),
            Err(e) => Err(e),
        }
    }

    async fn refusal(&self, id: Uuid, now: DateTime<Utc>) -> Result<HandshakeRefusal, StoreError> {
        Ok(match self.handshake(id).await? {
            None => HandshakeRefusal::Unknown,
            Some(h) if h.state == HandshakeState::Completed => HandshakeRefusal::Completed,
            Some(h) if h.expires_at <= now => HandshakeRefusal::Expired,
            // Raced with a completion or expiry between the two reads.
            Some(_) => HandshakeRefusal::Completed,
        })
    }

    /// Single use (spec §4.2 step 4): `opened` → `completed`, once, while unexpired.
    pub async fn complete_handshake(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Result<(), HandshakeRefusal>, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(pk(id), "AUTH")))
            .update_expression("SET #state = :completed")
            .condition_expression("#state = :opened AND validUntil > :now")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":opened", crate::table::s("opened"))
            .expression_attribute_values(":completed", crate::table::s("completed"))
            .expression_attribute_values(":now", crate::table::n(now.timestamp_millis()))
            .send()
            .await
            .map_err(StoreError::from_sdk);
        match res {
            Ok(_) => Ok(Ok(())),
            Err(StoreError::ConditionFailed) => Ok(Err(self.refusal(id, now).await?)),
            Err(e) => Err(e),
        }
    }

    /// Gives a completion back after the PATCH failed for good, so the user may try again.
    pub async fn reopen_handshake(&self, id: Uuid) -> Result<(), StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(pk(id), "AUTH")))
            .update_expression("SET #state = :opened")
            .condition_expression("#state = :completed")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":opened", crate::table::s("opened"))
            .expression_attribute_values(":completed", crate::table::s("completed"))
            .send()
            .await
            .map_err(StoreError::from_sdk);
        match res {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
