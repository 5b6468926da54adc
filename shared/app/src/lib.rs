//! The connector's use cases, on ports only: no AWS SDK, Sage, bank or Lambda crate is a
//! dependency. The composition root (`connector-wiring`) builds the real clients behind the
//! ports and adapts Lambda's events; functions stay thin: parse the event, call a use case here,
//! map the result to a response.

pub mod available;
pub mod bank_id;
pub mod batch;
pub mod browser;
#[cfg(test)]
mod fakes;
pub mod ingest;
pub mod intake;
pub mod once;
pub mod payouts_authorise;
pub mod payouts_bank_events;
pub mod payouts_batches;
pub mod payouts_intake;
pub mod payouts_messages;
pub mod payouts_onboarding;
pub mod payouts_reconciler;
pub mod payouts_worker;
pub use connector_metrics as metrics;
pub mod pages;
pub mod pipeline;
pub mod poller;
pub mod pusher;
pub mod reconciler;
#[cfg(test)]
mod state_machines;
pub mod worker;
