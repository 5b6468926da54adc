//! Creditors (payees, docs/payments-out.md §12): the product registers them through messaging;
//! the connector checks them and keeps them, their bank details sealed (encrypted with a key the
//! connector's code never sees), so that payments naming a `creditorId` can be checked against
//! an active one. No bank call: a payment carries its creditor's details itself.

use chrono::{DateTime, Utc};
use regex_lite::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::checks::{RuleSet, aba_routing_valid, holds_quote};
use super::parties::{PartyStatus, connector_view, list_messages};

/// A creditor as the connector keeps it: the product's creditor without its bank account,
/// which is kept sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Creditor {
    pub subscription_id: Uuid,
    pub creditor_id: String,
    pub status: PartyStatus,
    #[serde(default)]
    pub status_reason: Option<String>,
    /// The product's `creditor`, `bankAccount` removed.
    pub creditor: Value,
    /// The `bankAccount`, sealed (`None` when the product sent none).
    #[serde(default)]
    pub sealed_bank_account: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl Creditor {
    pub fn is_active(&self) -> bool {
        self.status == PartyStatus::Active
    }

    /// The product's creditor with the connector's id, status and reason, and `bank_account`
    /// (opened) put back.
    pub fn view(&self, bank_account: Option<Value>) -> Value {
        let mut view = connector_view(
            &self.creditor,
            "creditorId",
            &self.creditor_id,
            self.status,
            self.status_reason.as_deref(),
        );
        if let Some(account) = bank_account {
            view["bankAccount"] = account;
        }
        view
    }
}

/// Splits the product's creditor into what is kept in clear and its bank account.
pub fn split_bank_account(creditor: &Value) -> (Value, Option<Value>) {
    let mut clear = creditor.clone();
    let account = clear
        .as_object_mut()
        .and_then(|m| m.remove("bankAccount"))
        .filter(|a| !a.is_null());
    (clear, account)
}

fn matches(pattern: &str, text: &str) -> bool {
    Regex::new(pattern).is_ok_and(|r| r.is_match(text))
}

/// The built-in checks of a creditor (docs/payments-out.md §4's table): its name, type, address
/// lengths and bank account shapes (ABA check digit for a routing number).
fn builtin_check(creditor: &Value) -> Result<(), &'static str> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    if text(&creditor["name"]).is_none_or(|n| n.trim().is_empty()) {
        return Err("name");
    }
    if let Some(kind) = text(&creditor["creditorType"])
        && !matches("^(None|Individual|Organisation)$", &kind)
    {
        return Err("creditorType");
    }
    let address = &creditor["postalAddress"];
    for line in ["addressLine1", "addressLine2", "addressLine3"] {
        if text(&address[line]).is_some_and(|l| l.chars().count() > 100) {
            return Err("postalAddress");
        }
    }
    if text(&address["countrySubdivision"]).is_some_and(|l| l.chars().count() > 50) {
        return Err("postalAddress");
    }
    let account = &creditor["bankAccount"];
    let number = text(&account["accountNumber"]);
    if let Some(routing) = text(&account["routingNumber"]) {
        if !aba_routing_valid(&routing) {
            return Err("routingNumber");
        }
        if !number
            .as_deref()
            .is_some_and(|n| matches("^[0-9]{4,17}$", n))
        {
            return Err("accountNumber");
        }
    }
    if let Some(sort_code) = text(&account["sortCode"]) {
        if !matches("^[0-9]{6}$", &sort_code) {
            return Err("sortCode");
        }
        if !number.as_deref().is_some_and(|n| matches("^[0-9]{8}$", n)) {
            return Err("accountNumber");
        }
    }
    Ok(())
}

/// Decides a `creditorputs` `data` (`{creditor}`): the reason it is refused, if it is.
pub fn decide_creditor(data: &Value, authorised: bool, rules: &RuleSet) -> Result<(), String> {
    if !authorised {
        return Err("SubscriptionNotAuthorised".into());
    }
    let document = json!({ "data": data });
    for api_path in ["Creditors", "CreditorPut"] {
        rules
            .check(api_path, None, &document)
            .map_err(|rule| format!("ValidationFailed: {rule}"))?;
    }
    if holds_quote(data) {
        return Err("ValidationFailed: QuoteCharacter".into());
    }
    builtin_check(&data["creditor"]).map_err(|check| format!("ValidationFailed: {check}"))
}

/// The `data` of the `creditorputs` answer.
pub fn put_answer(creditor: &Creditor, bank_account: Option<Value>) -> Value {
    json!({ "creditor": creditor.view(bank_account),
        "links": { "authorise": null, "authoriseIssuedAt": null, "authoriseExpiresAt": null } })
}

/// The `creditorlistqueryresponses` messages: each creditor with its opened bank account.
pub fn list_answers(
    creditors: Vec<(Creditor, Option<Value>)>,
    correlation_id: Option<&str>,
) -> Vec<Value> {
    let items = creditors
        .into_iter()
        .map(|(c, account)| json!({ "creditor": c.view(account) }))
        .collect();
    list_messages(items, json!({ "creditor": null }), correlation_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creditor() -> Value {
        json!({"externalId": "V-1", "name": "Northwind", "creditorType": "Organisation",
            "postalAddress": {"addressLine1": "1 Main St", "countrySubdivision": "TX"},
            "bankAccount": {"routingNumber": "021000021", "accountNumber": "000123456789"}})
    }

    fn decide(c: Value, authorised: bool) -> Result<(), String> {
        decide_creditor(&json!({ "creditor": c }), authorised, &RuleSet::new(vec![]))
    }

    #[test]
    fn a_well_formed_creditor_of_an_authorised_subscription_is_accepted() {
        assert_eq!(decide(creditor(), true), Ok(()));
        assert_eq!(
            decide(creditor(), false),
            Err("SubscriptionNotAuthorised".into())
        );
        let with = |path: &[&str], v: Value| {
            let mut c = creditor();
            let mut at = &mut c;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            at[path[path.len() - 1]] = v;
            decide(c, true)
        };
        let failed = |check: &str| Err(format!("ValidationFailed: {check}"));
        assert_eq!(
            with(&["bankAccount", "routingNumber"], json!("021000022")),
            failed("routingNumber")
        );
        assert_eq!(
            with(&["bankAccount", "accountNumber"], json!("12")),
            failed("accountNumber")
        );
        assert_eq!(
            with(&["creditorType"], json!("Company")),
            failed("creditorType")
        );
        assert_eq!(with(&["name"], json!(" ")), failed("name"));
        assert_eq!(
            with(&["postalAddress", "addressLine1"], json!("x".repeat(101))),
            failed("postalAddress")
        );
        assert_eq!(with(&["name"], json!("A \"B\"")), failed("QuoteCharacter"));
        let rules = RuleSet::from_provider_config(&json!({"accountType": {"validationRules": [
            {"ruleId": "eb-ext", "validation": {"apiPath": "CreditorPut",
             "jsonPath": "$.data.creditor.externalId", "optionality": "Required", "regex": "^V-[0-9]+$"}}]}}))
        .unwrap();
        let mut c = creditor();
        c["externalId"] = json!("X");
        assert_eq!(
            decide_creditor(&json!({ "creditor": c }), true, &rules),
            failed("eb-ext")
        );
    }

    #[test]
    fn the_bank_account_is_kept_apart_and_put_back_in_answers() {
        let (clear, account) = split_bank_account(&creditor());
        assert!(clear.get("bankAccount").is_none());
        assert_eq!(account.clone().unwrap()["accountNumber"], "000123456789");
        let kept = Creditor {
            subscription_id: Uuid::nil(),
            creditor_id: "cre_1".into(),
            status: PartyStatus::Active,
            status_reason: None,
            creditor: clear,
            sealed_bank_account: Some("sealed".into()),
            updated_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        };
        let answer = put_answer(&kept, account.clone());
        assert_eq!(answer["creditor"]["creditorId"], "cre_1");
        assert_eq!(answer["creditor"]["status"], "Active");
        assert_eq!(answer["creditor"]["bankAccount"], account.unwrap());
        assert!(answer["links"]["authorise"].is_null());
        let listed = list_answers(vec![(kept, None)], Some("q"));
        assert_eq!(
            listed[0]["query"],
            json!({"correlationId": "q", "index": 0, "total": 1})
        );
        assert_eq!(list_answers(vec![], Some("q"))[0]["creditor"], Value::Null);
    }
}
