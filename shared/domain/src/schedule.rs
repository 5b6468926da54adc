//! Timing rules: when to poll a statement, how to back off a retry.

use std::time::Duration;

/// When to poll a statement (spec §6.5: first after ~1 s, then ×1.5 up to 15 s). Past a maximum
/// age the statement is parked: alarmed, and polled only every `parked_interval`, so that a
/// statement stuck at Banking Service stops spending the shared request rate while its outcome
/// is still picked up when it comes (nothing lost).
#[derive(Debug, Clone, PartialEq)]
pub struct PollSchedule {
    /// Banking Service's processing time that does not depend on size (queueing, overhead).
    pub base_processing: Duration,
    /// Additional processing time per transaction.
    pub per_transaction: Duration,
    pub factor: f64,
    pub cap: Duration,
    pub max_age: Duration,
    pub parked_interval: Duration,
}

impl Default for PollSchedule {
    fn default() -> Self {
        Self {
            base_processing: Duration::from_millis(1000),
            per_transaction: Duration::from_micros(500),
            factor: 1.5,
            cap: Duration::from_secs(15),
            max_age: Duration::from_secs(30 * 60),
            parked_interval: Duration::from_secs(15 * 60),
        }
    }
}

impl PollSchedule {
    /// The first poll, timed for when the statement is expected to be done, so that most
    /// statements need one poll only.
    pub fn first_delay(&self, transactions: usize) -> Duration {
        let expected = self.base_processing + self.per_transaction * transactions as u32;
        expected.min(self.cap)
    }

    /// The delay before poll number `attempt + 1`, where `attempt` polls found it unfinished.
    pub fn next_delay(&self, transactions: usize, attempt: u32) -> Duration {
        let first = self.first_delay(transactions).as_secs_f64().max(0.2);
        let scaled = first * self.factor.powi(attempt.min(64) as i32);
        Duration::from_secs_f64(scaled.min(self.cap.as_secs_f64()))
    }

    pub fn is_overdue(&self, age: Duration) -> bool {
        age > self.max_age
    }

    /// The delay before the next poll of a statement of this `age` that `attempt` polls found
    /// unfinished: the back-off schedule, or the parked interval once it is overdue.
    pub fn delay_after(&self, transactions: usize, attempt: u32, age: Duration) -> Duration {
        if self.is_overdue(age) {
            self.parked_interval
        } else {
            self.next_delay(transactions, attempt)
        }
    }
}

/// Exponential back-off with full jitter, for 5xx, timeouts and 409 "in flight".
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0-based). `unit` in [0, 1) is the jitter draw, passed
    /// in so that the rule stays a pure function. The result is in [base/2, ceiling]: never zero,
    /// so that a hot failure loop cannot form.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(30)))
            .min(self.cap);
        let floor = self.base / 2;
        let jittered = ceiling.as_secs_f64() * unit.clamp(0.0, 1.0);
        Duration::from_secs_f64(jittered.max(floor.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_poll_tracks_size_and_later_ones_grow_to_the_cap() {
        let s = PollSchedule::default();
        assert_eq!(s.first_delay(0), Duration::from_millis(1000));
        assert_eq!(s.first_delay(1000), Duration::from_millis(1500));
        assert_eq!(s.next_delay(0, 1), Duration::from_millis(1500));
        assert_eq!(s.next_delay(0, 2), Duration::from_millis(2250));
        assert_eq!(s.next_delay(0, 50), Duration::from_secs(15));
        assert!(s.is_overdue(Duration::from_secs(31 * 60)));
        assert!(!s.is_overdue(Duration::from_secs(60)));
    }

    #[test]
    fn an_overdue_statement_is_parked_and_polled_rarely() {
        let s = PollSchedule::default();
        assert_eq!(
            s.delay_after(1000, 3, Duration::from_secs(60)),
            s.next_delay(1000, 3)
        );
        assert_eq!(
            s.delay_after(1000, 3, Duration::from_secs(31 * 60)),
            Duration::from_secs(15 * 60)
        );
    }

    proptest! {
        #[test]
        fn backoff_stays_within_its_bounds(attempt in 0u32..100, unit in 0.0f64..1.0) {
            let b = Backoff::default();
            let d = b.delay(attempt, unit);
            prop_assert!(d >= b.base / 2);
            prop_assert!(d <= b.cap);
        }

        #[test]
        fn polls_never_exceed_the_cap(n in 0usize..1001, attempt in 0u32..1000) {
            let s = PollSchedule::default();
            prop_assert!(s.next_delay(n, attempt) <= s.cap);
            prop_assert!(s.next_delay(n, attempt) >= Duration::from_millis(200));
        }
    }
}
