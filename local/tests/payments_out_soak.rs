//! A small Payments Out soak on every test run (`cargo xtask soak-payouts` is the full one):
//! two subscriptions' batches while Sage and the bank fail, repeat and reorder, and consumers
//! are killed. No payment executed twice, none left without a final status at Sage, every
//! status at Sage the bank's outcome, no contract violation.

mod common;

use std::time::Duration;

use local_stack::payouts_soak::{PayoutsSoakOptions, configure, print, run};
use sandbox::SandboxConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_and_kills_nothing_is_paid_twice_or_lost_and_sage_agrees_with_the_bank() {
    let mut options = common::options(SandboxConfig::fast());
    configure(&mut options);
    let stack = common::start_with(options).await;
    let report = run(
        &stack,
        &PayoutsSoakOptions {
            subscriptions: 2,
            batches: 1,
            payments: 40,
            // Soon enough to land while the batches are in flight: they take seconds.
            kill_every: Duration::from_secs(2),
            deadline: Duration::from_secs(300),
            ..PayoutsSoakOptions::default()
        },
    )
    .await
    .unwrap();
    print(&report);
    assert_eq!(report.payments, 80, "{report:?}");
    assert!(report.kills > 0, "a consumer was killed: {report:?}");
    assert!(report.passed(), "{report:?}");
    stack.finish().await;
}
