//! The provider's validation rules and the `"` rule (docs/payments-out-sandbox.md §2.4).

use serde_json::Value;

use crate::envelope::DetailItem;

/// One rule, flattened from the provider JSON or a local instrument.
#[derive(Debug, Clone)]
pub struct Rule {
    pub rule_id: String,
    pub api_path: String,
    pub json_path: String,
    pub optionality: String,
    pub regex: Option<String>,
    pub error_message: String,
}

fn rules_of(list: Option<&Value>) -> Vec<Rule> {
    let Some(items) = list.and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|r| {
            let v = r.get("validation")?;
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            Some(Rule {
                rule_id: r
                    .get("ruleId")
                    .and_then(Value::as_str)
                    .unwrap_or("rule")
                    .to_string(),
                api_path: s("apiPath")?,
                json_path: s("jsonPath")?,
                optionality: s("optionality").unwrap_or_else(|| "Optional".into()),
                regex: s("regex"),
                error_message: s("errorMessage").unwrap_or_else(|| "invalid".into()),
            })
        })
        .collect()
}

/// Rules for `api_paths`: the local instrument's, replaced by the provider's on equal
/// `apiPath` + `jsonPath` (the provider wins).
pub fn effective_rules(
    provider: &Value,
    instruments: &Value,
    instrument: Option<&str>,
    api_paths: &[&str],
) -> Vec<Rule> {
    let own = rules_of(provider.pointer("/accountType/validationRules"));
    let mut out: Vec<Rule> = Vec::new();
    if let Some(id) = instrument
        && let Some(li) = instruments.as_array().and_then(|a| {
            a.iter()
                .find(|i| i.get("localInstrumentId").and_then(Value::as_str) == Some(id))
        })
    {
        out = rules_of(li.get("validationRules"));
    }
    out.retain(|r| {
        !own.iter()
            .any(|o| o.api_path == r.api_path && o.json_path == r.json_path)
    });
    out.extend(own);
    out.retain(|r| api_paths.contains(&r.api_path.as_str()));
    out
}

/// Problems with the rules of a provider configuration (PATCH refuses them).
pub fn check_rule_definitions(provider: &Value) -> Vec<DetailItem> {
    let mut out = Vec::new();
    let Some(items) = provider
        .pointer("/accountType/validationRules")
        .and_then(Value::as_array)
    else {
        return out;
    };
    for (i, r) in items.iter().enumerate() {
        let base = format!("data.accountType.validationRules[{i}].validation");
        let Some(v) = r.get("validation") else {
            out.push(DetailItem::missing(base));
            continue;
        };
        for k in ["apiPath", "jsonPath"] {
            if v.get(k).and_then(Value::as_str).is_none() {
                out.push(DetailItem::missing(format!("{base}.{k}")));
            }
        }
        if let Some(o) = v.get("optionality").and_then(Value::as_str)
            && !matches!(o, "Required" | "Optional" | "NotAllowed")
        {
            out.push(DetailItem::invalid(
                format!("{base}.optionality"),
                "one of Required, Optional, NotAllowed",
            ));
        }
        if let Some(re) = v.get("regex").and_then(Value::as_str)
            && regex_lite::Regex::new(re).is_err()
        {
            out.push(DetailItem::invalid(
                format!("{base}.regex"),
                "not a valid regular expression",
            ));
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    All,
    Index(usize),
}

fn parse_path(p: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in p
        .trim_start_matches('$')
        .split('.')
        .filter(|s| !s.is_empty())
    {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            let idx = idx.trim_end_matches(']');
            if idx == "*" {
                out.push(Seg::All);
            } else if let Ok(n) = idx.parse() {
                out.push(Seg::Index(n));
            }
        }
    }
    out
}

/// Every location the path names: (concrete path, value if present).
fn resolve<'a>(
    v: Option<&'a Value>,
    segs: &[Seg],
    at: String,
    out: &mut Vec<(String, Option<&'a Value>)>,
) {
    let Some((first, rest)) = segs.split_first() else {
        out.push((at, v.filter(|x| !x.is_null())));
        return;
    };
    match first {
        Seg::Key(k) => {
            let next = v.and_then(|x| x.get(k.as_str()));
            resolve(next, rest, format!("{at}.{k}"), out);
        }
        Seg::Index(i) => {
            let next = v.and_then(|x| x.get(*i));
            resolve(next, rest, format!("{at}[{i}]"), out);
        }
        Seg::All => {
            if let Some(items) = v.and_then(Value::as_array) {
                for (i, item) in items.iter().enumerate() {
                    resolve(Some(item), rest, format!("{at}[{i}]"), out);
                }
            }
        }
    }
}

/// Applies the rules to a request body; every failure is one detail item (target = the path,
/// code = the rule id).
pub fn apply(rules: &[Rule], body: &Value) -> Vec<DetailItem> {
    let mut out = Vec::new();
    for r in rules {
        let mut hits = Vec::new();
        resolve(Some(body), &parse_path(&r.json_path), "$".into(), &mut hits);
        let re = r
            .regex
            .as_deref()
            .and_then(|s| regex_lite::Regex::new(s).ok());
        for (path, value) in hits {
            let text = value.map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            let empty = text.as_deref().is_none_or(str::is_empty);
            let failed = match r.optionality.as_str() {
                "Required" if empty => true,
                "NotAllowed" => !empty,
                _ => false,
            } || (!empty
                && re
                    .as_ref()
                    .is_some_and(|re| !re.is_match(text.as_deref().unwrap_or(""))));
            if failed {
                out.push(DetailItem::new(
                    path.trim_start_matches("$."),
                    &r.rule_id,
                    r.error_message.clone(),
                ));
            }
        }
    }
    out
}

/// The first string (value or key) holding `"`, outside any `additionalData` member.
pub fn find_quote(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains('"') => Some(at.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| find_quote(x, &format!("{at}[{i}]"))),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let p = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k.contains('"') {
                Some(p)
            } else if k == "additionalData" {
                None
            } else {
                find_quote(x, &p)
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn provider_rule_wins_and_wildcards_reach_every_payment() {
        let provider = json!({"accountType": {"validationRules": [
            {"ruleId": "own", "validation": {"apiPath": "BatchPayments",
             "jsonPath": "$.data.payments[*].creditor.bankAccount.routingNumber",
             "optionality": "Required", "regex": "^1[0-9]{8}$", "errorMessage": "starts with 1"}}]}});
        let rules = effective_rules(
            &provider,
            &crate::payments_out::wire::local_instruments(),
            Some("ACH"),
            &["BatchPayments"],
        );
        assert_eq!(rules.len(), 2, "ACH routing replaced, account number kept");
        let body = json!({"data": {"payments": [
            {"creditor": {"bankAccount": {"routingNumber": "121000021", "accountNumber": "1234"}}},
            {"creditor": {"bankAccount": {"routingNumber": "021000021"}}}]}});
        let d = apply(&rules, &body);
        let targets: Vec<&str> = d.iter().map(|x| x.target.as_str()).collect();
        assert_eq!(
            targets,
            vec![
                "data.payments[1].creditor.bankAccount.accountNumber",
                "data.payments[1].creditor.bankAccount.routingNumber"
            ]
        );
    }

    #[test]
    fn quote_rule_skips_additional_data() {
        assert_eq!(
            find_quote(&json!({"a": {"additionalData": "{\"x\":1}"}}), ""),
            None
        );
        assert_eq!(
            find_quote(&json!({"a": [{"name": "say \"hi\""}]}), "data"),
            Some("data.a[0].name".into())
        );
    }
}
