//! The driver, notifications, the demo bank and the product view, end to end against a small
//! reference connector (tests/common).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use sandbox::driver::{
    AccountPick, DriverError, NotificationRequest, NotificationSpec, OnboardOptions, ProbeVariant,
    ReauthOptions,
};
use sandbox::model::*;
use sandbox::{CustomHeader, SandboxConfig, TokenVariant};
use serde_json::{Value, json};
use uuid::Uuid;

async fn with_connector(
    cfg: SandboxConfig,
    header: Option<(String, String)>,
) -> (Harness, Connector, Uuid) {
    let h = start(cfg).await;
    let c = connector(&h.sb, header).await;
    let bank = h.register_bank(&c.url()).await;
    (h, c, bank)
}

fn notify_req(
    spec: NotificationSpec,
    token: TokenVariant,
    header: HeaderVariant,
) -> NotificationRequest {
    NotificationRequest {
        bank_id: None,
        notification: spec,
        token,
        header,
        retry: false,
        delivery: Default::default(),
    }
}

// ------------------------------------------------------------------ notifications

#[tokio::test]
async fn notifications_carry_a_valid_token_and_the_custom_header() {
    let cfg = SandboxConfig {
        custom_header: Some(CustomHeader {
            name: "X-Provider-Secret".into(),
            value: "s3cret".into(),
        }),
        ..SandboxConfig::fast()
    };
    let (h, c, _bank) =
        with_connector(cfg, Some(("x-provider-secret".into(), "s3cret".into()))).await;
    let d = h.sb.driver();
    let r = d
        .send_notification(notify_req(
            NotificationSpec::AuthorisationCreated {
                authorisation_id: None,
            },
            TokenVariant::Valid,
            HeaderVariant::Configured,
        ))
        .await
        .unwrap();
    assert_eq!(
        (r.final_status, r.delivered, r.attempts),
        (Some(200), true, 1)
    );
    let got = c.notification_bodies();
    assert_eq!(got[0]["type"], "resourceCreated");
    assert_eq!(got[0]["resource"]["type"], "authorisation");
    assert_eq!(got[0]["resource"]["url"], "NA");
    for header in [HeaderVariant::Missing, HeaderVariant::WrongValue] {
        let r = d
            .send_notification(notify_req(
                NotificationSpec::AuthorisationCreated {
                    authorisation_id: None,
                },
                TokenVariant::Valid,
                header,
            ))
            .await
            .unwrap();
        assert_eq!(r.final_status, Some(401), "{header:?}");
    }
}

#[tokio::test]
async fn every_negative_token_variant_is_rejected_by_a_correct_verifier() {
    let (h, _c, _bank) = with_connector(SandboxConfig::fast(), None).await;
    let d = h.sb.driver();
    for v in TokenVariant::ALL {
        let r = d
            .send_notification(notify_req(
                NotificationSpec::AuthorisationCreated {
                    authorisation_id: None,
                },
                v,
                HeaderVariant::Configured,
            ))
            .await
            .unwrap();
        let want = if v == TokenVariant::Valid { 200 } else { 401 };
        assert_eq!(r.final_status, Some(want), "{v:?}");
    }
    let log = h.client.notifications().await.unwrap();
    assert_eq!(log.len(), TokenVariant::ALL.len());
    assert!(log.iter().all(|a| a.attempt == 1 && a.latency_ms >= 0.0));
}

#[tokio::test]
async fn notifications_are_retried_with_backoff_then_given_up() {
    let (h, c, bank) = with_connector(SandboxConfig::fast(), None).await;
    c.state.fail_next.store(2, Ordering::SeqCst);
    let r = h
        .client
        .create_account(&CreateAccountRequest::new(bank, "e1", "2025-01-01"))
        .await
        .unwrap();
    let n = r.notification.unwrap();
    assert_eq!(
        (n.delivered, n.attempts, n.final_status),
        (true, 3, Some(200))
    );
    let body = c.notification_bodies().pop().unwrap();
    assert_eq!(body["additionalData"]["externalId"], "e1");
    assert!(
        ["2025-01-01", "2025-01-01T00:00:00.000Z"].contains(
            &body["additionalData"]["requestedStartDate"]
                .as_str()
                .unwrap()
        ),
        "{body}"
    );
    assert_eq!(body["additionalData"]["bankId"], json!(bank));
    c.state.fail_next.store(100, Ordering::SeqCst);
    let r =
        h.sb.driver()
            .send_notification(NotificationRequest {
                retry: true,
                ..notify_req(
                    NotificationSpec::Raw { body: "{}".into() },
                    TokenVariant::Valid,
                    HeaderVariant::Configured,
                )
            })
            .await
            .unwrap();
    assert_eq!(
        (r.delivered, r.attempts),
        (false, 4),
        "1 + notification.retries"
    );
    let log = h.client.notifications().await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|a| a.delivery_id == r.delivery_id)
            .count(),
        4
    );
}

#[tokio::test]
async fn duplicate_delivery_option_sends_twice() {
    let (h, c, _bank) = with_connector(SandboxConfig::fast(), None).await;
    let mut req = notify_req(
        NotificationSpec::AuthorisationCreated {
            authorisation_id: Some(Uuid::new_v4()),
        },
        TokenVariant::Valid,
        HeaderVariant::Configured,
    );
    req.delivery.twice = true;
    h.sb.driver().send_notification(req).await.unwrap();
    let got = c.notification_bodies();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], got[1]);
}

// ------------------------------------------------------------------ notifications as Sage sends them

#[tokio::test]
async fn flow_notifications_send_every_field_by_default() {
    let (h, c, bank) = with_connector(SandboxConfig::fast(), None).await;
    assert_eq!(
        SandboxConfig::default().notification_omit_optional_rate,
        0.0
    );
    let out =
        h.sb.driver()
            .onboard(OnboardOptions {
                create: AccountPick::First,
                ..Default::default()
            })
            .await
            .unwrap();
    h.sb.driver()
        .delete_account(out.created[0].bank_account_id)
        .await
        .unwrap();
    let got = c.notification_bodies();
    let keys: Vec<(String, Vec<String>)> = got
        .iter()
        .map(|b| {
            (
                format!(
                    "{}/{}",
                    b["type"].as_str().unwrap(),
                    b["resource"]["type"].as_str().unwrap()
                ),
                b["additionalData"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (
                "resourceCreated/authorisation".to_string(),
                vec!["bankId".to_string()]
            ),
            (
                "resourceCreated/bankAccount".to_string(),
                vec![
                    "bankId".into(),
                    "externalId".into(),
                    "requestedStartDate".into()
                ]
            ),
            (
                "resourceDeleted/bankAccount".to_string(),
                vec!["bankId".into(), "externalId".into()]
            ),
        ]
    );
    assert!(
        got.iter()
            .all(|b| b["additionalData"].get("bankId") == Some(&json!(bank)))
    );
    assert!(
        h.client
            .notifications()
            .await
            .unwrap()
            .iter()
            .all(|a| a.omitted.is_empty())
    );
}

#[tokio::test]
async fn flow_notifications_leave_out_optional_fields_at_the_configured_rate() {
    // Rate 1: everything optional goes; a correct connector still onboards and offboards.
    let cfg = SandboxConfig::fast().omitting_optional_fields(1.0);
    let (h, c, _bank) = with_connector(cfg, None).await;
    let out =
        h.sb.driver()
            .onboard(OnboardOptions {
                create: AccountPick::First,
                ..Default::default()
            })
            .await
            .unwrap();
    let created = &out.created[0];
    h.sb.driver()
        .delete_account(created.bank_account_id)
        .await
        .unwrap();
    let got = c.notification_bodies();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0]["additionalData"],
        json!({}),
        "authorisation without bankId"
    );
    assert_eq!(
        got[1]["additionalData"],
        json!({"externalId": created.external_id}),
        "as Sage's own example: only externalId"
    );
    assert_eq!(got[2]["additionalData"], json!({}), "deletion");
    let omitted: Vec<Vec<String>> = h
        .client
        .notifications()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.omitted)
        .collect();
    assert_eq!(
        omitted,
        [
            vec!["bankId".to_string()],
            vec!["requestedStartDate".into(), "bankId".into()],
            vec!["externalId".into(), "bankId".into()],
        ]
    );

    // Rate 0.5: some sent, some left out, deterministic per seed; never externalId of a creation.
    let cfg = SandboxConfig::fast().omitting_optional_fields(0.5);
    let (h, c, bank) = with_connector(cfg, None).await;
    for i in 0..24 {
        h.client
            .create_account(&CreateAccountRequest::new(
                bank,
                format!("e{i}"),
                "2025-01-01",
            ))
            .await
            .unwrap();
    }
    let got = c.notification_bodies();
    let with = |k: &str| {
        got.iter()
            .filter(|b| b["additionalData"].get(k).is_some())
            .count()
    };
    assert_eq!(with("externalId"), 24);
    for k in ["bankId", "requestedStartDate"] {
        assert!((1..24).contains(&with(k)), "{k}: {} of 24", with(k));
    }
}

#[tokio::test]
async fn requested_start_date_goes_in_each_of_sages_formats_as_the_start_of_the_day() {
    let (h, c, bank) = with_connector(SandboxConfig::fast(), None).await;
    for i in 0..4 {
        h.client
            .create_account(&CreateAccountRequest::new(
                bank,
                format!("e{i}"),
                "2025-01-01T13:45:00.000Z",
            ))
            .await
            .unwrap();
    }
    let sent: Vec<String> = c
        .notification_bodies()
        .iter()
        .map(|b| {
            b["additionalData"]["requestedStartDate"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        sent,
        [
            "2025-01-01T00:00:00.000Z",
            "2025-01-01",
            "2025-01-01T00:00:00.000Z",
            "2025-01-01"
        ]
    );
    // Sent through the driver explicitly: exactly as given, whatever the rate.
    let cfg = SandboxConfig::fast().omitting_optional_fields(1.0);
    let (h, c, bank) = with_connector(cfg, None).await;
    h.sb.driver()
        .send_notification(notify_req(
            NotificationSpec::BankAccountCreated {
                bank_account_id: Uuid::new_v4(),
                external_id: "e1".into(),
                requested_start_date: "2025-01-01T13:45:00Z".into(),
            },
            TokenVariant::Valid,
            HeaderVariant::Configured,
        ))
        .await
        .unwrap();
    let body = c.notification_bodies().pop().unwrap();
    assert_eq!(
        body["additionalData"],
        json!({"externalId": "e1", "requestedStartDate": "2025-01-01T13:45:00Z", "bankId": bank})
    );
}

// ------------------------------------------------------------------ onboarding

#[tokio::test]
async fn onboarding_end_to_end() {
    let (h, c, bank) = with_connector(SandboxConfig::fast(), None).await;
    let out =
        h.sb.driver()
            .onboard(OnboardOptions::default())
            .await
            .unwrap();
    assert_eq!(out.bank_id, bank);
    assert_eq!(
        out.patched_accounts.len(),
        3,
        "demo has 3 accounts, all consented"
    );
    assert_eq!(out.created.len(), 3);
    assert!(
        out.created
            .iter()
            .all(|a| a.account.status == AccountStatus::Pending)
    );
    assert!(out.final_redirect.contains(&format!("state={}", out.state)));
    let kinds: Vec<String> = c
        .notification_bodies()
        .iter()
        .map(|b| {
            format!(
                "{}/{}",
                b["type"].as_str().unwrap(),
                b["resource"]["type"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(kinds[0], "resourceCreated/authorisation");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "resourceCreated/bankAccount")
            .count(),
        3
    );
    let auth = h.client.authorisation(out.authorisation_id).await.unwrap();
    assert_eq!(auth.status, AuthorisationStatus::Completed);
    // Statements then flow to succeeded and the account becomes active.
    let acct = out.created[0].bank_account_id;
    let s = h
        .post_and_wait(&statement(
            acct,
            bank,
            &[("t1", "12.34", "2025-03-03T09:00:00.000Z")],
        ))
        .await;
    assert_eq!(s.status, StatementStatus::Succeeded);
    assert_eq!(
        h.client.account(acct).await.unwrap().status,
        AccountStatus::Active
    );
    assert!(
        h.client
            .violations()
            .await
            .unwrap()
            .iter()
            .all(|v| v.kind == ViolationKind::DatePostedBeforeRequestedStart)
    );
}

#[tokio::test]
async fn onboarding_with_one_consented_account_and_cancel() {
    let (h, _c, _bank) = with_connector(SandboxConfig::fast(), None).await;
    let d = h.sb.driver();
    let out = d
        .onboard(OnboardOptions {
            consent: AccountPick::First,
            create: AccountPick::None,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out.patched_accounts.len(), 1);
    assert!(out.created.is_empty());
    let out = d
        .onboard(OnboardOptions {
            cancel: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out.patch.unwrap().status, "cancelled");
    assert!(out.created.is_empty());
    let out = d
        .onboard(OnboardOptions {
            username: "alice".into(),
            password: "alice".into(),
            create: AccountPick::First,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out.patched_accounts.len(), 2);
    assert_eq!(out.created.len(), 1);
}

#[tokio::test]
async fn onboarding_checks_frame_ancestors() {
    let (h, c, _bank) = with_connector(SandboxConfig::fast(), None).await;
    c.state.omit_csp.store(true, Ordering::Relaxed);
    let e =
        h.sb.driver()
            .onboard(OnboardOptions::default())
            .await
            .unwrap_err();
    assert!(
        matches!(e, DriverError::FrameAncestorsMissing { .. }),
        "{e}"
    );
}

#[tokio::test]
async fn onboarding_over_http_and_product_view_checks() {
    let (h, c, bank) = with_connector(SandboxConfig::fast(), None).await;
    let out = h
        .client
        .onboard(&OnboardOptions {
            create: AccountPick::First,
            ..Default::default()
        })
        .await
        .unwrap();
    let acct = out.created[0].bank_account_id;
    let co = "/api/v1/organisations/local-org/companies/local-company";
    let get = |path: String| {
        let h = &h;
        async move {
            to_answer(
                h.http
                    .get(h.url(&path))
                    .bearer_auth("local-product-token")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    // §12.1: the bank.
    assert_eq!(get(format!("/api/v1/banks/{bank}")).await.status, 200);
    assert_eq!(
        to_answer(
            h.http
                .get(h.url(&format!("/api/v1/banks/{bank}")))
                .send()
                .await
                .unwrap()
        )
        .await
        .status,
        401
    );
    // §12.3/4/6
    let a = get(format!("{co}/bankaccounts/{acct}")).await;
    assert_eq!(a.body["status"], "pending");
    h.post_and_wait(&statement(
        acct,
        bank,
        &[("t1", "1.00", "2025-03-03T09:00:00.000Z")],
    ))
    .await;
    let a = get(format!("{co}/bankaccounts/{acct}")).await;
    assert_eq!(
        (
            a.body["status"].as_str(),
            a.body["lastTransactionId"].as_u64()
        ),
        (Some("active"), Some(1))
    );
    let a = get(format!(
        "{co}/bankaccounts/{acct}/transactions?startIndex=1"
    ))
    .await;
    assert_eq!(a.body["bankTransactionList"][0]["uniqueId"], "t1");
    // §12.7: authRequired, then indirectauth 302 with redirect, then re-authorisation → active.
    h.post_and_wait(&statement_with_status(acct, bank, &[], "authRequired"))
        .await;
    let a = get(format!("{co}/bankaccounts/{acct}/indirectauth?web=true")).await;
    assert_eq!(a.status, 302);
    assert!(
        a.body["redirect"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/authrefresh?bankaccount={acct}", c.url()))
    );
    let r =
        h.sb.driver()
            .reauth(acct, ReauthOptions::default())
            .await
            .unwrap();
    assert!(
        r.accounts
            .iter()
            .any(|a| a.bank_account_id == acct && a.status == AccountStatus::Active)
    );
    // §12.8: available accounts, link, connected.
    let a = get(format!("{co}/availablebankaccounts?bankAccountIds={acct}")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let list = a.body["availableAccounts"].as_array().unwrap().clone();
    assert_eq!(list.len(), 3);
    let unconnected: Vec<&Value> = list
        .iter()
        .filter(|c| c["metadata"]["connected"] == false)
        .collect();
    assert_eq!(unconnected.len(), 2);
    let r = h
        .http
        .post(h.url(&format!("{co}/linkavailablebankaccount")))
        .bearer_auth("local-product-token")
        .json(&json!({"bankAccountCandidateId": unconnected[0]["bankAccountCandidateId"], "requestedStartDate": "2025-01-01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let a = get(format!("{co}/availablebankaccounts?bankAccountIds={acct}")).await;
    let connected = a.body["availableAccounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["metadata"]["connected"] == true)
        .count();
    assert_eq!(connected, 2);
    // §12.9: delete → 204 → cancelled.
    let r = h
        .http
        .delete(h.url(&format!("{co}/bankaccounts/{acct}")))
        .bearer_auth("local-product-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        get(format!("{co}/bankaccounts/{acct}")).await.body["status"],
        "cancelled"
    );
    let last = c.notification_bodies().pop().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["resource"]["id"].clone()),
        (Some("resourceDeleted"), json!(acct))
    );
}

#[tokio::test]
async fn indirect_link_account_and_poll_route() {
    let (h, _c, bank) = with_connector(SandboxConfig::fast(), None).await;
    let co = "/api/v1/organisations/local-org/companies/local-company";
    let a = to_answer(
        h.http
            .get(h.url(&format!("{co}/indirectlinkaccount?bankid={bank}&web=true")))
            .bearer_auth("local-product-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    let poll = a.body["pollRoute"].as_str().unwrap().to_string();
    let mut success = false;
    for _ in 0..100 {
        let p = to_answer(
            h.http
                .get(&poll)
                .bearer_auth("local-product-token")
                .send()
                .await
                .unwrap(),
        )
        .await;
        if p.body["success"] == true {
            assert!(p.body["account"]["bankAccountExternalId"].is_string());
            success = true;
            let auth_id = a.body["authorisationId"].as_str().unwrap();
            let r = h
                .http
                .post(h.url(&format!("{co}/bankaccounts")))
                .bearer_auth("local-product-token")
                .json(&json!({"authorisationId": auth_id, "accountKey": "0", "requestedStartDate": "2025-01-01T00:00:00.000Z"}))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["status"], "pending");
            assert_eq!(v["lastTransactionId"], 0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(success);
}

/// Raw `POST /api/v1/organisations` with a chosen signature, route and body text.
async fn post_organisation(h: &Harness, signed_route: &str, body: &str, key: &str) -> Answer {
    let nonce = Uuid::new_v4().to_string();
    let sig = sandbox::consumer::consumer_signature("POST", signed_route, Some(body), &nonce, key);
    to_answer(
        h.http
            .post(h.url("/api/v1/organisations"))
            .header("content-type", "application/json")
            .header("x-application", "local-application")
            .header("x-nonce", nonce)
            .header("x-signature", sig)
            .body(body.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn consumer_api_as_sages_collection_calls_it() {
    let (h, c, bank) = with_connector(SandboxConfig::fast(), None).await;
    let base = h.sb.base_url();
    // 1-2: organisation + access token (both HMAC-signed), as the collection does.
    let p = sandbox::consumer::ConsumerClient::register(
        &base,
        "local-application",
        "local-signing-key",
    )
    .await
    .unwrap();
    assert!(p.jwt().split('.').count() == 3, "a JWT");
    // 3: the bank lookup needs only x-application.
    let b = p.bank(bank).await.unwrap();
    assert_eq!((b.status, b.body["bankId"].clone()), (200, json!(bank)));
    let bare = |path: String, app: Option<&str>| {
        let h = &h;
        let app = app.map(str::to_string);
        async move {
            let mut r = h.http.get(h.url(&path));
            if let Some(a) = app {
                r = r.header("x-application", a);
            }
            to_answer(r.send().await.unwrap()).await.status
        }
    };
    assert_eq!(bare(format!("/api/v1/banks/{bank}"), None).await, 401);
    assert_eq!(
        bare(format!("/api/v1/banks/{bank}"), Some("other-app")).await,
        401
    );
    // 4: indirectlinkaccount gives an absolute pollRoute.
    let a = p
        .get(&format!("/indirectlinkaccount?bankid={bank}&web=true"))
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    let poll = a.body["pollRoute"].as_str().unwrap().to_string();
    assert!(
        poll.starts_with(&format!("{}/indirectlinkaccount/", p.company_url()))
            && poll.contains("?data="),
        "{poll}"
    );
    // 9: GET {pollRoute} with no headers at all, until the connector's PATCH is in.
    let mut account = Value::Null;
    for _ in 0..200 {
        let r = p.poll(&poll).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        if r.body["success"] == true {
            account = r.body["account"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for k in [
        "accountName",
        "accountKey",
        "accountIdentifier",
        "bankIdentifier",
        "bankAccountExternalId",
    ] {
        assert!(account[k].is_string(), "{k} in {account}");
    }
    // Without its data (and without a token) the route is refused; with the wrong data too.
    let bare_poll = poll.split_once('?').unwrap().0.to_string();
    assert_eq!(
        to_answer(h.http.get(&bare_poll).send().await.unwrap())
            .await
            .status,
        401
    );
    let wrong = format!("{bare_poll}?data=WRONG");
    assert_eq!(
        to_answer(h.http.get(&wrong).send().await.unwrap())
            .await
            .status,
        401
    );
    // 10: POST bankaccounts with Sage's body: no authorisationId.
    let body = json!({
        "accountType": "DEBIT", "accountName": account["accountName"], "accountKey": account["accountKey"],
        "accountIdentifier": account["accountIdentifier"], "bankIdentifier": account["bankIdentifier"],
        "branchIdentifier": "Newcastle", "defaultCurrency": "GBP", "bankId": bank,
        "requestedStartDate": "2017-06-30T00:00:00.000Z",
    });
    let r = p.post("/bankaccounts", &body).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (
            r.body["status"].as_str(),
            r.body["lastTransactionId"].as_u64()
        ),
        (Some("pending"), Some(0))
    );
    let id: Uuid = serde_json::from_value(r.body["bankAccountId"].clone()).unwrap();
    let created = c.notification_bodies().pop().unwrap();
    assert_eq!(
        (
            created["type"].as_str(),
            created["resource"]["id"].clone(),
            created["additionalData"]["externalId"].clone()
        ),
        (
            Some("resourceCreated"),
            json!(id),
            account["bankAccountExternalId"].clone()
        )
    );
    let view = h.client.account(id).await.unwrap();
    assert_eq!(
        (
            view.organisation_id.as_str(),
            view.company_id.as_str(),
            view.account_type.as_deref()
        ),
        (p.organisation_id(), p.company_id(), Some("DEBIT"))
    );
    // 12: GET the account with the token.
    let r = p.get(&format!("/bankaccounts/{id}")).await.unwrap();
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("pending"))
    );
    // An account the company's authorisations never offered: 404.
    let mut other = body.clone();
    other["accountIdentifier"] = json!("not-offered");
    assert_eq!(p.post("/bankaccounts", &other).await.unwrap().status, 404);
    // Another organisation's token cannot reach this company.
    let q = sandbox::consumer::ConsumerClient::register(
        &base,
        "local-application",
        "local-signing-key",
    )
    .await
    .unwrap();
    let r = q
        .get(&format!("{}/bankaccounts/{id}", p.company_url()))
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text);
    // A token needs its x-application.
    let r = to_answer(
        h.http
            .get(format!("{}/bankaccounts/{id}", p.company_url()))
            .bearer_auth(p.jwt())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn consumer_signatures_are_checked() {
    let h = start(SandboxConfig::fast()).await;
    let body = r#"{"company":{"name":"TestCompany"},"crmId":"1"}"#;
    let url = h.url("/api/v1/organisations");
    // The whole URL (as Sage's collection signs it) or the path alone; any case in the route.
    assert_eq!(
        post_organisation(&h, &url, body, "local-signing-key")
            .await
            .status,
        201
    );
    assert_eq!(
        post_organisation(&h, "/API/v1/Organisations", body, "local-signing-key")
            .await
            .status,
        201
    );
    // A pretty-printed body verifies as its compact form (JSON.stringify of the parsed body).
    let pretty = "{\r\n  \"crmId\": \"1\"\r\n}";
    let nonce = Uuid::new_v4().to_string();
    let sig = sandbox::consumer::consumer_signature(
        "POST",
        &url,
        Some(r#"{"crmId":"1"}"#),
        &nonce,
        "local-signing-key",
    );
    let r = h
        .http
        .post(&url)
        .header("x-application", "local-application")
        .header("x-nonce", &nonce)
        .header("x-signature", sig)
        .body(pretty)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Wrong key, another body, another route: 401.
    let a = post_organisation(&h, &url, body, "wrong-key").await;
    assert_eq!((a.status, a.code()), (401, "AuthenticationError"));
    let a = post_organisation(&h, &h.url("/api/v1/other"), body, "local-signing-key").await;
    assert_eq!(a.status, 401);
    let nonce = Uuid::new_v4().to_string();
    let sig = sandbox::consumer::consumer_signature(
        "POST",
        &url,
        Some(body),
        &nonce,
        "local-signing-key",
    );
    let r = h
        .http
        .post(&url)
        .header("x-application", "local-application")
        .header("x-nonce", &nonce)
        .header("x-signature", sig)
        .body(r#"{"crmId":"2"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The access token is signed with the organisation's token, not the application's key.
    let org = post_organisation(&h, &url, body, "local-signing-key").await;
    let token_url = h.url("/api/v1/accesstoken");
    let get_token = |key: String, company: String| {
        let h = &h;
        let org_id = org.body["organisationId"].as_str().unwrap().to_string();
        let token_url = token_url.clone();
        async move {
            let nonce = Uuid::new_v4().to_string();
            let sig = sandbox::consumer::consumer_signature("GET", &token_url, None, &nonce, &key);
            to_answer(
                h.http
                    .get(&token_url)
                    .header("X-Organisation-Id", org_id)
                    .header("X-Company-Id", company)
                    .header("X-Nonce", nonce)
                    .header("X-Signature", sig)
                    .header("X-Application", "local-application")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let company = org.body["companies"][0].as_str().unwrap().to_string();
    let org_token = org.body["token"].as_str().unwrap().to_string();
    let ok = get_token(org_token.clone(), company.clone()).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(ok.body["jwt"].is_string());
    assert_eq!(
        get_token("local-signing-key".into(), company).await.status,
        401
    );
    assert_eq!(
        get_token(org_token, "another-company".into()).await.status,
        401
    );
}

// ------------------------------------------------------------------ re-authorisation, linking, deletion

#[tokio::test]
async fn reauth_returns_the_whole_group_to_active_or_pending() {
    let (h, _c, bank) = with_connector(SandboxConfig::fast(), None).await;
    let out =
        h.sb.driver()
            .onboard(OnboardOptions::default())
            .await
            .unwrap();
    let (a1, a2) = (
        out.created[0].bank_account_id,
        out.created[1].bank_account_id,
    );
    h.post_and_wait(&statement(
        a1,
        bank,
        &[("t1", "1.00", "2025-03-03T09:00:00.000Z")],
    ))
    .await;
    h.post_and_wait(&statement_with_status(a1, bank, &[], "authRequired"))
        .await;
    h.post_and_wait(&statement_with_status(a2, bank, &[], "authRequired"))
        .await;
    let r =
        h.sb.driver()
            .reauth(a2, ReauthOptions::default())
            .await
            .unwrap();
    assert_eq!(r.patch.as_ref().unwrap().status, "success");
    assert!(r.patch.unwrap().bank_accounts.is_empty());
    assert_eq!(
        h.client.account(a1).await.unwrap().status,
        AccountStatus::Active
    );
    assert_eq!(
        h.client.account(a2).await.unwrap().status,
        AccountStatus::Pending,
        "no transactions yet"
    );
}

#[tokio::test]
async fn reauth_with_an_external_id_not_owned_is_rejected_without_patch() {
    let (h, _c, _bank) = with_connector(SandboxConfig::fast(), None).await;
    let out =
        h.sb.driver()
            .onboard(OnboardOptions {
                create: AccountPick::First,
                ..Default::default()
            })
            .await
            .unwrap();
    let e =
        h.sb.driver()
            .reauth(
                out.created[0].bank_account_id,
                ReauthOptions {
                    external_id_override: Some("acc_not_mine".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
    assert!(
        matches!(e, DriverError::PageStopped { status: 403, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn available_accounts_include_new_accounts_and_linking_works() {
    let (h, c, _bank) = with_connector(SandboxConfig::fast(), None).await;
    let d = h.sb.driver();
    let out = d
        .onboard(OnboardOptions {
            create: AccountPick::First,
            ..Default::default()
        })
        .await
        .unwrap();
    let first = out.created[0].bank_account_id;
    let list = d.available_accounts(first).await.unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().filter(|c| c.metadata.connected).count(), 1);
    assert!(
        list.iter()
            .find(|c| c.external_id == out.created[0].external_id)
            .unwrap()
            .metadata
            .connected
    );
    h.client
        .open_bank_account("demo", "savings", Some("New Savings"))
        .await
        .unwrap();
    let list = d.available_accounts(first).await.unwrap();
    assert_eq!(
        list.len(),
        4,
        "an account opened after onboarding is a candidate"
    );
    let n_before = c.notification_bodies().len();
    let linked = d
        .link(
            list.iter()
                .find(|c| !c.metadata.connected)
                .unwrap()
                .bank_account_candidate_id,
            "2025-02-01",
        )
        .await
        .unwrap();
    assert_eq!(linked.account.status, AccountStatus::Pending);
    assert_eq!(
        linked.account.consent_group_id,
        out.created[0].account.consent_group_id
    );
    assert_eq!(c.notification_bodies().len(), n_before + 1);
    let list = d.available_accounts(first).await.unwrap();
    assert_eq!(list.iter().filter(|c| c.metadata.connected).count(), 2);
    // Schema validation of the connector's answer.
    *c.state.available_override.lock() = Some((200, r#"[{"accountType":"chequing","accountName":"","externalId":"x","bankIdentifier":"b","accountIdentifier":"1"}]"#.into()));
    let e = d.available_accounts(first).await.unwrap_err();
    match e {
        DriverError::AvailableAccountsSchema { problems } => {
            assert_eq!(problems.len(), 2, "{problems:?}")
        }
        other => panic!("{other}"),
    }
    *c.state.available_override.lock() = Some((404, "{}".into()));
    assert!(matches!(
        d.available_accounts(first).await.unwrap_err(),
        DriverError::AvailableAccountsStatus {
            status: Some(404),
            ..
        }
    ));
}

#[tokio::test]
async fn delete_account_notifies_and_later_posts_are_violations() {
    let (h, c, bank) = with_connector(SandboxConfig::fast(), None).await;
    let out =
        h.sb.driver()
            .onboard(OnboardOptions {
                create: AccountPick::First,
                ..Default::default()
            })
            .await
            .unwrap();
    let acct = out.created[0].bank_account_id;
    let (view, report) = h.sb.driver().delete_account(acct).await.unwrap();
    assert_eq!(view.status, AccountStatus::Cancelled);
    assert!(report.delivered);
    let last = c.notification_bodies().pop().unwrap();
    assert_eq!(
        last["additionalData"]["externalId"],
        json!(out.created[0].external_id)
    );
    let a = h.post_statement(&statement(acct, bank, &[])).await;
    assert_eq!(a.status, 409);
    let v = h.client.violations().await.unwrap();
    assert!(
        v.iter()
            .any(|v| v.kind == ViolationKind::PostAfterResourceDeleted)
    );
}

// ------------------------------------------------------------------ probes

#[tokio::test]
async fn probe_variants_against_a_correct_connector() {
    let (h, _c, _bank) = with_connector(SandboxConfig::fast(), None).await;
    let d = h.sb.driver();
    for v in ProbeVariant::ALL {
        if v == ProbeVariant::ExpiredAuthorisationId {
            continue; // the reference connector has no clock of its own; see the next test
        }
        let p = d.probe_auth(v, None).await.unwrap();
        assert!(p.ok, "{v:?}: {:?} status {}", p.problems, p.status);
    }
}

#[tokio::test]
async fn expired_probe_reports_the_sandbox_409() {
    let (h, _c, _bank) = with_connector(SandboxConfig::fast(), None).await;
    let p = h
        .client
        .probe_auth(ProbeVariant::ExpiredAuthorisationId, None)
        .await
        .unwrap();
    assert_eq!(p.status, 409, "{p:?}");
    assert!(p.ok, "{:?}", p.problems);
    assert_eq!(
        h.client
            .authorisation(p.authorisation_id)
            .await
            .unwrap()
            .rejected_patches,
        1
    );
}

// ------------------------------------------------------------------ demo bank

fn pkce() -> (String, String) {
    use sha2::Digest;
    let verifier = "verifier-0123456789-0123456789-0123456789-abc".to_string();
    (
        verifier.clone(),
        sandbox::util::b64url(&sha2::Sha256::digest(verifier.as_bytes())),
    )
}

async fn authorize(h: &Harness, form: &[(&str, &str)]) -> Answer {
    to_answer(
        h.http
            .post(h.url("/bank/oauth/authorize"))
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn demo_bank_authorize_errors_and_login() {
    let h = fast().await;
    let (_, challenge) = pkce();
    let good = vec![
        ("response_type", "code"),
        ("client_id", "local-connector"),
        ("redirect_uri", "http://127.0.0.1:5555/auth/callback"),
        ("state", "st"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("scope", "openid accounts transactions"),
    ];
    let get = |q: Vec<(String, String)>| {
        let h = &h;
        async move {
            to_answer(
                h.http
                    .get(h.url("/bank/oauth/authorize"))
                    .query(&q)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let owned = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    let a = get(owned(&good)).await;
    assert_eq!(a.status, 200);
    let forms = sandbox::driver::html::forms(&a.text);
    assert_eq!(forms.len(), 1);
    assert!(forms[0].has_attr("data-bank-login"));
    assert_eq!(
        forms[0]
            .fields
            .iter()
            .filter(|f| f.name == "account")
            .count(),
        5,
        "demo 3 + alice 2"
    );
    for (k, v) in [
        ("client_id", "nope"),
        ("redirect_uri", "https://evil.example/cb"),
        ("response_type", "token"),
        ("code_challenge_method", "plain"),
        ("code_challenge", "short"),
    ] {
        let q: Vec<(&str, &str)> = good
            .iter()
            .map(|(a, b)| if *a == k { (*a, v) } else { (*a, *b) })
            .collect();
        assert_eq!(get(owned(&q)).await.status, 400, "{k}={v}");
    }
    // wrong credentials → 200 with the page again
    let mut f = good.clone();
    f.extend([
        ("username", "demo"),
        ("password", "x"),
        ("action", "approve"),
    ]);
    let a = authorize(&h, &f).await;
    assert_eq!(a.status, 200);
    assert!(a.text.contains("Wrong username or password"));
    // cancel → access_denied
    let mut f = good.clone();
    f.push(("action", "cancel"));
    let a = authorize(&h, &f).await;
    assert_eq!(a.status, 303);
    assert_eq!(
        a.headers["location"],
        "http://127.0.0.1:5555/auth/callback?error=access_denied&state=st"
    );
}

async fn login(h: &Harness, user: &str, consent: Option<&str>, redirect: &str) -> String {
    let (_, challenge) = pkce();
    let mut f = vec![
        ("response_type", "code"),
        ("client_id", "local-connector"),
        ("redirect_uri", redirect),
        ("state", "s"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("username", user),
        ("password", user),
        ("action", "approve"),
    ];
    if let Some(c) = consent {
        f.push(("consent_id", c));
    }
    let customers = h.client.bank_customers().await.unwrap();
    let ids: Vec<String> = customers
        .iter()
        .find(|c| c.username == user)
        .unwrap()
        .accounts
        .iter()
        .map(|a| a.account_id.clone())
        .collect();
    for id in &ids {
        f.push(("account", id.as_str()));
    }
    let a = authorize(h, &f).await;
    assert_eq!(a.status, 303, "{}", a.text);
    a.headers["location"].to_str().unwrap().to_string()
}

fn code_of(location: &str) -> String {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn demo_bank_token_exchange_and_data_api() {
    let h = fast().await;
    let redirect = "http://localhost:4000/cb?x=1";
    let loc = login(&h, "demo", None, redirect).await;
    assert!(
        loc.starts_with("http://localhost:4000/cb?x=1&code="),
        "{loc}"
    );
    let code = code_of(&loc);
    let (verifier, _) = pkce();
    let token = |code: String, verifier: String, secret: &'static str, grant: &'static str| {
        let h = &h;
        async move {
            to_answer(
                h.http
                    .post(h.url("/bank/oauth/token"))
                    .form(&[
                        ("grant_type", grant),
                        ("code", code.as_str()),
                        ("redirect_uri", redirect),
                        ("client_id", "local-connector"),
                        ("client_secret", secret),
                        ("code_verifier", verifier.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    assert_eq!(
        token(
            code.clone(),
            verifier.clone(),
            "wrong",
            "authorization_code"
        )
        .await
        .status,
        401
    );
    let a = token(
        code.clone(),
        verifier.clone(),
        "local-bank-secret",
        "client_credentials",
    )
    .await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let a = token(
        code.clone(),
        "wrong-verifier".into(),
        "local-bank-secret",
        "authorization_code",
    )
    .await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let a = token(
        code.clone(),
        verifier.clone(),
        "local-bank-secret",
        "authorization_code",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        (a.body["token_type"].as_str(), a.body["expires_in"].as_u64()),
        (Some("Bearer"), Some(600))
    );
    let consent = a.body["consent_id"].as_str().unwrap().to_string();
    assert!(a.body["customer_id"].is_string() && a.body["consent_expires_at"].is_string());
    assert_eq!(
        token(code, verifier, "local-bank-secret", "authorization_code")
            .await
            .body["error"],
        "invalid_grant",
        "single use"
    );

    // Consent read (Basic auth).
    let c: Value = h
        .http
        .get(h.url(&format!("/bank/v1/consents/{consent}")))
        .basic_auth("local-connector", Some("local-bank-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["status"], "active");
    let accounts = c["accounts"].as_array().unwrap().clone();
    assert_eq!(accounts.len(), 3);
    assert_eq!(accounts[0]["type"], "business");
    assert_eq!(
        to_answer(
            h.http
                .get(h.url(&format!("/bank/v1/consents/{consent}")))
                .send()
                .await
                .unwrap()
        )
        .await
        .status,
        401
    );
    assert_eq!(
        to_answer(
            h.http
                .get(h.url("/bank/v1/consents/cns_nope"))
                .basic_auth("local-connector", Some("local-bank-secret"))
                .send()
                .await
                .unwrap()
        )
        .await
        .status,
        404
    );

    // Transactions: paging, order, balanceAfter, pending item, errors.
    let acct = accounts[0]["accountId"].as_str().unwrap().to_string();
    let page = |q: String, consent: Option<String>| {
        let h = &h;
        let acct = acct.clone();
        async move {
            let mut r = h
                .http
                .get(h.url(&format!("/bank/v1/accounts/{acct}/transactions?{q}")))
                .basic_auth("local-connector", Some("local-bank-secret"));
            if let Some(c) = consent {
                r = r.header("X-Consent-Id", c);
            }
            to_answer(r.send().await.unwrap()).await
        }
    };
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let a = page(format!("limit=50&cursor={cursor}"), Some(consent.clone())).await;
        assert_eq!(a.status, 200, "{}", a.text);
        all.extend(a.body["transactions"].as_array().unwrap().clone());
        match a.body["nextCursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert!(all.len() > 60, "120 days of history");
    assert!(
        all.windows(2)
            .all(|w| w[0]["bookedAt"].as_str() <= w[1]["bookedAt"].as_str())
    );
    assert!(all.iter().any(|t| t["status"] == "pending"));
    assert!(
        all.iter()
            .all(|t| t["amount"].is_string() && t["balanceAfter"].is_string())
    );
    let from = (chrono::Utc::now() - chrono::Duration::days(10))
        .format("%Y-%m-%d")
        .to_string();
    let a = page(format!("from={from}&limit=1000"), Some(consent.clone())).await;
    assert!(
        a.body["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["bookedAt"].as_str().unwrap() >= from.as_str())
    );
    assert_eq!(
        page("limit=0".into(), Some(consent.clone())).await.status,
        400
    );
    assert_eq!(
        page("limit=1001".into(), Some(consent.clone()))
            .await
            .status,
        400
    );
    assert_eq!(page(String::new(), None).await.status, 400);
    // Generated transactions are later-dated and continue the balance.
    let last_balance: rust_decimal::Decimal =
        all.iter().rev().find(|t| t["status"] == "booked").unwrap()["balanceAfter"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    let generated = h.client.generate_transactions(&acct, 3).await.unwrap();
    assert_eq!(generated.len(), 3);
    let amount: rust_decimal::Decimal = generated[0].amount.parse().unwrap();
    assert_eq!(
        generated[0]
            .balance_after
            .parse::<rust_decimal::Decimal>()
            .unwrap(),
        last_balance + amount
    );
    assert!(generated[0].booked_at.as_str() > all.last().unwrap()["bookedAt"].as_str().unwrap());
    // A new account joins the consent.
    let opened = h
        .client
        .open_bank_account("demo", "loan", None)
        .await
        .unwrap();
    let c: Value = h
        .http
        .get(h.url(&format!("/bank/v1/consents/{consent}")))
        .basic_auth("local-connector", Some("local-bank-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        c["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["accountId"] == opened.account_id.as_str())
    );
    // Another customer's account is not under this consent.
    let alice = h
        .client
        .bank_customers()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.username == "alice")
        .unwrap();
    let r = h
        .http
        .get(h.url(&format!(
            "/bank/v1/accounts/{}/transactions",
            alice.accounts[0].account_id
        )))
        .basic_auth("local-connector", Some("local-bank-secret"))
        .header("X-Consent-Id", &consent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Renewal by another customer, expiry and revocation.
    let loc = login(&h, "alice", Some(&consent), "http://127.0.0.1:1/cb").await;
    assert!(
        loc.contains("error=access_denied&error_description=consent_owner_mismatch"),
        "{loc}"
    );
    h.client.expire_consent(&consent).await.unwrap();
    let a = page(String::new(), Some(consent.clone())).await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (403, Some("consent_expired"))
    );
    let loc = login(&h, "demo", Some(&consent), "http://127.0.0.1:1/cb").await;
    assert!(loc.contains("code="), "renewal: {loc}");
    assert_eq!(page(String::new(), Some(consent.clone())).await.status, 200);
    h.client.revoke_consent(&consent).await.unwrap();
    let a = page(String::new(), Some(consent.clone())).await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (403, Some("consent_revoked"))
    );
}

#[tokio::test]
async fn demo_bank_control_creates_customers_deterministically() {
    let h = fast().await;
    let c = h
        .client
        .create_customer(&sandbox::bank::NewCustomer {
            username: "bob".into(),
            accounts: Some(4),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(c.accounts.len(), 4);
    let kinds: Vec<&str> = c.accounts.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, vec!["business", "savings", "creditCard", "business"]);
    let h2 = fast().await;
    let c2 = h2
        .client
        .create_customer(&sandbox::bank::NewCustomer {
            username: "bob".into(),
            accounts: Some(4),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(c.accounts, c2.accounts, "same seed, same data");
    assert!(
        h.client
            .create_customer(&sandbox::bank::NewCustomer {
                username: "bob".into(),
                ..Default::default()
            })
            .await
            .is_err()
    );
}
