//! The Sage ID access token, shared by every Lambda through the table (spec §3.1: reuse the token
//! until it nears expiry; refresh single-flight). DynamoDB encrypts items at rest; the token is
//! short-lived and never logged.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use connector_domain::ports::{BoxFuture, CachedToken, PortError, SharedTokenCache};

use crate::table::{StoreError, Table, n, s};

pub struct DynamoTokenCache {
    table: Table,
    key: String,
}

impl DynamoTokenCache {
    /// `scope` separates tokens of different Sage ID clients.
    pub fn new(table: Table, scope: &str) -> Self {
        Self {
            table,
            key: format!("TOKEN#{scope}"),
        }
    }

    fn port(e: StoreError) -> PortError {
        PortError(e.to_string())
    }

    async fn load_token(&self) -> Result<Option<CachedToken>, PortError> {
        let Some(item) = self
            .table
            .get(self.key.clone(), "TOKEN")
            .await
            .map_err(Self::port)?
        else {
            return Ok(None);
        };
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let millis = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        };
        match (
            text("accessToken"),
            text("tokenType"),
            millis("tokenObtainedAtMs"),
            millis("tokenExpiresAtMs"),
        ) {
            (Some(access_token), Some(token_type), Some(obtained_at), Some(expires_at)) => {
                Ok(Some(CachedToken {
                    access_token,
                    token_type,
                    obtained_at,
                    expires_at,
                }))
            }
            _ => Ok(None),
        }
    }

    async fn store_token(&self, token: &CachedToken) -> Result<(), PortError> {
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(Table::key(self.key.clone(), "TOKEN")))
            .update_expression(
                "SET accessToken = :t, tokenType = :ty, tokenObtainedAtMs = :o, tokenExpiresAtMs = :e, expiresAt = :ttl REMOVE leaseHolder, leaseUntilMs",
            )
            .expression_attribute_values(":t", s(&token.access_token))
            .expression_attribute_values(":ty", s(&token.token_type))
            .expression_attribute_values(":o", n(token.obtained_at.timestamp_millis()))
            .expression_attribute_values(":e", n(token.expires_at.timestamp_millis()))
            .expression_attribute_values(":ttl", n(token.expires_at.timestamp() + 3600))
            .send()
            .await
            .map_err(|e| Self::port(crate::table::from_sdk(e)))?;
        Ok(())
    }

    async fn invalidate_token(&self, access_token: &str) -> Result<(), PortError> {
        let res = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(Table::key(self.key.clone(), "TOKEN")))
            .update_expression("REMOVE accessToken, tokenType, tokenObtainedAtMs, tokenExpiresAtMs")
            .condition_expression("accessToken = :t")
            .expression_attribute_values(":t", s(access_token))
            .send()
            .await
            .map_err(crate::table::from_sdk);
        match res {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(Self::port(e)),
        }
    }

    async fn lease(&self, holder: &str, ttl: Duration) -> Result<bool, PortError> {
        let now: DateTime<Utc> = Utc::now();
        let res = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(Table::key(self.key.clone(), "TOKEN")))
            .update_expression("SET leaseHolder = :h, leaseUntilMs = :until")
            .condition_expression(
                "attribute_not_exists(leaseUntilMs) OR leaseUntilMs < :now OR leaseHolder = :h",
            )
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(
                ":until",
                n(now.timestamp_millis() + ttl.as_millis() as i64),
            )
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .send()
            .await;
        crate::table::condition_held(res).map_err(Self::port)
    }
}

impl SharedTokenCache for DynamoTokenCache {
    fn load(&self) -> BoxFuture<'_, Result<Option<CachedToken>, PortError>> {
        Box::pin(self.load_token())
    }
    fn store(&self, token: &CachedToken) -> BoxFuture<'_, Result<(), PortError>> {
        let token = token.clone();
        Box::pin(async move { self.store_token(&token).await })
    }
    fn invalidate(&self, access_token: &str) -> BoxFuture<'_, Result<(), PortError>> {
        let t = access_token.to_string();
        Box::pin(async move { self.invalidate_token(&t).await })
    }
    fn try_lease(&self, holder: &str, ttl: Duration) -> BoxFuture<'_, Result<bool, PortError>> {
        let h = holder.to_string();
        Box::pin(async move { self.lease(&h, ttl).await })
    }
}
