//! `sandbox-bench`: sustained Provider API throughput of the sandbox on loopback (server pinned to
//! one tokio worker thread, rate limiting and statement delays off), the time to process a
//! 1,000-transaction statement, the same throughput on the Payments Out routes
//! (docs/payments-out-sandbox.md §9), and peak RSS. Targets from sandbox spec §13.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use sandbox::client::SandboxClient;
use sandbox::model::CreateAccountRequest;
use sandbox::{Sandbox, SandboxConfig};
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Benchmark the sandbox's Provider API")]
struct Args {
    /// Seconds of sustained load.
    #[arg(long, default_value_t = 5)]
    duration_s: u64,
    /// Concurrent client connections (one account each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

const API_KEY: &str = "local-api-key";
const TARGET_RPS: f64 = 2000.0;
const TARGET_1000_MS: f64 = 50.0;

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn statement(account: Uuid, bank: Uuid, n: usize, seq: u64) -> String {
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        items.push(format!(
            r#"{{"uniqueId":"b{seq}-{i}","bankAccountId":"{account}","transactionAmount":-1.25,"transactionType":"POS","transactionStatus":"posted","datePosted":"2025-03-03T09:12:44.000Z","description":"CARD PAYMENT COFFEE CO","payee":{{"payeeDescription":"COFFEE CO","country":"GBR"}}}}"#
        ));
    }
    let debit = rust_decimal::Decimal::new(-125, 2) * rust_decimal::Decimal::from(n as u64);
    format!(
        r#"{{"data":{{"principalId":"{account}","bankId":"{bank}","expected":{{"transactionDetailsCount":{n},"accountDetailsCount":1,"transactionCreditSum":0,"transactionDebitSum":{debit}}},"accountDetails":[{{"bankAccountId":"{account}","status":"active","ledgerBalance":100.00,"ledgerBalanceDate":"2025-03-04T00:00:00.000Z"}}],"transactionDetails":[{}]}}}}"#,
        items.join(",")
    )
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    // The server gets its own OS thread with a single-threaded runtime: one core.
    let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        rt.block_on(async move {
            let cfg = SandboxConfig {
                ratelimit_rate_per_s: 0.0,
                payments_out: sandbox::payments_out::PoConfig {
                    rate_per_s: 0.0,
                    ..sandbox::payments_out::PoConfig::default()
                },
                statement_queue_delay_ms: 0,
                statement_processing_delay_ms: 0,
                statement_per_txn_us: 0,
                ..SandboxConfig::default()
            };
            let addr = "127.0.0.1:0"
                .parse()
                .map_err(|e: std::net::AddrParseError| e.to_string());
            let sb = match addr {
                Ok(a) => Sandbox::start(a, cfg).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match sb {
                Ok(sb) => {
                    let _ = tx.send(Ok(sb.base_url()));
                    let _ = stop_rx.await;
                    sb.shutdown().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    let base = rx.recv().map_err(|e| e.to_string())??;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(run(base, args));
    let _ = stop_tx.send(());
    let _ = server.join();
    result
}

async fn run(base: String, args: Args) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()
        .map_err(|e| e.to_string())?;
    let client = SandboxClient::new(base.clone());
    let tok: serde_json::Value = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-provider"),
            ("client_secret", "local-secret"),
            ("audience", "sfdsbanking/sfdsBankingProvider-Pre"),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let token = tok["access_token"].as_str().ok_or("no token")?.to_string();
    let cb = "http://127.0.0.1:9";
    let bank_body = serde_json::json!({"data": {"toCreate": [{"name": "Bench", "countryCode": "GB", "externalRef": "bench",
        "callbackURLs": {"auth": cb, "reAuth": cb, "notification": cb, "availableAccounts": cb}}]}});
    let r: serde_json::Value = http
        .post(format!("{base}/v1/banks"))
        .header("x-api-key", API_KEY)
        .bearer_auth(&token)
        .json(&bank_body)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let bank = r["data"]["created"][0]["principalId"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or("bank sync failed")?;
    let mut accounts = Vec::new();
    for i in 0..=args.concurrency {
        let a = client
            .create_account(&CreateAccountRequest {
                notify: Some(false),
                ..CreateAccountRequest::new(bank, format!("bench-{i}"), "2025-01-01")
            })
            .await
            .map_err(|e| e.to_string())?;
        accounts.push(a.account.bank_account_id);
    }

    // 1) A 1,000-transaction statement: POST (sync validation) until succeeded.
    let big_account = accounts.pop().ok_or("no account")?;
    let body = statement(big_account, bank, 1000, 0);
    let t0 = Instant::now();
    let r: serde_json::Value = http
        .post(format!("{base}/v1/statements"))
        .header("x-api-key", API_KEY)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let post_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let id = r["data"]["_id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or("statement rejected")?;
    let view = client
        .wait_statement_terminal(id, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let e2e_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let commit_ms = view.processing_us.unwrap_or(0) as f64 / 1000.0;

    // 2) Sustained mixed load: per connection, POST a statement then GET it twice.
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (w, account) in accounts.into_iter().enumerate() {
        let (http, base, token, done, errors) = (
            http.clone(),
            base.clone(),
            token.clone(),
            done.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let body = statement(account, bank, 1, (w as u64) << 32 | seq);
                let r = http
                    .post(format!("{base}/v1/statements"))
                    .header("x-api-key", API_KEY)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let id = match r {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        done.fetch_add(1, Ordering::Relaxed);
                        v["data"]["_id"].as_str().map(str::to_string)
                    }
                    Ok(r) => {
                        // 409 (previous statement still in flight) is a valid answer too.
                        let ok = r.status().as_u16() == 409;
                        let _ = r.bytes().await;
                        if ok {
                            done.fetch_add(1, Ordering::Relaxed)
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed)
                        };
                        None
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                };
                let Some(id) = id else { continue };
                for _ in 0..2 {
                    let r = http
                        .get(format!("{base}/v1/statements/{id}"))
                        .header("x-api-key", API_KEY)
                        .bearer_auth(&token)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let rps = n as f64 / secs;
    let metrics = client.metrics().await.map_err(|e| e.to_string())?;
    let p = |route: &str| {
        metrics
            .latency
            .iter()
            .find(|l| l.route == route)
            .map(|l| (l.p50_us, l.p99_us))
            .unwrap_or((0, 0))
    };
    let (post50, post99) = p("POST /v1/statements");
    let (get50, get99) = p("GET /v1/statements/{statementId}");

    println!(
        "sandbox-bench (server: 1 tokio worker thread; client: 1 worker, {} connections)",
        args.concurrency
    );
    println!(
        "provider_api_rps: {rps:.0} over {secs:.1}s ({n} answered, {} errors); target {TARGET_RPS:.0} -> ratio {:.2}",
        errors.load(Ordering::Relaxed),
        rps / TARGET_RPS
    );
    println!(
        "server latency POST /v1/statements p50 {post50} us p99 {post99} us; GET p50 {get50} us p99 {get99} us"
    );
    println!(
        "statement_1000_txn: {e2e_ms:.1} ms POST-to-succeeded (POST answered in {post_ms:.1} ms, commit {commit_ms:.2} ms); target {TARGET_1000_MS:.0} ms -> ratio {:.2}",
        e2e_ms / TARGET_1000_MS
    );
    payments_out(&http, &base, &args).await?;
    match vm_hwm_kib() {
        Some(k) => println!(
            "peak_rss: {:.1} MiB (VmHWM, server and client in one process)",
            k as f64 / 1024.0
        ),
        None => println!("peak_rss: unavailable"),
    }
    Ok(())
}

/// Sustained load on the Payments Out routes: per connection, GET its batch, PATCH it (the same
/// statuses again: a no-op after the first), and post a provider message.
async fn payments_out(http: &reqwest::Client, base: &str, args: &Args) -> Result<(), String> {
    use sandbox::payments_out::client::PoClient;
    const PO_KEY: &str = "local-pos-api-key";
    let provider = "7baf4c0d-ce95-4823-bde2-695a7c528ce9";
    let tok: serde_json::Value = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-provider"),
            ("client_secret", "local-secret"),
            ("audience", "payments-out/local-provider"),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let token = tok["access_token"].as_str().ok_or("no token")?.to_string();
    let po = PoClient::new(base);
    let org = po.create_organisation("Bench").await?;
    let sub = po
        .create_subscription(
            org,
            Uuid::parse_str(provider).map_err(|e| e.to_string())?,
            None,
        )
        .await?;
    let sub = sub["data"]["subscriptionId"]
        .as_str()
        .ok_or("no subscription")?
        .to_string();
    for status in ["AwaitingAuthorisation", "Authorised"] {
        let r = http
            .patch(format!("{base}/api-provider-v1/subscriptions/{sub}"))
            .header("x-api-key", PO_KEY)
            .bearer_auth(&token)
            .json(&serde_json::json!({ "data": { "status": status } }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().as_u16() != 204 {
            return Err(format!("subscription PATCH: {}", r.status()));
        }
    }
    let sub_id = Uuid::parse_str(&sub).map_err(|e| e.to_string())?;
    let mut batches = Vec::new();
    for _ in 0..args.concurrency {
        let data = sandbox::payments_out::cli::demo_batch(sub_id, 10, "12.50", "dac_bench");
        let a = po.submit_batch(&data, None, false).await?;
        let b = a.body["data"]["batchId"]
            .as_str()
            .ok_or("no batch")?
            .to_string();
        let p = a.body["data"]["payments"][0]["paymentId"]
            .as_str()
            .ok_or("no payment")?
            .to_string();
        batches.push((b, p));
    }
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (batch, payment) in batches {
        let (http, base, token, done, errors, sub) = (
            http.clone(),
            base.to_string(),
            token.clone(),
            done.clone(),
            errors.clone(),
            sub.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let patch = serde_json::json!({ "data": { "defaultStatus": "Processing",
                "payments": [{ "paymentId": payment, "status": "Processing", "extendedStatus": "Submitted" }] } })
            .to_string();
            let msg = serde_json::json!({ "subscriptionId": sub, "correlationId": "bench",
                "data": { "debtor": { "debtorAccountId": "dac_bench", "status": "Active" } } })
            .to_string();
            while Instant::now() < deadline {
                let reqs = [
                    http.get(format!("{base}/api-provider-v1/batchpayments/{batch}")),
                    http.patch(format!("{base}/api-provider-v1/batchpayments/{batch}"))
                        .header("content-type", "application/json")
                        .body(patch.clone()),
                    http.post(format!("{base}/api-provider-msg-v1/debtoraccountputs"))
                        .header("content-type", "application/json")
                        .body(msg.clone()),
                ];
                for r in reqs {
                    let r = r.header("x-api-key", PO_KEY).bearer_auth(&token).send().await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let rps = n as f64 / secs;
    let violations = po.violations().await?;
    println!(
        "payments_out_rps: {rps:.0} over {secs:.1}s ({n} answered, {} errors; GET batch of 10 payments, PATCH batch, POST message); target {TARGET_RPS:.0} -> ratio {:.2}; violations {}",
        errors.load(Ordering::Relaxed),
        rps / TARGET_RPS,
        violations.as_array().map_or(0, Vec::len)
    );
    Ok(())
}
