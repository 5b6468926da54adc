//! Debtor accounts end to end: once the customer has authorised the subscription at the bank,
//! the product's `debtoraccountputs` (through Sage's consumer messaging, `po-intake` and
//! `po-worker`) is answered `Active` for an account in the consent in USD — with the connector's
//! `debtorAccountId` and the product's `correlationId` — and `Rejected` with the reason for one
//! outside it or in another currency; list queries and deletes are answered from what the
//! connector keeps. Sage records no contract violation.

mod common;

use sandbox::SandboxConfig;
use sandbox::payments_out::client::PoClient;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_registers_lists_and_deletes_debtor_accounts_of_the_consent() {
    let stack = common::start(SandboxConfig::fast()).await;
    let po = PoClient::new(stack.sandbox.base_url());
    let org = po.create_organisation("Acme").await.unwrap();
    let (sub, binding) = common::po_authorised(&stack, &po, org).await;

    // The consent's accounts, as the bank shows them to the connector; the first in USD.
    let accounts = local_stack::payments_out::consent_accounts(&stack, &binding.consent_id)
        .await
        .unwrap();
    assert!(accounts.len() >= 2, "{accounts:?}");
    let usd = accounts[0]["accountId"].as_str().unwrap();
    let other = accounts[1]["identifier"].as_str().unwrap();
    po.put(
        &format!("/_sandbox/payments-out/bank/accounts/{usd}"),
        &json!({"currency": "USD", "credit": "100000.00"}),
    )
    .await
    .unwrap();
    let number = accounts[0]["identifier"].as_str().unwrap();

    let put = |corr: &'static str, number: &str| {
        let data = json!({"debtor": {"externalId": corr, "name": "Operating account",
            "bankAccount": {"accountNumber": number}, "currency": "USD"},
            "legalEntity": {"name": "Acme Holdings LLC"}});
        let po = &po;
        async move {
            let sent = po
                .message("debtoraccountputs", sub, corr, &data)
                .await
                .unwrap();
            assert_eq!(sent.status, 202, "{sent:?}");
        }
    };
    put("put-usd", number).await;
    put("put-gbp", other).await;
    put("put-unknown", "40000000").await;
    let usd_answer = &common::po_answers(&po, "put-usd", 1).await[0];
    assert_eq!(usd_answer["type"], "debtoraccountputs", "{usd_answer}");
    let debtor = &usd_answer["data"]["debtor"];
    assert_eq!(debtor["status"], "Active", "{usd_answer}");
    assert_eq!(debtor["externalId"], "put-usd");
    let id = debtor["debtorAccountId"].as_str().unwrap().to_string();
    let gbp = &common::po_answers(&po, "put-gbp", 1).await[0]["data"]["debtor"];
    assert_eq!(
        (gbp["status"].as_str(), gbp["statusReason"].as_str()),
        (Some("Rejected"), Some("CurrencyNotSupported")),
        "{gbp}"
    );
    let unknown = &common::po_answers(&po, "put-unknown", 1).await[0]["data"]["debtor"];
    assert_eq!(unknown["statusReason"], "AccountNotInConsent", "{unknown}");

    // Listed: the three answered puts (rejected ones included), one message each.
    po.message("debtoraccountlistqueries", sub, "list-1", &json!({}))
        .await
        .unwrap();
    let listed = common::po_answers(&po, "list-1", 3).await;
    assert!(
        listed.iter().all(|m| m["data"]["query"]["total"] == 3),
        "{listed:?}"
    );
    // Deleted, then listed by id as deleted.
    po.message(
        "debtoraccountdeletes",
        sub,
        "del-1",
        &json!({"debtorAccountId": id}),
    )
    .await
    .unwrap();
    let deleted = &common::po_answers(&po, "del-1", 1).await[0];
    assert_eq!(
        deleted["data"],
        json!({"debtorAccountId": id, "status": "Deleted"})
    );
    po.message(
        "debtoraccountlistqueries",
        sub,
        "list-2",
        &json!({"debtorAccountIds": [id]}),
    )
    .await
    .unwrap();
    let listed = &common::po_answers(&po, "list-2", 1).await[0]["data"];
    assert_eq!(listed["debtor"]["status"], "Deleted", "{listed}");

    assert_eq!(po.violations().await.unwrap(), json!([]));
    stack.finish().await;
}

/// Creditors: a put is answered `Active` with the connector's `creditorId` and the bank
/// account as sent; the table holds the bank account sealed by the creditor key (KMS, moto
/// here), and a list query opens it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_registers_a_creditor_whose_bank_details_are_sealed_at_rest() {
    let stack = common::start(SandboxConfig::fast()).await;
    let po = PoClient::new(stack.sandbox.base_url());
    let org = po.create_organisation("Acme").await.unwrap();
    let (sub, _) = common::po_authorised(&stack, &po, org).await;
    let creditor = json!({"creditor": {"externalId": "V-2001", "name": "Northwind Supplies",
        "creditorType": "Organisation",
        "postalAddress": {"addressLine1": "1 Main St", "townName": "Austin",
            "countrySubdivision": "TX", "postCode": "73301", "country": "US"},
        "bankAccount": {"routingNumber": "021000021", "accountNumber": "000123456789"}}});
    po.message("creditorputs", sub, "cred-1", &creditor)
        .await
        .unwrap();
    let answer = &common::po_answers(&po, "cred-1", 1).await[0]["data"]["creditor"];
    assert_eq!(answer["status"], "Active", "{answer}");
    assert_eq!(answer["bankAccount"]["accountNumber"], "000123456789");
    let id = answer["creditorId"].as_str().unwrap().to_string();

    let kept = common::table(&stack)
        .creditor(sub, &id)
        .await
        .unwrap()
        .expect("kept");
    let at_rest = serde_json::to_string(&kept).unwrap();
    assert!(kept.sealed_bank_account.is_some());
    assert!(!at_rest.contains("000123456789"), "sealed: {at_rest}");

    po.message("creditorlistqueries", sub, "cred-list", &json!({}))
        .await
        .unwrap();
    let listed = &common::po_answers(&po, "cred-list", 1).await[0]["data"];
    assert_eq!(
        listed["creditor"]["bankAccount"]["accountNumber"],
        "000123456789"
    );
    assert_eq!(listed["query"]["total"], 1);
    assert_eq!(po.violations().await.unwrap(), json!([]));
    stack.finish().await;
}
