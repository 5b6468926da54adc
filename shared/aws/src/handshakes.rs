//! Authorisation handshakes (spec §4.2): announced by a notification, opened by the browser,
//! claimed for the PATCH, and completed once the PATCH succeeded (spec §4.3 step 3).
//!
//! Single use without completing before the PATCH: the flow that reports claims the handshake
//! first (`opened` → `patching`, with a lease and a token, by conditional write), PATCHes, then
//! completes it (`patching` → `completed`, only with its token). A second tab finds the claim
//! and does not PATCH; a holder that dies between the PATCH and the completion leaves a claim
//! that lapses at the end of its lease, after which the handshake can be used again.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::table::{StoreError, Table, epoch};

pub use connector_domain::handshake::{
    BrowserSession, Flow, GraceSlot, Handshake, HandshakeRefusal, HandshakeState, PatchClaim,
};

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
        self.put_new(&HandshakeItem {
            pk: pk(id),
            sk: "AUTH".into(),
            handshake: Handshake {
                authorisation_id: id,
                bank_id,
                received_at,
                expires_at,
                state: HandshakeState::Announced,
                browser: None,
                patch_lease_until: None,
            },
            expires_at: epoch(expires_at) + 86_400,
        })
        .await
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
    /// Only for an unexpired, not completed handshake that no live claim holds (atomic); a
    /// lapsed claim is dropped.
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
            .update_expression(
                "SET #state = :opened, browser = :session REMOVE patchLeaseUntil, patchClaim",
            )
            .condition_expression(
                "attribute_exists(pk) AND #state <> :completed AND validUntil > :now \
                 AND (#state <> :patching OR patchLeaseUntil <= :now)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":opened", crate::table::s("opened"))
            .expression_attribute_values(":completed", crate::table::s("completed"))
            .expression_attribute_values(":patching", crate::table::s("patching"))
            .expression_attribute_values(":session", value)
            .expression_attribute_values(":now", crate::table::n(now.timestamp_millis()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(crate::table::from_sdk);
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
            // `None`: raced with a claim, a completion or expiry between the two reads.
            Some(h) => h.refusal(now).unwrap_or(HandshakeRefusal::InProgress),
        })
    }

    /// Single use, first half (spec §4.2 step 4): claims an opened, unexpired handshake for the
    /// PATCH until `now + lease`, or takes over a claim whose lease ran out.
    pub async fn claim_handshake(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Result<PatchClaim, HandshakeRefusal>, StoreError> {
        let until = now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::minutes(1));
        let token = Uuid::new_v4().to_string();
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(pk(id), "AUTH")))
            .update_expression(
                "SET #state = :patching, patchLeaseUntil = :until, patchClaim = :token",
            )
            .condition_expression(
                "validUntil > :now AND (#state = :opened \
                 OR (#state = :patching AND patchLeaseUntil <= :now))",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":opened", crate::table::s("opened"))
            .expression_attribute_values(":patching", crate::table::s("patching"))
            .expression_attribute_values(":until", crate::table::n(until.timestamp_millis()))
            .expression_attribute_values(":token", crate::table::s(token.clone()))
            .expression_attribute_values(":now", crate::table::n(now.timestamp_millis()))
            .send()
            .await
            .map_err(crate::table::from_sdk);
        match res {
            Ok(_) => Ok(Ok(PatchClaim {
                authorisation_id: id,
                token,
            })),
            Err(StoreError::ConditionFailed) => Ok(Err(self.refusal(id, now).await?)),
            Err(e) => Err(e),
        }
    }

    /// Single use, second half: the PATCH succeeded, `patching` → `completed`, only while the
    /// claim is still this one. `false` when it is not (the lease ran out and another request
    /// took the handshake over).
    pub async fn complete_handshake(&self, claim: &PatchClaim) -> Result<bool, StoreError> {
        self.settle_claim(claim, "completed").await
    }

    /// Gives the claim back after the PATCH failed for good (`patching` → `opened`), so the
    /// user may try again.
    pub async fn release_handshake(&self, claim: &PatchClaim) -> Result<bool, StoreError> {
        self.settle_claim(claim, "opened").await
    }

    async fn settle_claim(&self, claim: &PatchClaim, to: &str) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(pk(claim.authorisation_id), "AUTH")))
            .update_expression("SET #state = :to REMOVE patchLeaseUntil, patchClaim")
            .condition_expression("#state = :patching AND patchClaim = :token")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":to", crate::table::s(to))
            .expression_attribute_values(":patching", crate::table::s("patching"))
            .expression_attribute_values(":token", crate::table::s(claim.token.clone()))
            .send()
            .await;
        crate::table::condition_held(res)
    }
}

fn grace_pk(index: u32) -> String {
    format!("AUTHWAIT#{index}")
}

impl Table {
    /// Takes one of `slots` leases on waiting for a handshake not announced yet (spec §4.2
    /// step 6), held until it is released or `now + lease`: a wait holds a Lambda instance, so
    /// the waits of all instances together are bounded. `None` when every slot is held.
    ///
    /// Tries each slot once, from a random one: a slot found held stays held for this call's
    /// duration, so `None` means all of them were.
    pub async fn take_grace_slot(
        &self,
        slots: u32,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<GraceSlot>, StoreError> {
        let slots = slots.max(1);
        let until = now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(30));
        let token = Uuid::new_v4().to_string();
        let first: u32 = rand::random::<u32>() % slots;
        for k in 0..slots {
            let index = (first + k) % slots;
            let res = self
                .client
                .update_item()
                .table_name(&self.name)
                .set_key(Some(Table::key(grace_pk(index), "AUTHWAIT")))
                .update_expression("SET leaseUntil = :until, holder = :token, expiresAt = :expires")
                .condition_expression("attribute_not_exists(pk) OR leaseUntil <= :now")
                .expression_attribute_values(":until", crate::table::n(until.timestamp_millis()))
                .expression_attribute_values(":token", crate::table::s(token.clone()))
                .expression_attribute_values(":expires", crate::table::n(epoch(until) + 3600))
                .expression_attribute_values(":now", crate::table::n(now.timestamp_millis()))
                .send()
                .await
                .map_err(crate::table::from_sdk);
            match res {
                Ok(_) => return Ok(Some(GraceSlot { index, token })),
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Gives a slot back (if it is still this holder's). An update, not a delete: the functions
    /// that wait may only read, put and update items.
    pub async fn release_grace_slot(&self, slot: &GraceSlot) -> Result<(), StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(grace_pk(slot.index), "AUTHWAIT")))
            .update_expression("SET leaseUntil = :free REMOVE holder")
            .condition_expression("holder = :token")
            .expression_attribute_values(":free", crate::table::n(0))
            .expression_attribute_values(":token", crate::table::s(slot.token.clone()))
            .send()
            .await
            .map_err(crate::table::from_sdk);
        match res {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
