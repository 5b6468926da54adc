//! One test per rule of sandbox spec §3–§6 for Sage ID and the Provider API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use sandbox::model::*;
use sandbox::{ProviderClient, SandboxConfig};
use serde_json::{Value, json};
use uuid::Uuid;

const DEAD: &str = "http://127.0.0.1:9";

fn id_of(a: &Answer) -> Uuid {
    Uuid::parse_str(a.body["data"]["_id"].as_str().unwrap()).unwrap()
}

// ------------------------------------------------------------------ Sage ID

#[tokio::test]
async fn token_valid_has_bearer_lifetime_and_claims() {
    let h = fast().await;
    let a = h
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-provider"),
            ("client_secret", "local-secret"),
            ("audience", AUD),
        ])
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(a.body["expires_in"], 28800);
    let t = a.body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(t).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert!(header.kid.is_some());
    let claims: Value = jsonwebtoken::dangerous::insecure_decode(t)
        .map(|d| d.claims)
        .unwrap_or(Value::Null);
    assert_eq!(claims["iss"], h.sb.issuer());
    assert_eq!(claims["aud"], AUD);
    assert_eq!(claims["azp"], "local-provider");
    assert!(claims["jti"].is_string() && claims["iat"].is_number() && claims["exp"].is_number());
}

#[tokio::test]
async fn token_accepts_the_documented_misspelling_and_json() {
    let h = fast().await;
    let a = h
        .token_request(&[
            ("grant_type", "client_credentails"),
            ("client_id", "local-provider"),
            ("client_secret", "local-secret"),
            ("audience", AUD),
        ])
        .await;
    assert_eq!(a.status, 200);
    let r = h
        .http
        .post(h.sb.token_url())
        .json(&json!({"grant_type": "client_credentials", "client_id": "local-provider", "client_secret": "local-secret", "audience": AUD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn token_error_cases() {
    let h = fast().await;
    let base = [
        ("client_id", "local-provider"),
        ("client_secret", "local-secret"),
        ("audience", AUD),
    ];
    let mut f = vec![("grant_type", "password")];
    f.extend(base);
    let a = h.token_request(&f).await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let a = h
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-provider"),
            ("client_secret", "local-secret"),
        ])
        .await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let a = h
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-provider"),
            ("client_secret", "nope"),
            ("audience", AUD),
        ])
        .await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (401, Some("access_denied"))
    );
    let a = h
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", "who"),
            ("client_secret", "x"),
            ("audience", AUD),
        ])
        .await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (401, Some("access_denied"))
    );
    let a = h
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-provider"),
            ("client_secret", "local-secret"),
            ("audience", "other"),
        ])
        .await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (403, Some("access_denied"))
    );
}

#[tokio::test]
async fn token_requests_are_rate_limited_per_client() {
    let h = start(SandboxConfig {
        token_max_requests_per_min: 3,
        ..SandboxConfig::fast()
    })
    .await;
    // `start` already took one.
    h.new_token().await;
    h.new_token().await;
    let a = h
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-provider"),
            ("client_secret", "local-secret"),
            ("audience", AUD),
        ])
        .await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (429, Some("too_many_requests"))
    );
}

#[tokio::test]
async fn shortened_expires_in_fault() {
    let h = fast().await;
    h.client
        .set_faults(&FaultSet {
            token_expires_in_s: Some(60),
            ..Default::default()
        })
        .await
        .unwrap();
    let a = h
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-provider"),
            ("client_secret", "local-secret"),
            ("audience", AUD),
        ])
        .await;
    assert_eq!(a.body["expires_in"], 60);
}

#[tokio::test]
async fn token_endpoint_fault_answers_5xx() {
    let h = fast().await;
    let f = RouteFault {
        route: "POST /oauth/token".into(),
        error_rate: 1.0,
        error_status: 503,
        remaining: Some(1),
        ..Default::default()
    };
    h.client
        .set_faults(&FaultSet {
            routes: vec![f],
            ..Default::default()
        })
        .await
        .unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "local-provider"),
        ("client_secret", "local-secret"),
        ("audience", AUD),
    ];
    assert_eq!(h.token_request(&form).await.status, 503);
    assert_eq!(h.token_request(&form).await.status, 200);
    let f = RouteFault {
        route: "POST /oauth/token".into(),
        error_rate: 1.0,
        error_status: 429,
        remaining: Some(1),
        ..Default::default()
    };
    h.client
        .set_faults(&FaultSet {
            routes: vec![f],
            ..Default::default()
        })
        .await
        .unwrap();
    let a = h.token_request(&form).await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (429, Some("too_many_requests"))
    );
}

// ------------------------------------------------------------------ pipeline order

#[tokio::test]
async fn api_key_is_checked_before_the_token() {
    let h = fast().await;
    let a = h
        .api_with(
            "GET",
            &format!("/v1/statements/{}", Uuid::new_v4()),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.body,
        json!({"message": "Forbidden"}),
        "gateway style, no envelope"
    );
    let a = h
        .api_with(
            "GET",
            &format!("/v1/statements/{}", Uuid::new_v4()),
            None,
            Some("wrong"),
            Some(&h.token),
        )
        .await;
    assert_eq!(a.status, 403);
    let a = h
        .api_with(
            "GET",
            &format!("/v1/statements/{}", Uuid::new_v4()),
            None,
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!((a.status, a.code()), (401, "AuthenticationError"));
    let a = h
        .api_with(
            "GET",
            &format!("/v1/statements/{}", Uuid::new_v4()),
            None,
            Some(API_KEY),
            Some("garbage"),
        )
        .await;
    assert_eq!((a.status, a.code()), (401, "AuthenticationError"));
    assert!(a.body["data"].is_null() && a.body["links"].is_null() && a.body["meta"].is_null());
}

#[tokio::test]
async fn another_providers_key_with_this_token_is_forbidden() {
    let h = fast().await;
    let other = ProviderClient {
        client_id: "p2".into(),
        client_secret: "s2".into(),
        allowed_audiences: vec![AUD.into()],
        provider_id: Uuid::new_v4(),
        api_key: "key2".into(),
        notification_audience: None,
        custom_header: None,
    };
    h.client
        .load_fixtures(&Fixtures {
            clients: vec![other],
            replace_clients: false,
        })
        .await
        .unwrap();
    let a = h
        .api_with(
            "GET",
            &format!("/v1/statements/{}", Uuid::new_v4()),
            None,
            Some("key2"),
            Some(&h.token),
        )
        .await;
    assert_eq!(a.status, 403);
}

#[tokio::test]
async fn expired_token_is_401_without_leeway() {
    let h = fast().await;
    h.client
        .set_clock(&ClockRequest {
            advance_s: Some(28_800),
            ..Default::default()
        })
        .await
        .unwrap();
    let a = h
        .api("GET", &format!("/v1/statements/{}", Uuid::new_v4()), None)
        .await;
    assert_eq!(a.status, 401);
}

#[tokio::test]
async fn revoked_tokens_are_401() {
    let h = fast().await;
    let path = format!("/v1/statements/{}", Uuid::new_v4());
    assert_eq!(h.api("GET", &path, None).await.status, 404);
    let n = h
        .client
        .revoke_tokens(&RevokeRequest {
            client_id: Some("local-provider".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(n >= 1);
    assert_eq!(h.api("GET", &path, None).await.status, 401);
    let fresh = h.new_token().await;
    assert_eq!(
        h.api_with("GET", &path, None, Some(API_KEY), Some(&fresh))
            .await
            .status,
        404
    );
    h.client
        .revoke_tokens(&RevokeRequest {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        h.api_with("GET", &path, None, Some(API_KEY), Some(&fresh))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn key_rotation_keeps_the_previous_key() {
    let h = fast().await;
    let path = format!("/v1/statements/{}", Uuid::new_v4());
    let jwks = h.client.rotate_keys().await.unwrap();
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "current + previous"
    );
    let served: Value = h
        .http
        .get(h.sb.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, jwks);
    assert_eq!(
        h.api("GET", &path, None).await.status,
        404,
        "token of the previous key still valid"
    );
    h.client.rotate_keys().await.unwrap();
    assert_eq!(
        h.api("GET", &path, None).await.status,
        401,
        "key dropped after two rotations"
    );
}

#[tokio::test]
async fn token_bucket_429_with_retry_after_and_no_consumption() {
    let h = start(SandboxConfig {
        ratelimit_rate_per_s: 2.0,
        ratelimit_burst: 1,
        ..SandboxConfig::fast()
    })
    .await;
    let path = format!("/v1/statements/{}", Uuid::new_v4());
    assert_eq!(h.api("GET", &path, None).await.status, 404);
    for _ in 0..5 {
        let a = h.api("GET", &path, None).await;
        assert_eq!((a.status, a.code()), (429, "TooManyRequests"));
        let ra: u64 = a
            .headers
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ra >= 1);
    }
    // 429s took nothing: one token is back after 1/rate seconds.
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(h.api("GET", &path, None).await.status, 404);
    let m = h.client.metrics().await.unwrap();
    assert_eq!(m.rate_limited, 5);
}

#[tokio::test]
async fn forced_429_fault_uses_the_chosen_retry_after() {
    let h = fast().await;
    h.client
        .set_faults(&FaultSet {
            force_429: Some(Force429 {
                retry_after_s: 7,
                remaining: Some(1),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let path = format!("/v1/statements/{}", Uuid::new_v4());
    let a = h.api("GET", &path, None).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.headers.get("retry-after").unwrap(), "7");
    assert_eq!(h.api("GET", &path, None).await.status, 404);
}

// ------------------------------------------------------------------ statement validation

async fn setup() -> (Harness, Uuid, Uuid) {
    let h = fast().await;
    let (bank, acct) = h.bank_and_account(DEAD).await;
    (h, bank, acct)
}

#[tokio::test]
async fn validation_lists_missing_fields_with_exact_targets() {
    let (h, _, _) = setup().await;
    let a = h.post_statement(&json!({"data": {}})).await;
    assert_eq!((a.status, a.code()), (400, "ValidationError"));
    let t = a.targets();
    for want in [
        "StatementRequest.data.principalId",
        "StatementRequest.data.bankId",
        "StatementRequest.data.expected",
        "StatementRequest.data.accountDetails",
    ] {
        assert!(t.contains(&want.to_string()), "{want} in {t:?}");
    }
    assert!(
        a.body["error"]["detail"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["code"] == "MissingProperty")
    );
    let a = h.post_statement(&json!({})).await;
    assert_eq!(a.targets(), vec!["StatementRequest.data"]);
    let a = h.api("POST", "/v1/statements", Some("{not json")).await;
    assert_eq!(
        (a.status, a.targets()),
        (400, vec!["StatementRequest".to_string()])
    );
}

#[tokio::test]
async fn validation_of_transaction_fields() {
    let (h, bank, acct) = setup().await;
    let mut body = statement(acct, bank, &[("u1", "-1.00", "2025-03-03T09:12:44.000Z")]);
    let t = &mut body["data"]["transactionDetails"][0];
    t["transactionType"] = json!("NOPE");
    t["transactionAmount"] = json!("1.00");
    t["datePosted"] = json!("2025-03-03");
    t["description"] = json!("x".repeat(513));
    t["exchangeAmount"] = json!(1);
    t["payee"] = json!({"country": "GB"});
    t["bankAccountId"] = json!("not-a-uuid");
    t.as_object_mut().unwrap().remove("uniqueId");
    let a = h.post_statement(&body).await;
    assert_eq!(a.status, 400);
    let p = "StatementRequest.data.transactionDetails[0]";
    let t = a.targets();
    for f in [
        "transactionType",
        "transactionAmount",
        "datePosted",
        "description",
        "exchangeAmount",
        "payee.country",
        "bankAccountId",
        "uniqueId",
    ] {
        assert!(t.contains(&format!("{p}.{f}")), "{f} in {t:?}");
    }
    let missing = a.body["error"]["detail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == format!("{p}.uniqueId"))
        .unwrap()
        .clone();
    assert_eq!(missing["code"], "MissingProperty");
}

#[tokio::test]
async fn more_than_two_fraction_digits_is_rejected() {
    let (h, bank, acct) = setup().await;
    let text = format!(
        r#"{{"data":{{"principalId":"{acct}","bankId":"{bank}","expected":{{"transactionDetailsCount":1,"accountDetailsCount":1,"transactionCreditSum":1.001,"transactionDebitSum":0}},
        "accountDetails":[{{"bankAccountId":"{acct}","status":"active","ledgerBalance":1}}],"transactionDetails":[{}]}}}}"#,
        txn(acct, "u1", "1.001", "2025-03-03T09:12:44.000Z")
    );
    let a = h.api("POST", "/v1/statements", Some(&text)).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(
        a.targets()
            .contains(&"StatementRequest.data.transactionDetails[0].transactionAmount".to_string()),
        "{:?}",
        a.targets()
    );
}

#[tokio::test]
async fn a_third_fraction_digit_is_refused_even_when_it_is_zero() {
    // The rule is on the literal text (README, "Strict as Sage"): `10.100` has three
    // fraction digits although it equals `10.10`.
    let (h, bank, acct) = setup().await;
    let text = format!(
        r#"{{"data":{{"principalId":"{acct}","bankId":"{bank}","expected":{{"transactionDetailsCount":1,"accountDetailsCount":1,"transactionCreditSum":10.10,"transactionDebitSum":0.000}},
        "accountDetails":[{{"bankAccountId":"{acct}","status":"active","ledgerBalance":5.000}}],"transactionDetails":[{}]}}}}"#,
        txn(acct, "u1", "10.100", "2025-03-03T09:12:44.000Z")
    );
    let a = h.api("POST", "/v1/statements", Some(&text)).await;
    assert_eq!((a.status, a.code()), (400, "ValidationError"), "{}", a.text);
    let t = a.targets();
    for want in [
        "StatementRequest.data.transactionDetails[0].transactionAmount",
        "StatementRequest.data.expected.transactionDebitSum",
        "StatementRequest.data.accountDetails[0].ledgerBalance",
    ] {
        assert!(t.contains(&want.to_string()), "{want} in {t:?}");
    }
    assert!(
        h.client.statements(Some(acct)).await.unwrap().is_empty(),
        "nothing is stored for a 400"
    );
    // Two fraction digits (or fewer) of the same value are fine.
    let text = text
        .replace("10.100", "10.1")
        .replace("0.000", "0")
        .replace("5.000", "5.00");
    let a = h.api("POST", "/v1/statements", Some(&text)).await;
    assert_eq!(a.status, 201, "{}", a.text);
}

#[tokio::test]
async fn more_than_1000_transactions_is_rejected() {
    let (h, bank, acct) = setup().await;
    let ids: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let txns: Vec<(&str, &str, &str)> = ids
        .iter()
        .map(|i| (i.as_str(), "1.00", "2025-03-03T09:12:44.000Z"))
        .collect();
    let a = h.post_statement(&statement(acct, bank, &txns)).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.targets(),
        vec!["StatementRequest.data.transactionDetails".to_string()]
    );
}

#[tokio::test]
async fn expected_mismatch_on_each_field() {
    let (h, bank, acct) = setup().await;
    let good = statement(
        acct,
        bank,
        &[
            ("u1", "5.00", "2025-03-03T09:12:44.000Z"),
            ("u2", "-2.50", "2025-03-03T10:00:00.000Z"),
        ],
    );
    for (field, value) in [
        ("transactionDetailsCount", json!(3)),
        ("accountDetailsCount", json!(2)),
        ("transactionCreditSum", json!(5.01)),
        ("transactionDebitSum", json!(-2.49)),
    ] {
        let mut b = good.clone();
        b["data"]["expected"][field] = value;
        let a = h.post_statement(&b).await;
        assert_eq!(a.status, 400, "{field}");
        assert_eq!(
            a.targets(),
            vec![format!("StatementRequest.data.expected.{field}")],
            "{field}"
        );
    }
}

#[tokio::test]
async fn bank_account_id_must_equal_principal_id() {
    let (h, bank, acct) = setup().await;
    let mut b = statement(acct, bank, &[("u1", "5.00", "2025-03-03T09:12:44.000Z")]);
    b["data"]["accountDetails"][0]["bankAccountId"] = json!(Uuid::new_v4());
    b["data"]["transactionDetails"][0]["bankAccountId"] = json!(Uuid::new_v4());
    let a = h.post_statement(&b).await;
    assert_eq!(a.status, 400);
    let t = a.targets();
    assert!(t.contains(&"StatementRequest.data.accountDetails[0].bankAccountId".to_string()));
    assert!(t.contains(&"StatementRequest.data.transactionDetails[0].bankAccountId".to_string()));
}

#[tokio::test]
async fn exactly_one_account_detail_and_balance_shapes() {
    let (h, bank, acct) = setup().await;
    let mut b = statement(acct, bank, &[]);
    let d = b["data"]["accountDetails"][0].clone();
    b["data"]["accountDetails"] = json!([d.clone(), d.clone()]);
    b["data"]["expected"]["accountDetailsCount"] = json!(2);
    let a = h.post_statement(&b).await;
    assert!(
        a.targets()
            .contains(&"StatementRequest.data.accountDetails".to_string())
    );
    // Nested balances are accepted; flat and nested together are not.
    let mut b = statement(acct, bank, &[("u1", "1.00", "2025-03-03T09:12:44.000Z")]);
    let ad = b["data"]["accountDetails"][0].as_object_mut().unwrap();
    ad.remove("ledgerBalance");
    ad.remove("ledgerBalanceDate");
    ad.insert("balances".into(), json!({"ledgerBalance": 10.5, "ledgerBalanceDate": "2025-03-04T00:00:00.000Z", "availableBalance": 9}));
    let s = h.post_and_wait(&b).await;
    assert_eq!(s.status, StatementStatus::Succeeded);
    let acct_view = h.client.account(acct).await.unwrap();
    assert_eq!(
        acct_view.balances.ledger_balance.unwrap().0.to_string(),
        "10.5"
    );
    let mut b2 = statement(acct, bank, &[]);
    b2["data"]["accountDetails"][0]["balances"] = json!({"ledgerBalance": 1});
    let a = h.post_statement(&b2).await;
    assert_eq!(
        a.targets(),
        vec!["StatementRequest.data.accountDetails[0].balances".to_string()]
    );
    // ledgerBalance is required when transactions are present.
    let mut b3 = statement(acct, bank, &[("u2", "1.00", "2025-03-03T09:12:44.000Z")]);
    b3["data"]["accountDetails"][0]
        .as_object_mut()
        .unwrap()
        .remove("ledgerBalance");
    let a = h.post_statement(&b3).await;
    assert_eq!(
        a.targets(),
        vec!["StatementRequest.data.accountDetails[0].ledgerBalance".to_string()]
    );
}

#[tokio::test]
async fn decimals_are_exact() {
    let (h, bank, acct) = setup().await;
    let text = format!(
        r#"{{"data":{{"principalId":"{acct}","bankId":"{bank}","expected":{{"transactionDetailsCount":2,"accountDetailsCount":1,"transactionCreditSum":0.30,"transactionDebitSum":0}},
        "accountDetails":[{{"bankAccountId":"{acct}","status":"active","ledgerBalance":10.1}}],
        "transactionDetails":[{},{}]}}}}"#,
        txn(acct, "a", "0.10", "2025-03-03T09:12:44.000Z"),
        txn(acct, "b", "0.20", "2025-03-03T09:13:44.000Z")
    );
    let a = h.api("POST", "/v1/statements", Some(&text)).await;
    assert_eq!(a.status, 201, "0.10 + 0.20 == 0.30: {}", a.text);
    assert!(
        a.text.contains(r#""transactionCreditSum":0.30"#),
        "{}",
        a.text
    );
    let s = h
        .client
        .wait_statement_terminal(id_of(&a), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(s.status, StatementStatus::Succeeded);
    // 10.1 == 10.10
    let text = format!(
        r#"{{"data":{{"principalId":"{acct}","bankId":"{bank}","expected":{{"transactionDetailsCount":1,"accountDetailsCount":1,"transactionCreditSum":10.10,"transactionDebitSum":0}},
        "accountDetails":[{{"bankAccountId":"{acct}","status":"active","ledgerBalance":1}}],"transactionDetails":[{}]}}}}"#,
        txn(acct, "c", "10.1", "2025-03-03T09:14:44.000Z")
    );
    assert_eq!(
        h.api("POST", "/v1/statements", Some(&text)).await.status,
        201
    );
}

#[tokio::test]
async fn unknown_or_foreign_principal_is_404() {
    let (h, bank, _) = setup().await;
    let a = h
        .post_statement(&statement(Uuid::new_v4(), bank, &[]))
        .await;
    assert_eq!((a.status, a.code()), (404, "NotFoundError"));
    // An account of another provider is invisible.
    let p2 = ProviderClient {
        client_id: "p2".into(),
        client_secret: "s2".into(),
        allowed_audiences: vec![AUD.into()],
        provider_id: Uuid::new_v4(),
        api_key: "key2".into(),
        notification_audience: None,
        custom_header: None,
    };
    h.client
        .load_fixtures(&Fixtures {
            clients: vec![p2],
            replace_clients: false,
        })
        .await
        .unwrap();
    let t2 = h
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", "p2"),
            ("client_secret", "s2"),
            ("audience", AUD),
        ])
        .await;
    let t2 = t2.body["access_token"].as_str().unwrap().to_string();
    let body = json!({"data": {"toCreate": [{"name": "B2", "countryCode": "GBR", "externalRef": "r", "callbackURLs": {
        "auth": DEAD, "reAuth": DEAD, "notification": DEAD, "availableAccounts": DEAD}}]}});
    let a = h
        .api_with(
            "POST",
            "/v1/banks",
            Some(&body.to_string()),
            Some("key2"),
            Some(&t2),
        )
        .await;
    let bank2 = Uuid::parse_str(
        a.body["data"]["created"][0]["principalId"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let acct2 = h.account_on(bank2, "x", "2025-01-01").await;
    let a = h.post_statement(&statement(acct2, bank2, &[])).await;
    assert_eq!(a.status, 404, "foreign account");
    let a = h
        .api_with(
            "POST",
            "/v1/statements",
            Some(&statement(acct2, bank2, &[]).to_string()),
            Some("key2"),
            Some(&t2),
        )
        .await;
    assert_eq!(a.status, 201);
    let a = h
        .api("GET", &format!("/v1/statements/{}", id_of(&a)), None)
        .await;
    assert_eq!(a.status, 404, "foreign statement");
}

#[tokio::test]
async fn in_flight_statement_gives_409() {
    let (h, bank, acct) = setup().await;
    h.client
        .set_faults(&FaultSet {
            statement_hold: Some(StatementHold {
                stage: StatementStatus::Queued,
                principal_id: None,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let a = h
        .post_statement(&statement(
            acct,
            bank,
            &[("u1", "1.00", "2025-03-03T09:12:44.000Z")],
        ))
        .await;
    assert_eq!(a.status, 201);
    assert_eq!(a.body["data"]["status"], "queued");
    let b = h
        .post_statement(&statement(
            acct,
            bank,
            &[("u2", "1.00", "2025-03-03T09:12:45.000Z")],
        ))
        .await;
    assert_eq!((b.status, b.code()), (409, "UnsupportedOperationError"));
    h.client.clear_faults().await.unwrap();
    let s = h
        .client
        .wait_statement_terminal(id_of(&a), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(s.status, StatementStatus::Succeeded);
    assert_eq!(
        h.post_statement(&statement(
            acct,
            bank,
            &[("u2", "1.00", "2025-03-03T09:12:45.000Z")]
        ))
        .await
        .status,
        201
    );
    let m = h.client.metrics().await.unwrap();
    assert_eq!(m.in_flight_rejections, 1);
    assert_eq!(m.max_in_flight, 1);
}

#[tokio::test]
async fn cancelled_account_gives_409() {
    let (h, bank, acct) = setup().await;
    let _ = h.client.delete_account(acct).await; // notification fails (dead URL): the account is cancelled anyway
    let a = h.post_statement(&statement(acct, bank, &[])).await;
    assert_eq!((a.status, a.code()), (409, "UnsupportedOperationError"));
}

// ------------------------------------------------------------------ async rules

#[tokio::test]
async fn duplicates_within_statement_and_against_store_list_every_id() {
    let (h, bank, acct) = setup().await;
    let s = h
        .post_and_wait(&statement(
            acct,
            bank,
            &[
                ("a", "1.00", "2025-03-03T09:00:00.000Z"),
                ("b", "1.00", "2025-03-03T09:01:00.000Z"),
            ],
        ))
        .await;
    assert_eq!(s.status, StatementStatus::Succeeded);
    let s = h
        .post_and_wait(&statement(
            acct,
            bank,
            &[
                ("a", "1.00", "2025-03-03T09:00:00.000Z"),
                ("c", "1.00", "2025-03-03T09:02:00.000Z"),
                ("c", "1.00", "2025-03-03T09:02:00.000Z"),
                ("b", "1.00", "2025-03-03T09:01:00.000Z"),
            ],
        ))
        .await;
    assert_eq!(s.status, StatementStatus::Failed);
    let details = s.details.unwrap();
    let mut ids: Vec<&str> = details
        .iter()
        .filter(|d| d.code == "DuplicateTransaction")
        .map(|d| d.target.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["a", "b", "c"]);
    let stored = h.client.stored_transactions(acct).await.unwrap();
    assert_eq!(stored.len(), 2, "nothing stored from the failed statement");
    assert_eq!(h.client.metrics().await.unwrap().duplicates_rejected, 3);
    // The failed statement is visible over the Provider API with its details.
    let st = h.client.statements(Some(acct)).await.unwrap();
    let failed = st
        .iter()
        .find(|s| s.status == StatementStatus::Failed)
        .unwrap();
    let a = h
        .api("GET", &format!("/v1/statements/{}", failed.id), None)
        .await;
    assert_eq!(a.body["data"]["details"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn transactions_too_old_are_all_listed() {
    let (h, bank, acct) = setup().await;
    assert_eq!(
        h.post_and_wait(&statement(
            acct,
            bank,
            &[("n", "1.00", "2025-03-20T00:00:00.000Z")]
        ))
        .await
        .status,
        StatementStatus::Succeeded
    );
    let s = h
        .post_and_wait(&statement(
            acct,
            bank,
            &[
                ("o1", "1.00", "2025-03-01T00:00:00.000Z"),
                ("o2", "1.00", "2025-03-05T23:59:59.000Z"),
                ("ok", "1.00", "2025-03-06T00:00:00.000Z"),
            ],
        ))
        .await;
    assert_eq!(s.status, StatementStatus::Failed);
    let d = s.details.unwrap();
    let ids: Vec<&str> = d.iter().map(|d| d.target.as_str()).collect();
    assert_eq!(ids, vec!["o1", "o2"]);
    assert!(d.iter().all(|d| d.code == "TransactionTooOld"));
}

#[tokio::test]
async fn account_cancelled_while_waiting_fails_the_statement() {
    let (h, bank, acct) = setup().await;
    h.client
        .set_faults(&FaultSet {
            statement_hold: Some(StatementHold {
                stage: StatementStatus::Processing,
                principal_id: Some(acct),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let a = h
        .post_statement(&statement(
            acct,
            bank,
            &[("x", "1.00", "2025-03-03T09:00:00.000Z")],
        ))
        .await;
    assert_eq!(a.status, 201);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        h.client.statement(id_of(&a)).await.unwrap().status,
        StatementStatus::Processing
    );
    let _ = h.client.delete_account(acct).await;
    h.client.clear_faults().await.unwrap();
    let s = h
        .client
        .wait_statement_terminal(id_of(&a), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(s.status, StatementStatus::Failed);
    let d = s.details.unwrap();
    assert_eq!(
        (d[0].code.as_str(), d[0].target.clone()),
        ("BankAccountCancelled", acct.to_string())
    );
}

#[tokio::test]
async fn forced_failure_fault() {
    let (h, bank, acct) = setup().await;
    let f = StatementFail {
        code: "InternalError".into(),
        target: None,
        message: None,
        principal_id: None,
        remaining: Some(1),
    };
    h.client
        .set_faults(&FaultSet {
            statement_fail: Some(f),
            ..Default::default()
        })
        .await
        .unwrap();
    let s = h
        .post_and_wait(&statement(
            acct,
            bank,
            &[("x", "1.00", "2025-03-03T09:00:00.000Z")],
        ))
        .await;
    assert_eq!(s.status, StatementStatus::Failed);
    assert_eq!(s.details.unwrap()[0].code, "InternalError");
    let s = h
        .post_and_wait(&statement(
            acct,
            bank,
            &[("x", "1.00", "2025-03-03T09:00:00.000Z")],
        ))
        .await;
    assert_eq!(s.status, StatementStatus::Succeeded);
}

// ------------------------------------------------------------------ DELETE

#[tokio::test]
async fn delete_rules() {
    let (h, bank, acct) = setup().await;
    // succeeded → 409
    let s = h
        .post_and_wait(&statement(
            acct,
            bank,
            &[("a", "1.00", "2025-03-03T09:00:00.000Z")],
        ))
        .await;
    let a = h
        .api("DELETE", &format!("/v1/statements/{}", s.id), None)
        .await;
    assert_eq!((a.status, a.code()), (409, "UnsupportedOperationError"));
    // failed → 200 deleted
    let s = h
        .post_and_wait(&statement(
            acct,
            bank,
            &[("a", "1.00", "2025-03-03T09:00:00.000Z")],
        ))
        .await;
    assert_eq!(s.status, StatementStatus::Failed);
    let a = h
        .api("DELETE", &format!("/v1/statements/{}", s.id), None)
        .await;
    assert_eq!(
        (a.status, a.body["data"]["status"].as_str()),
        (200, Some("deleted"))
    );
    assert_eq!(
        h.api("DELETE", &format!("/v1/statements/{}", s.id), None)
            .await
            .status,
        409,
        "deleted is terminal"
    );
    // accepting → 200, releases the lock
    let acc = h.client.create_accepting_statement(acct).await.unwrap();
    assert_eq!(
        h.post_statement(&statement(acct, bank, &[])).await.status,
        409,
        "accepting holds the lock"
    );
    assert_eq!(
        h.api("DELETE", &format!("/v1/statements/{}", acc.id), None)
            .await
            .status,
        200
    );
    assert_eq!(
        h.post_statement(&statement(acct, bank, &[])).await.status,
        201
    );
    // queued → 409; unknown → 404
    h.client
        .set_faults(&FaultSet {
            statement_hold: Some(StatementHold {
                stage: StatementStatus::Queued,
                principal_id: None,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, acct2) = h.bank_and_account(DEAD).await;
    let b2 = h.client.account(acct2).await.unwrap().bank_id;
    let q = h.post_statement(&statement(acct2, b2, &[])).await;
    assert_eq!(
        h.api("DELETE", &format!("/v1/statements/{}", id_of(&q)), None)
            .await
            .status,
        409
    );
    assert_eq!(
        h.api(
            "DELETE",
            &format!("/v1/statements/{}", Uuid::new_v4()),
            None
        )
        .await
        .status,
        404
    );
}

// ------------------------------------------------------------------ PATCH authorisations

#[tokio::test]
async fn patch_authorisation_rules() {
    let (h, bank, _) = setup().await;
    let auth = h
        .client
        .create_authorisation(bank, None, false)
        .await
        .unwrap();
    let path = format!("/v1/authorisations/{}", auth.id);
    let ok = json!({"data": {"status": "success", "bankAccounts": [{"bankAccountExternalId": "e1", "accountName": "A", "bankIdentifier": "b", "accountIdentifier": "1"}]}});
    // bad body
    let a = h
        .api("PATCH", &path, Some(r#"{"data":{"status":"maybe"}}"#))
        .await;
    assert_eq!(
        (a.status, a.targets()),
        (400, vec!["AuthorisationRequest.data.status".to_string()])
    );
    let a = h
        .api("PATCH", &path, Some(r#"{"data":{"status":"success"}}"#))
        .await;
    assert_eq!(
        (a.status, a.targets()),
        (
            400,
            vec!["AuthorisationRequest.data.bankAccounts".to_string()]
        ),
        "onboarding success needs accounts"
    );
    let bad_len = json!({"data": {"status": "success", "bankAccounts": [{"bankAccountExternalId": "e1", "accountName": "A", "bankIdentifier": "b".repeat(65), "accountIdentifier": "1"}]}});
    let a = h.api("PATCH", &path, Some(&bad_len.to_string())).await;
    assert_eq!(
        a.targets(),
        vec!["AuthorisationRequest.data.bankAccounts[0].bankIdentifier".to_string()]
    );
    let a = h.api("PATCH", &path, Some(r#"{"data":{"status":"error","bankAccounts":[{"bankAccountExternalId":"e","accountName":"A","bankIdentifier":"b","accountIdentifier":"1"}]}}"#)).await;
    assert_eq!(a.status, 400, "error carries no accounts");
    // unknown
    let a = h
        .api(
            "PATCH",
            &format!("/v1/authorisations/{}", Uuid::new_v4()),
            Some(&ok.to_string()),
        )
        .await;
    assert_eq!((a.status, a.code()), (404, "NotFoundError"));
    // success, then completed → 409
    let a = h.api("PATCH", &path, Some(&ok.to_string())).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["data"], json!({"_id": auth.id, "status": "success"}));
    let a = h.api("PATCH", &path, Some(&ok.to_string())).await;
    assert_eq!((a.status, a.code()), (409, "UnsupportedOperationError"));
    let v = h.client.authorisation(auth.id).await.unwrap();
    assert_eq!(v.status, AuthorisationStatus::Completed);
    assert_eq!(v.patch.unwrap().bank_accounts.len(), 1);
    // expired → 409
    let auth2 = h
        .client
        .create_authorisation(bank, None, false)
        .await
        .unwrap();
    h.client
        .set_clock(&ClockRequest {
            advance_s: Some(1201),
            ..Default::default()
        })
        .await
        .unwrap();
    let token = h.new_token().await;
    let a = h
        .api_with(
            "PATCH",
            &format!("/v1/authorisations/{}", auth2.id),
            Some(&ok.to_string()),
            Some(API_KEY),
            Some(&token),
        )
        .await;
    assert_eq!(a.status, 409);
    // cancelled completes without accounts
    let auth3 = h
        .client
        .create_authorisation(bank, None, false)
        .await
        .unwrap();
    let a = h
        .api_with(
            "PATCH",
            &format!("/v1/authorisations/{}", auth3.id),
            Some(r#"{"data":{"status":"cancelled"}}"#),
            Some(API_KEY),
            Some(&token),
        )
        .await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn patch_flags_already_connected_accounts() {
    let (h, bank, _acct) = setup().await; // acct_1 with accountIdentifier acc_1, bankIdentifier sandbox:bank
    let auth = h
        .client
        .create_authorisation(bank, None, false)
        .await
        .unwrap();
    let body = json!({"data": {"status": "success", "bankAccounts": [
        {"bankAccountExternalId": "other", "accountName": "A", "bankIdentifier": "sandbox:bank", "accountIdentifier": "acc_1"},
        {"bankAccountExternalId": "new", "accountName": "B", "bankIdentifier": "sandbox:bank", "accountIdentifier": "2"}]}});
    assert_eq!(
        h.api(
            "PATCH",
            &format!("/v1/authorisations/{}", auth.id),
            Some(&body.to_string())
        )
        .await
        .status,
        200
    );
    let p = h
        .client
        .authorisation(auth.id)
        .await
        .unwrap()
        .patch
        .unwrap();
    assert_eq!(
        p.bank_accounts
            .iter()
            .map(|a| a.connected)
            .collect::<Vec<_>>(),
        vec![true, false]
    );
}

// ------------------------------------------------------------------ account queries

#[tokio::test]
async fn account_queries() {
    let (h, bank, first) = setup().await;
    let q = |ext: &str| json!({"data": {"bankId": bank, "externalId": ext}}).to_string();
    let a = h.api("POST", "/v1/accountqueries", Some(&q("none"))).await;
    assert_eq!((a.status, a.code()), (404, "NotFoundError"));
    let a = h.api("POST", "/v1/accountqueries", Some(&q("acc_1"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["data"]["bankAccountId"], json!(first));
    assert_eq!(a.body["data"]["status"], "pending");
    assert_eq!(
        a.body["data"]["requestedStartDate"],
        "2025-01-01T00:00:00.000Z"
    );
    // Reconnection: a newer account with the same externalId, then cancel it.
    let second = h.account_on(bank, "acc_1", "2025-02-01").await;
    let a = h.api("POST", "/v1/accountqueries", Some(&q("acc_1"))).await;
    assert_eq!(
        a.body["data"]["bankAccountId"],
        json!(second),
        "newest non-cancelled"
    );
    let _ = h.client.delete_account(second).await;
    let a = h.api("POST", "/v1/accountqueries", Some(&q("acc_1"))).await;
    assert_eq!(
        a.body["data"]["bankAccountId"],
        json!(first),
        "the live one beats a newer cancelled one"
    );
    let _ = h.client.delete_account(first).await;
    let a = h.api("POST", "/v1/accountqueries", Some(&q("acc_1"))).await;
    assert_eq!(
        (
            a.body["data"]["bankAccountId"].clone(),
            a.body["data"]["status"].as_str()
        ),
        (json!(second), Some("cancelled"))
    );
    let a = h
        .api(
            "POST",
            "/v1/accountqueries",
            Some(r#"{"data":{"bankId":"x"}}"#),
        )
        .await;
    let mut t = a.targets();
    t.sort();
    assert_eq!(
        t,
        vec![
            "AccountQueryRequest.data.bankId",
            "AccountQueryRequest.data.externalId"
        ]
    );
}

// ------------------------------------------------------------------ Bank Sync

#[tokio::test]
async fn bank_sync_object_array_update_remove() {
    let h = fast().await;
    let cb = json!({"auth": DEAD, "reAuth": DEAD, "notification": DEAD, "availableAccounts": DEAD});
    let item = json!({"name": "A", "countryCode": "GB", "externalRef": "r1", "callbackURLs": cb});
    let a = h
        .api(
            "POST",
            "/v1/banks",
            Some(&json!({"data": [{"toCreate": [item]}]}).to_string()),
        )
        .await;
    assert_eq!(a.status, 200, "one-element array: {}", a.text);
    let id = a.body["data"]["created"][0]["principalId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(a.body["data"]["created"][0]["externalRef"], "r1");
    let upd = json!({"data": {"toUpdate": [{"principalId": id, "externalRef": "r1", "name": "A2", "callbackURLs": cb}]}});
    let a = h.api("POST", "/v1/banks", Some(&upd.to_string())).await;
    assert_eq!(a.body["data"]["updated"], json!([{"principalId": id}]));
    assert_eq!(h.client.banks().await.unwrap()[0].name, "A2");
    let a = h.api("POST", "/v1/banks", Some(&json!({"data": {"toRemove": [{"principalId": Uuid::new_v4(), "externalRef": "r"}]}}).to_string())).await;
    assert_eq!(a.status, 404);
    let a = h
        .api(
            "POST",
            "/v1/banks",
            Some(
                &json!({"data": {"toRemove": [{"principalId": id, "externalRef": "r1"}]}})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(a.body["data"]["removed"], json!([{"principalId": id}]));
    assert!(h.client.banks().await.unwrap()[0].removed);
    let a = h
        .api(
            "POST",
            "/v1/banks",
            Some(&json!({"data": [{}, {}]}).to_string()),
        )
        .await;
    assert_eq!(a.status, 400);
    let bad = json!({"data": {"toCreate": [{"name": "A", "countryCode": "G1", "externalRef": "r", "callbackURLs": {"auth": "nope"}}]}});
    let a = h.api("POST", "/v1/banks", Some(&bad.to_string())).await;
    let t = a.targets();
    assert!(t.contains(&"BankRequest.data.toCreate[0].countryCode".to_string()));
    assert!(t.contains(&"BankRequest.data.toCreate[0].callbackURLs.auth".to_string()));
    assert!(t.contains(&"BankRequest.data.toCreate[0].callbackURLs.reAuth".to_string()));
}

// ------------------------------------------------------------------ account status transitions

#[tokio::test]
async fn account_status_transitions() {
    let (h, bank, acct) = setup().await;
    let status = |v: AccountView| v.status;
    let s = h.post_and_wait(&statement(acct, bank, &[])).await;
    assert_eq!(s.status, StatementStatus::Succeeded);
    assert_eq!(
        status(h.client.account(acct).await.unwrap()),
        AccountStatus::Pending,
        "0-transaction statement keeps pending"
    );
    h.post_and_wait(&statement(
        acct,
        bank,
        &[("a", "1.00", "2025-03-03T09:00:00.000Z")],
    ))
    .await;
    let v = h.client.account(acct).await.unwrap();
    assert_eq!(
        (v.status, v.last_transaction_id),
        (AccountStatus::Active, 1)
    );
    h.post_and_wait(&statement_with_status(acct, bank, &[], "authRequired"))
        .await;
    assert_eq!(
        status(h.client.account(acct).await.unwrap()),
        AccountStatus::AuthRequired
    );
    h.post_and_wait(&statement(
        acct,
        bank,
        &[("b", "1.00", "2025-03-03T10:00:00.000Z")],
    ))
    .await;
    let v = h.client.account(acct).await.unwrap();
    assert_eq!(
        (v.status, v.last_transaction_id),
        (AccountStatus::AuthRequired, 2),
        "stays authRequired; stored"
    );
    // A second account of the same consent group without transactions.
    let auth = h
        .client
        .create_authorisation(bank, Some(acct), false)
        .await
        .unwrap();
    let a = h
        .api(
            "PATCH",
            &format!("/v1/authorisations/{}", auth.id),
            Some(r#"{"data":{"status":"success"}}"#),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        status(h.client.account(acct).await.unwrap()),
        AccountStatus::Active
    );
    let _ = h.client.delete_account(acct).await;
    let v = h.client.account(acct).await.unwrap();
    assert_eq!(
        (v.status, v.transaction_count),
        (AccountStatus::Cancelled, 0),
        "cancelled; store hard-deleted"
    );
}

#[tokio::test]
async fn pending_account_can_go_auth_required_and_back_to_pending() {
    let (h, bank, acct) = setup().await;
    h.post_and_wait(&statement_with_status(acct, bank, &[], "authRequired"))
        .await;
    assert_eq!(
        h.client.account(acct).await.unwrap().status,
        AccountStatus::AuthRequired
    );
    let auth = h
        .client
        .create_authorisation(bank, Some(acct), false)
        .await
        .unwrap();
    h.api(
        "PATCH",
        &format!("/v1/authorisations/{}", auth.id),
        Some(r#"{"data":{"status":"success","bankAccounts":[]}}"#),
    )
    .await;
    assert_eq!(
        h.client.account(acct).await.unwrap().status,
        AccountStatus::Pending
    );
}

// ------------------------------------------------------------------ statement resource

#[tokio::test]
async fn statement_resource_fields() {
    let (h, bank, acct) = setup().await;
    let a = h
        .post_statement(&statement(
            acct,
            bank,
            &[
                ("a", "250.00", "2025-03-03T09:00:00.000Z"),
                ("b", "-42.15", "2025-03-03T09:01:00.000Z"),
            ],
        ))
        .await;
    assert_eq!(a.status, 201);
    let d = &a.body["data"];
    assert_eq!(d["status"], "queued");
    assert_eq!(d["principalId"], json!(acct));
    assert_eq!(d["providerId"], "7baf4c0d-ce95-4823-bde2-695a7c528ce9");
    assert!(
        d["statusReason"].is_string() && d["statusModifiedDate"].as_str().unwrap().ends_with('Z')
    );
    assert_eq!(
        d["actual"],
        json!({"transactionDetailsCount": 2, "accountDetailsCount": 1, "transactionCreditSum": 250.00, "transactionDebitSum": -42.15})
    );
    assert!(
        a.text.contains("\"transactionDebitSum\":-42.15"),
        "exact number text"
    );
    assert_eq!(
        a.body["links"]["self"],
        format!("/v1/statements/{}", id_of(&a))
    );
    let s = h
        .client
        .wait_statement_terminal(id_of(&a), Duration::from_secs(5))
        .await
        .unwrap();
    let g = h
        .api("GET", &format!("/v1/statements/{}", s.id), None)
        .await;
    assert_eq!(g.body["data"]["status"], "succeeded");
    assert!(g.body["data"].get("details").is_none());
    let stored = h.client.stored_transactions(acct).await.unwrap();
    assert_eq!(
        stored.iter().map(|t| t.transaction_id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(stored[1].transaction_amount.0.to_string(), "-42.15");
}

#[tokio::test]
async fn statement_latency_grows_with_size() {
    let h = start(SandboxConfig {
        statement_queue_delay_ms: 0,
        statement_processing_delay_ms: 0,
        statement_per_txn_us: 200,
        statement_jitter_pct: 0,
        ratelimit_rate_per_s: 0.0,
        ..SandboxConfig::default()
    })
    .await;
    let (bank, acct) = h.bank_and_account(DEAD).await;
    let ids: Vec<String> = (0..500).map(|i| format!("u{i}")).collect();
    let txns: Vec<(&str, &str, &str)> = ids
        .iter()
        .map(|i| (i.as_str(), "1.00", "2025-03-03T09:12:44.000Z"))
        .collect();
    let started = std::time::Instant::now();
    let s = h.post_and_wait(&statement(acct, bank, &txns)).await;
    assert_eq!(s.status, StatementStatus::Succeeded);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "500 × 200 µs"
    );
}

// ------------------------------------------------------------------ strict as Sage, and no stricter

/// The statement of Sage's own published collection ("Posting Statements" → `POST /statements`),
/// key for key: nested balances, coordinates, category, a 12-character `postalCode` and narratives
/// longer than 32 characters.
fn sage_example_statement(acct: Uuid, bank: Uuid, u1: &str, u2: &str) -> String {
    let txn = |id: &str, amount: i32, kind: &str, exchange: i32, reference: &str| {
        format!(
            r#"{{
                "uniqueId": "{id}", "bankAccountId": "{acct}", "transactionAmount": {amount},
                "transactionType": "{kind}", "transactionStatus": "posted",
                "datePosted": "2019-11-02T23:00:12.000Z", "dateUserInitiated": "2019-11-04T22:54:00.000Z",
                "exchangeCurrency": "EUR", "exchangeAmount": {exchange}, "checkNumber": "123456",
                "referenceNumber": "{reference}", "description": "DEBIT DESCRIPTION {id}",
                "payee": {{
                    "payeeDescription": "100001", "address1": "1 the something", "address2": "on some street",
                    "address3": "on some estate", "city": "in a city", "state": "in a state",
                    "postalCode": "MY POST CODE", "country": "GBR", "phoneNumber": "0091299291212",
                    "payeeBankId": "123456", "payeeAccountId": "654321"
                }},
                "coordinates": {{ "lat": 0.9812, "long": 1.0238 }},
                "narrative1": "DEBIT NARRATIVE {id}", "narrative2": "DEBIT EXTENDED NARRATIVE {id}",
                "category": {{
                    "topLevelCategory": "TopCategory", "subCategory": "SubCategory", "categoryId": 12,
                    "standardIndustrialCode": "9089"
                }}
            }}"#
        )
    };
    format!(
        r#"{{ "data": {{
            "principalId": "{acct}", "bankId": "{bank}",
            "expected": {{ "transactionDetailsCount": 2, "accountDetailsCount": 1,
                           "transactionCreditSum": 100, "transactionDebitSum": -100 }},
            "accountDetails": [ {{ "bankAccountId": "{acct}", "status": "active",
                "balances": {{ "ledgerBalance": 0, "ledgerBalanceDate": "2019-11-24T12:00:00.000Z",
                               "availableBalance": 0, "availableBalanceDate": "2019-11-24T12:00:00.000Z" }} }} ],
            "transactionDetails": [ {}, {} ] }} }}"#,
        txn(u1, 100, "CREDIT", 120, "00000001"),
        txn(u2, -100, "DEBIT", -120, "00000002")
    )
}

#[tokio::test]
async fn sages_own_example_statement_is_accepted_and_its_overlong_text_stored_truncated() {
    let h = fast().await;
    let bank = h.register_bank(DEAD).await;
    let acct = h
        .account_on(bank, "acc_sage", "2019-11-01T00:00:00.000Z")
        .await;
    let (u1, u2) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let body = sage_example_statement(acct, bank, &u1, &u2);
    let a = h.api("POST", "/v1/statements", Some(&body)).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let s = h
        .client
        .wait_statement_terminal(id_of(&a), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(s.status, StatementStatus::Succeeded);

    // Every overlong field is recorded with its path, length and limit.
    let overlong = h.client.overlong_fields().await.unwrap();
    let mut got: Vec<(String, usize, usize)> = overlong
        .iter()
        .map(|o| (o.path.clone(), o.length, o.limit))
        .collect();
    got.sort();
    let p = "StatementRequest.data.transactionDetails";
    let mut want = Vec::new();
    for i in 0..2 {
        want.push((format!("{p}[{i}].narrative1"), 16 + 36, 32));
        want.push((format!("{p}[{i}].narrative2"), 25 + 36, 32));
        want.push((format!("{p}[{i}].payee.postalCode"), 12, 11));
    }
    want.sort();
    assert_eq!(got, want);
    assert!(overlong.iter().all(|o| o.statement_id == s.id
        && o.bank_account_id == acct
        && o.client_id.as_deref() == Some("local-provider")));
    assert_eq!(overlong[0].unique_id.as_deref(), Some(u1.as_str()));

    // Stored (and shown to the product) cut to the limits, on character boundaries.
    let stored = h.client.stored_transactions(acct).await.unwrap();
    assert_eq!(stored.len(), 2);
    let t = &stored[0];
    assert_eq!(
        t.narrative1.as_deref(),
        Some(
            format!("DEBIT NARRATIVE {u1}")
                .chars()
                .take(32)
                .collect::<String>()
                .as_str()
        )
    );
    assert_eq!(t.narrative2.as_ref().map(|n| n.chars().count()), Some(32));
    assert_eq!(t.payee.as_ref().unwrap()["postalCode"], "MY POST COD");
    assert_eq!(t.payee.as_ref().unwrap()["city"], "in a city");
    assert_eq!(t.coordinates.as_ref().unwrap()["lat"], json!(0.9812));
    let product = h.client.product_transactions(acct, 1).await.unwrap();
    assert!(
        product[0]
            .transaction_narrative
            .as_deref()
            .unwrap()
            .starts_with(&format!("{} ", t.narrative1.as_deref().unwrap()))
    );
    assert!(h.client.violations().await.unwrap().is_empty());
}

#[tokio::test]
async fn overlong_free_text_is_never_a_400_but_other_rules_still_are() {
    let (h, bank, acct) = setup().await;
    let mut b = statement(acct, bank, &[("u1", "-1.00", "2025-03-03T09:12:44.000Z")]);
    let t = &mut b["data"]["transactionDetails"][0];
    // Multi-byte characters: limits count characters, not bytes.
    t["checkNumber"] = json!("é".repeat(13));
    t["referenceNumber"] = json!("r".repeat(33));
    t["payee"] = json!({
        "payeeDescription": "p".repeat(13), "address1": "a".repeat(33), "address2": "a".repeat(33),
        "address3": "a".repeat(33), "city": "c".repeat(33), "state": "s".repeat(33),
        "postalCode": "z".repeat(12), "phoneNumber": "9".repeat(33), "payeeBankId": "b".repeat(10),
        "payeeAccountId": "n".repeat(23), "country": "GBR",
    });
    let s = h.post_and_wait(&b).await;
    assert_eq!(s.status, StatementStatus::Succeeded);
    let mut fields: Vec<String> = h
        .client
        .overlong_fields()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.field)
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "checkNumber",
            "payee.address1",
            "payee.address2",
            "payee.address3",
            "payee.city",
            "payee.payeeAccountId",
            "payee.payeeBankId",
            "payee.payeeDescription",
            "payee.phoneNumber",
            "payee.postalCode",
            "payee.state",
            "referenceNumber",
        ]
    );
    let stored = &h.client.stored_transactions(acct).await.unwrap()[0];
    assert_eq!(
        stored.check_number.as_deref(),
        Some("é".repeat(12).as_str())
    );
    assert_eq!(stored.payee.as_ref().unwrap()["payeeBankId"], "b".repeat(9));
    // A wrong type, and a description over its limit, remain 400s; nothing is recorded for them.
    let mut b = statement(acct, bank, &[("u2", "-1.00", "2025-03-03T09:12:44.000Z")]);
    b["data"]["transactionDetails"][0]["narrative1"] = json!(12);
    b["data"]["transactionDetails"][0]["description"] = json!("d".repeat(513));
    b["data"]["transactionDetails"][0]["narrative2"] = json!("n".repeat(40));
    let a = h.post_statement(&b).await;
    assert_eq!(a.status, 400);
    let p = "StatementRequest.data.transactionDetails[0]";
    assert_eq!(
        a.targets(),
        vec![format!("{p}.description"), format!("{p}.narrative1")]
    );
    assert_eq!(h.client.overlong_fields().await.unwrap().len(), 12);
}

#[tokio::test]
async fn unknown_or_misspelled_keys_are_violations_and_are_not_stored() {
    let (h, bank, acct) = setup().await;
    let mut b = statement(
        acct,
        bank,
        &[
            ("u1", "1.00", "2025-03-03T09:00:00.000Z"),
            ("u2", "2.00", "2025-03-03T10:00:00.000Z"),
        ],
    );
    b["meta"] = json!({});
    b["data"]["statementDate"] = json!("2025-03-04");
    b["data"]["expected"]["transactionCount"] = json!(2);
    b["data"]["accountDetails"][0]["availabeBalance"] = json!(5);
    for i in 0..2 {
        let t = &mut b["data"]["transactionDetails"][i];
        t["narative1"] = json!("misspelt");
        t["narrative1"] = json!("spelt right");
    }
    let t = &mut b["data"]["transactionDetails"][0];
    t["payee"] = json!({"payeeDescription": "SHOP", "postcode": "LS1 1AA"});
    t["coordinates"] = json!({"lat": 1.5, "long": 2.5, "alt": 3});
    t["category"] = json!({"categoryId": 7, "categoryName": "Food"});
    t["providerAdditionalFields"] = json!([{"name": "mcc", "value": "5812", "label": "x"}]);
    let s = h.post_and_wait(&b).await;
    assert_eq!(
        s.status,
        StatementStatus::Succeeded,
        "answered as if absent"
    );

    let violations = h.client.violations().await.unwrap();
    assert!(
        violations
            .iter()
            .all(|v| v.kind == ViolationKind::UnknownField
                && v.statement_id == Some(s.id)
                && v.bank_account_id == Some(acct)),
        "{violations:?}"
    );
    let mut paths: Vec<&str> = violations
        .iter()
        .filter_map(|v| v.path.as_deref())
        .collect();
    paths.sort_unstable();
    let t0 = "StatementRequest.data.transactionDetails[0]";
    assert_eq!(
        paths,
        [
            "StatementRequest.data.accountDetails[0].availabeBalance",
            "StatementRequest.data.expected.transactionCount",
            "StatementRequest.data.statementDate",
            &format!("{t0}.category.categoryName"),
            &format!("{t0}.coordinates.alt"),
            &format!("{t0}.narative1"),
            &format!("{t0}.payee.postcode"),
            &format!("{t0}.providerAdditionalFields[0].label"),
            "StatementRequest.meta",
        ]
    );
    // The misspelling in both transactions is one violation that counts the other.
    let narative = violations
        .iter()
        .find(|v| v.path.as_deref() == Some(&format!("{t0}.narative1")))
        .unwrap();
    assert!(
        narative.message.contains("1 more") && narative.message.contains("narative1"),
        "{}",
        narative.message
    );
    // Nothing the contract does not name is stored or shown to the product.
    let raw = to_answer(
        h.http
            .get(h.url(&format!("/_sandbox/bankaccounts/{acct}/transactions")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let t = &raw.body[0];
    assert!(t.get("narative1").is_none(), "{t}");
    assert_eq!(t["narrative1"], "spelt right");
    assert_eq!(t["payee"], json!({"payeeDescription": "SHOP"}));
    assert_eq!(t["coordinates"], json!({"lat": 1.5, "long": 2.5}));
    assert_eq!(t["category"], json!({"categoryId": 7}));
    assert_eq!(
        t["providerAdditionalFields"],
        json!([{"name": "mcc", "value": "5812"}])
    );
}

#[tokio::test]
async fn every_key_the_contract_names_is_no_violation() {
    // Flat balances (older material), every optional transaction field of the contract, including the
    // ones the connector does not send yet (coordinates, category, providerAdditionalFields).
    let (h, bank, acct) = setup().await;
    let mut b = statement(acct, bank, &[("u1", "-1.00", "2025-03-03T09:12:44.000Z")]);
    let ad = &mut b["data"]["accountDetails"][0];
    ad["availableBalance"] = json!(90.00);
    ad["availableBalanceDate"] = json!("2025-03-04T00:00:00.000Z");
    let t = &mut b["data"]["transactionDetails"][0];
    for (k, v) in [
        ("dateUserInitiated", json!("2025-03-02T09:12:44.000Z")),
        ("exchangeCurrency", json!("EUR")),
        ("exchangeAmount", json!(-1.17)),
        ("checkNumber", json!("000123")),
        ("referenceNumber", json!("REF-1")),
        ("description", json!("CARD PAYMENT")),
        ("narrative1", json!("COFFEE CO")),
        ("narrative2", json!("LEEDS")),
        (
            "payee",
            json!({"payeeDescription": "COFFEE CO", "address1": "1 High St", "address2": "Floor 2",
                   "address3": "Unit 3", "city": "Leeds", "state": "West Yorkshire",
                   "postalCode": "LS1 1AA", "country": "GBR", "phoneNumber": "0113 000 0000",
                   "payeeBankId": "123456", "payeeAccountId": "12345678"}),
        ),
        ("coordinates", json!({"lat": 53.8, "long": -1.55})),
        (
            "category",
            json!({"topLevelCategory": "Food", "subCategory": "Coffee", "categoryId": 12,
                   "standardIndustrialCode": "5812"}),
        ),
        (
            "providerAdditionalFields",
            json!([{"name": "mcc", "value": "5812"}]),
        ),
    ] {
        t[k] = v;
    }
    let s = h.post_and_wait(&b).await;
    assert_eq!(s.status, StatementStatus::Succeeded);
    assert!(h.client.violations().await.unwrap().is_empty());
    assert!(h.client.overlong_fields().await.unwrap().is_empty());
}

// ------------------------------------------------------------------ violations

#[tokio::test]
async fn contract_violations_are_recorded() {
    let (h, bank, acct) = setup().await;
    let mut b = statement(
        acct,
        bank,
        &[
            ("a", "1.00", "2025-03-03T10:00:00.000Z"),
            ("b", "1.00", "2025-03-03T09:00:00.000Z"),
            ("c", "1.00", "2099-01-01T00:00:00.000Z"),
            ("d", "1.00", "2024-01-01T00:00:00.000Z"),
        ],
    );
    b["data"]["transactionDetails"][1]["transactionStatus"] = json!("pending");
    let a = h.post_statement(&b).await;
    assert_eq!(a.status, 201);
    let id = id_of(&a);
    h.api("GET", &format!("/v1/statements/{id}"), None).await;
    h.api("GET", &format!("/v1/statements/{id}"), None).await;
    let kinds: Vec<ViolationKind> = h
        .client
        .violations()
        .await
        .unwrap()
        .iter()
        .map(|v| v.kind)
        .collect();
    for k in [
        ViolationKind::TransactionsOutOfOrder,
        ViolationKind::TransactionStatusNotPosted,
        ViolationKind::DatePostedInFuture,
        ViolationKind::DatePostedBeforeRequestedStart,
        ViolationKind::PollingTooFast,
    ] {
        assert!(kinds.contains(&k), "{k:?} in {kinds:?}");
    }
}

#[tokio::test]
async fn the_requested_start_day_counts_from_its_start() {
    // requestedStartDate is a day: a transaction earlier on that day is inside it.
    let h = fast().await;
    let bank = h.register_bank(DEAD).await;
    let acct = h
        .account_on(bank, "acc_day", "2025-03-03T12:00:00.000Z")
        .await;
    h.post_and_wait(&statement(
        acct,
        bank,
        &[
            ("a", "1.00", "2025-03-03T00:00:00.000Z"),
            ("b", "1.00", "2025-03-03T09:00:00.000Z"),
        ],
    ))
    .await;
    assert!(h.client.violations().await.unwrap().is_empty());
    h.post_and_wait(&statement(
        acct,
        bank,
        &[("c", "1.00", "2025-03-02T23:59:59.000Z")],
    ))
    .await;
    let v = h.client.violations().await.unwrap();
    assert_eq!(
        v.iter().map(|v| v.kind).collect::<Vec<_>>(),
        [ViolationKind::DatePostedBeforeRequestedStart]
    );
}

#[tokio::test]
async fn a_clean_run_has_no_violations() {
    let (h, bank, acct) = setup().await;
    h.post_and_wait(&statement(
        acct,
        bank,
        &[
            ("a", "1.00", "2025-03-03T09:00:00.000Z"),
            ("b", "1.00", "2025-03-03T10:00:00.000Z"),
        ],
    ))
    .await;
    assert!(h.client.violations().await.unwrap().is_empty());
}

#[tokio::test]
async fn too_many_token_requests_is_a_violation_and_a_401_resets_it() {
    let h = fast().await; // one token already
    for _ in 0..4 {
        h.new_token().await;
    }
    assert!(
        h.client.violations().await.unwrap().is_empty(),
        "5 is allowed"
    );
    // A 401 resets the window.
    h.api_with("GET", "/v1/statements/x", None, Some(API_KEY), Some("bad"))
        .await;
    h.new_token().await;
    assert!(h.client.violations().await.unwrap().is_empty());
    for _ in 0..5 {
        h.new_token().await;
    }
    let v = h.client.violations().await.unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::TooManyTokenRequests);
    assert_eq!(
        h.client.metrics().await.unwrap().token_requests_per_client["local-provider"],
        11
    );
}

#[tokio::test]
async fn token_violation_window_follows_the_lifetime_actually_issued() {
    let h = fast().await; // one token already, with the configured 8-hour lifetime
    h.client
        .set_faults(&FaultSet {
            token_expires_in_s: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    // Refreshing 2-second tokens every 1.1 s is what a well-behaved client does.
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        h.new_token().await;
    }
    assert!(h.client.violations().await.unwrap().is_empty());
}

// ------------------------------------------------------------------ faults and limits

#[tokio::test]
async fn error_fault_is_answered_before_any_state_change() {
    let (h, bank, acct) = setup().await;
    let f = RouteFault {
        route: "POST /v1/statements".into(),
        error_rate: 1.0,
        error_status: 500,
        remaining: Some(1),
        ..Default::default()
    };
    h.client
        .set_faults(&FaultSet {
            routes: vec![f],
            ..Default::default()
        })
        .await
        .unwrap();
    let a = h
        .post_statement(&statement(
            acct,
            bank,
            &[("a", "1.00", "2025-03-03T09:00:00.000Z")],
        ))
        .await;
    assert_eq!((a.status, a.code()), (500, "InternalServerError"));
    assert!(
        h.client.statements(Some(acct)).await.unwrap().is_empty(),
        "nothing created"
    );
    assert_eq!(
        h.post_statement(&statement(
            acct,
            bank,
            &[("a", "1.00", "2025-03-03T09:00:00.000Z")]
        ))
        .await
        .status,
        201
    );
    let f = RouteFault {
        route: "/v1/statements/{statementId}".into(),
        error_rate: 1.0,
        error_status: 502,
        ..Default::default()
    };
    h.client
        .set_faults(&FaultSet {
            routes: vec![f],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        h.api("GET", &format!("/v1/statements/{}", Uuid::new_v4()), None)
            .await
            .status,
        502
    );
}

#[tokio::test]
async fn drop_after_commit_closes_the_connection_but_keeps_the_statement() {
    let (h, bank, acct) = setup().await;
    let f = RouteFault {
        route: "POST /v1/statements".into(),
        drop_after_commit_rate: 1.0,
        remaining: Some(1),
        ..Default::default()
    };
    h.client
        .set_faults(&FaultSet {
            routes: vec![f],
            ..Default::default()
        })
        .await
        .unwrap();
    let r = h
        .http
        .post(h.url("/v1/statements"))
        .header("x-api-key", API_KEY)
        .bearer_auth(&h.token)
        .json(&statement(
            acct,
            bank,
            &[("a", "1.00", "2025-03-03T09:00:00.000Z")],
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(r.is_err(), "no answer: {r:?}");
    let st = h.client.statements(Some(acct)).await.unwrap();
    assert_eq!(st.len(), 1, "committed");
    // The resubmission meets the in-flight lock, then the duplicate rule.
    h.client
        .wait_statement_terminal(st[0].id, Duration::from_secs(5))
        .await
        .unwrap();
    let s = h
        .post_and_wait(&statement(
            acct,
            bank,
            &[("a", "1.00", "2025-03-03T09:00:00.000Z")],
        ))
        .await;
    assert_eq!(s.details.unwrap()[0].code, "DuplicateTransaction");
}

#[tokio::test]
async fn latency_fault_delays_the_answer() {
    let (h, _, _) = setup().await;
    let f = RouteFault {
        route: "*".into(),
        latency_ms: 150,
        ..Default::default()
    };
    h.client
        .set_faults(&FaultSet {
            routes: vec![f],
            ..Default::default()
        })
        .await
        .unwrap();
    let t = std::time::Instant::now();
    h.api("GET", &format!("/v1/statements/{}", Uuid::new_v4()), None)
        .await;
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn oversized_bodies_get_413_envelope() {
    let h = start(SandboxConfig {
        max_body_bytes: 1000,
        ..SandboxConfig::fast()
    })
    .await;
    let a = h
        .api(
            "POST",
            "/v1/statements",
            Some(&format!("{{\"data\":\"{}\"}}", "x".repeat(2000))),
        )
        .await;
    assert_eq!((a.status, a.code()), (413, "PayloadTooLarge"));
}

#[tokio::test]
async fn metrics_count_requests_statuses_and_latency() {
    let (h, bank, acct) = setup().await;
    h.post_and_wait(&statement(
        acct,
        bank,
        &[("a", "1.00", "2025-03-03T09:00:00.000Z")],
    ))
    .await;
    h.post_and_wait(&statement(
        acct,
        bank,
        &[("a", "1.00", "2025-03-03T09:00:00.000Z")],
    ))
    .await;
    let m = h.client.metrics().await.unwrap();
    assert_eq!(m.count("POST /v1/statements", 201), 2);
    assert_eq!(m.count("POST /v1/banks", 200), 1);
    assert_eq!(m.statements_by_final_status.get("succeeded"), Some(&1));
    assert_eq!(m.statements_by_final_status.get("failed"), Some(&1));
    assert!(
        m.latency
            .iter()
            .any(|l| l.route == "POST /v1/statements" && l.count == 2 && l.p99_us >= l.p50_us)
    );
    let log = h.client.requests().await.unwrap();
    assert!(log.iter().any(|r| r.route == "POST /v1/statements"
        && r.status == 201
        && r.client_id.as_deref() == Some("local-provider")));
}

// ------------------------------------------------------------------ product view

#[tokio::test]
async fn product_view_narrative_and_paging() {
    let (h, bank, acct) = setup().await;
    let mut b = statement(acct, bank, &[("n", "1.00", "2025-03-03T09:00:00.000Z")]);
    let t = &mut b["data"]["transactionDetails"][0];
    t["narrative1"] = json!("  N1 ");
    t["narrative2"] = json!("");
    t["description"] = json!("DESC");
    t["referenceNumber"] = json!("REF");
    t["payee"] = json!({"payeeDescription": "PAYEE"});
    t["checkNumber"] = json!("42");
    h.post_and_wait(&b).await;
    let p = h.client.product_transactions(acct, 0).await.unwrap();
    assert_eq!(
        p[0].transaction_narrative.as_deref(),
        Some("N1 DESC REF PAYEE 42")
    );
    let ids: Vec<String> = (0..150).map(|i| format!("p{i}")).collect();
    let txns: Vec<(&str, &str, &str)> = ids
        .iter()
        .map(|i| (i.as_str(), "1.00", "2025-03-03T10:00:00.000Z"))
        .collect();
    h.post_and_wait(&statement(acct, bank, &txns)).await;
    let page = h.client.product_transactions(acct, 1).await.unwrap();
    assert_eq!((page.len(), page[0].transaction_id), (100, 1));
    let page = h.client.product_transactions(acct, 102).await.unwrap();
    assert_eq!((page.len(), page[0].transaction_id), (50, 102));
    // The same over the Consumer-API-shaped endpoint.
    let r = h
        .http
        .get(h.url(&format!("/api/v1/organisations/local-org/companies/local-company/bankaccounts/{acct}/transactions?startIndex=151")))
        .bearer_auth("local-product-token")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["bankTransactionList"].as_array().unwrap().len(), 1);
    assert_eq!(v["bankTransactionList"][0]["transactionId"], 151);
}

#[tokio::test]
async fn narrative_is_cut_to_738_characters() {
    let raw = sandbox::json::Node::parse(&format!(
        r#"{{"description":"{}","narrative1":"{}"}}"#,
        "d".repeat(800),
        "n".repeat(32)
    ))
    .unwrap()
    .to_owned_node();
    let mut long = raw.clone();
    if let sandbox::json::OwnedNode::Obj(m) = &mut long {
        m.insert(
            "referenceNumber".into(),
            sandbox::json::OwnedNode::Str("r".repeat(32)),
        );
        m.insert(
            "narrative2".into(),
            sandbox::json::OwnedNode::Str("m".repeat(32)),
        );
        m.insert(
            "checkNumber".into(),
            sandbox::json::OwnedNode::Str("c".repeat(12)),
        );
        m.insert(
            "payee".into(),
            sandbox::json::Node::parse(r#"{"payeeDescription":"pppppppppppp"}"#)
                .unwrap()
                .to_owned_node(),
        );
    }
    let n = sandbox::product::transaction_narrative(&long);
    assert_eq!(n.chars().count(), 738);
    assert!(n.starts_with(&"n".repeat(32)));
}
