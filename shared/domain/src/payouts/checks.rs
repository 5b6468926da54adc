//! The checks a batch and each of its payments pass before anything reaches the bank
//! (docs/payments-out.md §4): sizes, the subscription, amounts as exact decimals, currencies,
//! the debtor account and creditor, the `"` rule, the execution date and the provider's
//! validation rules. A failed check names itself in the payment's `extendedStatus`
//! (`ValidationFailed: <ruleId|check>`), so that nothing is ever dropped silently.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::Value;

use super::status::SubscriptionStatus;

/// Sage's largest batch.
pub const MAX_BATCH_PAYMENTS: usize = 2_000;

/// An amount as sent: its literal JSON text (a string's content or a number's digits), and the
/// exact decimal it reads as, if it is a plain decimal (an exponent is none: `1e3` is not taken
/// for a thousand). Two amounts are equal when their values are (`1250.0` equals `1250.00`).
#[derive(Debug, Clone, Eq)]
pub struct Amount {
    pub literal: String,
    pub value: Option<Decimal>,
}

impl Amount {
    pub fn from_literal(text: &str) -> Self {
        let plain = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
        Self {
            literal: text.to_string(),
            value: text.parse::<Decimal>().ok().filter(|_| plain),
        }
    }
}

impl PartialEq for Amount {
    fn eq(&self, other: &Self) -> bool {
        match (self.value, other.value) {
            (Some(a), Some(b)) => a == b,
            _ => self.literal == other.literal,
        }
    }
}

/// `^(0|[1-9][0-9]{0,12})(\.[0-9]{1,3})?$`, written out.
fn amount_shape(text: &str) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let whole_ok = whole == "0" || (digits(whole) && !whole.starts_with('0') && whole.len() <= 13);
    let fraction_ok = fraction.is_none_or(|f| digits(f) && f.len() <= 3);
    whole_ok && fraction_ok
}

/// The largest amount a payment may carry.
pub fn max_amount() -> Decimal {
    Decimal::new(999_999_999_999_999, 2)
}

/// Decimal places a currency allows (ISO 4217), for the currencies a deployment may support.
pub fn currency_exponent(currency: &str) -> Option<u32> {
    match currency {
        "JPY" | "KRW" => Some(0),
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" => Some(3),
        c if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => Some(2),
        _ => None,
    }
}

/// Why a whole batch is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchRejection {
    #[error("TooManyPayments")]
    TooManyPayments,
    #[error("SubscriptionRequired")]
    SubscriptionRequired,
    #[error("SubscriptionNotAuthorised")]
    SubscriptionNotAuthorised,
    #[error("NoPayments")]
    NoPayments,
}

/// The batch checks: its size against Sage's limit and the provider's `maximumPaymentCount`,
/// and a subscription that carries batches (a batch naming only the provider cannot say who
/// pays).
pub fn check_batch(
    payments: usize,
    maximum_payment_count: Option<usize>,
    subscription: Option<SubscriptionStatus>,
) -> Result<(), BatchRejection> {
    let limit = maximum_payment_count.map_or(MAX_BATCH_PAYMENTS, |m| m.min(MAX_BATCH_PAYMENTS));
    if payments == 0 {
        return Err(BatchRejection::NoPayments);
    }
    if payments > limit {
        return Err(BatchRejection::TooManyPayments);
    }
    match subscription {
        None => Err(BatchRejection::SubscriptionRequired),
        Some(s) if !s.carries_batches() => Err(BatchRejection::SubscriptionNotAuthorised),
        Some(_) => Ok(()),
    }
}

/// What a payment is checked against besides itself.
#[derive(Debug, Clone)]
pub struct PaymentContext<'a> {
    pub supported_currencies: &'a [String],
    /// The debtor account's currency, if the account is known and active for this subscription.
    pub debtor_currency: Option<&'a str>,
    /// Whether the named creditor (if any) is known and active.
    pub creditor_active: bool,
    pub today: NaiveDate,
    pub rules: &'a RuleSet,
}

/// A payment as the checks read it.
#[derive(Debug, Clone)]
pub struct PaymentInput<'a> {
    pub amount: &'a Amount,
    pub currency: &'a str,
    pub requested_execution_date: Option<&'a str>,
    pub local_instrument: Option<&'a str>,
    /// The payment as sent, for the `"` rule and the validation rules (`$.data` is the payment).
    pub document: &'a Value,
}

/// The first check a payment fails, as its `extendedStatus` reason; `Ok` if none.
pub fn check_payment(p: &PaymentInput, ctx: &PaymentContext) -> Result<(), String> {
    let fail = |check: &str| Err(format!("ValidationFailed: {check}"));
    let (Some(amount), true) = (&p.amount.value, amount_shape(&p.amount.literal)) else {
        return fail("amount");
    };
    let exponent = currency_exponent(p.currency);
    if *amount <= Decimal::ZERO
        || *amount > max_amount()
        || exponent.is_none_or(|e| amount.normalize().scale() > e)
    {
        return fail("amount");
    }
    if !ctx.supported_currencies.iter().any(|c| c == p.currency) {
        return fail("CurrencyNotSupported");
    }
    match ctx.debtor_currency {
        None => return fail("DebtorAccountNotActive"),
        Some(c) if c != p.currency => return fail("CurrencyMismatch"),
        Some(_) => {}
    }
    if !ctx.creditor_active {
        return fail("CreditorNotActive");
    }
    if holds_quote(p.document) {
        return fail("QuoteCharacter");
    }
    let date = p
        .requested_execution_date
        .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d"));
    match date {
        Some(Err(_)) => return fail("requestedExecutionDate"),
        Some(Ok(d)) if d < ctx.today => return fail("ExecutionDateInPast"),
        _ => {}
    }
    ctx.rules
        .check("BatchPayments", p.local_instrument, p.document)
        .or_else(|rule| fail(&rule))
}

/// Whether any string in the document holds `"` (`additionalData` is exempt: it is JSON text).
pub fn holds_quote(document: &Value) -> bool {
    match document {
        Value::String(s) => s.contains('"'),
        Value::Array(items) => items.iter().any(holds_quote),
        Value::Object(members) => members
            .iter()
            .any(|(k, v)| k != "additionalData" && holds_quote(v)),
        _ => false,
    }
}

/// Whether a rule wants its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optionality {
    Required,
    Optional,
    NotAllowed,
}

/// One validation rule of the provider configuration (or of a local instrument).
#[derive(Debug, Clone)]
pub struct Rule {
    pub rule_id: String,
    pub api_path: String,
    /// Dotted path from `$.data` (`$.data.creditor.bankAccount.routingNumber`).
    pub json_path: String,
    pub optionality: Optionality,
    pub regex: Option<regex_lite::Regex>,
    /// The local instrument the rule belongs to; `None` for a provider rule.
    pub local_instrument: Option<String>,
}

/// A rule that cannot be used: the configuration is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("validation rule {rule_id}: {reason}")]
pub struct InvalidRule {
    pub rule_id: String,
    pub reason: String,
}

impl Rule {
    /// Reads one rule of the provider configuration's `validationRules`.
    pub fn from_config(value: &Value, local_instrument: Option<&str>) -> Result<Self, InvalidRule> {
        let rule_id = value["ruleId"].as_str().unwrap_or("?").to_string();
        let invalid = |reason: &str| InvalidRule {
            rule_id: rule_id.clone(),
            reason: reason.to_string(),
        };
        let v = &value["validation"];
        let text = |name: &str| v[name].as_str().map(str::to_string);
        let json_path = text("jsonPath").ok_or_else(|| invalid("no jsonPath"))?;
        if !json_path.starts_with("$.data") {
            return Err(invalid("jsonPath must start at $.data"));
        }
        let optionality = match text("optionality").as_deref() {
            Some("Required") => Optionality::Required,
            Some("Optional") | None => Optionality::Optional,
            Some("NotAllowed") => Optionality::NotAllowed,
            Some(_) => {
                return Err(invalid(
                    "optionality must be Required, Optional or NotAllowed",
                ));
            }
        };
        let regex = text("regex")
            .map(|r| regex_lite::Regex::new(&r))
            .transpose()
            .map_err(|e| invalid(&format!("regex: {e}")))?;
        Ok(Self {
            api_path: text("apiPath").ok_or_else(|| invalid("no apiPath"))?,
            json_path,
            optionality,
            regex,
            local_instrument: local_instrument.map(str::to_string),
            rule_id,
        })
    }

    /// The rule's verdict on `document` (whose root is `$.data`).
    fn holds(&self, document: &Value) -> bool {
        let mut at = document;
        for part in self.json_path.trim_start_matches("$.data").split('.') {
            if part.is_empty() {
                continue;
            }
            at = &at[part];
        }
        let present = match at {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        match (self.optionality, present) {
            (Optionality::Required, false) => false,
            (Optionality::NotAllowed, true) => false,
            (_, false) => true,
            (_, true) => {
                let text = match at {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                self.regex.as_ref().is_none_or(|r| r.is_match(&text))
            }
        }
    }
}

/// The rules in force: the provider's, and each local instrument's; on the same `apiPath` and
/// `jsonPath` the provider's rule wins.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    /// The provider's rules, from its configuration's `accountType.validationRules`.
    pub fn from_provider_config(configuration: &Value) -> Result<Self, InvalidRule> {
        let rules = configuration["accountType"]["validationRules"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|r| Rule::from_config(r, None))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { rules })
    }

    /// The first rule for `api_path` (and the local instrument's) that `document` breaks.
    pub fn check(
        &self,
        api_path: &str,
        local_instrument: Option<&str>,
        document: &Value,
    ) -> Result<(), String> {
        let applies = |r: &&Rule| {
            r.api_path == api_path
                && match &r.local_instrument {
                    None => true,
                    Some(li) => Some(li.as_str()) == local_instrument,
                }
        };
        let provider_has = |r: &Rule| {
            r.local_instrument.is_some()
                && self.rules.iter().any(|p| {
                    p.local_instrument.is_none()
                        && p.api_path == r.api_path
                        && p.json_path == r.json_path
                })
        };
        for rule in self.rules.iter().filter(applies) {
            if provider_has(rule) {
                continue;
            }
            if !rule.holds(document) {
                return Err(rule.rule_id.clone());
            }
        }
        Ok(())
    }
}

/// The ABA routing number check (3-7-1 weights).
pub fn aba_routing_valid(routing: &str) -> bool {
    let digits: Vec<u32> = routing.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 9 || routing.len() != 9 {
        return false;
    }
    let weights = [3, 7, 1, 3, 7, 1, 3, 7, 1];
    digits.iter().zip(weights).map(|(d, w)| d * w).sum::<u32>() % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(id: &str, path: &str, opt: &str, regex: &str, li: Option<&str>) -> Rule {
        Rule::from_config(
            &json!({"ruleId": id, "validation": {"apiPath": "BatchPayments", "jsonPath": path,
                "optionality": opt, "regex": regex}}),
            li,
        )
        .unwrap()
    }

    fn payment() -> Value {
        json!({"paymentId": "e8d1f0a2-0000-0000-0000-000000000000", "localInstrument": "ACH",
            "creditor": {"name": "Northwind", "bankAccount": {"routingNumber": "021000021",
            "accountNumber": "000123456789"}}, "additionalData": "{\"a\":\"b\"}"})
    }

    fn check(
        amount: &str,
        currency: &str,
        debtor: Option<&str>,
        date: &str,
        rules: &RuleSet,
    ) -> Result<(), String> {
        let amount = Amount::from_literal(amount);
        let doc = payment();
        check_payment(
            &PaymentInput {
                amount: &amount,
                currency,
                requested_execution_date: Some(date),
                local_instrument: Some("ACH"),
                document: &doc,
            },
            &PaymentContext {
                supported_currencies: &["USD".to_string(), "JPY".to_string()],
                debtor_currency: debtor,
                creditor_active: true,
                today: NaiveDate::from_ymd_opt(2025, 3, 4).unwrap(),
                rules,
            },
        )
    }

    #[test]
    fn amounts_are_exact_positive_and_within_the_currency() {
        let none = RuleSet::default();
        let ok = |a: &str| check(a, "USD", Some("USD"), "2025-03-05", &none);
        assert_eq!(ok("1250.00"), Ok(()));
        assert_eq!(ok("1250.0"), Ok(()));
        assert_eq!(ok("0.01"), Ok(()));
        for bad in [
            "0",
            "0.00",
            "-1",
            "1.001",
            "01",
            "1e3",
            "ten",
            "12345678901234",
            "1.2345",
        ] {
            assert_eq!(ok(bad), Err("ValidationFailed: amount".into()), "{bad}");
        }
        assert_eq!(ok("9999999999999.99"), Ok(()));
        assert_eq!(
            check("12.5", "JPY", Some("JPY"), "2025-03-05", &none),
            Err("ValidationFailed: amount".into())
        );
        assert_eq!(check("12", "JPY", Some("JPY"), "2025-03-05", &none), Ok(()));
        assert_eq!(
            Amount::from_literal("1250.0"),
            Amount::from_literal("1250.00")
        );
    }

    #[test]
    fn currency_debtor_and_date_are_checked() {
        let none = RuleSet::default();
        assert_eq!(
            check("1", "EUR", Some("EUR"), "2025-03-05", &none),
            Err("ValidationFailed: CurrencyNotSupported".into())
        );
        assert_eq!(
            check("1", "USD", Some("JPY"), "2025-03-05", &none),
            Err("ValidationFailed: CurrencyMismatch".into())
        );
        assert_eq!(
            check("1", "USD", None, "2025-03-05", &none),
            Err("ValidationFailed: DebtorAccountNotActive".into())
        );
        assert_eq!(
            check("1", "USD", Some("USD"), "2025-03-03", &none),
            Err("ValidationFailed: ExecutionDateInPast".into())
        );
        assert_eq!(check("1", "USD", Some("USD"), "2025-03-04", &none), Ok(()));
    }

    #[test]
    fn rules_apply_with_the_provider_winning_over_the_local_instrument() {
        let path = "$.data.creditor.bankAccount.routingNumber";
        let instrument = rule("ach-routing", path, "Required", "^[0-9]{8}$", Some("ACH"));
        let provider = rule("eb-routing", path, "Required", "^[0-9]{9}$", None);
        let only_instrument = RuleSet::new(vec![instrument.clone()]);
        assert_eq!(
            check("1", "USD", Some("USD"), "2025-03-05", &only_instrument),
            Err("ValidationFailed: ach-routing".into())
        );
        let both = RuleSet::new(vec![instrument, provider]);
        assert_eq!(check("1", "USD", Some("USD"), "2025-03-05", &both), Ok(()));
        let missing = RuleSet::new(vec![rule("ref", "$.data.reference", "Required", "", None)]);
        assert_eq!(
            check("1", "USD", Some("USD"), "2025-03-05", &missing),
            Err("ValidationFailed: ref".into())
        );
        let forbidden = RuleSet::new(vec![rule(
            "no-name",
            "$.data.creditor.name",
            "NotAllowed",
            "",
            None,
        )]);
        assert_eq!(
            check("1", "USD", Some("USD"), "2025-03-05", &forbidden),
            Err("ValidationFailed: no-name".into())
        );
        let bad = Rule::from_config(
            &json!({"ruleId": "x", "validation": {"apiPath": "BatchPayments", "jsonPath": "$.data.a", "regex": "("}}),
            None,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn quotes_are_refused_except_in_additional_data() {
        assert!(!holds_quote(&payment()));
        assert!(holds_quote(
            &json!({"creditor": {"name": "The \"Best\" Co"}})
        ));
    }

    #[test]
    fn batches_are_checked_for_size_and_subscription() {
        let auth = Some(SubscriptionStatus::Authorised);
        assert_eq!(check_batch(2_000, None, auth), Ok(()));
        assert_eq!(
            check_batch(2_001, None, auth),
            Err(BatchRejection::TooManyPayments)
        );
        assert_eq!(
            check_batch(1_001, Some(1_000), auth),
            Err(BatchRejection::TooManyPayments)
        );
        assert_eq!(check_batch(0, None, auth), Err(BatchRejection::NoPayments));
        assert_eq!(
            check_batch(1, None, None),
            Err(BatchRejection::SubscriptionRequired)
        );
        assert_eq!(
            check_batch(1, None, Some(SubscriptionStatus::Suspended)),
            Err(BatchRejection::SubscriptionNotAuthorised)
        );
    }

    #[test]
    fn aba_routing_numbers_carry_their_check_digit() {
        assert!(aba_routing_valid("021000021"));
        assert!(aba_routing_valid("011000015"));
        assert!(!aba_routing_valid("021000022"));
        assert!(!aba_routing_valid("02100002"));
    }
}
