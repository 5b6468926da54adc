//! AWS adapters of the connector: the DynamoDB table, the SQS queues, and the platform ports of
//! `connector_domain::ports` (shared rate limiter, shared Sage ID token).

pub mod accounts;
pub mod consents;
pub mod handshakes;
pub mod idempotency;
pub mod queues;
pub mod rate_limit;
pub mod table;
pub mod token_cache;
pub mod transactions;

pub use table::{StoreError, Table};

/// Loads the AWS SDK configuration the standard way (environment, `AWS_ENDPOINT_URL` for local
/// emulators, the Lambda role in production).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}
