//! How one queue message ended, in the terms a use case gives it: retry it or move it to the
//! DLQ now. The SQS side (partial batch failures, FIFO groups, the DLQ) is the composition
//! root's.

/// How one message ended when it was not simply done.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Transient: report it as failed; SQS redelivers it after the visibility timeout (and moves
    /// it to the DLQ after `maxReceiveCount`).
    #[error("retry later: {0}")]
    Retry(String),
    /// Can never succeed (malformed, unknown kind): moved to the DLQ now, with the reason.
    #[error("poison: {0}")]
    Poison(String),
}
