//! The local stack: the connector's real function binaries on one machine, against DynamoDB Local
//! and moto (the AWS wire protocol) and the sandbox, wired exactly as `template.yaml` wires them.

pub mod bench;
pub mod browser;
pub mod coldstart;
pub mod demo;
pub mod dynamodb_local;
pub mod events;
pub mod external;
pub mod fauxqs;
pub mod fleet_bench;
pub mod gateway;
pub mod invoke;
pub mod meter;
pub mod moto;
pub mod notification_bench;
pub mod npm;
pub mod payments_out;
pub mod payouts_bench;
pub mod payouts_soak;
pub mod permissions;
pub mod plot;
pub mod process;
pub mod runtime;
pub mod soak;
pub mod stack;
pub mod stats;
pub mod template;

pub use stack::{LocalStack, Options};
