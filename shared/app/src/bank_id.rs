//! Which of Banking Service's banks an account belongs to when its notification did not say:
//! any `additionalData` field may be missing (Sage's own example notifications send only
//! `externalId`), and `POST /v1/accountqueries` cannot help, since it needs the `bankId`.

use connector_domain::ports::{GrantStore, StoreError};
use uuid::Uuid;

/// The notified `bankId`; else the bank whose settings alone verified the notification (a
/// deployment serving several banks, `BankingServiceAuth`); else the bank the account was
/// granted through at `/auth` (recorded with the grant, matched by `externalId`); else the
/// single bank this deployment serves (`BANKING_SERVICE_BANK_ID`), if one is configured.
pub async fn resolve(
    grants: &dyn GrantStore,
    external_id: &str,
    notified: Option<Uuid>,
    verified: Option<Uuid>,
    single_bank: Option<Uuid>,
) -> Result<Option<Uuid>, StoreError> {
    if let Some(bank) = notified.or(verified) {
        return Ok(Some(bank));
    }
    let granted = grants
        .granted_account(external_id)
        .await?
        .and_then(|g| g.bank_id);
    Ok(granted.or(single_bank))
}
