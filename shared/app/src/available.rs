//! `GET /availableaccounts?externalId=` (spec §4.6): every account under the same consent, read
//! live from the bank, the last known list as fallback. Secured like `/notification`.

use std::sync::Arc;

use chrono::Utc;
use connector_aws::Table;
use connector_aws::consents::{ConsentRecord, GrantedAccount};
use connector_bank::BankClient;
use connector_domain::transaction::truncate_chars;
use connector_sage::{AuthFailure, NotificationVerifier};
use http::HeaderMap;
use serde::Serialize;

use crate::config::{ConfigError, Env};
use crate::context::{Platform, QueueNeeds, bank_from_env, http_client};
use crate::intake::verifier_from_env;

/// One account of the answer, in the spec's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableAccount {
    pub account_type: String,
    pub account_name: String,
    pub external_id: String,
    pub bank_identifier: String,
    pub account_identifier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_identifier: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AvailableError {
    #[error("unauthorised: {0}")]
    Unauthorised(AuthFailure),
    #[error("externalId is required")]
    MissingExternalId,
    #[error("unknown externalId")]
    UnknownExternalId,
    #[error("unavailable: {0}")]
    Unavailable(String),
}

const ACCOUNT_TYPES: &[&str] = &[
    "business",
    "savings",
    "loan",
    "creditCard",
    "corporate",
    "personal",
];

fn shape(g: &GrantedAccount) -> AvailableAccount {
    AvailableAccount {
        account_type: if ACCOUNT_TYPES.contains(&g.kind.as_str()) {
            g.kind.clone()
        } else {
            "personal".into()
        },
        account_name: truncate_chars(
            if g.name.is_empty() {
                "Account"
            } else {
                &g.name
            },
            128,
        ),
        external_id: g.external_id.clone(),
        bank_identifier: truncate_chars(
            g.bank_code
                .as_deref()
                .filter(|c| !c.is_empty())
                .unwrap_or(&g.customer_id),
            64,
        ),
        account_identifier: truncate_chars(
            if g.identifier.is_empty() {
                &g.external_id
            } else {
                &g.identifier
            },
            64,
        ),
        branch_identifier: g
            .branch
            .as_deref()
            .filter(|b| !b.is_empty())
            .map(|b| truncate_chars(b, 128)),
    }
}

pub struct AvailableAccounts {
    verifier: NotificationVerifier,
    table: Table,
    bank: Arc<BankClient>,
}

impl AvailableAccounts {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let platform = Platform::from_env(env, QueueNeeds::default()).await?;
        let http = http_client(env)?;
        Ok(Self {
            verifier: verifier_from_env(env, &platform, http.clone()).await?,
            bank: bank_from_env(env, &platform, &http).await?,
            table: platform.table,
        })
    }

    pub async fn handle(
        &self,
        headers: &HeaderMap,
        external_id: Option<&str>,
    ) -> Result<Vec<AvailableAccount>, AvailableError> {
        self.verifier
            .verify(headers)
            .await
            .map_err(AvailableError::Unauthorised)?;
        let external_id = external_id
            .map(str::trim)
            .filter(|e| !e.is_empty() && e.chars().count() <= 255)
            .ok_or(AvailableError::MissingExternalId)?;
        let granted = self
            .table
            .granted_account(external_id)
            .await
            .map_err(|e| AvailableError::Unavailable(e.to_string()))?
            .ok_or(AvailableError::UnknownExternalId)?;
        let cached = self
            .table
            .consent(&granted.consent_id)
            .await
            .map_err(|e| AvailableError::Unavailable(e.to_string()))?;
        match self.bank.consent(&granted.consent_id).await {
            Ok(live) if live.is_active(Utc::now()) => {
                let accounts: Vec<GrantedAccount> = live
                    .accounts
                    .iter()
                    .map(|a| GrantedAccount {
                        external_id: a.account_id.clone(),
                        consent_id: live.consent_id.clone(),
                        customer_id: live.customer_id.clone(),
                        name: a.name.clone(),
                        kind: a.kind.clone(),
                        identifier: a.identifier.clone(),
                        branch: a.branch.clone(),
                        bank_code: a.bank_code.clone(),
                        bank_id: granted.bank_id,
                        granted_at: Some(Utc::now()),
                    })
                    .collect();
                // New accounts become known here, so that linking them works like onboarding.
                for a in &accounts {
                    if let Err(e) = self.table.put_granted_account(a).await {
                        tracing::warn!(error = %e, "could not record a granted account");
                    }
                }
                let record = ConsentRecord {
                    consent_id: live.consent_id.clone(),
                    customer_id: live.customer_id.clone(),
                    status: live.status.clone(),
                    expires_at: live.expires_at,
                    accounts: accounts.clone(),
                    updated_at: Utc::now(),
                };
                if let Err(e) = self.table.put_consent(&record).await {
                    tracing::warn!(error = %e, "could not cache the consent");
                }
                Ok(accounts.iter().map(shape).collect())
            }
            other => {
                if let Err(e) = &other {
                    tracing::warn!(error = %e, "bank unavailable: answering from the cache");
                }
                let accounts = cached
                    .map(|c| c.accounts)
                    .unwrap_or_else(|| vec![granted.clone()]);
                Ok(accounts.iter().map(shape).collect())
            }
        }
    }
}
