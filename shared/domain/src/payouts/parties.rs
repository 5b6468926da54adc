//! Debtor accounts (docs/payments-out.md §8): the accounts a product may pay from, each one of
//! the customer's accounts in the consent bound to the subscription, in a supported currency.
//! What the product asked, what the connector decided, and the answers it sends back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::authorise::ConsentAccount;
use super::checks::{RuleSet, holds_quote};

/// A debtor account's or creditor's status at the connector, as the answers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartyStatus {
    Active,
    PendingAuthorisation,
    Rejected,
    Deleted,
}

impl PartyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::PendingAuthorisation => "PendingAuthorisation",
            Self::Rejected => "Rejected",
            Self::Deleted => "Deleted",
        }
    }
}

/// A debtor account as the connector keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebtorAccount {
    pub subscription_id: Uuid,
    pub debtor_account_id: String,
    pub status: PartyStatus,
    #[serde(default)]
    pub status_reason: Option<String>,
    /// The bank's id of the account, when it is in the consent.
    #[serde(default)]
    pub bank_account_id: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    /// The product's `debtor` as sent (answers repeat it).
    pub debtor: Value,
    #[serde(default)]
    pub legal_entity: Option<Value>,
    pub updated_at: DateTime<Utc>,
}

impl DebtorAccount {
    /// Payments may be made from it, in `currency`.
    pub fn pays_in(&self) -> Option<&str> {
        (self.status == PartyStatus::Active)
            .then_some(self.currency.as_deref())
            .flatten()
    }
}

/// The account of the consent that the product's `bankAccount` names: the account number, and
/// the routing number or sort code when the bank reports a numeric bank code.
pub fn match_account<'a>(
    accounts: &'a [ConsentAccount],
    bank_account: &Value,
) -> Option<&'a ConsentAccount> {
    let number = bank_account["accountNumber"].as_str()?;
    let code = bank_account["routingNumber"]
        .as_str()
        .or_else(|| bank_account["sortCode"].as_str());
    accounts.iter().find(|a| {
        let numeric_code = a
            .bank_code
            .as_deref()
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()));
        a.identifier == number
            && match (numeric_code, code) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => true,
            }
    })
}

/// What the connector decides on a product's `debtoraccountputs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebtorDecision {
    /// The consent's account, in its currency.
    Active {
        bank_account_id: String,
        currency: String,
    },
    /// The reason (`statusReason`).
    Rejected(String),
}

/// What a debtor account is checked against.
pub struct DebtorContext<'a> {
    /// The consent's accounts, when the subscription is authorised (`None`: it is not).
    pub consent_accounts: Option<&'a [ConsentAccount]>,
    pub supported_currencies: &'a [String],
    pub rules: &'a RuleSet,
}

/// Decides a `debtoraccountputs` `data` (`{debtor, legalEntity}`).
pub fn decide_debtor(data: &Value, ctx: &DebtorContext) -> DebtorDecision {
    let reject = |r: &str| DebtorDecision::Rejected(r.to_string());
    let Some(accounts) = ctx.consent_accounts else {
        return reject("SubscriptionNotAuthorised");
    };
    let document = json!({ "data": data });
    if let Err(rule) = ctx.rules.check("DebtorAccountPut", None, &document) {
        return DebtorDecision::Rejected(format!("ValidationFailed: {rule}"));
    }
    if holds_quote(data) {
        return reject("ValidationFailed: QuoteCharacter");
    }
    let debtor = &data["debtor"];
    let Some(account) = match_account(accounts, &debtor["bankAccount"]) else {
        return reject("AccountNotInConsent");
    };
    let Some(currency) = account.currency.as_deref() else {
        return reject("CurrencyNotSupported");
    };
    if !ctx.supported_currencies.iter().any(|c| c == currency) {
        return reject("CurrencyNotSupported");
    }
    if debtor["currency"].as_str().is_some_and(|c| c != currency) {
        return reject("CurrencyMismatch");
    }
    DebtorDecision::Active {
        bank_account_id: account.account_id.clone(),
        currency: currency.to_string(),
    }
}

/// The product's item (`debtor`, `creditor`) with the connector's id (under `id_key`), status
/// and reason added.
pub fn connector_view(
    item: &Value,
    id_key: &str,
    id: &str,
    status: PartyStatus,
    reason: Option<&str>,
) -> Value {
    let mut view = match item {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    view[id_key] = json!(id);
    view["status"] = json!(status.as_str());
    if let Some(reason) = reason {
        view["statusReason"] = json!(reason);
    }
    view
}

/// The list responses answering `correlation_id`: each message (`{debtor, …}`) with its
/// `query {correlationId, index, total}`, or `none` (the message with a null item) with
/// `total` 0.
pub fn list_messages(items: Vec<Value>, none: Value, correlation_id: Option<&str>) -> Vec<Value> {
    let total = items.len();
    if total == 0 {
        let mut only = none;
        only["query"] = json!({ "correlationId": correlation_id, "index": 0, "total": 0 });
        return vec![only];
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, mut message)| {
            message["query"] =
                json!({ "correlationId": correlation_id, "index": index, "total": total });
            message
        })
        .collect()
}

fn debtor_view(account: &DebtorAccount) -> Value {
    connector_view(
        &account.debtor,
        "debtorAccountId",
        &account.debtor_account_id,
        account.status,
        account.status_reason.as_deref(),
    )
}

/// The `data` of the `debtoraccountputs` answer.
pub fn put_answer(account: &DebtorAccount) -> Value {
    json!({ "debtor": debtor_view(account), "legalEntity": account.legal_entity })
}

/// The `data` of each `debtoraccountlistqueryresponses` message answering `correlation_id`:
/// one per account, or one with `total` 0 and a null debtor.
pub fn list_answers(accounts: &[DebtorAccount], correlation_id: Option<&str>) -> Vec<Value> {
    let items = accounts
        .iter()
        .map(|a| json!({ "debtor": debtor_view(a), "legalEntity": a.legal_entity }))
        .collect();
    list_messages(
        items,
        json!({ "debtor": null, "legalEntity": null }),
        correlation_id,
    )
}

/// The ids a list query asks for under `key` (`debtorAccountIds`, `creditorIds`; `None`: all).
pub fn queried_ids(data: &Value, key: &str) -> Option<Vec<String>> {
    data[key].as_array().map(|ids| {
        ids.iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Vec<ConsentAccount> {
        vec![
            ConsentAccount {
                account_id: "acc_1".into(),
                identifier: "40001".into(),
                bank_code: Some("c1:demobank".into()),
                currency: Some("USD".into()),
            },
            ConsentAccount {
                account_id: "acc_2".into(),
                identifier: "000123456789".into(),
                bank_code: Some("021000021".into()),
                currency: Some("GBP".into()),
            },
        ]
    }

    fn decide(data: Value, bound: bool, rules: &RuleSet) -> DebtorDecision {
        let accounts = accounts();
        let usd = ["USD".to_string()];
        decide_debtor(
            &data,
            &DebtorContext {
                consent_accounts: bound.then_some(accounts.as_slice()),
                supported_currencies: &usd,
                rules,
            },
        )
    }

    #[test]
    fn an_account_in_the_consent_in_a_supported_currency_is_active() {
        let none = RuleSet::new(vec![]);
        let put = |number: &str, extra: Value| {
            let mut debtor = json!({"externalId": "D-1", "bankAccount": {"accountNumber": number}});
            if let Value::Object(m) = extra {
                for (k, v) in m {
                    debtor[k] = v;
                }
            }
            json!({ "debtor": debtor })
        };
        assert_eq!(
            decide(put("40001", json!({})), true, &none),
            DebtorDecision::Active {
                bank_account_id: "acc_1".into(),
                currency: "USD".into()
            }
        );
        let r = |s: &str| DebtorDecision::Rejected(s.into());
        assert_eq!(
            decide(put("40001", json!({})), false, &none),
            r("SubscriptionNotAuthorised")
        );
        assert_eq!(
            decide(put("49999", json!({})), true, &none),
            r("AccountNotInConsent")
        );
        assert_eq!(
            decide(put("000123456789", json!({})), true, &none),
            r("CurrencyNotSupported")
        );
        assert_eq!(
            decide(put("40001", json!({"currency": "EUR"})), true, &none),
            r("CurrencyMismatch")
        );
        assert_eq!(
            decide(put("40001", json!({"name": "A \"B\""})), true, &none),
            r("ValidationFailed: QuoteCharacter")
        );
        let rules = RuleSet::from_provider_config(&json!({"accountType": {"validationRules": [
            {"ruleId": "eb-debtor-name", "validation": {"apiPath": "DebtorAccountPut",
             "jsonPath": "$.data.debtor.name", "optionality": "Required", "regex": "^.{1,40}$"}}]}}))
        .unwrap();
        assert_eq!(
            decide(put("40001", json!({})), true, &rules),
            r("ValidationFailed: eb-debtor-name")
        );
    }

    #[test]
    fn a_numeric_bank_code_must_match_the_routing_number() {
        let a = accounts();
        let find = |v: Value| match_account(&a, &v).map(|x| x.account_id.clone());
        assert_eq!(
            find(json!({"accountNumber": "000123456789", "routingNumber": "021000021"})),
            Some("acc_2".into())
        );
        assert_eq!(
            find(json!({"accountNumber": "000123456789", "routingNumber": "011000015"})),
            None
        );
        assert_eq!(
            find(json!({"accountNumber": "000123456789"})),
            Some("acc_2".into())
        );
        assert_eq!(
            find(json!({"accountNumber": "40001", "routingNumber": "021000021"})),
            Some("acc_1".into())
        );
        assert_eq!(find(json!({"routingNumber": "021000021"})), None);
    }

    #[test]
    fn answers_repeat_the_product_s_debtor_with_the_connector_s_id_and_status() {
        let account = DebtorAccount {
            subscription_id: Uuid::nil(),
            debtor_account_id: "dac_1".into(),
            status: PartyStatus::Rejected,
            status_reason: Some("AccountNotInConsent".into()),
            bank_account_id: None,
            currency: None,
            debtor: json!({"externalId": "D-1", "name": "Ops"}),
            legal_entity: Some(json!({"name": "Acme"})),
            updated_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        };
        assert_eq!(
            put_answer(&account),
            json!({"debtor": {"externalId": "D-1", "name": "Ops", "debtorAccountId": "dac_1",
                "status": "Rejected", "statusReason": "AccountNotInConsent"},
                "legalEntity": {"name": "Acme"}})
        );
        let list = list_answers(&[account.clone(), account], Some("q-1"));
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[1]["query"],
            json!({"correlationId": "q-1", "index": 1, "total": 2})
        );
        assert_eq!(
            list_answers(&[], Some("q-2")),
            vec![json!({"debtor": null, "legalEntity": null,
                "query": {"correlationId": "q-2", "index": 0, "total": 0}})]
        );
        assert_eq!(
            queried_ids(&json!({"debtorAccountIds": ["a", "b"]}), "debtorAccountIds"),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(queried_ids(&json!({}), "debtorAccountIds"), None);
    }
}
