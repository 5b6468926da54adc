//! Deliveries to the connector: `/notifications` and `/subscription` signed with the sandbox's
//! Sage ID and the provider's custom header, and the demo bank's events (API key); 5 s timeout,
//! retries after 1, 5 and 25 s (docs/payments-out-sandbox.md §5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

/// One delivery with its retries (none when `retry` is false).
#[allow(clippy::too_many_arguments)]
pub async fn deliver_once(
    core: &Arc<Core>,
    url: &str,
    kind: &str,
    key: &str,
    body: &str,
    auth: &Auth,
    header_name: &str,
    retry: bool,
) -> DeliveryOutcome {
    let cfg = &core.cfg.payments_out;
    let delivery_id = core.po.lock().rng.uuid();
    let max = if retry {
        1 + cfg.notification_retries
    } else {
        1
    };
    let mut out = DeliveryOutcome {
        delivery_id,
        ..DeliveryOutcome::default()
    };
    for attempt in 1..=max {
        if attempt > 1 {
            let b = &cfg.notification_backoff_ms;
            let wait = b
                .get(attempt as usize - 2)
                .or(b.last())
                .copied()
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        let started = Instant::now();
        let builder = core
            .http
            .post(url)
            .timeout(Duration::from_millis(cfg.notification_timeout_ms))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let (status, error, text) = match sign(core, builder, auth, header_name) {
            Err(e) => (None, Some(e), None),
            Ok(b) => match b.send().await {
                Ok(r) => {
                    let s = r.status().as_u16();
                    (Some(s), None, r.text().await.ok())
                }
                Err(e) => (
                    None,
                    Some(if e.is_timeout() {
                        "timeout".into()
                    } else {
                        e.to_string()
                    }),
                    None,
                ),
            },
        };
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
                    kind: kind.to_string(),
                    key: key.to_string(),
                    url: url.to_string(),
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

/// Sends in the background, applying the notification faults (duplicate, delay, reorder).
pub fn spawn_delivery(
    core: &Arc<Core>,
    url: String,
    kind: String,
    key: String,
    body: String,
    auth: Auth,
    header_name: String,
) {
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
        deliver_once(&c, &url, &kind, &key, &body, &auth, &header_name, true).await;
        if twice {
            deliver_once(&c, &url, &kind, &key, &body, &auth, &header_name, true).await;
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
    spawn_delivery(
        core,
        url,
        n.kind.clone(),
        key,
        body,
        Auth::Sage {
            token: TokenVariant::Valid,
            header: HeaderVariant::Configured,
        },
        header_name,
    );
}

/// A new subscription: `/subscription` when `subscriptionUrl` is set, else a `subscriptions`
/// notification.
pub fn send_subscription(core: &Arc<Core>, d: &SubscriptionDelivery, application: &str) {
    let (_, sub_url, header_name) = provider_urls(core);
    match sub_url {
        Some(url) => {
            let body = serde_json::to_string(d).unwrap_or_default();
            spawn_delivery(
                core,
                url,
                "subscription".into(),
                format!("subscription#{}", d.data.subscription_id),
                body,
                Auth::Sage {
                    token: TokenVariant::Valid,
                    header: HeaderVariant::Configured,
                },
                header_name,
            );
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
