//! Payments Out statuses, the moves the connector may make, the bank's outcomes as Sage statuses
//! and the final status of a batch (docs/payments-out.md §3).

use serde::{Deserialize, Serialize};

/// A subscription's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubscriptionStatus {
    Received,
    AwaitingAuthorisation,
    Authorised,
    Cancelled,
    Rejected,
    Suspended,
    Pending,
    /// A status this connector does not know yet (never moved from).
    #[serde(other)]
    Unknown,
}

impl SubscriptionStatus {
    /// Whether the connector may move a subscription from `self` to `to` (every move is the
    /// provider's); staying is always allowed.
    pub fn can_move_to(self, to: Self) -> bool {
        use SubscriptionStatus::*;
        self == to
            || match self {
                Received => matches!(to, AwaitingAuthorisation | Pending | Rejected),
                AwaitingAuthorisation => matches!(to, Authorised | Pending | Rejected | Cancelled),
                Pending => matches!(to, AwaitingAuthorisation | Authorised | Rejected),
                Authorised => matches!(to, Suspended | Cancelled),
                Suspended => matches!(to, Authorised | Cancelled),
                Rejected | Cancelled | Unknown => false,
            }
    }

    /// Only an authorised subscription carries batches.
    pub fn carries_batches(self) -> bool {
        self == Self::Authorised
    }
}

/// A payment's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentStatus {
    Received,
    Processing,
    Paid,
    Failed,
    Rejected,
    Cancelled,
    #[serde(other)]
    Unknown,
}

impl PaymentStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Received | Self::Processing)
    }

    /// Whether the connector may move a payment from `self` to `to`. A terminal payment is never
    /// moved; `Paid` needs a completion date, which the caller gives with it.
    pub fn can_move_to(self, to: Self) -> bool {
        use PaymentStatus::*;
        self == to
            || match self {
                Received => matches!(to, Processing | Rejected | Cancelled),
                Processing => matches!(to, Paid | Failed | Rejected | Cancelled),
                _ => false,
            }
    }
}

/// A batch's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BatchStatus {
    Received,
    AwaitingAuthorisation,
    Processing,
    Paid,
    PartiallyPaid,
    Failed,
    Rejected,
    Cancelled,
    #[serde(other)]
    Unknown,
}

impl BatchStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Self::Received | Self::AwaitingAuthorisation | Self::Processing
        )
    }
}

/// The batch's status once every payment is terminal: all paid → `Paid`; some paid →
/// `PartiallyPaid`; all cancelled → `Cancelled`; all rejected → `Rejected`; else `Failed`.
/// `None` while a payment is still moving (or for an empty batch).
pub fn final_batch_status(payments: &[PaymentStatus]) -> Option<BatchStatus> {
    if payments.is_empty() || payments.iter().any(|p| !p.is_terminal()) {
        return None;
    }
    let all = |s: PaymentStatus| payments.iter().all(|p| *p == s);
    Some(if all(PaymentStatus::Paid) {
        BatchStatus::Paid
    } else if payments.contains(&PaymentStatus::Paid) {
        BatchStatus::PartiallyPaid
    } else if all(PaymentStatus::Cancelled) {
        BatchStatus::Cancelled
    } else if all(PaymentStatus::Rejected) {
        BatchStatus::Rejected
    } else {
        BatchStatus::Failed
    })
}

/// What a bank payment status means at Sage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankOutcome {
    /// Still at the bank (`accepted`, `submitted`): `Processing`.
    InProgress,
    /// `settled`: `Paid`, completed at the bank's `completedAt`.
    Settled,
    /// `failed` / `rejected` / `cancelled`.
    Ended(PaymentStatus),
    /// `returned` after `settled`: the payment stays `Paid`; the product is told by a message.
    Returned,
    /// A status the connector does not know: nothing is changed, and it is logged.
    Unknown,
}

impl BankOutcome {
    pub fn of(bank_status: &str) -> Self {
        match bank_status {
            "accepted" | "submitted" => Self::InProgress,
            "settled" => Self::Settled,
            "failed" => Self::Ended(PaymentStatus::Failed),
            "rejected" => Self::Ended(PaymentStatus::Rejected),
            "cancelled" => Self::Ended(PaymentStatus::Cancelled),
            "returned" => Self::Returned,
            _ => Self::Unknown,
        }
    }

    /// The Sage status it leads to, if it leads to one.
    pub fn status(self) -> Option<PaymentStatus> {
        match self {
            Self::InProgress => Some(PaymentStatus::Processing),
            Self::Settled | Self::Returned => Some(PaymentStatus::Paid),
            Self::Ended(s) => Some(s),
            Self::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAYMENTS: [PaymentStatus; 6] = [
        PaymentStatus::Received,
        PaymentStatus::Processing,
        PaymentStatus::Paid,
        PaymentStatus::Failed,
        PaymentStatus::Rejected,
        PaymentStatus::Cancelled,
    ];

    #[test]
    fn a_terminal_payment_never_moves_and_paid_comes_only_from_processing() {
        for from in PAYMENTS {
            for to in PAYMENTS {
                let allowed = from.can_move_to(to);
                if from.is_terminal() && from != to {
                    assert!(!allowed, "{from:?} -> {to:?}");
                }
                if to == PaymentStatus::Paid && from != PaymentStatus::Paid {
                    assert_eq!(allowed, from == PaymentStatus::Processing, "{from:?}");
                }
            }
        }
        assert!(PaymentStatus::Received.can_move_to(PaymentStatus::Rejected));
        assert!(!PaymentStatus::Processing.can_move_to(PaymentStatus::Received));
    }

    #[test]
    fn subscriptions_move_as_the_table_says() {
        use SubscriptionStatus::*;
        assert!(Received.can_move_to(AwaitingAuthorisation));
        assert!(Pending.can_move_to(Authorised));
        assert!(Authorised.can_move_to(Suspended) && Suspended.can_move_to(Authorised));
        assert!(!Received.can_move_to(Authorised));
        assert!(!Rejected.can_move_to(Authorised));
        assert!(!Cancelled.can_move_to(Authorised));
        assert!(Authorised.carries_batches() && !Suspended.carries_batches());
    }

    #[test]
    fn the_final_batch_status_follows_its_payments() {
        use PaymentStatus::*;
        assert_eq!(final_batch_status(&[Paid, Paid]), Some(BatchStatus::Paid));
        assert_eq!(
            final_batch_status(&[Paid, Failed, Rejected]),
            Some(BatchStatus::PartiallyPaid)
        );
        assert_eq!(
            final_batch_status(&[Cancelled, Cancelled]),
            Some(BatchStatus::Cancelled)
        );
        assert_eq!(final_batch_status(&[Rejected]), Some(BatchStatus::Rejected));
        assert_eq!(
            final_batch_status(&[Rejected, Cancelled, Failed]),
            Some(BatchStatus::Failed)
        );
        assert_eq!(final_batch_status(&[Paid, Processing]), None);
        assert_eq!(final_batch_status(&[]), None);
    }

    #[test]
    fn bank_statuses_map_to_sage_statuses() {
        assert_eq!(
            BankOutcome::of("submitted").status(),
            Some(PaymentStatus::Processing)
        );
        assert_eq!(
            BankOutcome::of("settled").status(),
            Some(PaymentStatus::Paid)
        );
        assert_eq!(BankOutcome::of("returned"), BankOutcome::Returned);
        assert_eq!(
            BankOutcome::of("returned").status(),
            Some(PaymentStatus::Paid)
        );
        assert_eq!(
            BankOutcome::of("failed").status(),
            Some(PaymentStatus::Failed)
        );
        assert_eq!(
            BankOutcome::of("cancelled").status(),
            Some(PaymentStatus::Cancelled)
        );
        assert_eq!(BankOutcome::of("frozen").status(), None);
    }

    fn terminal() -> impl Strategy<Value = PaymentStatus> {
        prop::sample::select(vec![
            PaymentStatus::Paid,
            PaymentStatus::Failed,
            PaymentStatus::Rejected,
            PaymentStatus::Cancelled,
        ])
    }

    proptest! {
        /// The final status is `Paid` exactly when every payment is, and names a payment status
        /// that some payment has whenever all payments agree.
        #[test]
        fn the_final_status_agrees_with_the_payments(payments in prop::collection::vec(terminal(), 1..50)) {
            let status = final_batch_status(&payments).unwrap();
            let any_paid = payments.contains(&PaymentStatus::Paid);
            let all_paid = payments.iter().all(|p| *p == PaymentStatus::Paid);
            prop_assert_eq!(status == BatchStatus::Paid, all_paid);
            prop_assert_eq!(status == BatchStatus::PartiallyPaid, any_paid && !all_paid);
            prop_assert!(status.is_terminal());
        }
    }
}
