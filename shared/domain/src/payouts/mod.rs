//! Payments Out: the statuses and their moves, and the checks the connector makes on a batch
//! before anything reaches the bank (docs/payments-out.md). No I/O.

pub mod authorise;
pub mod batches;
pub mod checks;
pub mod creditors;
pub mod notification;
pub mod onboarding;
pub mod parties;
pub mod status;
