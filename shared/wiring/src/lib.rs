//! The composition root: reads the configuration contract (`config`), builds the real clients
//! behind the use cases' ports (`context`, `banks`, `banking`, `payouts`), and adapts Lambda's
//! events and responses to the use cases (`sqs`, `http`, `lambda`). `connector-app` holds the
//! use cases and names none of these crates; the functions call this crate to build them.

pub mod banking;
pub mod banks;
pub mod config;
pub mod context;
pub mod http;
pub mod lambda;
pub mod payouts;
pub mod sqs;
pub mod telemetry;

pub use connector_app::pipeline::SystemClock;
