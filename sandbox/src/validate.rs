//! Synchronous validation of Provider API bodies, collecting every failing item with its exact
//! `detail.target` (spec §6.3, §6.4, §6.7, §6.8).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::envelope::DetailItem;
use crate::json::{JsonDecimal, Node, OwnedNode, parse_amount};
use crate::model::{CallbackUrls, Counts, PatchedAccount};
use crate::state::{BalancesIn, ParsedStatement, ParsedTxn, counts_of};
use crate::util::parse_contract_time;

pub const TRANSACTION_TYPES: [&str; 18] = [
    "CREDIT",
    "DEBIT",
    "INT",
    "DIV",
    "FEE",
    "SRVCHG",
    "DEP",
    "ATM",
    "POS",
    "XFER",
    "CHECK",
    "PAYMENT",
    "CASH",
    "DIRECTDEP",
    "DIRECTDEBIT",
    "REPEATPMT",
    "HOLD",
    "OTHER",
];

pub const ACCOUNT_TYPES: [&str; 6] = [
    "business",
    "savings",
    "loan",
    "creditCard",
    "corporate",
    "personal",
];

/// `^[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}$`
pub fn is_uuid_pattern(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_upper3(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|c| c.is_ascii_uppercase())
}

/// Free text that Banking Service stores cut to a length: a longer value is accepted, stored
/// truncated and recorded, never refused (see the README, "Strict as Sage, and no stricter").
pub const TRANSACTION_STORAGE_LIMITS: [(&str, usize); 4] = [
    ("checkNumber", 12),
    ("referenceNumber", 32),
    ("narrative1", 32),
    ("narrative2", 32),
];

/// The same for the strings of a transaction's `payee`.
pub const PAYEE_STORAGE_LIMITS: [(&str, usize); 10] = [
    ("payeeDescription", 12),
    ("address1", 32),
    ("address2", 32),
    ("address3", 32),
    ("city", 32),
    ("state", 32),
    ("postalCode", 11),
    ("phoneNumber", 32),
    ("payeeBankId", 9),
    ("payeeAccountId", 22),
];

/// The keys the contract names, per object of a statement (README, "Strict as Sage"). Any other
/// key (a misspelling included) is a contract violation (`unknownField`); Banking Service answers
/// as if it were absent.
pub const STATEMENT_REQUEST_KEYS: [&str; 1] = ["data"];
pub const STATEMENT_KEYS: [&str; 5] = [
    "principalId",
    "bankId",
    "expected",
    "accountDetails",
    "transactionDetails",
];
pub const EXPECTED_KEYS: [&str; 4] = [
    "transactionDetailsCount",
    "accountDetailsCount",
    "transactionCreditSum",
    "transactionDebitSum",
];
pub const BALANCE_KEYS: [&str; 4] = [
    "ledgerBalance",
    "ledgerBalanceDate",
    "availableBalance",
    "availableBalanceDate",
];
pub const ACCOUNT_DETAIL_KEYS: [&str; 7] = [
    "bankAccountId",
    "status",
    "balances",
    "ledgerBalance",
    "ledgerBalanceDate",
    "availableBalance",
    "availableBalanceDate",
];
pub const TRANSACTION_KEYS: [&str; 18] = [
    "uniqueId",
    "bankAccountId",
    "transactionAmount",
    "transactionType",
    "transactionStatus",
    "datePosted",
    "dateUserInitiated",
    "exchangeCurrency",
    "exchangeAmount",
    "checkNumber",
    "referenceNumber",
    "description",
    "narrative1",
    "narrative2",
    "payee",
    "coordinates",
    "category",
    "providerAdditionalFields",
];
pub const PAYEE_KEYS: [&str; 11] = [
    "payeeDescription",
    "address1",
    "address2",
    "address3",
    "city",
    "state",
    "postalCode",
    "country",
    "phoneNumber",
    "payeeBankId",
    "payeeAccountId",
];
pub const COORDINATES_KEYS: [&str; 2] = ["lat", "long"];
pub const CATEGORY_KEYS: [&str; 4] = [
    "topLevelCategory",
    "subCategory",
    "categoryId",
    "standardIndustrialCode",
];
pub const PROVIDER_ADDITIONAL_FIELD_KEYS: [&str; 2] = ["name", "value"];

/// A free-text value longer than its storage limit, as found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlong {
    /// `StatementRequest.data.transactionDetails[3].payee.postalCode`
    pub path: String,
    /// `payee.postalCode`
    pub field: String,
    pub unique_id: Option<String>,
    /// In characters.
    pub length: usize,
    pub limit: usize,
}

/// Collects detail items while walking a body.
#[derive(Default)]
pub struct Checker {
    pub items: Vec<DetailItem>,
    /// Free text longer than stored (accepted, truncated).
    pub overlong: Vec<Overlong>,
    /// Paths of keys the contract does not name (accepted, ignored, a violation).
    pub unknown: Vec<String>,
}

impl Checker {
    pub fn missing(&mut self, target: String) {
        self.items.push(DetailItem::missing(target));
    }

    pub fn invalid(&mut self, target: String, msg: impl Into<String>) {
        self.items.push(DetailItem::invalid(target, msg));
    }

    /// A required member (absent or `null` is missing).
    pub fn req<'n, 'a>(
        &mut self,
        obj: &'n Node<'a>,
        key: &str,
        path: &str,
    ) -> Option<&'n Node<'a>> {
        match obj.get(key) {
            None | Some(Node::Null) => {
                self.missing(format!("{path}.{key}"));
                None
            }
            Some(n) => Some(n),
        }
    }

    /// An optional member (`null` counts as absent).
    pub fn opt<'n, 'a>(obj: &'n Node<'a>, key: &str) -> Option<&'n Node<'a>> {
        match obj.get(key) {
            None | Some(Node::Null) => None,
            Some(n) => Some(n),
        }
    }

    pub fn string(&mut self, n: &Node<'_>, target: &str, min: usize, max: usize) -> Option<String> {
        let Node::Str(s) = n else {
            self.invalid(
                target.to_string(),
                format!("must be a string, got {}", n.kind()),
            );
            return None;
        };
        let len = s.chars().count();
        if len < min || len > max {
            self.invalid(
                target.to_string(),
                format!("length must be {min}..{max}, got {len}"),
            );
            return None;
        }
        Some(s.clone())
    }

    pub fn uuid(&mut self, n: &Node<'_>, target: &str) -> Option<Uuid> {
        let Node::Str(s) = n else {
            self.invalid(
                target.to_string(),
                format!("must be a string, got {}", n.kind()),
            );
            return None;
        };
        if !is_uuid_pattern(s) {
            self.invalid(target.to_string(), "does not match pattern");
            return None;
        }
        match Uuid::parse_str(s) {
            Ok(u) => Some(u),
            Err(_) => {
                self.invalid(target.to_string(), "does not match pattern");
                None
            }
        }
    }

    pub fn amount(&mut self, n: &Node<'_>, target: &str) -> Option<Decimal> {
        match parse_amount(n) {
            Ok(d) => Some(d),
            Err(e) => {
                self.invalid(target.to_string(), e.message());
                None
            }
        }
    }

    pub fn datetime(&mut self, n: &Node<'_>, target: &str) -> Option<DateTime<Utc>> {
        let Node::Str(s) = n else {
            self.invalid(
                target.to_string(),
                format!("must be a string, got {}", n.kind()),
            );
            return None;
        };
        match parse_contract_time(s) {
            Some(t) => Some(t),
            None => {
                self.invalid(
                    target.to_string(),
                    "must be a date-time YYYY-MM-DDTHH:MM:SS.sssZ",
                );
                None
            }
        }
    }

    pub fn one_of(&mut self, n: &Node<'_>, target: &str, allowed: &[&str]) -> Option<String> {
        let Node::Str(s) = n else {
            self.invalid(
                target.to_string(),
                format!("must be a string, got {}", n.kind()),
            );
            return None;
        };
        if allowed.contains(&s.as_str()) {
            Some(s.clone())
        } else {
            self.invalid(
                target.to_string(),
                format!("must be one of {}", allowed.join(", ")),
            );
            None
        }
    }

    pub fn count(&mut self, n: &Node<'_>, target: &str) -> Option<u64> {
        match n {
            Node::Num(t) => match t.parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.invalid(target.to_string(), "must be a non-negative integer");
                    None
                }
            },
            _ => {
                self.invalid(
                    target.to_string(),
                    format!("must be an integer, got {}", n.kind()),
                );
                None
            }
        }
    }

    pub fn object(&mut self, n: &Node<'_>, target: &str) -> bool {
        if matches!(n, Node::Obj(_)) {
            true
        } else {
            self.invalid(
                target.to_string(),
                format!("must be an object, got {}", n.kind()),
            );
            false
        }
    }

    fn opt_string(&mut self, obj: &Node<'_>, key: &str, path: &str, min: usize, max: usize) {
        if let Some(n) = Self::opt(obj, key) {
            self.string(n, &format!("{path}.{key}"), min, max);
        }
    }

    /// Records every key of `obj` (an object) that is not in `known`.
    pub fn known_keys(&mut self, obj: &Node<'_>, path: &str, known: &[&str]) {
        if let Node::Obj(m) = obj {
            for k in m.keys() {
                if !known.contains(&k.as_str()) {
                    self.unknown.push(format!("{path}.{k}"));
                }
            }
        }
    }

    /// An optional string stored cut to `limit` characters: a non-string is invalid; a longer
    /// string is recorded and its truncation returned (to be stored instead).
    fn stored_text(
        &mut self,
        obj: &Node<'_>,
        key: &str,
        path: &str,
        field: &str,
        limit: usize,
    ) -> Option<String> {
        let n = Self::opt(obj, key)?;
        let target = format!("{path}.{key}");
        let Node::Str(s) = n else {
            self.invalid(target, format!("must be a string, got {}", n.kind()));
            return None;
        };
        let length = s.chars().count();
        if length <= limit {
            return None;
        }
        self.overlong.push(Overlong {
            path: target,
            field: field.to_string(),
            unique_id: None,
            length,
            limit,
        });
        Some(s.chars().take(limit).collect())
    }
}

/// Removes the keys of an object that are not in `known` (what Banking Service would not store).
fn retain_known(node: &mut OwnedNode, known: &[&str]) {
    if let OwnedNode::Obj(m) = node {
        m.retain(|k, _| known.contains(&k.as_str()));
    }
}

/// Replaces the string at `keys` inside an object tree (no-op when the path is absent).
fn replace_str(node: &mut OwnedNode, keys: &[&str], value: String) {
    let Some((first, rest)) = keys.split_first() else {
        *node = OwnedNode::Str(value);
        return;
    };
    if let OwnedNode::Obj(m) = node
        && let Some(child) = m.get_mut(*first)
    {
        replace_str(child, rest, value);
    }
}

/// Parses the top of a `{"data": ...}` body. `Err` holds the items for a 400.
pub fn parse_body<'a>(body: &'a str, root: &str) -> Result<Node<'a>, Vec<DetailItem>> {
    let node = Node::parse(body).map_err(|e| {
        vec![DetailItem::invalid(
            root,
            format!("body is not valid JSON: {e}"),
        )]
    })?;
    if !matches!(node, Node::Obj(_)) {
        return Err(vec![DetailItem::invalid(
            root,
            "body must be a JSON object",
        )]);
    }
    Ok(node)
}

const ST: &str = "StatementRequest.data";

/// `expected` as read: the two counts and the two sums (each `None` when invalid).
type ExpectedIn = (Option<u64>, Option<u64>, Option<Decimal>, Option<Decimal>);

/// `POST /v1/statements` body → a statement, or every failing item.
pub fn parse_statement(body: &str, max_txns: usize) -> Result<ParsedStatement, Vec<DetailItem>> {
    let root = parse_body(body, "StatementRequest")?;
    let mut c = Checker::default();
    let Some(data) = c.req(&root, "data", "StatementRequest") else {
        return Err(c.items);
    };
    if !c.object(data, ST) {
        return Err(c.items);
    }
    c.known_keys(&root, "StatementRequest", &STATEMENT_REQUEST_KEYS);
    c.known_keys(data, ST, &STATEMENT_KEYS);
    let principal_id = c
        .req(data, "principalId", ST)
        .and_then(|n| c.uuid(n, &format!("{ST}.principalId")));
    let bank_id = c
        .req(data, "bankId", ST)
        .and_then(|n| c.uuid(n, &format!("{ST}.bankId")));

    // expected
    let mut expected: Option<ExpectedIn> = None;
    if let Some(e) = c.req(data, "expected", ST) {
        let p = format!("{ST}.expected");
        if c.object(e, &p) {
            c.known_keys(e, &p, &EXPECTED_KEYS);
            let tdc = c
                .req(e, "transactionDetailsCount", &p)
                .and_then(|n| c.count(n, &format!("{p}.transactionDetailsCount")));
            let adc = c
                .req(e, "accountDetailsCount", &p)
                .and_then(|n| c.count(n, &format!("{p}.accountDetailsCount")));
            let tcs = c
                .req(e, "transactionCreditSum", &p)
                .and_then(|n| c.amount(n, &format!("{p}.transactionCreditSum")));
            if let Some(v) = tcs
                && v.is_sign_negative()
                && !v.is_zero()
            {
                c.invalid(
                    format!("{p}.transactionCreditSum"),
                    "must be zero or positive",
                );
            }
            let tds = c
                .req(e, "transactionDebitSum", &p)
                .and_then(|n| c.amount(n, &format!("{p}.transactionDebitSum")));
            if let Some(v) = tds
                && v.is_sign_positive()
                && !v.is_zero()
            {
                c.invalid(
                    format!("{p}.transactionDebitSum"),
                    "must be zero or negative",
                );
            }
            expected = Some((tdc, adc, tcs, tds));
        }
    }

    // transactionDetails (optional)
    let mut txns: Vec<ParsedTxn> = Vec::new();
    let mut txn_count = 0usize;
    let mut amounts_ok = true;
    if let Some(td) = Checker::opt(data, "transactionDetails") {
        let p = format!("{ST}.transactionDetails");
        match td {
            Node::Arr(items) => {
                txn_count = items.len();
                if items.len() > max_txns {
                    c.invalid(
                        p.clone(),
                        format!("at most {max_txns} items, got {}", items.len()),
                    );
                    amounts_ok = false;
                } else {
                    txns.reserve(items.len());
                    for (i, item) in items.iter().enumerate() {
                        match parse_txn(&mut c, item, &format!("{p}[{i}]"), principal_id) {
                            Some(t) => txns.push(t),
                            None => amounts_ok = false,
                        }
                    }
                }
            }
            other => {
                c.invalid(p, format!("must be an array, got {}", other.kind()));
                amounts_ok = false;
            }
        }
    }

    // accountDetails (exactly one)
    let mut account_status = None;
    let mut balances = BalancesIn::default();
    let mut account_details_len = 0u64;
    if let Some(ad) = c.req(data, "accountDetails", ST) {
        let p = format!("{ST}.accountDetails");
        match ad {
            Node::Arr(items) => {
                account_details_len = items.len() as u64;
                if items.len() != 1 {
                    c.invalid(
                        p.clone(),
                        format!("must contain exactly one item, got {}", items.len()),
                    );
                }
                if let Some(first) = items.first() {
                    let r = parse_account_detail(
                        &mut c,
                        first,
                        &format!("{p}[0]"),
                        principal_id,
                        txn_count > 0,
                    );
                    if let Some((status, b)) = r {
                        account_status = Some(status);
                        balances = b;
                    }
                }
            }
            other => c.invalid(p, format!("must be an array, got {}", other.kind())),
        }
    }

    // expected against actual (exact decimal arithmetic)
    let actual = counts_of(&txns, account_details_len);
    if let Some((tdc, adc, tcs, tds)) = expected {
        let p = format!("{ST}.expected");
        if let Some(v) = tdc
            && v != txn_count as u64
        {
            c.invalid(
                format!("{p}.transactionDetailsCount"),
                format!("expected {v}, actual {txn_count}"),
            );
        }
        if let Some(v) = adc
            && v != account_details_len
        {
            c.invalid(
                format!("{p}.accountDetailsCount"),
                format!("expected {v}, actual {account_details_len}"),
            );
        }
        if amounts_ok {
            if let Some(v) = tcs
                && v != actual.transaction_credit_sum.0
            {
                c.invalid(
                    format!("{p}.transactionCreditSum"),
                    format!("expected {v}, actual {}", actual.transaction_credit_sum.0),
                );
            }
            if let Some(v) = tds
                && v != actual.transaction_debit_sum.0
            {
                c.invalid(
                    format!("{p}.transactionDebitSum"),
                    format!("expected {v}, actual {}", actual.transaction_debit_sum.0),
                );
            }
        }
    }

    if !c.items.is_empty() {
        return Err(c.items);
    }
    match (principal_id, bank_id, expected, account_status) {
        (
            Some(principal_id),
            Some(bank_id),
            Some((Some(tdc), Some(adc), Some(tcs), Some(tds))),
            Some(status),
        ) => Ok(ParsedStatement {
            principal_id,
            bank_id,
            expected: Counts {
                transaction_details_count: tdc,
                account_details_count: adc,
                transaction_credit_sum: JsonDecimal(tcs),
                transaction_debit_sum: JsonDecimal(tds),
            },
            actual,
            account_status: status,
            balances,
            txns,
            overlong: c.overlong,
            unknown_fields: c.unknown,
        }),
        // Unreachable in practice: any None above pushed an item.
        _ => Err(vec![DetailItem::invalid(ST, "invalid statement")]),
    }
}

fn parse_account_detail(
    c: &mut Checker,
    n: &Node<'_>,
    p: &str,
    principal_id: Option<Uuid>,
    has_txns: bool,
) -> Option<(String, BalancesIn)> {
    if !c.object(n, p) {
        return None;
    }
    c.known_keys(n, p, &ACCOUNT_DETAIL_KEYS);
    let before = c.items.len();
    if let Some(id) = c
        .req(n, "bankAccountId", p)
        .and_then(|x| c.uuid(x, &format!("{p}.bankAccountId")))
        && let Some(pid) = principal_id
        && id != pid
    {
        c.invalid(format!("{p}.bankAccountId"), "must equal principalId");
    }
    let status = c
        .req(n, "status", p)
        .and_then(|x| c.one_of(x, &format!("{p}.status"), &["active", "authRequired"]));

    let flat_keys = [
        "ledgerBalance",
        "ledgerBalanceDate",
        "availableBalance",
        "availableBalanceDate",
    ];
    let has_flat = flat_keys.iter().any(|k| Checker::opt(n, k).is_some());
    let nested = Checker::opt(n, "balances");
    let mut b = BalancesIn::default();
    let (src, bp) = match (nested, has_flat) {
        (Some(_), true) => {
            c.invalid(
                format!("{p}.balances"),
                "flat and nested balances must not be combined",
            );
            return None;
        }
        (Some(nb), false) => {
            if !c.object(nb, &format!("{p}.balances")) {
                return None;
            }
            c.known_keys(nb, &format!("{p}.balances"), &BALANCE_KEYS);
            (nb, format!("{p}.balances"))
        }
        (None, _) => (n, p.to_string()),
    };
    match Checker::opt(src, "ledgerBalance") {
        Some(x) => b.ledger = c.amount(x, &format!("{bp}.ledgerBalance")),
        None if has_txns => c.missing(format!("{bp}.ledgerBalance")),
        None => {}
    }
    if let Some(x) = Checker::opt(src, "availableBalance") {
        b.available = c.amount(x, &format!("{bp}.availableBalance"));
    }
    for (key, slot) in [
        ("ledgerBalanceDate", &mut b.ledger_date),
        ("availableBalanceDate", &mut b.available_date),
    ] {
        if let Some(x) = Checker::opt(src, key)
            && c.datetime(x, &format!("{bp}.{key}")).is_some()
        {
            *slot = x.as_str().map(str::to_string);
        }
    }
    if c.items.len() != before {
        return None;
    }
    status.map(|s| (s, b))
}

fn parse_txn(
    c: &mut Checker,
    n: &Node<'_>,
    p: &str,
    principal_id: Option<Uuid>,
) -> Option<ParsedTxn> {
    if !c.object(n, p) {
        return None;
    }
    c.known_keys(n, p, &TRANSACTION_KEYS);
    let before = c.items.len();
    let unique_id = c
        .req(n, "uniqueId", p)
        .and_then(|x| c.string(x, &format!("{p}.uniqueId"), 1, 255));
    if let Some(id) = c
        .req(n, "bankAccountId", p)
        .and_then(|x| c.uuid(x, &format!("{p}.bankAccountId")))
        && let Some(pid) = principal_id
        && id != pid
    {
        c.invalid(format!("{p}.bankAccountId"), "must equal principalId");
    }
    let amount = c
        .req(n, "transactionAmount", p)
        .and_then(|x| c.amount(x, &format!("{p}.transactionAmount")));
    c.req(n, "transactionType", p)
        .and_then(|x| c.one_of(x, &format!("{p}.transactionType"), &TRANSACTION_TYPES));
    let status = c
        .req(n, "transactionStatus", p)
        .and_then(|x| c.string(x, &format!("{p}.transactionStatus"), 1, 12));
    let date_posted = c
        .req(n, "datePosted", p)
        .and_then(|x| c.datetime(x, &format!("{p}.datePosted")));
    if let Some(x) = Checker::opt(n, "dateUserInitiated") {
        c.datetime(x, &format!("{p}.dateUserInitiated"));
    }
    let currency = Checker::opt(n, "exchangeCurrency");
    if let Some(x) = currency
        && let Some(s) = c.string(x, &format!("{p}.exchangeCurrency"), 3, 3)
        && !is_upper3(&s)
    {
        c.invalid(format!("{p}.exchangeCurrency"), "must match ^[A-Z]{3}$");
    }
    if let Some(x) = Checker::opt(n, "exchangeAmount") {
        c.amount(x, &format!("{p}.exchangeAmount"));
        if currency.is_none() {
            c.invalid(
                format!("{p}.exchangeAmount"),
                "only allowed together with exchangeCurrency",
            );
        }
    }
    c.opt_string(n, "description", p, 0, 512);
    // Storage limits: accepted, recorded, stored truncated.
    let overlong_before = c.overlong.len();
    let mut cuts: Vec<(Vec<&str>, String)> = Vec::new();
    for (key, limit) in TRANSACTION_STORAGE_LIMITS {
        if let Some(cut) = c.stored_text(n, key, p, key, limit) {
            cuts.push((vec![key], cut));
        }
    }
    if let Some(payee) = Checker::opt(n, "payee") {
        let pp = format!("{p}.payee");
        if c.object(payee, &pp) {
            c.known_keys(payee, &pp, &PAYEE_KEYS);
            for (key, limit) in PAYEE_STORAGE_LIMITS {
                if let Some(cut) = c.stored_text(payee, key, &pp, &format!("payee.{key}"), limit) {
                    cuts.push((vec!["payee", key], cut));
                }
            }
            if let Some(x) = Checker::opt(payee, "country")
                && let Some(s) = c.string(x, &format!("{pp}.country"), 3, 3)
                && !is_upper3(&s)
            {
                c.invalid(format!("{pp}.country"), "must be ISO 3166 alpha-3");
            }
        }
    }
    if let Some(co) = Checker::opt(n, "coordinates") {
        let cp = format!("{p}.coordinates");
        if c.object(co, &cp) {
            c.known_keys(co, &cp, &COORDINATES_KEYS);
            for (key, lim) in [("lat", 90.0f64), ("long", 180.0f64)] {
                if let Some(x) = c.req(co, key, &cp) {
                    let ok = match x {
                        Node::Num(t) => t.parse::<f64>().map(|v| v.abs() <= lim).unwrap_or(false),
                        _ => false,
                    };
                    if !ok {
                        c.invalid(
                            format!("{cp}.{key}"),
                            format!("must be a number in [-{lim}, {lim}]"),
                        );
                    }
                }
            }
        }
    }
    if let Some(cat) = Checker::opt(n, "category") {
        let cp = format!("{p}.category");
        if c.object(cat, &cp) {
            c.known_keys(cat, &cp, &CATEGORY_KEYS);
            c.opt_string(cat, "topLevelCategory", &cp, 0, 128);
            c.opt_string(cat, "subCategory", &cp, 0, 128);
            c.opt_string(cat, "standardIndustrialCode", &cp, 1, 16);
            if let Some(x) = Checker::opt(cat, "categoryId") {
                let ok = matches!(x, Node::Num(t) if t.parse::<i64>().is_ok());
                if !ok {
                    c.invalid(format!("{cp}.categoryId"), "must be an integer");
                }
            }
        }
    }
    if let Some(paf) = Checker::opt(n, "providerAdditionalFields") {
        let pp = format!("{p}.providerAdditionalFields");
        match paf {
            Node::Arr(items) => {
                for (i, it) in items.iter().enumerate() {
                    let ip = format!("{pp}[{i}]");
                    if c.object(it, &ip) {
                        c.known_keys(it, &ip, &PROVIDER_ADDITIONAL_FIELD_KEYS);
                        if let Some(x) = c.req(it, "name", &ip) {
                            c.string(x, &format!("{ip}.name"), 1, 50);
                        }
                        if let Some(x) = c.req(it, "value", &ip) {
                            c.string(x, &format!("{ip}.value"), 1, 50);
                        }
                    }
                }
            }
            other => c.invalid(pp, format!("must be an array, got {}", other.kind())),
        }
    }
    if c.items.len() != before {
        return None;
    }
    for o in &mut c.overlong[overlong_before..] {
        o.unique_id.clone_from(&unique_id);
    }
    let mut raw = n.to_owned_node();
    for (keys, cut) in cuts {
        replace_str(&mut raw, &keys, cut);
    }
    // Keys the contract does not name are not stored (nor shown to the product).
    retain_known(&mut raw, &TRANSACTION_KEYS);
    if let OwnedNode::Obj(m) = &mut raw {
        for (key, known) in [
            ("payee", &PAYEE_KEYS[..]),
            ("coordinates", &COORDINATES_KEYS[..]),
            ("category", &CATEGORY_KEYS[..]),
        ] {
            if let Some(child) = m.get_mut(key) {
                retain_known(child, known);
            }
        }
        if let Some(OwnedNode::Arr(items)) = m.get_mut("providerAdditionalFields") {
            for it in items {
                retain_known(it, &PROVIDER_ADDITIONAL_FIELD_KEYS);
            }
        }
    }
    Some(ParsedTxn {
        unique_id: unique_id?,
        date_posted: date_posted?,
        amount: amount?,
        status: status?,
        raw,
    })
}

const AUTH: &str = "AuthorisationRequest.data";

/// `PATCH /v1/authorisations/{id}` body.
pub struct ParsedPatch {
    pub status: String,
    pub accounts: Vec<PatchedAccount>,
}

pub fn parse_patch(body: &str, onboarding: bool) -> Result<ParsedPatch, Vec<DetailItem>> {
    let root = parse_body(body, "AuthorisationRequest")?;
    let mut c = Checker::default();
    let Some(data) = c.req(&root, "data", "AuthorisationRequest") else {
        return Err(c.items);
    };
    if !c.object(data, AUTH) {
        return Err(c.items);
    }
    let status = c.req(data, "status", AUTH).and_then(|n| {
        c.one_of(
            n,
            &format!("{AUTH}.status"),
            &["success", "error", "cancelled"],
        )
    });
    let mut accounts = Vec::new();
    let p = format!("{AUTH}.bankAccounts");
    let list = Checker::opt(data, "bankAccounts");
    match list {
        Some(Node::Arr(items)) => {
            for (i, it) in items.iter().enumerate() {
                let ip = format!("{p}[{i}]");
                if !c.object(it, &ip) {
                    continue;
                }
                let ext = c
                    .req(it, "bankAccountExternalId", &ip)
                    .and_then(|x| c.string(x, &format!("{ip}.bankAccountExternalId"), 1, 255));
                let name = c
                    .req(it, "accountName", &ip)
                    .and_then(|x| c.string(x, &format!("{ip}.accountName"), 1, 128));
                let bank = c
                    .req(it, "bankIdentifier", &ip)
                    .and_then(|x| c.string(x, &format!("{ip}.bankIdentifier"), 1, 64));
                let acct = c
                    .req(it, "accountIdentifier", &ip)
                    .and_then(|x| c.string(x, &format!("{ip}.accountIdentifier"), 1, 64));
                let branch = Checker::opt(it, "branchIdentifier")
                    .and_then(|x| c.string(x, &format!("{ip}.branchIdentifier"), 1, 128));
                if let (Some(ext), Some(name), Some(bank), Some(acct)) = (ext, name, bank, acct) {
                    accounts.push(PatchedAccount {
                        bank_account_external_id: ext,
                        account_name: name,
                        bank_identifier: bank,
                        branch_identifier: branch,
                        account_identifier: acct,
                        connected: false,
                    });
                }
            }
        }
        Some(other) => c.invalid(p.clone(), format!("must be an array, got {}", other.kind())),
        None => {}
    }
    let count = match list {
        Some(Node::Arr(items)) => items.len(),
        _ => 0,
    };
    match status.as_deref() {
        Some("success") if onboarding && count == 0 => {
            c.invalid(p, "onboarding success needs at least one account")
        }
        Some("error") | Some("cancelled") if count > 0 => {
            c.invalid(p, "error and cancelled carry no accounts")
        }
        _ => {}
    }
    if !c.items.is_empty() {
        return Err(c.items);
    }
    Ok(ParsedPatch {
        status: status.unwrap_or_default(),
        accounts,
    })
}

const AQ: &str = "AccountQueryRequest.data";

/// `POST /v1/accountqueries` body → (bankId, externalId).
pub fn parse_account_query(body: &str) -> Result<(Uuid, String), Vec<DetailItem>> {
    let root = parse_body(body, "AccountQueryRequest")?;
    let mut c = Checker::default();
    let Some(data) = c.req(&root, "data", "AccountQueryRequest") else {
        return Err(c.items);
    };
    if !c.object(data, AQ) {
        return Err(c.items);
    }
    let bank = c
        .req(data, "bankId", AQ)
        .and_then(|n| c.uuid(n, &format!("{AQ}.bankId")));
    let ext = c
        .req(data, "externalId", AQ)
        .and_then(|n| c.string(n, &format!("{AQ}.externalId"), 1, 255));
    match (bank, ext) {
        (Some(b), Some(e)) if c.items.is_empty() => Ok((b, e)),
        _ => Err(c.items),
    }
}

const BK: &str = "BankRequest.data";

pub struct BankCreate {
    pub name: String,
    pub country_code: String,
    pub url: Option<String>,
    pub supportiframe: bool,
    pub external_ref: String,
    pub callbacks: CallbackUrls,
}

pub struct BankUpdate {
    pub principal_id: Uuid,
    pub external_ref: Option<String>,
    pub name: Option<String>,
    pub callbacks: Option<CallbackUrls>,
}

#[derive(Default)]
pub struct BankSync {
    pub create: Vec<BankCreate>,
    pub update: Vec<BankUpdate>,
    pub remove: Vec<(Uuid, Option<String>)>,
}

fn absolute_url(c: &mut Checker, n: &Node<'_>, target: &str) -> Option<String> {
    let s = c.string(n, target, 1, 2048)?;
    match url::Url::parse(&s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(s),
        _ => {
            c.invalid(target.to_string(), "must be an absolute http(s) URL");
            None
        }
    }
}

fn callbacks(c: &mut Checker, n: &Node<'_>, p: &str) -> Option<CallbackUrls> {
    if !c.object(n, p) {
        return None;
    }
    let mut get = |key: &str| {
        c.req(n, key, p)
            .and_then(|x| absolute_url(c, x, &format!("{p}.{key}")))
    };
    let auth = get("auth");
    let re_auth = get("reAuth");
    let notification = get("notification");
    let available = get("availableAccounts");
    Some(CallbackUrls {
        auth: auth?,
        re_auth: re_auth?,
        notification: notification?,
        available_accounts: available?,
    })
}

/// `POST /v1/banks` (Bank Sync); `data` may be an object or a one-element array.
pub fn parse_bank_sync(body: &str) -> Result<BankSync, Vec<DetailItem>> {
    let root = parse_body(body, "BankRequest")?;
    let mut c = Checker::default();
    let Some(data) = c.req(&root, "data", "BankRequest") else {
        return Err(c.items);
    };
    let (data, base) = match data {
        Node::Arr(items) if items.len() == 1 => (&items[0], format!("{BK}[0]")),
        Node::Arr(_) => {
            c.invalid(BK.to_string(), "an array must hold exactly one item");
            return Err(c.items);
        }
        other => (other, BK.to_string()),
    };
    if !c.object(data, &base) {
        return Err(c.items);
    }
    let mut out = BankSync::default();
    let list = |c: &mut Checker, key: &str| -> Vec<(String, Node<'_>)> {
        match Checker::opt(data, key) {
            Some(Node::Arr(items)) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("{base}.{key}[{i}]"), n.clone()))
                .collect(),
            Some(other) => {
                c.invalid(
                    format!("{base}.{key}"),
                    format!("must be an array, got {}", other.kind()),
                );
                Vec::new()
            }
            None => Vec::new(),
        }
    };
    let creates = list(&mut c, "toCreate");
    let updates = list(&mut c, "toUpdate");
    let removes = list(&mut c, "toRemove");
    if creates.is_empty() && updates.is_empty() && removes.is_empty() && c.items.is_empty() {
        c.invalid(
            base.clone(),
            "one of toCreate, toUpdate, toRemove is required",
        );
    }
    for (p, n) in &creates {
        if !c.object(n, p) {
            continue;
        }
        let name = c
            .req(n, "name", p)
            .and_then(|x| c.string(x, &format!("{p}.name"), 1, 128));
        let cc = c
            .req(n, "countryCode", p)
            .and_then(|x| c.string(x, &format!("{p}.countryCode"), 2, 3));
        if let Some(cc) = &cc
            && !cc.chars().all(|ch| ch.is_ascii_alphabetic())
        {
            c.invalid(format!("{p}.countryCode"), "must be 2 or 3 letters");
        }
        let url = Checker::opt(n, "url").and_then(|x| absolute_url(&mut c, x, &format!("{p}.url")));
        let supportiframe = match Checker::opt(n, "supportiframe") {
            Some(Node::Bool(b)) => *b,
            Some(_) => {
                c.invalid(format!("{p}.supportiframe"), "must be a boolean");
                false
            }
            None => false,
        };
        let ext = c
            .req(n, "externalRef", p)
            .and_then(|x| c.string(x, &format!("{p}.externalRef"), 1, 255));
        let cb = c
            .req(n, "callbackURLs", p)
            .and_then(|x| callbacks(&mut c, x, &format!("{p}.callbackURLs")));
        if let (Some(name), Some(country_code), Some(external_ref), Some(callbacks)) =
            (name, cc, ext, cb)
        {
            out.create.push(BankCreate {
                name,
                country_code,
                url,
                supportiframe,
                external_ref,
                callbacks,
            });
        }
    }
    for (p, n) in &updates {
        if !c.object(n, p) {
            continue;
        }
        let id = c
            .req(n, "principalId", p)
            .and_then(|x| c.uuid(x, &format!("{p}.principalId")));
        let ext = Checker::opt(n, "externalRef")
            .and_then(|x| c.string(x, &format!("{p}.externalRef"), 1, 255));
        let name = Checker::opt(n, "name").and_then(|x| c.string(x, &format!("{p}.name"), 1, 128));
        let cb = Checker::opt(n, "callbackURLs")
            .and_then(|x| callbacks(&mut c, x, &format!("{p}.callbackURLs")));
        if let Some(principal_id) = id {
            out.update.push(BankUpdate {
                principal_id,
                external_ref: ext,
                name,
                callbacks: cb,
            });
        }
    }
    for (p, n) in &removes {
        if !c.object(n, p) {
            continue;
        }
        let id = c
            .req(n, "principalId", p)
            .and_then(|x| c.uuid(x, &format!("{p}.principalId")));
        let ext = Checker::opt(n, "externalRef")
            .and_then(|x| c.string(x, &format!("{p}.externalRef"), 1, 255));
        if let Some(id) = id {
            out.remove.push((id, ext));
        }
    }
    if !c.items.is_empty() {
        return Err(c.items);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "6269cfb9-922c-4023-833d-97586646fad1";
    const B: &str = "5f775565-62d9-4d03-aca0-5365ad75ac07";

    fn body(expected: &str, txns: &str) -> String {
        format!(
            r#"{{"data":{{"principalId":"{P}","bankId":"{B}","expected":{expected},
            "accountDetails":[{{"bankAccountId":"{P}","status":"active","ledgerBalance":1.00}}],
            "transactionDetails":[{txns}]}}}}"#
        )
    }

    fn txn(id: &str, amount: &str) -> String {
        format!(
            r#"{{"uniqueId":"{id}","bankAccountId":"{P}","transactionAmount":{amount},"transactionType":"POS",
            "transactionStatus":"posted","datePosted":"2025-03-03T09:12:44.000Z"}}"#
        )
    }

    #[test]
    fn decimal_sums_are_exact() {
        let t = format!("{},{}", txn("a", "0.10"), txn("b", "0.20"));
        let b = body(
            r#"{"transactionDetailsCount":2,"accountDetailsCount":1,"transactionCreditSum":0.30,"transactionDebitSum":0}"#,
            &t,
        );
        let s = parse_statement(&b, 1000);
        assert!(s.is_ok(), "{:?}", s.err());
        let t = txn("a", "10.1");
        let b = body(
            r#"{"transactionDetailsCount":1,"accountDetailsCount":1,"transactionCreditSum":10.10,"transactionDebitSum":0}"#,
            &t,
        );
        assert!(parse_statement(&b, 1000).is_ok());
    }

    fn body_for(amounts: &[i64], credit: &str, debit: &str) -> String {
        let txns: Vec<String> = amounts
            .iter()
            .enumerate()
            .map(|(i, c)| txn(&format!("u{i}"), &Decimal::new(*c, 2).to_string()))
            .collect();
        body(
            &format!(
                r#"{{"transactionDetailsCount":{},"accountDetailsCount":1,"transactionCreditSum":{credit},"transactionDebitSum":{debit}}}"#,
                amounts.len()
            ),
            &txns.join(","),
        )
    }

    proptest::proptest! {
        /// Sums are exact for any amounts, and a one-cent difference is always caught on the right field.
        #[test]
        fn expected_sums_are_exact(amounts in proptest::collection::vec(-10_000_000i64..10_000_000, 0..40)) {
            let credit: Decimal = amounts.iter().filter(|c| **c >= 0).map(|c| Decimal::new(*c, 2)).sum();
            let debit: Decimal = amounts.iter().filter(|c| **c < 0).map(|c| Decimal::new(*c, 2)).sum();
            let ok = parse_statement(&body_for(&amounts, &credit.to_string(), &debit.to_string()), 1000);
            proptest::prop_assert!(ok.is_ok(), "{:?}", ok.err());
            let off = parse_statement(&body_for(&amounts, &(credit + Decimal::new(1, 2)).to_string(), &debit.to_string()), 1000);
            let items = off.err().unwrap_or_default();
            proptest::prop_assert_eq!(items.len(), 1);
            proptest::prop_assert_eq!(items[0].target.as_str(), "StatementRequest.data.expected.transactionCreditSum");
        }
    }

    #[test]
    fn uuid_pattern() {
        assert!(is_uuid_pattern(P));
        assert!(!is_uuid_pattern("6269cfb9922c40234833d97586646fad1"));
        assert!(!is_uuid_pattern("6269cfb9-922c-4023-833d-97586646fadZ"));
    }
}
