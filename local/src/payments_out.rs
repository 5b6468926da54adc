//! Payments Out as a Sage product and its customer use it, against the local stack: a
//! subscription authorised at the demo bank through the connector's link, a debtor account of
//! the consent, a batch paid through to its outcome. The demo prints these steps; the tests
//! assert on them.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use connector_aws::Table;
use connector_domain::payouts::authorise::Binding;
use sandbox::payments_out::client::PoClient;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::stack::LocalStack;

/// Polls `check` until it returns `Some`; an error naming `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if started.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The subscription at Sage once it has `status`.
pub async fn subscription_at_sage(po: &PoClient, id: Uuid, status: &str) -> Result<Value> {
    wait_for(
        &format!("the subscription is {status} at Sage"),
        Duration::from_secs(60),
        || async {
            let all = po.get("/_sandbox/payments-out/subscriptions").await.ok()?;
            all.as_array()?
                .iter()
                .find(|s| s["subscriptionId"] == id.to_string() && s["status"] == status)
                .cloned()
        },
    )
    .await
}

/// A product's new subscription (Sage then delivers it to the connector): its id.
pub async fn new_subscription(
    po: &PoClient,
    organisation: Uuid,
    additional_data: Option<&str>,
) -> Result<Uuid> {
    let provider = Uuid::parse_str(sandbox::config::local::PROVIDER_ID)?;
    let created = po
        .create_subscription(organisation, provider, additional_data)
        .await
        .map_err(|e| anyhow!("the product's subscription: {e}"))?;
    created["data"]["subscriptionId"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| anyhow!("no subscriptionId in {created}"))
}

/// A new subscription's authorisation link, once the connector has PATCHed it into Sage.
pub async fn new_link(po: &PoClient, organisation: Uuid) -> Result<(Uuid, String)> {
    let id = new_subscription(po, organisation, None).await?;
    let sub = subscription_at_sage(po, id, "AwaitingAuthorisation").await?;
    let link = sub["links"]["authorise"]
        .as_str()
        .ok_or_else(|| anyhow!("no link in {sub}"))?
        .to_string();
    Ok((id, link))
}

/// A subscription the customer `demo` has authorised at the demo bank, through the link: the
/// subscription and the consent bound to it.
pub async fn authorised(
    stack: &LocalStack,
    po: &PoClient,
    organisation: Uuid,
) -> Result<(Uuid, Binding)> {
    let (id, link) = new_link(po, organisation).await?;
    sandbox::driver::walk_authorisation(
        &link,
        ("demo", "demo"),
        sandbox::driver::AccountPick::All,
        false,
        None,
    )
    .await
    .map_err(|e| anyhow!("the customer's authorisation: {e}"))?;
    subscription_at_sage(po, id, "Authorised").await?;
    let binding = Table::new(stack.dynamodb.clone(), stack.table_name.clone())
        .binding(id)
        .await?
        .ok_or_else(|| anyhow!("no consent bound to {id}"))?;
    Ok((id, binding))
}

/// The product's inbox entries answering `correlation_id`, once there are `n`.
pub async fn answers(po: &PoClient, correlation_id: &str, n: usize) -> Result<Vec<Value>> {
    wait_for(
        &format!("{n} answer(s) to {correlation_id}"),
        Duration::from_secs(60),
        || async {
            let inbox = po.inbox().await.ok()?;
            let found: Vec<Value> = inbox
                .as_array()?
                .iter()
                .filter(|m| m["correlationId"] == correlation_id)
                .cloned()
                .collect();
            (found.len() >= n).then_some(found)
        },
    )
    .await
}

/// The consent's accounts as the bank shows them to the connector.
pub async fn consent_accounts(stack: &LocalStack, consent_id: &str) -> Result<Vec<Value>> {
    let consent: Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/consents/{consent_id}",
            stack.sandbox.bank_api_url()
        ))
        .basic_auth(
            sandbox::config::local::BANK_CLIENT_ID,
            Some(sandbox::config::local::BANK_CLIENT_SECRET),
        )
        .send()
        .await?
        .error_for_status()
        .context("reading the consent at the demo bank")?
        .json()
        .await?;
    Ok(consent["accounts"].as_array().cloned().unwrap_or_default())
}

/// An authorised subscription with one `Active` debtor account (the consent's first account,
/// made USD and funded): the subscription and the `debtorAccountId`.
pub async fn payer(stack: &LocalStack, po: &PoClient) -> Result<(Uuid, String)> {
    let org = po
        .create_organisation("Acme")
        .await
        .map_err(|e| anyhow!("the product's organisation: {e}"))?;
    let (sub, binding) = authorised(stack, po, org).await?;
    let accounts = consent_accounts(stack, &binding.consent_id).await?;
    let account = accounts
        .first()
        .ok_or_else(|| anyhow!("the consent has no account"))?;
    let account_id = account["accountId"].as_str().unwrap_or_default();
    po.put(
        &format!("/_sandbox/payments-out/bank/accounts/{account_id}"),
        &json!({"currency": "USD", "credit": "100000.00"}),
    )
    .await
    .map_err(|e| anyhow!("funding the demo account: {e}"))?;
    let data = json!({"debtor": {"externalId": "OPS", "name": "Operating account",
        "bankAccount": {"accountNumber": account["identifier"]}, "currency": "USD"}});
    // Its own correlation id: a second payer must not read the first one's answer.
    let correlation = format!("payer-put-{sub}");
    po.message("debtoraccountputs", sub, &correlation, &data)
        .await
        .map_err(|e| anyhow!("the product's debtor account: {e}"))?;
    let answer = answers(po, &correlation, 1).await?[0]["data"]["debtor"].clone();
    if answer["status"] != "Active" {
        bail!("the debtor account was not accepted: {answer}");
    }
    let id = answer["debtorAccountId"]
        .as_str()
        .ok_or_else(|| anyhow!("no debtorAccountId in {answer}"))?;
    Ok((sub, id.to_string()))
}

/// A payment to Northwind Supplies as the product sends it.
pub fn payment(reference: &str, amount: &str, debtor: &str, date: &str) -> Value {
    json!({
        "externalId": reference, "localInstrument": "ACH", "requestedExecutionDate": date,
        "instructedAmount": { "amount": amount, "currency": "USD" },
        "debtor": { "debtorAccountId": debtor, "remittanceEmail": "ap@acme.test" },
        "creditor": { "creditorId": null, "name": "Northwind Supplies", "creditorType": "Organisation",
          "postalAddress": { "addressLine1": "1 Main St", "townName": "Austin", "countrySubdivision": "TX",
                             "postCode": "73301", "country": "US" },
          "bankAccount": { "routingNumber": "021000021", "accountNumber": "000123456789" } },
        "remittanceInformation": { "reference": reference }
    })
}

/// Tomorrow, as a product sends a payment's `requestedExecutionDate`.
pub fn tomorrow() -> String {
    (chrono::Utc::now() + chrono::TimeDelta::days(1))
        .format("%Y-%m-%d")
        .to_string()
}

/// Sends `batch` to Payments Out as the product does, and returns its `batchId`; a refusal is
/// an error naming Sage's answer.
pub async fn send_batch(
    po: &PoClient,
    batch: &Value,
    idempotency_key: Option<&str>,
    skip_validation: bool,
) -> Result<String> {
    let answer = po
        .submit_batch(batch, idempotency_key, skip_validation)
        .await
        .map_err(|e| anyhow!("sending batch {}: {e}", batch["externalId"]))?;
    if answer.status != 201 {
        bail!(
            "batch {} refused by Sage: {} {}",
            batch["externalId"],
            answer.status,
            answer.body
        );
    }
    answer.body["data"]["batchId"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no batchId in {}", answer.body))
}

/// Changes the demo bank's rails (settlement delay, failure rates, ...).
pub async fn set_rails(po: &PoClient, change: impl FnOnce(&mut Value)) -> Result<()> {
    let path = "/_sandbox/payments-out/bank/config";
    let mut rails = po.get(path).await.map_err(|e| anyhow!(e))?;
    change(&mut rails);
    po.put(path, &rails).await.map_err(|e| anyhow!(e))?;
    Ok(())
}

/// The batch as Sage holds it now.
pub async fn batch_now(po: &PoClient, batch_id: &str) -> Result<Value> {
    let b = po
        .get(&format!("/_sandbox/payments-out/batches/{batch_id}"))
        .await
        .map_err(|e| anyhow!(e))?;
    Ok(if b.get("data").is_some() {
        b["data"].clone()
    } else {
        b
    })
}

/// The batch at Sage once its status is one of `statuses` (within 2 minutes).
pub async fn batch_at_sage(po: &PoClient, batch_id: &str, statuses: &[&str]) -> Result<Value> {
    batch_at_sage_within(po, batch_id, statuses, Duration::from_secs(120)).await
}

/// The batch at Sage once its status is one of `statuses`, within `limit`.
pub async fn batch_at_sage_within(
    po: &PoClient,
    batch_id: &str,
    statuses: &[&str],
    limit: Duration,
) -> Result<Value> {
    wait_for(
        &format!("the batch is {statuses:?} at Sage"),
        limit,
        || async {
            let b = batch_now(po, batch_id).await.ok()?;
            statuses.iter().any(|s| b["status"] == *s).then_some(b)
        },
    )
    .await
}
