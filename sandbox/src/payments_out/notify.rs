//! Deliveries to the connector: `/notifications` and `/subscription` signed with the sandbox's
//! Sage ID and the provider's custom header (5 s timeout, retries after 1, 5 and 25 s), and the
//! demo bank's events (API key; bounded in flight and retried for minutes, `RailsConfig`)
//! (docs/payments-out-sandbox.md §5, §7).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::PoDelivery;
use super::wire::{NotificationMessage, NotificationWire, SubscriptionDelivery};
use crate::model::HeaderVariant;
use crate::sageid::{NotificationTokenSpec, TokenVariant, mint_notification_token};
use crate::state::{Core, push_capped};
use crate::util::fmt_time;

/// How a delivery is authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Sage ID token (variant for negative tests) and the custom header.
    Sage {
        token: TokenVariant,
        header: HeaderVariant,
    },
    /// The bank's events: `x-api-key`.
    ApiKey(String),
}

/// The answer of one delivery (last attempt).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryOutcome {
    pub delivery_id: Uuid,
    pub delivered: bool,
    pub final_status: Option<u16>,
    pub attempts: u32,
    pub body: Option<String>,
}

/// Where `/notifications` and `/subscription` go, from the provider configuration.
pub fn provider_urls(core: &Core) -> (Option<String>, Option<String>, String) {
    let st = core.po.lock();
    let p = st.providers.get(&core.cfg.payments_out.provider_id);
    let s = |k: &str| {
        p.and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    (
        s("notificationUrl"),
        s("subscriptionUrl"),
        s("providerHeaderKeyName").unwrap_or_else(|| super::defaults::HEADER_NAME.into()),
    )
}

/// A `/notifications` body.
pub fn notification(
    core: &Core,
    kind: &str,
    subscription_id: Option<Uuid>,
    organisation_id: Option<Uuid>,
    application: &str,
    correlation_id: Option<String>,
    data: Value,
) -> NotificationWire {
    NotificationWire {
        id: core.po.lock().rng.uuid(),
        kind: kind.to_string(),
        created_date_time: fmt_time(core.now()),
        provider_id: core.cfg.payments_out.provider_id,
        subscription_id,
        organisation_id,
        application: application.to_string(),
        message: NotificationMessage {
            correlation_id,
            data,
        },
    }
}

fn sign(
    core: &Core,
    b: reqwest::RequestBuilder,
    auth: &Auth,
    header_name: &str,
) -> Result<reqwest::RequestBuilder, String> {
    match auth {
        Auth::ApiKey(k) => Ok(b.header("x-api-key", k.as_str())),
        Auth::Sage { token, header } => {
            let cfg = &core.cfg.payments_out;
            let foreign = core.foreign_key().map_err(|e| e.to_string())?;
            let spec = NotificationTokenSpec {
                issuer: &core.issuer,
                audience: &cfg.notification_audience,
                azp: &cfg.notification_azp,
                scope: &cfg.notification_scope,
                now: core.now().timestamp(),
                jti: core.po.lock().rng.uuid().to_string(),
            };
            let t = {
                let keys = core.keys.read();
                mint_notification_token(&keys, &foreign, &spec, *token)
                    .map_err(|e| e.to_string())?
            };
            let mut b = b;
            if let Some(t) = t {
                b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            match header {
                HeaderVariant::Configured => b = b.header(header_name, cfg.header_value.as_str()),
                HeaderVariant::WrongValue => {
                    b = b.header(header_name, format!("{}-wrong", cfg.header_value))
                }
                HeaderVariant::Missing => {}
            }
            Ok(b)
        }
    }
}

/// Where one delivery goes and what it carries.
pub struct Delivery {
    pub url: String,
    pub kind: String,
    /// What the log groups the attempts under (e.g. `batchpayments#<batchId>`).
    pub key: String,
    pub body: String,
    pub auth: Auth,
    /// The custom header's name (Sage's deliveries only).
    pub header_name: String,
}

/// When a delivery is tried again, and how many may be in flight at once.
#[derive(Clone, Default)]
pub struct Retries {
    /// The wait before each retry; no entry, no retry.
    pub backoff_ms: Vec<u64>,
    /// Held for each attempt (not for the waits between them): a sender's bounded concurrency.
    pub gate: Option<Arc<Semaphore>>,
}

impl Retries {
    /// The wait before attempt `attempt` (1-based): none before the first, then each back-off
    /// in turn.
    pub fn wait_before(&self, attempt: u32) -> Option<Duration> {
        let i = usize::try_from(attempt.checked_sub(2)?).ok()?;
        self.backoff_ms.get(i).map(|ms| Duration::from_millis(*ms))
    }

    /// Sage's schedule: `notification_retries` retries after the configured back-offs (the
    /// last one repeated).
    pub fn sage(cfg: &super::PoConfig) -> Self {
        let b = &cfg.notification_backoff_ms;
        Retries {
            backoff_ms: (0..cfg.notification_retries as usize)
                .map(|i| b.get(i).or(b.last()).copied().unwrap_or(1000))
                .collect(),
            gate: None,
        }
    }
}

/// One delivery with its retries.
pub async fn deliver_once(core: &Arc<Core>, d: &Delivery, retries: &Retries) -> DeliveryOutcome {
    let delivery_id = core.po.lock().rng.uuid();
    let max = 1 + retries.backoff_ms.len() as u32;
    let mut out = DeliveryOutcome {
        delivery_id,
        ..DeliveryOutcome::default()
    };
    for attempt in 1..=max {
        if let Some(wait) = retries.wait_before(attempt) {
            tokio::time::sleep(wait).await;
        }
        let permit = match &retries.gate {
            Some(g) => g.clone().acquire_owned().await.ok(),
            None => None,
        };
        let started = Instant::now();
        let (status, error, text) = attempt_once(core, d).await;
        drop(permit);
        let latency = started.elapsed();
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        // The "lost ack" fault: a 2xx the sender never saw.
        let lost = ok && {
            let mut st = core.po.lock();
            let rate = st.faults.notifications.lost_ack_rate;
            rate > 0.0 && st.rng.unit() < rate && attempt < max
        };
        {
            let now = core.now();
            let mut st = core.po.lock();
            let seq = st.next_seq();
            push_capped(
                &mut st.deliveries,
                core.cfg.log_capacity,
                PoDelivery {
                    seq,
                    delivery_id,
                    at: fmt_time(now),
                    kind: d.kind.clone(),
                    key: d.key.clone(),
                    url: d.url.clone(),
                    attempt,
                    status,
                    error: if lost {
                        Some("ack lost (fault)".into())
                    } else {
                        error
                    },
                    latency_ms: latency.as_secs_f64() * 1000.0,
                },
            );
        }
        out.attempts = attempt;
        out.final_status = status;
        out.body = text;
        if ok && !lost {
            out.delivered = true;
            break;
        }
    }
    out
}

/// One POST: its status, or why there was none, and the answer's text.
async fn attempt_once(
    core: &Arc<Core>,
    d: &Delivery,
) -> (Option<u16>, Option<String>, Option<String>) {
    let builder = core
        .http
        .post(&d.url)
        .timeout(Duration::from_millis(
            core.cfg.payments_out.notification_timeout_ms,
        ))
        .header(header::CONTENT_TYPE, "application/json")
        .body(d.body.to_string());
    match sign(core, builder, &d.auth, &d.header_name) {
        Err(e) => (None, Some(e), None),
        Ok(b) => match b.send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                (Some(s), None, r.text().await.ok())
            }
            Err(e) if e.is_timeout() => (None, Some("timeout".into()), None),
            Err(e) => (None, Some(e.to_string()), None),
        },
    }
}

/// Sends in the background, applying the notification faults (duplicate, delay, reorder).
pub fn spawn_delivery(core: &Arc<Core>, d: Delivery, retries: Retries) {
    let (twice, delay) = {
        let mut st = core.po.lock();
        let f = st.faults.notifications.clone();
        let jitter = if f.reorder_window_ms > 0 {
            st.rng.below(f.reorder_window_ms)
        } else {
            0
        };
        (f.duplicate, f.delay_ms + jitter)
    };
    let c = core.clone();
    core.spawn(async move {
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        deliver_once(&c, &d, &retries).await;
        if twice {
            deliver_once(&c, &d, &retries).await;
        }
    });
}

/// `/notifications` to the provider's `notificationUrl` (nothing when unset).
pub fn send_notification(core: &Arc<Core>, n: &NotificationWire) {
    let (url, _, header_name) = provider_urls(core);
    let Some(url) = url else { return };
    let key = match n.message.data.get("batchId").and_then(Value::as_str) {
        Some(b) => format!("{}#{b}", n.kind),
        None => format!("{}#{}", n.kind, n.id),
    };
    let body = serde_json::to_string(n).unwrap_or_default();
    let d = Delivery {
        url,
        kind: n.kind.clone(),
        key,
        body,
        auth: Auth::Sage {
            token: TokenVariant::Valid,
            header: HeaderVariant::Configured,
        },
        header_name,
    };
    spawn_delivery(core, d, Retries::sage(&core.cfg.payments_out));
}

/// A new subscription: `/subscription` when `subscriptionUrl` is set, else a `subscriptions`
/// notification.
pub fn send_subscription(core: &Arc<Core>, d: &SubscriptionDelivery, application: &str) {
    let (_, sub_url, header_name) = provider_urls(core);
    match sub_url {
        Some(url) => {
            let body = serde_json::to_string(d).unwrap_or_default();
            let delivery = Delivery {
                url,
                kind: "subscription".into(),
                key: format!("subscription#{}", d.data.subscription_id),
                body,
                auth: Auth::Sage {
                    token: TokenVariant::Valid,
                    header: HeaderVariant::Configured,
                },
                header_name,
            };
            spawn_delivery(core, delivery, Retries::sage(&core.cfg.payments_out));
        }
        None => {
            let data = serde_json::to_value(&d.data).unwrap_or(Value::Null);
            let n = notification(
                core,
                "subscriptions",
                Some(d.data.subscription_id),
                Some(d.data.organisation_id),
                application,
                None,
                data,
            );
            send_notification(core, &n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_retry_waits_its_own_back_off_and_the_first_attempt_none() {
        let r = Retries {
            backoff_ms: vec![1000, 5000, 25_000],
            gate: None,
        };
        let waits: Vec<Option<u64>> = (1..=5)
            .map(|a| r.wait_before(a).map(|d| d.as_millis() as u64))
            .collect();
        assert_eq!(
            waits,
            vec![None, Some(1000), Some(5000), Some(25_000), None]
        );
        assert_eq!(Retries::default().wait_before(2), None);
    }

    #[test]
    fn sages_schedule_repeats_its_last_back_off_for_further_retries() {
        let cfg = super::super::PoConfig {
            notification_retries: 4,
            notification_backoff_ms: vec![10, 20],
            ..super::super::PoConfig::default()
        };
        assert_eq!(Retries::sage(&cfg).backoff_ms, vec![10, 20, 20, 20]);
    }
}
