//! The soak command's harness at a small scale (the full 200 x 500 run is
//! `cargo xtask soak`): faults on, consumers killed, and the report must count every
//! transaction as delivered once, in order.

mod common;

use std::time::Duration;

use local_stack::soak::{SoakOptions, configure, run};
use sandbox::SandboxConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_soak_under_faults_delivers_everything_once_in_order() {
    let mut options = common::options(SandboxConfig::fast());
    configure(&mut options);
    options.retry_visibility = Some(Duration::from_secs(2));
    options.schedule_every = Some(Duration::from_secs(3600));
    let stack = common::start_with(options).await;
    let report = run(
        &stack,
        &SoakOptions {
            accounts: 3,
            transactions: 150,
            chunk: 25,
            ingest_concurrency: 2,
            error_rate: 0.3,
            drop_rate: 0.1,
            token_lifetime_s: 10,
            kill_every: Duration::from_secs(4),
            limit: Duration::from_secs(300),
            seed: 11,
            progress: false,
        },
    )
    .await
    .expect("soak");
    local_stack::soak::print(&report);
    assert_eq!(report.sent, 450);
    assert_eq!(report.delivered, 450);
    assert!(report.passed(), "{report:?}");
    assert!(report.kills >= 1, "no consumer was killed: {report:?}");
    assert!(report.injected_5xx > 0, "no fault was injected: {report:?}");
    assert!(report.latency_p99_s.is_finite(), "{report:?}");
    assert!(report.latency_p50_s <= report.latency_p99_s);
    stack.finish().await;
}
