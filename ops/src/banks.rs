//! `bank-sync`: registers, updates or removes the provider's banks with Banking Service's Bank
//! Sync (`POST /v1/banks`, spec §6.8), after checking the whole file first.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use connector_aws::rate_limit::DynamoRateLimiter;
use connector_aws::token_cache::DynamoTokenCache;
use connector_sage::provider::ApiError;
use connector_sage::{ProviderApi, ProviderConfig, ProviderError, SageIdConfig, TokenProvider};
use serde_json::{Map, Value, json};

use crate::config::{Config, require, resolve_secret};
use crate::terminal::{confirm, progress};
use crate::{OpsError, Result, count, print_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncOp {
    /// Register new banks (`toCreate`).
    Create,
    /// Change registered banks (`toUpdate`).
    Update,
    /// Remove registered banks (`toRemove`).
    Remove,
}

impl SyncOp {
    fn name(self) -> &'static str {
        match self {
            SyncOp::Create => "create",
            SyncOp::Update => "update",
            SyncOp::Remove => "remove",
        }
    }

    /// The request's list.
    fn list_key(self) -> &'static str {
        match self {
            SyncOp::Create => "toCreate",
            SyncOp::Update => "toUpdate",
            SyncOp::Remove => "toRemove",
        }
    }

    /// The answer's list.
    fn answer_key(self) -> &'static str {
        match self {
            SyncOp::Create => "created",
            SyncOp::Update => "updated",
            SyncOp::Remove => "removed",
        }
    }

    fn allowed(self) -> &'static [&'static str] {
        match self {
            SyncOp::Create => &[
                "name",
                "countryCode",
                "url",
                "supportiframe",
                "externalRef",
                "callbackURLs",
            ],
            SyncOp::Update => &["principalId", "externalRef", "name", "callbackURLs"],
            SyncOp::Remove => &["principalId", "externalRef"],
        }
    }
}

const CALLBACKS: [&str; 4] = ["auth", "reAuth", "notification", "availableAccounts"];

const ABOUT: &str = "Register, update or remove the provider's banks (Bank Sync, POST /v1/banks)";
const LONG: &str = "\
Register, update or remove the provider's banks with Banking Service's Bank Sync
(POST /v1/banks). The file is a JSON array of banks (or an object {\"banks\": [...]}), each in
the shape of the operation's list in the Bank Sync body:

  create  {\"name\", \"countryCode\" (2 or 3 letters), \"externalRef\" (your own bank id),
           \"callbackURLs\": {\"auth\", \"reAuth\", \"notification\", \"availableAccounts\"},
           optional \"url\" and \"supportiframe\" (boolean)}
  update  {\"principalId\" (Banking Service's bankId), and any of \"externalRef\", \"name\",
           \"callbackURLs\" (all four)}
  remove  {\"principalId\", optional \"externalRef\"}

The callback URLs are the stack's ApiUrl output followed by /auth, /authrefresh, /notification
and /availableaccounts. The whole file is checked first; every problem is reported with its
place (e.g. banks[2].callbackURLs.reAuth) and nothing is sent while any remains (exit 2).
--dry-run stops after the check and shows what would be sent.

Banks go in requests of --batch-size; each request is all-or-nothing at Banking Service. The
result is printed per bank — for create the principalId to record (it becomes the bankId).
update and remove ask for confirmation unless --yes. A create is not retried after an
unanswered request (it could register the bank twice): find out whether Banking Service
registered those banks before sending them again.

Needs BANKING_SERVICE_URL, SAGE_ID_TOKEN_URL, SAGE_ID_AUDIENCE, SAGE_ID_CLIENT_ID,
SAGE_ID_CLIENT_SECRET, PROVIDER_API_KEY (secrets as values or ARNs) and TABLE_NAME: the calls
share the functions' rate limit and Sage ID token.

Example: connector-ops bank-sync create --file banks.json --dry-run
         connector-ops bank-sync create --file banks.json --yes --json";

#[derive(Debug, Args)]
#[command(about = ABOUT, long_about = LONG)]
pub struct BankSyncArgs {
    /// What to do with the file's banks.
    #[arg(value_enum)]
    pub operation: SyncOp,
    /// JSON file of banks.
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// Check the file and show what would be sent; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (needed without a terminal for update and remove).
    #[arg(long)]
    pub yes: bool,
    /// Banks per request.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub batch_size: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Call with the Provider API settings BANKS_CONFIG gives this bankId (its region, client
    /// and API key) instead of the defaults: for banks registered by another Sage client.
    #[arg(long, value_name = "BANK_ID")]
    pub credentials_of: Option<uuid::Uuid>,
}

/// The banks of a file: a JSON array, or `{"banks": [...]}`.
pub fn load_banks(text: &str) -> Result<Vec<Value>, Vec<String>> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        vec![format!(
            "not JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        )]
    })?;
    let list = match value {
        Value::Array(items) => items,
        Value::Object(mut o) if o.contains_key("banks") => match o.remove("banks") {
            Some(Value::Array(items)) => items,
            _ => return Err(vec!["`banks` must be an array".into()]),
        },
        _ => {
            return Err(vec![
                "the file must hold a JSON array of banks, or an object {\"banks\": [...]}".into(),
            ]);
        }
    };
    if list.is_empty() {
        return Err(vec!["the file holds no banks".into()]);
    }
    Ok(list)
}

struct Check<'a> {
    errors: &'a mut Vec<String>,
    at: String,
}

impl Check<'_> {
    fn fail(&mut self, field: &str, message: impl std::fmt::Display) {
        let sep = if field.is_empty() { "" } else { "." };
        self.errors
            .push(format!("{}{sep}{field}: {message}", self.at));
    }

    fn string(
        &mut self,
        o: &Map<String, Value>,
        key: &str,
        required: bool,
        max: usize,
    ) -> Option<String> {
        match o.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.fail(key, "is required");
                }
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.fail(key, "must not be empty");
                None
            }
            Some(Value::String(s)) if s.chars().count() > max => {
                self.fail(key, format!("is longer than {max} characters"));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.fail(key, format!("must be a string, got {}", kind(other)));
                None
            }
        }
    }

    fn url(&mut self, field: &str, v: &Value) {
        let Some(s) = v.as_str() else {
            self.fail(field, format!("must be a URL string, got {}", kind(v)));
            return;
        };
        match reqwest::Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => self.fail(field, format!("must be an absolute http(s) URL, got {s:?}")),
        }
    }

    fn callbacks(&mut self, v: &Value) {
        let Some(o) = v.as_object() else {
            self.fail(
                "callbackURLs",
                format!("must be an object, got {}", kind(v)),
            );
            return;
        };
        for key in CALLBACKS {
            match o.get(key) {
                None | Some(Value::Null) => {
                    self.fail(&format!("callbackURLs.{key}"), "is required")
                }
                Some(u) => self.url(&format!("callbackURLs.{key}"), u),
            }
        }
        for key in o.keys().filter(|k| !CALLBACKS.contains(&k.as_str())) {
            self.fail(
                &format!("callbackURLs.{key}"),
                format!("unknown field (expected {})", CALLBACKS.join(", ")),
            );
        }
    }

    fn principal_id(&mut self, o: &Map<String, Value>) -> Option<uuid::Uuid> {
        let s = self.string(o, "principalId", true, 64)?;
        match uuid::Uuid::parse_str(&s) {
            Ok(id) => Some(id),
            Err(_) => {
                self.fail("principalId", format!("must be a UUID, got {s:?}"));
                None
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `banks[3] ("Example Bank")`.
fn label(i: usize, bank: &Value) -> String {
    match bank.get("name").and_then(Value::as_str) {
        Some(name) => format!("banks[{i}] ({name:?})"),
        None => match bank.get("principalId").and_then(Value::as_str) {
            Some(id) => format!("banks[{i}] ({id})"),
            None => format!("banks[{i}]"),
        },
    }
}

/// Every problem of the file for `op`, each with its place; empty when it can be sent.
pub fn validate(op: SyncOp, banks: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut refs = HashSet::new();
    let mut ids = HashSet::new();
    for (i, bank) in banks.iter().enumerate() {
        let mut c = Check {
            errors: &mut errors,
            at: label(i, bank),
        };
        let Some(o) = bank.as_object() else {
            c.fail("", format!("must be an object, got {}", kind(bank)));
            continue;
        };
        for key in o.keys().filter(|k| !op.allowed().contains(&k.as_str())) {
            c.fail(
                key,
                format!(
                    "unknown field for {} (allowed: {})",
                    op.name(),
                    op.allowed().join(", ")
                ),
            );
        }
        match op {
            SyncOp::Create => {
                c.string(o, "name", true, 128);
                if let Some(cc) = c.string(o, "countryCode", true, 3)
                    && !(cc.len() >= 2 && cc.chars().all(|ch| ch.is_ascii_alphabetic()))
                {
                    c.fail("countryCode", format!("must be 2 or 3 letters, got {cc:?}"));
                }
                if let Some(u) = o.get("url").filter(|u| !u.is_null()) {
                    c.url("url", u);
                }
                if let Some(f) = o.get("supportiframe").filter(|f| !f.is_boolean()) {
                    c.fail(
                        "supportiframe",
                        format!("must be true or false, got {}", kind(f)),
                    );
                }
                if let Some(r) = c.string(o, "externalRef", true, 255)
                    && !refs.insert(r.clone())
                {
                    c.fail("externalRef", format!("{r:?} appears twice in the file"));
                }
                match o.get("callbackURLs") {
                    None | Some(Value::Null) => c.fail("callbackURLs", "is required"),
                    Some(v) => c.callbacks(v),
                }
            }
            SyncOp::Update | SyncOp::Remove => {
                if let Some(id) = c.principal_id(o)
                    && !ids.insert(id)
                {
                    c.fail("principalId", format!("{id} appears twice in the file"));
                }
                c.string(o, "externalRef", false, 255);
                if op == SyncOp::Update {
                    c.string(o, "name", false, 128);
                    if let Some(v) = o.get("callbackURLs").filter(|v| !v.is_null()) {
                        c.callbacks(v);
                    }
                    if !["externalRef", "name", "callbackURLs"]
                        .iter()
                        .any(|k| o.get(*k).is_some_and(|v| !v.is_null()))
                    {
                        c.fail(
                            "",
                            "nothing to update: give externalRef, name or callbackURLs",
                        );
                    }
                }
            }
        }
    }
    errors
}

/// A Provider API error detail target (`BankRequest.data.toCreate[2].name`) in terms of the
/// file (`banks[12].name`), given the request's first bank.
fn file_target(target: &str, op: SyncOp, offset: usize) -> String {
    let marker = format!("{}[", op.list_key());
    if let Some(start) = target.find(&marker) {
        let rest = &target[start + marker.len()..];
        if let Some(end) = rest.find(']')
            && let Ok(n) = rest[..end].parse::<usize>()
        {
            return format!("banks[{}]{}", offset + n, &rest[end + 1..]);
        }
    }
    target.to_string()
}

fn describe_api_error(e: &ApiError, op: SyncOp, offset: usize) -> Vec<String> {
    let mut out = vec![format!(
        "{}: {}",
        e.code.as_deref().unwrap_or("error"),
        e.message.as_deref().unwrap_or("")
    )];
    for d in e.detail.iter().flatten() {
        out.push(format!(
            "{}: {} ({})",
            d.target
                .as_deref()
                .map(|t| file_target(t, op, offset))
                .unwrap_or_else(|| "-".into()),
            d.message.as_deref().unwrap_or(""),
            d.code.as_deref().unwrap_or("")
        ));
    }
    out
}

async fn provider(config: &Config, bank: Option<uuid::Uuid>) -> Result<ProviderApi> {
    let default = crate::banks_config::default_provider(config)?;
    let rps = config.rate_limit_rps()?;
    let (sdk, table) = config.sdk_and_table().await?;
    let (settings, label) = match bank {
        None => (default, String::new()),
        Some(bank) => {
            let banks = crate::banks_config::load(config, &sdk).await?;
            let Some(o) = banks.banks.get(&bank) else {
                return Err(OpsError::Usage(format!(
                    "--credentials-of {bank}: BANKS_CONFIG has no settings for this bank"
                )));
            };
            let s = o
                .provider(&default, config.connector_environment.as_deref())
                .map_err(|e| OpsError::Usage(format!("BANKS_CONFIG: bank {bank}: {e}")))?;
            (s, format!("BANKS_CONFIG (bank {bank}) "))
        }
    };
    let client_secret = resolve_secret(
        &Some(settings.client_secret.reference().to_string()),
        &format!("{label}SAGE_ID_CLIENT_SECRET"),
        &sdk,
    )
    .await?;
    let api_key = resolve_secret(
        &Some(settings.api_key.reference().to_string()),
        &format!("{label}PROVIDER_API_KEY"),
        &sdk,
    )
    .await?;
    let (base_url, token_url, audience, client_id) = (
        settings.base_url.as_str(),
        settings.token_url.as_str(),
        settings.audience.as_str(),
        settings.client_id.as_str(),
    );
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("connector-ops/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))?;
    // The same shared token and rate limit as the functions: the token is shared per issuer +
    // client + audience, the Provider API's limit is per API key, whoever calls.
    let sage_id = SageIdConfig {
        token_url: token_url.to_string(),
        client_id: client_id.to_string(),
        client_secret,
        audience: audience.to_string(),
        refresh_margin: Duration::from_secs(300),
        style: connector_sage::TokenStyle::Form,
    };
    let cache = Arc::new(DynamoTokenCache::new(table.clone(), &sage_id.cache_scope()));
    let tokens = Arc::new(TokenProvider::new(http.clone(), sage_id, Some(cache)));
    let limiter = Arc::new(DynamoRateLimiter::new(
        table,
        connector_sage::rate_scope(&api_key),
        rps,
    ));
    Ok(ProviderApi::new(
        http,
        ProviderConfig {
            base_url: base_url.to_string(),
            api_key,
            max_rate_wait: Duration::from_secs(20),
        },
        tokens,
        limiter,
    ))
}

/// One bank's outcome.
fn result_row(op: SyncOp, index: usize, bank: &Value, answer: Option<&Value>) -> Value {
    let outcome = match answer {
        Some(_) => op.answer_key(),
        None => "notConfirmed",
    };
    json!({
        "index": index,
        "name": bank.get("name").or_else(|| answer.and_then(|a| a.get("name"))),
        "externalRef": bank.get("externalRef").or_else(|| answer.and_then(|a| a.get("externalRef"))),
        "principalId": bank.get("principalId").or_else(|| answer.and_then(|a| a.get("principalId"))),
        "outcome": outcome,
    })
}

/// Matches the answer's list to the request's banks: creates by externalRef (else position),
/// updates and removals by principalId.
fn match_answers(op: SyncOp, offset: usize, chunk: &[Value], data: &Value) -> Vec<Value> {
    let answers: Vec<Value> = data
        .get(op.answer_key())
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    chunk
        .iter()
        .enumerate()
        .map(|(i, bank)| {
            let found = match op {
                SyncOp::Create => answers
                    .iter()
                    .find(|a| {
                        a.get("externalRef").is_some()
                            && a.get("externalRef") == bank.get("externalRef")
                    })
                    .or_else(|| answers.get(i)),
                SyncOp::Update | SyncOp::Remove => answers.iter().find(|a| {
                    a.get("principalId")
                        .and_then(Value::as_str)
                        .map(str::to_ascii_lowercase)
                        == bank
                            .get("principalId")
                            .and_then(Value::as_str)
                            .map(str::to_ascii_lowercase)
                }),
            };
            result_row(op, offset + i, bank, found)
        })
        .collect()
}

fn print_row(r: &Value) {
    let mut about = Vec::new();
    if let Some(name) = r["name"].as_str() {
        about.push(format!("{name:?}"));
    }
    if let Some(e) = r["externalRef"].as_str() {
        about.push(format!("externalRef {e}"));
    }
    println!(
        "banks[{}] ({}): {}, principalId {}",
        r["index"],
        about.join(", "),
        r["outcome"].as_str().unwrap_or("?"),
        r["principalId"].as_str().unwrap_or("-")
    );
}

pub async fn bank_sync(config: &Config, args: BankSyncArgs) -> Result<()> {
    let op = args.operation;
    if args.batch_size == 0 {
        return Err(OpsError::Usage("--batch-size must be at least 1".into()));
    }
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| OpsError::Usage(format!("cannot read --file {}: {e}", args.file.display())))?;
    let banks = load_banks(&text).and_then(|b| {
        let errors = validate(op, &b);
        if errors.is_empty() {
            Ok(b)
        } else {
            Err(errors)
        }
    });
    let banks = match banks {
        Ok(b) => b,
        Err(errors) => {
            if args.json {
                print_json(&json!({"operation": op.name(), "valid": false, "errors": errors}))?;
            } else {
                eprintln!("{} is not a valid {} file:", args.file.display(), op.name());
                for e in &errors {
                    eprintln!("  {e}");
                }
            }
            return Err(OpsError::Usage(format!(
                "{} in {}; nothing sent",
                count(errors.len() as u64, "problem", "problems"),
                args.file.display()
            )));
        }
    };
    let requests: Vec<Value> = banks
        .chunks(args.batch_size)
        .map(|chunk| json!({"data": {op.list_key(): chunk}}))
        .collect();

    if args.dry_run {
        if args.json {
            return print_json(&json!({
                "operation": op.name(),
                "valid": true,
                "dryRun": true,
                "banks": banks.len(),
                "requests": requests,
            }));
        }
        println!(
            "{} is valid: would {} {} in {} to POST /v1/banks; nothing sent.",
            args.file.display(),
            op.name(),
            count(banks.len() as u64, "bank", "banks"),
            count(requests.len() as u64, "request", "requests")
        );
        for (i, b) in banks.iter().enumerate() {
            println!("  {}", label(i, b));
        }
        return Ok(());
    }

    let provider = provider(config, args.credentials_of).await?;
    let base = require(&config.banking_service_url, "BANKING_SERVICE_URL")?;
    if op != SyncOp::Create {
        confirm(
            &format!(
                "{} {} at {base}",
                op.name(),
                count(banks.len() as u64, "bank", "banks")
            ),
            args.yes,
        )?;
    }
    let bar = progress(banks.len() as u64, &format!("bank-sync {}", op.name()));
    let mut rows: Vec<Value> = Vec::new();
    let mut failure: Option<(usize, Vec<String>)> = None;
    for (n, (chunk, request)) in banks.chunks(args.batch_size).zip(&requests).enumerate() {
        let offset = n * args.batch_size;
        let mut waited = 0;
        let answer = loop {
            match provider.sync_banks(request).await {
                // Not processed: safe to send again after the wait Banking Service asked for.
                Err(ProviderError::RateLimited { retry_after }) if waited < 3 => {
                    waited += 1;
                    tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1))).await;
                }
                other => break other,
            }
        };
        match answer {
            Ok(data) => {
                rows.extend(match_answers(op, offset, chunk, &data));
                bar.inc(chunk.len() as u64);
            }
            Err(e) => {
                let (head, api) = match &e {
                    ProviderError::Invalid(api) => (
                        "Banking Service refused the request as invalid (400)",
                        Some(api),
                    ),
                    ProviderError::NotFound(api) => (
                        "Banking Service does not know a bank of the request (404)",
                        Some(api),
                    ),
                    ProviderError::Conflict(api) => {
                        ("Banking Service answered 409 (conflict)", Some(api))
                    }
                    _ => ("", None),
                };
                let lines = match api {
                    Some(api) => {
                        let mut l = vec![head.to_string()];
                        l.extend(describe_api_error(api, op, offset));
                        l
                    }
                    None => vec![e.to_string()],
                };
                failure = Some((offset, lines));
                break;
            }
        }
    }
    bar.finish_and_clear();
    let not_sent: Vec<usize> = match &failure {
        Some((offset, _)) => (*offset..banks.len()).collect(),
        None => Vec::new(),
    };
    if args.json {
        print_json(&json!({
            "operation": op.name(),
            "results": rows,
            "notDone": not_sent,
            "error": failure.as_ref().map(|(_, l)| l.clone()),
        }))?;
    } else {
        for r in &rows {
            print_row(r);
        }
        if let Some((offset, lines)) = &failure {
            let last = banks.len() - 1;
            let range = if *offset == last {
                format!("banks[{offset}]")
            } else {
                format!("banks[{offset}] to banks[{last}]")
            };
            println!("{range}: not done (the request holding banks[{offset}] failed)");
            for l in lines {
                println!("  {l}");
            }
        }
    }
    let unconfirmed = rows
        .iter()
        .filter(|r| r["outcome"] == json!("notConfirmed"))
        .count();
    match failure {
        Some((offset, lines)) => Err(OpsError::Failed(anyhow::anyhow!(
            "Bank Sync failed at banks[{offset}]: {}; {} done before it",
            lines.join("; "),
            count(rows.len() as u64, "bank", "banks")
        ))),
        None if unconfirmed > 0 => Err(OpsError::Failed(anyhow::anyhow!(
            "Banking Service did not confirm {unconfirmed} banks"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_bank(r: &str) -> Value {
        json!({
            "name": "Example Bank", "countryCode": "GB", "url": "https://bank.example",
            "supportiframe": true, "externalRef": r,
            "callbackURLs": {
                "auth": "https://c.example/auth", "reAuth": "https://c.example/authrefresh",
                "notification": "https://c.example/notification",
                "availableAccounts": "https://c.example/availableaccounts"
            }
        })
    }

    #[test]
    fn a_good_file_passes() {
        let banks = load_banks(&json!([good_bank("a"), good_bank("b")]).to_string()).unwrap();
        assert!(validate(SyncOp::Create, &banks).is_empty());
        let wrapped = load_banks(&json!({"banks": [good_bank("a")]}).to_string()).unwrap();
        assert_eq!(wrapped.len(), 1);
    }

    #[test]
    fn each_problem_is_reported_at_its_place() {
        let mut b = good_bank("b");
        b["countryCode"] = json!("G1");
        b["callbackURLs"]["reAuth"] = json!("/authrefresh");
        b["callbackUrls"] = json!({});
        let banks = vec![good_bank("a"), b, json!("x"), good_bank("a")];
        let errors = validate(SyncOp::Create, &banks);
        let joined = errors.join("\n");
        assert!(
            joined.contains("banks[1] (\"Example Bank\").countryCode: must be 2 or 3 letters"),
            "{joined}"
        );
        assert!(
            joined.contains("banks[1] (\"Example Bank\").callbackURLs.reAuth: must be an absolute"),
            "{joined}"
        );
        assert!(
            joined.contains("banks[1] (\"Example Bank\").callbackUrls: unknown field"),
            "{joined}"
        );
        assert!(joined.contains("banks[2]: must be an object"), "{joined}");
        assert!(
            joined.contains("banks[3] (\"Example Bank\").externalRef: \"a\" appears twice"),
            "{joined}"
        );
        assert_eq!(errors.len(), 5, "{joined}");
    }

    #[test]
    fn updates_and_removals_need_a_principal_id() {
        let banks = vec![
            json!({"principalId": "not-a-uuid", "name": "X"}),
            json!({"principalId": "6269cfb9-922c-4023-833d-97586646fad1"}),
        ];
        let errors = validate(SyncOp::Update, &banks);
        assert!(
            errors[0].contains("banks[0] (\"X\").principalId: must be a UUID"),
            "{errors:?}"
        );
        assert!(errors[1].contains("nothing to update"), "{errors:?}");
        assert!(validate(SyncOp::Remove, &banks[1..]).is_empty());
    }

    #[test]
    fn api_targets_map_back_to_the_file() {
        assert_eq!(
            file_target(
                "BankRequest.data.toCreate[2].callbackURLs.auth",
                SyncOp::Create,
                10
            ),
            "banks[12].callbackURLs.auth"
        );
        assert_eq!(
            file_target("BankRequest.data", SyncOp::Create, 10),
            "BankRequest.data"
        );
    }
}
