//! What the reconciler reads on every run, read without scanning the table (which holds every
//! transaction for 400 days): accounts from their registry, recent grants from their day.

use aws_sdk_dynamodb::Client;
use chrono::{DateTime, TimeZone, Utc};
use connector_aws::Table;
use connector_aws::consents::GrantedAccount;
use connector_domain::account::{Account, CreateOutcome};
use local_stack::dynamodb_local;
use local_stack::stack::{TABLE_NAME, create_table, sdk_config};
use local_stack::template::Template;
use serde_json::json;
use uuid::Uuid;

fn account(id: Uuid, external_id: &str) -> Account {
    serde_json::from_value(json!({
        "bankAccountId": id,
        "externalId": external_id,
        "status": "active",
        "backfill": "done",
        "createdAt": "2026-11-24T00:00:00Z",
    }))
    .expect("account")
}

/// A table of its own on this test binary's DynamoDB Local.
async fn table() -> ((), Client, Table) {
    let template = Template::load().expect("template");
    let endpoint = dynamodb_local::shared_endpoint()
        .await
        .expect("DynamoDB Local");
    let key = dynamodb_local::stack_access_key();
    let client = Client::new(&sdk_config(&endpoint, &key).await);
    create_table(&client, &template).await.expect("table");
    let table = Table::new(client.clone(), TABLE_NAME.to_string());
    ((), client, table)
}

fn ids(accounts: &[Account]) -> Vec<Uuid> {
    let mut v: Vec<Uuid> = accounts.iter().map(|a| a.bank_account_id).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_listed_from_their_registry_and_a_half_made_one_is_completed() {
    let ((), client, table) = table().await;
    // More than one batch of 100.
    let mut made: Vec<Uuid> = Vec::new();
    for i in 0..230 {
        let id = Uuid::new_v4();
        let outcome = table
            .create_account(&account(id, &format!("ext-{i}")))
            .await
            .unwrap();
        assert_eq!(outcome, CreateOutcome::Created);
        made.push(id);
    }
    made.sort();
    assert_eq!(ids(&table.accounts().await.unwrap()), made);

    // A creation that died after writing the account item, before the rest: not listed (so the
    // list comes from the registry, not from a scan) until the redelivered creation completes it.
    let half = Uuid::new_v4();
    let sv = |v: String| aws_sdk_dynamodb::types::AttributeValue::S(v);
    let item = std::collections::HashMap::from([
        ("pk".to_string(), sv(format!("ACCT#{half}"))),
        ("sk".to_string(), sv("ACCOUNT".into())),
        ("bankAccountId".to_string(), sv(half.to_string())),
        ("externalId".to_string(), sv("ext-half".into())),
        ("status".to_string(), sv("active".into())),
        ("backfill".to_string(), sv("done".into())),
        ("createdAt".to_string(), sv("2026-11-24T00:00:00Z".into())),
    ]);
    client
        .put_item()
        .table_name(TABLE_NAME)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    assert!(table.get_account(half).await.unwrap().is_some());
    assert_eq!(ids(&table.accounts().await.unwrap()), made);
    assert!(
        table
            .accounts_for_external_id("ext-half")
            .await
            .unwrap()
            .is_empty()
    );

    let again = table
        .create_account(&account(half, "ext-half"))
        .await
        .unwrap();
    assert_eq!(again, CreateOutcome::AlreadyExists);
    made.push(half);
    made.sort();
    assert_eq!(ids(&table.accounts().await.unwrap()), made);
    let links = table.accounts_for_external_id("ext-half").await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].bank_account_id, half);
}

fn grant(external_id: &str, at: DateTime<Utc>) -> GrantedAccount {
    GrantedAccount {
        external_id: external_id.into(),
        consent_id: "consent-1".into(),
        customer_id: "customer-1".into(),
        name: "Current account".into(),
        kind: "checking".into(),
        identifier: "12345678".into(),
        branch: None,
        bank_code: None,
        bank_id: Some(Uuid::nil()),
        granted_at: Some(at),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_grants_are_read_by_day_across_midnight() {
    let ((), _client, table) = table().await;
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 1, 0, 0).unwrap();
    let since = now - chrono::TimeDelta::hours(24);
    let at = |d, h, m| Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap();
    for g in [
        grant("ext-late-yesterday", at(23, 23, 0)),
        grant("ext-too-old", at(23, 0, 30)),
        grant("ext-today", at(24, 0, 10)),
        // Granted twice in the window: the newest grant counts.
        grant("ext-twice", at(23, 9, 0)),
        grant("ext-twice", at(24, 0, 40)),
        // Without a time it was never a recent grant.
        GrantedAccount {
            granted_at: None,
            ..grant("ext-undated", at(24, 0, 0))
        },
    ] {
        table.put_granted_account(&g).await.unwrap();
    }
    let mut found: Vec<(String, DateTime<Utc>)> = table
        .granted_since(since, now)
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.external_id, g.granted_at.unwrap()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("ext-late-yesterday".to_string(), at(23, 23, 0)),
            ("ext-today".to_string(), at(24, 0, 10)),
            ("ext-twice".to_string(), at(24, 0, 40)),
        ]
    );
    // The per-account record is still there for the consent checks.
    assert!(
        table
            .granted_account("ext-undated")
            .await
            .unwrap()
            .is_some()
    );
}
