//! The notification path, measured two ways (issue 7, item 2):
//!
//! - `micro`: what `/notification` does before it touches AWS — verify the Sage ID JWT against
//!   the cached JWKS, check the custom header, parse and validate the body — per request on one
//!   core, beside the floor of that work: one bare RS256 signature check of the same token.
//! - `load`: `/notification` on the local stack at increasing open-loop rates, with latency
//!   percentiles and errors per rate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use connector_sage::{NotificationVerifier, Secret, VerifierConfig};
use http::{HeaderMap, HeaderValue};
use sandbox::{Sandbox, SandboxConfig, TokenVariant};

use crate::LocalStack;

/// The body Banking Service sends when a product links an account (spec §4.5).
pub fn notification_body(resource_type: &str, id: uuid::Uuid) -> String {
    serde_json::json!({
        "type": "resourceCreated",
        "resource": {"id": id, "type": resource_type, "url": "NA"},
        "additionalData": {
            "externalId": "acc_5QH7K2",
            "requestedStartDate": "2025-01-01T00:00:00.000Z",
            "bankId": "5f775565-62d9-4d03-aca0-5365ad75ac07"
        }
    })
    .to_string()
}

pub struct MicroReport {
    pub iterations: u64,
    /// Median over batches, microseconds per notification.
    pub full_us: f64,
    /// The same for a bare RS256 verification of the same token (no claims, no body).
    pub signature_only_us: f64,
}

/// Median of `batches` timings of `per_batch` calls of `f`, in microseconds per call.
async fn median_us<F, Fut>(batches: usize, per_batch: u64, mut f: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut samples = Vec::with_capacity(batches);
    for _ in 0..batches {
        let started = Instant::now();
        for _ in 0..per_batch {
            f().await?;
        }
        samples.push(started.elapsed().as_secs_f64() * 1e6 / per_batch as f64);
    }
    Ok(crate::stats::quantile(samples, 0.5))
}

pub async fn micro(iterations: u64) -> Result<MicroReport> {
    let config = SandboxConfig {
        custom_header: Some(sandbox::CustomHeader {
            name: "X-Connector-Key".into(),
            value: "bench-header-value".into(),
        }),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0)), config.clone())
        .await
        .map_err(|e| anyhow!("starting the sandbox: {e}"))?;
    let token = sandbox
        .client()
        .mint_notification_token(TokenVariant::Valid)
        .await
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("no token"))?;
    let verifier = NotificationVerifier::new(
        reqwest::Client::new(),
        VerifierConfig {
            issuer: sandbox.issuer(),
            audience: config.notification_audience.clone(),
            required_scope: config.notification_scope.clone(),
            allowed_azp: Vec::new(),
            leeway: Duration::from_secs(60),
            jwks_ttl: Duration::from_secs(3600),
            custom_header: Some(("X-Connector-Key".into(), Secret::new("bench-header-value"))),
        },
    )
    .map_err(|e| anyhow!(e))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    headers.insert(
        "x-connector-key",
        HeaderValue::from_static("bench-header-value"),
    );
    let body = notification_body("bankAccount", uuid::Uuid::new_v4());
    // The first call fetches the JWKS; later ones use the cache, as a warm Lambda does.
    verifier
        .verify(&headers)
        .await
        .map_err(|e| anyhow!("the token does not verify: {e}"))?;

    let full_us = median_us(7, iterations / 7 + 1, || async {
        verifier
            .verify(&headers)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        connector_domain::notification::parse_notification(body.as_bytes())
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
    .await?;

    // The floor: one RS256 check of the same token with the same key, nothing else.
    let jwks: jsonwebtoken::jwk::JwkSet =
        reqwest::get(format!("{}.well-known/jwks.json", sandbox.issuer()))
            .await?
            .json()
            .await
            .context("the JWKS")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.keys.first().context("a key")?)?;
    let (message, signature) = token.rsplit_once('.').ok_or_else(|| anyhow!("not a JWT"))?;
    let signature_only_us = median_us(7, iterations / 7 + 1, || async {
        let ok = jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &key,
            jsonwebtoken::Algorithm::RS256,
        )?;
        if !ok {
            return Err(anyhow!("signature"));
        }
        Ok(())
    })
    .await?;
    sandbox.shutdown().await;
    Ok(MicroReport {
        iterations,
        full_us,
        signature_only_us,
    })
}

pub fn print_micro(r: &MicroReport) {
    println!(
        "Notification validation on one core ({} iterations, median of 7 batches)",
        r.iterations
    );
    println!(
        "  JWT (cached JWKS) + custom header + body  {:>8.1} µs = {:.2} x the 50 µs target",
        r.full_us,
        r.full_us / 50.0
    );
    println!(
        "  bare RS256 signature check (the floor)    {:>8.1} µs; validation costs {:.2} x the floor",
        r.signature_only_us,
        r.full_us / r.signature_only_us
    );
}

pub struct LoadStep {
    pub rate: u32,
    pub sent: usize,
    pub ok: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub achieved: f64,
}

/// Open-loop load: `rate` requests per second for `seconds`, each a new `authorisation` created
/// notification (the worker's lightest action) with a valid token and a unique id.
pub async fn load(stack: &LocalStack, rates: &[u32], seconds: u64) -> Result<Vec<LoadStep>> {
    let client = stack.sandbox.client();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(256)
        .build()?;
    let url = format!("{}/notification", stack.api_url);
    let header = stack.sandbox.config().custom_header.clone();
    let mut steps = Vec::new();
    for &rate in rates {
        let token = client
            .mint_notification_token(TokenVariant::Valid)
            .await
            .map_err(|e| anyhow!("{e}"))?
            .ok_or_else(|| anyhow!("no token"))?;
        let total = rate as u64 * seconds;
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for _ in 0..total {
            ticker.tick().await;
            let mut req = http
                .post(&url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(notification_body("authorisation", uuid::Uuid::new_v4()));
            if let Some(h) = &header {
                req = req.header(h.name.as_str(), h.value.as_str());
            }
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let ok = req.send().await.is_ok_and(|r| r.status().is_success());
                (ok, t.elapsed())
            }));
        }
        let sending = started.elapsed().as_secs_f64();
        let mut latencies = Vec::with_capacity(tasks.len());
        let mut ok = 0;
        for t in tasks {
            let (good, took) = t.await?;
            ok += usize::from(good);
            latencies.push(took.as_secs_f64() * 1000.0);
        }
        latencies.sort_by(f64::total_cmp);
        let pct = |q: f64| crate::stats::quantile_sorted(&latencies, q);
        steps.push(LoadStep {
            rate,
            sent: latencies.len(),
            ok,
            errors: latencies.len() - ok,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            achieved: latencies.len() as f64 / sending.max(0.001),
        });
        println!(
            "    {rate:>5}/s: {} sent, {} errors, p50 {:.1} ms, p99 {:.1} ms",
            latencies.len(),
            latencies.len() - ok,
            pct(0.50),
            pct(0.99)
        );
    }
    Ok(steps)
}

pub fn print_load(steps: &[LoadStep], instances: usize) {
    println!(
        "/notification on the local stack ({instances} function instances, DynamoDB Local and moto behind them), open loop"
    );
    println!(
        "  rate/s  sent   ok  errors   p50 ms   p99 ms  (Banking Service times out at 5,000 ms)"
    );
    for s in steps {
        println!(
            "  {:>6} {:>5} {:>5} {:>6} {:>8.1} {:>8.1}",
            s.rate, s.sent, s.ok, s.errors, s.p50_ms, s.p99_ms
        );
    }
}
