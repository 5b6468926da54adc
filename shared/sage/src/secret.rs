//! Values that must never reach a log line, and that may change while a function runs.
//!
//! A secret kept in Secrets Manager is read again after its TTL and soon after the party it is
//! sent to refuses it (401/403), so that a rotation (docs/operations.md, *Credential breach*)
//! reaches warm execution environments without a redeploy.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use connector_domain::ports::BoxFuture;

/// Where a secret's current value is read (Secrets Manager in the functions).
pub trait SecretFetch: Send + Sync {
    fn fetch(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// The least time between two reads of a secret: a refused or unreadable secret must not turn
/// every call into a Secrets Manager call.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);

/// A secret string: `Debug` and `Display` print `[redacted]`. Cloning shares the value, so a
/// re-read reaches every holder.
#[derive(Clone)]
pub struct Secret(Arc<Inner>);

struct Inner {
    value: RwLock<Arc<str>>,
    source: Option<Source>,
}

struct Source {
    fetch: Arc<dyn SecretFetch>,
    ttl: Duration,
    refused: AtomicBool,
    /// When the value was last read, and when a read was last tried; held while reading, so
    /// that concurrent callers wait for one read.
    reads: tokio::sync::Mutex<Reads>,
}

struct Reads {
    read_at: Instant,
    tried_at: Instant,
}

impl Secret {
    /// A value given as is: it never changes.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::new(Inner {
            value: RwLock::new(value.into().into()),
            source: None,
        }))
    }

    /// A value just read from `fetch`, read again after `ttl` or once refused.
    pub fn fetched(value: impl Into<String>, fetch: Arc<dyn SecretFetch>, ttl: Duration) -> Self {
        let now = Instant::now();
        Self(Arc::new(Inner {
            value: RwLock::new(value.into().into()),
            source: Some(Source {
                fetch,
                ttl,
                refused: AtomicBool::new(false),
                reads: tokio::sync::Mutex::new(Reads {
                    read_at: now,
                    tried_at: now,
                }),
            }),
        }))
    }

    /// The value held now, for the one place that sends or compares it.
    pub fn expose(&self) -> Arc<str> {
        self.0
            .value
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The value, read again first when it is older than its TTL or was refused since (and the
    /// last read was tried at least `MIN_REFETCH` ago). A failed read keeps the value held.
    pub async fn fresh(&self) -> Arc<str> {
        if let Some(source) = &self.0.source {
            let mut reads = source.reads.lock().await;
            let stale =
                reads.read_at.elapsed() >= source.ttl || source.refused.load(Ordering::Relaxed);
            if stale && reads.tried_at.elapsed() >= MIN_REFETCH {
                reads.tried_at = Instant::now();
                self.read(source, &mut reads).await;
            }
        }
        self.expose()
    }

    async fn read(&self, source: &Source, reads: &mut Reads) {
        match source.fetch.fetch().await {
            Ok(value) => {
                let value: Arc<str> = value.trim().into();
                let mut held = self
                    .0
                    .value
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if *held != value {
                    tracing::info!("a secret changed: the new value is in use");
                }
                *held = value;
                reads.read_at = Instant::now();
                source.refused.store(false, Ordering::Relaxed);
            }
            Err(reason) => {
                tracing::warn!(%reason, "could not read a secret again; the value held is kept")
            }
        }
    }

    /// The party it was sent to refused it (401/403): the next `fresh` reads it again.
    pub fn refused(&self) {
        if let Some(source) = &self.0.source {
            source.refused.store(true, Ordering::Relaxed);
        }
    }
}

/// A configured key as the use cases' port: the value held, read again after its TTL.
impl connector_domain::ports::ExpectedKey for Secret {
    fn current(&self) -> BoxFuture<'_, Arc<str>> {
        Box::pin(self.fresh())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Secrets Manager: the value now, and how often it was read.
    struct Store {
        value: Mutex<String>,
        reads: Mutex<usize>,
    }

    impl SecretFetch for Store {
        fn fetch(&self) -> BoxFuture<'_, Result<String, String>> {
            *self.reads.lock().unwrap() += 1;
            let v = self.value.lock().unwrap().clone();
            Box::pin(async move { Ok(v) })
        }
    }

    fn store(v: &str) -> Arc<Store> {
        Arc::new(Store {
            value: Mutex::new(v.into()),
            reads: Mutex::new(0),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotated_secret_is_used_after_its_ttl_without_a_read_per_call() {
        let sm = store("old");
        let s = Secret::fetched("old", sm.clone(), Duration::from_secs(300));
        *sm.value.lock().unwrap() = "new".into();
        for _ in 0..100 {
            assert_eq!(&*s.fresh().await, "old");
        }
        assert_eq!(*sm.reads.lock().unwrap(), 0);
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(&*s.fresh().await, "new");
        assert_eq!(&*s.clone().expose(), "new", "clones share the value");
        assert_eq!(*sm.reads.lock().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_secret_is_read_again_at_most_every_ten_seconds() {
        let sm = store("old");
        let s = Secret::fetched("old", sm.clone(), Duration::from_secs(300));
        tokio::time::advance(MIN_REFETCH).await;
        *sm.value.lock().unwrap() = "new".into();
        s.refused();
        assert_eq!(&*s.fresh().await, "new");
        // Refused again at once (the new value is wrong too): not read again yet.
        s.refused();
        assert_eq!(&*s.fresh().await, "new");
        assert_eq!(*sm.reads.lock().unwrap(), 1);
        tokio::time::advance(MIN_REFETCH).await;
        s.fresh().await;
        assert_eq!(*sm.reads.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_given_value_never_changes_and_never_shows() {
        let s = Secret::new("value");
        s.refused();
        assert_eq!(&*s.fresh().await, "value");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    }
}
