//! What the connector reports to Banking Service at the end of an authorisation
//! (`PATCH /v1/authorisations/{id}`, spec §6.3).

use serde::{Deserialize, Serialize};

/// `PATCH /v1/authorisations/{id}` body (spec §6.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthorisationPatch {
    pub data: AuthorisationPatchData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorisationPatchData {
    pub status: AuthorisationStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bank_accounts: Vec<PatchedAccount>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthorisationStatus {
    Success,
    Error,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchedAccount {
    pub bank_account_external_id: String,
    pub account_name: String,
    pub bank_identifier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_identifier: Option<String>,
    pub account_identifier: String,
}
