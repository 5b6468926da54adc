//! Authorisation handshakes (spec §4.2): announced by a notification, opened by the browser,
//! claimed for the PATCH, and completed once the PATCH succeeded (spec §4.3 step 3).
//!
//! Single use without completing before the PATCH: the flow that reports claims the handshake
//! first (`opened` → `patching`, with a lease and a token, by conditional write), PATCHes, then
//! completes it (`patching` → `completed`, only with its token). A second tab finds the claim
//! and does not PATCH; a holder that dies between the PATCH and the completion leaves a claim
//! that lapses at the end of its lease, after which the handshake can be used again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HandshakeState {
    Announced,
    Opened,
    /// Claimed for the PATCH until `patch_lease_until`.
    Patching,
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
    /// While `patching`: the end of the claim's lease.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "chrono::serde::ts_milliseconds_option"
    )]
    pub patch_lease_until: Option<DateTime<Utc>>,
}

impl Handshake {
    /// Claimed for the PATCH by a holder whose lease has not run out.
    pub fn patch_in_progress(&self, now: DateTime<Utc>) -> bool {
        self.state == HandshakeState::Patching && self.patch_lease_until.is_some_and(|t| t > now)
    }

    /// Why the handshake cannot be used at `now`, if it cannot: completed, being PATCHed by
    /// another request, or expired (in that order: a completed one never reads as expired).
    pub fn refusal(&self, now: DateTime<Utc>) -> Option<HandshakeRefusal> {
        if self.state == HandshakeState::Completed {
            Some(HandshakeRefusal::Completed)
        } else if self.patch_in_progress(now) {
            Some(HandshakeRefusal::InProgress)
        } else if self.expires_at <= now {
            Some(HandshakeRefusal::Expired)
        } else {
            None
        }
    }
}

/// The right to PATCH a handshake and then complete it, won by `claim_handshake`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchClaim {
    pub authorisation_id: Uuid,
    /// Proves the claim in the store's conditional writes.
    pub token: String,
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
    /// The bank the customer picked (`/auth`'s `bank`), recorded with the grant when the
    /// authorisation notification named none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_id: Option<Uuid>,
}

/// Why a browser may not use a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
    Unknown,
    Expired,
    Completed,
    /// Another request holds the claim for the PATCH.
    InProgress,
}

/// One of the few waits for an unknown handshake that may run at once (see `take_grace_slot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraceSlot {
    pub index: u32,
    pub token: String,
}
