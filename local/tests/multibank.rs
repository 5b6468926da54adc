//! Several banks in one deployment (docs/configuration.md): a second bank, registered by another
//! Sage client with its own API key, configured through `BANKS_CONFIG`. Its accounts' statements
//! must go out with that client's token and that key: the sandbox, as Sage does, answers 404
//! for an account of another provider's bank.

mod common;

use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use sandbox::model::CreateAccountRequest;
use sandbox::{ProviderClient, SandboxConfig};
use serde_json::{Value, json};
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(180);

fn records(tag: &str, n: usize) -> Vec<Value> {
    let start = Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0).unwrap();
    (0..n)
        .map(|i| {
            json!({
                "uniqueId": format!("{tag}-{i:03}"),
                "transactionAmount": format!("-{}.25", i + 1),
                "transactionType": "DEBIT",
                "datePosted": (start + TimeDelta::minutes(i as i64))
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "description": format!("Payment {i} of {tag}"),
                "runningBalance": format!("{}.00", 1000 - i),
            })
        })
        .collect()
}

async fn account_at(stack: &local_stack::LocalStack, bank: Uuid, external_id: &str) -> Uuid {
    let created = stack
        .sandbox
        .client()
        .create_account(&CreateAccountRequest {
            notify: Some(true),
            ..CreateAccountRequest::new(bank, external_id, "2026-01-01T00:00:00.000Z")
        })
        .await
        .expect("account");
    let id = created.account.bank_account_id;
    let table = common::table(stack);
    common::eventually("the connector knows the account", LONG, || async {
        let a = table.get_account(id).await.ok()??;
        (a.backfill == connector_domain::account::BackfillState::Done).then_some(())
    })
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_banks_statements_go_out_with_that_banks_client_and_key() {
    let second = ProviderClient {
        client_id: "second-provider".into(),
        client_secret: "second-provider-secret".into(),
        allowed_audiences: vec![sandbox::config::local::PROVIDER_AUDIENCE.into()],
        provider_id: Uuid::new_v4(),
        api_key: "second-provider-api-key".into(),
        notification_audience: None,
        custom_header: None,
    };
    let mut sandbox = SandboxConfig::fast();
    sandbox.clients.push(second.clone());
    let mut options = common::options(sandbox);
    // Both banks share the notification settings here, so a notification must name its bank
    // (the next test covers banks told apart by their settings).
    options.sandbox.notification_omit_optional_rate = 0.0;
    options.more_banks = vec![second];
    let stack = common::start_with(options).await;
    let first_bank = stack.bank_id;
    let second_bank = stack.more_bank_ids[0];

    let a = account_at(&stack, first_bank, "multibank-a").await;
    let b = account_at(&stack, second_bank, "multibank-b").await;
    for (tag, n) in [("multibank-a", 3), ("multibank-b", 4)] {
        let (status, body, _) = common::ingest_retrying(
            &stack,
            &json!({"externalId": tag, "transactions": records(tag, n)}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    common::wait_held(&stack, a, 3, LONG).await;
    common::wait_held(&stack, b, 4, LONG).await;

    // Each bank's statements were posted by its own client (the sandbox logs the token's client).
    let posts: Vec<(String, u16)> = stack
        .sandbox
        .client()
        .requests()
        .await
        .expect("request log")
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/statements")
        .map(|r| (r.client_id.unwrap_or_default(), r.status))
        .collect();
    assert!(
        posts
            .iter()
            .any(|(c, s)| c == "second-provider" && *s < 300),
        "{posts:?}"
    );
    assert!(
        posts
            .iter()
            .any(|(c, s)| c == sandbox::config::local::CLIENT_ID && *s < 300),
        "{posts:?}"
    );
    assert!(
        posts.iter().all(|(_, s)| *s != 404),
        "a statement went out with the other bank's credentials: {posts:?}"
    );
    stack.finish().await;
}

/// A bank whose provider was registered with its own notification audience and custom header:
/// its notifications verify against its own settings only, and when they name no bank (Sage's
/// own examples carry only `externalId`), the settings that verified one give its bank.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notification_naming_no_bank_gets_the_bank_whose_settings_verify_it() {
    let second = ProviderClient {
        client_id: "own-settings-provider".into(),
        client_secret: "own-settings-provider-secret".into(),
        allowed_audiences: vec![sandbox::config::local::PROVIDER_AUDIENCE.into()],
        provider_id: Uuid::new_v4(),
        api_key: "own-settings-provider-api-key".into(),
        notification_audience: Some("own-settings-notifications".into()),
        custom_header: Some(sandbox::config::CustomHeader {
            name: "x-own-settings".into(),
            value: "own-settings-header-value".into(),
        }),
    };
    // Every optional field left out: no notification names its bank.
    let mut sandbox = SandboxConfig::fast().omitting_optional_fields(1.0);
    sandbox.clients.push(second.clone());
    let mut options = common::options(sandbox);
    options.more_banks = vec![second];
    let stack = common::start_with(options).await;
    let second_bank = stack.more_bank_ids[0];

    let b = account_at(&stack, second_bank, "own-settings-b").await;
    let client = stack.sandbox.client();
    let notified: Vec<_> = client
        .notifications()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.resource_id.as_deref() == Some(b.to_string().as_str()))
        .collect();
    assert!(
        notified
            .iter()
            .all(|n| n.omitted.iter().any(|f| f == "bankId")),
        "{notified:?}"
    );
    assert!(
        notified.iter().any(|n| n.status == Some(200)),
        "{notified:?}"
    );

    let tag = "own-settings-b";
    let (status, body, _) = common::ingest_retrying(
        &stack,
        &json!({"externalId": tag, "transactions": records(tag, 2)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    common::wait_held(&stack, b, 2, LONG).await;
    // Learnt as the second bank: its statements go out with its own client (the deployment's
    // single bank, the fallback, would have been refused with 404).
    let posts: Vec<(String, u16)> = client
        .requests()
        .await
        .expect("request log")
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/statements")
        .map(|r| (r.client_id.unwrap_or_default(), r.status))
        .collect();
    assert!(
        posts
            .iter()
            .any(|(c, s)| c == "own-settings-provider" && *s < 300),
        "{posts:?}"
    );
    assert!(posts.iter().all(|(_, s)| *s != 404), "{posts:?}");
    stack.finish().await;
}
