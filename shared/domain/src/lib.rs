//! The connector's domain: types and rules, no I/O (except metric lines on stdout, which is how
//! Lambda publishes Embedded Metric Format). Adapters (AWS, HTTP) live in other crates.

pub mod account;
pub mod amount;
pub mod authorisation;
pub mod fuzzing;
pub mod handshake;
pub mod ingest;
pub mod messages;
pub mod notification;
pub mod payouts;
pub mod ports;
pub mod redirect;
pub mod schedule;
pub mod statement;
pub mod stored;
pub mod transaction;
