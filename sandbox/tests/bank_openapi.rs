//! The demo bank serves exactly the routes of docs/bank-data-api.yaml, and its answers carry the
//! fields the OpenAPI schemas require.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/bank-data-api.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn required<'a>(spec: &'a Value, schema: &str) -> Vec<&'a str> {
    spec["components"]["schemas"][schema]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

fn enum_of<'a>(spec: &'a Value, schema: &str, prop: &str) -> Vec<&'a str> {
    spec["components"]["schemas"][schema]["properties"][prop]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn spec_paths_match_the_demo_bank_routes() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.1.0");
    let mut in_spec = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            in_spec.insert((method.clone(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = sandbox::bank::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(in_spec, served);
}

#[tokio::test]
async fn every_spec_route_is_served_and_answers_match_the_schemas() {
    let spec = spec();
    let h = common::fast().await;
    for (method, path) in sandbox::bank::ROUTES {
        let url = h.url(&format!(
            "/bank{}",
            path.replace("{consentId}", "cns_x")
                .replace("{accountId}", "acc_x")
                .replace("{paymentId}", "pay_x")
        ));
        let r = h
            .http
            .request(
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                url,
            )
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            !body.contains("Route not found"),
            "{method} {path} is not routed"
        );
        let documented = spec["paths"][path][method]["responses"]
            .as_object()
            .unwrap();
        assert!(
            documented.contains_key(&status.to_string()),
            "{method} {path} answered undocumented {status}"
        );
    }
    // A real consent and page, checked against the schemas.
    let out = {
        let c = common::connector(&h.sb, None).await;
        h.register_bank(&c.url()).await;
        let o =
            h.sb.driver()
                .onboard(sandbox::driver::OnboardOptions::default())
                .await
                .unwrap();
        let ext = o.created[0].external_id.clone();
        let consent = c.state.consents.lock().get(&ext).cloned().unwrap();
        (ext, consent)
    };
    let consent: Value = h
        .http
        .get(h.url(&format!("/bank/v1/consents/{}", out.1)))
        .basic_auth("local-connector", Some("local-bank-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for k in required(&spec, "Consent") {
        assert!(consent.get(k).is_some(), "Consent.{k}");
    }
    for a in consent["accounts"].as_array().unwrap() {
        for k in required(&spec, "Account") {
            assert!(a.get(k).is_some(), "Account.{k}");
        }
        assert!(enum_of(&spec, "Account", "type").contains(&a["type"].as_str().unwrap()));
    }
    let page: Value = h
        .http
        .get(h.url(&format!(
            "/bank/v1/accounts/{}/transactions?limit=1000",
            out.0
        )))
        .basic_auth("local-connector", Some("local-bank-secret"))
        .header("X-Consent-Id", &out.1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for k in required(&spec, "TransactionPage") {
        assert!(page.get(k).is_some(), "TransactionPage.{k}");
    }
    let amount = regex_amount();
    for t in page["transactions"].as_array().unwrap() {
        for k in required(&spec, "Transaction") {
            assert!(t.get(k).is_some(), "Transaction.{k}");
        }
        assert!(enum_of(&spec, "Transaction", "type").contains(&t["type"].as_str().unwrap()));
        assert!(enum_of(&spec, "Transaction", "status").contains(&t["status"].as_str().unwrap()));
        assert!(
            amount(t["amount"].as_str().unwrap()) && amount(t["balanceAfter"].as_str().unwrap()),
            "{t}"
        );
    }
}

/// `^-?[0-9]+(\.[0-9]{1,2})?$` without a regex crate.
fn regex_amount() -> impl Fn(&str) -> bool {
    |s: &str| {
        let s = s.strip_prefix('-').unwrap_or(s);
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.len() <= 2
            && frac.bytes().all(|b| b.is_ascii_digit())
            && (!s.contains('.') || !frac.is_empty())
    }
}
