//! `/notification` security and validation (spec §3.3, §4.5; invariant 6): every forged or
//! stale token and every missing or wrong custom header is refused with 401 and nothing is
//! stored; malformed bodies get 400; redeliveries change nothing.

mod common;

use std::time::{Duration, Instant};

use sandbox::driver::{NotificationRequest, NotificationSpec};
use sandbox::model::HeaderVariant;
use sandbox::{CustomHeader, SandboxConfig, TokenVariant};
use uuid::Uuid;

fn request(
    stack: &local_stack::LocalStack,
    id: Uuid,
    token: TokenVariant,
    header: HeaderVariant,
) -> NotificationRequest {
    NotificationRequest {
        bank_id: Some(stack.bank_id),
        notification: NotificationSpec::AuthorisationCreated {
            authorisation_id: Some(id),
        },
        token,
        header,
        retry: false,
        delivery: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_and_headers_are_refused_and_nothing_is_stored() {
    let mut config = SandboxConfig::fast();
    config.custom_header = Some(CustomHeader {
        name: "X-Connector-Key".into(),
        value: "correct-horse-battery-staple".into(),
    });
    let stack = common::start(config).await;
    let driver = stack.sandbox.driver();
    let table = common::table(&stack);

    let mut refused = Vec::new();
    for token in [
        TokenVariant::Missing,
        TokenVariant::Expired,
        TokenVariant::NotYetValid,
        TokenVariant::OtherIssuer,
        TokenVariant::OtherAudience,
        TokenVariant::NoScope,
        TokenVariant::UnknownKid,
        TokenVariant::ForeignKey,
        TokenVariant::AlgNone,
        TokenVariant::Hs256PublicKey,
        TokenVariant::Garbage,
    ] {
        refused.push((
            format!("{token:?}"),
            request(&stack, Uuid::new_v4(), token, HeaderVariant::Configured),
        ));
    }
    for header in [HeaderVariant::Missing, HeaderVariant::WrongValue] {
        refused.push((
            format!("{header:?}"),
            request(&stack, Uuid::new_v4(), TokenVariant::Valid, header),
        ));
    }
    for (name, req) in &refused {
        let report = driver
            .send_notification(req.clone())
            .await
            .expect("delivery attempted");
        assert_eq!(report.final_status, Some(401), "{name} was not refused");
    }

    // The valid one is accepted, well inside Banking Service's 5 s.
    let good = Uuid::new_v4();
    let started = Instant::now();
    let report = driver
        .send_notification(request(
            &stack,
            good,
            TokenVariant::Valid,
            HeaderVariant::Configured,
        ))
        .await
        .unwrap();
    assert_eq!(report.final_status, Some(200));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    common::eventually(
        "the worker stores the handshake",
        Duration::from_secs(20),
        || async { table.handshake(good).await.ok().flatten() },
    )
    .await;
    // Nothing from the refused ones reached the queue or the table.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (name, req) in &refused {
        let NotificationSpec::AuthorisationCreated {
            authorisation_id: Some(id),
        } = req.notification
        else {
            unreachable!()
        };
        assert!(
            table.handshake(id).await.unwrap().is_none(),
            "{name} stored something"
        );
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_validated_and_redeliveries_change_nothing() {
    let stack = common::start(SandboxConfig::fast()).await;
    let driver = stack.sandbox.driver();
    let table = common::table(&stack);
    let raw = |body: &str| NotificationRequest {
        bank_id: Some(stack.bank_id),
        notification: NotificationSpec::Raw { body: body.into() },
        token: TokenVariant::Valid,
        header: HeaderVariant::Configured,
        retry: false,
        delivery: Default::default(),
    };
    for (body, expected) in [
        ("not json", 400),
        ("[1,2]", 400),
        (r#"{"resource":{"id":"x","type":"bankAccount"}}"#, 400),
        (
            r#"{"type":"resourceCreated","resource":{"type":"bankAccount"}}"#,
            400,
        ),
        // Present but unusable: refusing it would only make Banking Service retry it (§4.5).
        (
            r#"{"type":"resourceCreated","resource":{"id":"not-a-uuid","type":"bankAccount"}}"#,
            200,
        ),
        // New event kinds are acknowledged so that they never cause redelivery storms.
        (
            r#"{"type":"resourceUpdated","resource":{"id":"x","type":"bankAccount"}}"#,
            200,
        ),
        (
            r#"{"type":"resourceCreated","resource":{"id":"x","type":"payment"}}"#,
            200,
        ),
    ] {
        let report = driver.send_notification(raw(body)).await.unwrap();
        assert_eq!(report.final_status, Some(expected), "{body}");
    }

    // Malformed optional fields are left out, not refused: the account is still created, and
    // the same id spelt otherwise is the same notification.
    let account = Uuid::new_v4();
    let odd = |id: String| {
        format!(
            r#"{{"type":"resourceCreated","resource":{{"id":"{id}","type":"bankAccount","url":"NA"}},"additionalData":{{"externalId":"acc_ODD01","bankId":"bank-7","requestedStartDate":"01/02/2025"}}}}"#
        )
    };
    let report = driver
        .send_notification(raw(&odd(account.to_string())))
        .await
        .unwrap();
    assert_eq!(report.final_status, Some(200));
    let stored = common::eventually("account stored", Duration::from_secs(20), || async {
        table.get_account(account).await.ok().flatten()
    })
    .await;
    assert_eq!(stored.external_id, "acc_ODD01");
    assert!(stored.requested_start_date.is_some());
    let braced = format!("{{{}}}", account.hyphenated().to_string().to_uppercase());
    assert_eq!(
        driver
            .send_notification(raw(&odd(braced)))
            .await
            .unwrap()
            .final_status,
        Some(200)
    );
    common::eventually(
        "the braced spelling is taken as a duplicate",
        Duration::from_secs(10),
        || async { stack.log_text().contains("Duplicate").then_some(()) },
    )
    .await;

    // A redelivered authorisation notification does not extend the handshake.
    let id = Uuid::new_v4();
    let first = request(&stack, id, TokenVariant::Valid, HeaderVariant::Configured);
    assert_eq!(
        driver
            .send_notification(first.clone())
            .await
            .unwrap()
            .final_status,
        Some(200)
    );
    let stored = common::eventually("handshake stored", Duration::from_secs(20), || async {
        table.handshake(id).await.ok().flatten()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        driver.send_notification(first).await.unwrap().final_status,
        Some(200)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = table.handshake(id).await.unwrap().unwrap();
    assert_eq!(after.expires_at, stored.expires_at);
    assert_eq!(after.received_at, stored.received_at);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_overtaking_its_creation_leaves_the_account_cancelled() {
    let stack = common::start(SandboxConfig::fast()).await;
    let driver = stack.sandbox.driver();
    let table = common::table(&stack);
    let id = Uuid::new_v4();
    let send = |notification: NotificationSpec| NotificationRequest {
        bank_id: Some(stack.bank_id),
        notification,
        token: TokenVariant::Valid,
        header: HeaderVariant::Configured,
        retry: false,
        delivery: Default::default(),
    };
    let deleted = driver
        .send_notification(send(NotificationSpec::BankAccountDeleted {
            bank_account_id: id,
            external_id: "acc_RACE01".into(),
        }))
        .await
        .unwrap();
    assert_eq!(deleted.final_status, Some(200));
    common::eventually("tombstone written", Duration::from_secs(20), || async {
        table.get_account(id).await.ok().flatten()
    })
    .await;
    // The creation arrives late, twice.
    for _ in 0..2 {
        let created = driver
            .send_notification(send(NotificationSpec::BankAccountCreated {
                bank_account_id: id,
                external_id: "acc_RACE01".into(),
                requested_start_date: "2026-01-01T00:00:00.000Z".into(),
            }))
            .await
            .unwrap();
        assert_eq!(created.final_status, Some(200));
    }
    // Evidence that the worker handled the creation (the repeat is a duplicate at intake),
    // before asserting that it changed nothing.
    common::eventually(
        "the late creation handled by the worker",
        Duration::from_secs(20),
        || async {
            stack
                .log_text()
                .lines()
                .any(|l| l.contains("bank account created") && l.contains(&id.to_string()))
                .then_some(())
        },
    )
    .await;
    let account = table.get_account(id).await.unwrap().unwrap();
    assert_eq!(
        account.status,
        connector_domain::account::AccountStatus::Cancelled
    );
    let links = table.accounts_for_external_id("acc_RACE01").await.unwrap();
    assert!(links.iter().all(|l| l.cancelled), "{links:?}");
    let (status, _) = common::ingest(
        &stack,
        &serde_json::json!({"externalId": "acc_RACE01", "transactions": []}),
    )
    .await;
    assert_eq!(status, 404, "nothing is accepted for a cancelled account");
    stack.finish().await;
}
