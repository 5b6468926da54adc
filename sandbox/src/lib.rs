//! A faithful local simulator of Sage Banking Service, Sage ID and a demo bank
//! (the sandbox spec: docs/spec-references.md), embeddable in tests and runnable as the `sandbox` binary.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sandbox::SandboxError> {
//! let sb = sandbox::Sandbox::start("127.0.0.1:0".parse().unwrap(), sandbox::SandboxConfig::fast()).await?;
//! let client = sandbox::client::SandboxClient::new(sb.base_url());
//! # let _ = client;
//! sb.shutdown().await;
//! # Ok(()) }
//! ```

pub mod bank;
pub mod client;
pub mod config;
pub mod consumer;
mod control;
pub mod driver;
mod engine;
pub mod envelope;
mod identity;
pub mod json;
pub mod model;
mod notify;
pub mod payments_out;
pub mod product;
mod provider;
pub mod sageid;
mod server;
mod state;
pub mod ui;
pub mod util;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

pub use config::{CustomHeader, ProviderClient, SandboxConfig};
pub use sageid::TokenVariant;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("could not bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("refusing the well-known local credentials on non-loopback address {0}")]
    LocalCredentialsOffLoopback(SocketAddr),
    #[error("key material: {0}")]
    Key(String),
    #[error("http client: {0}")]
    Http(String),
}

/// A running sandbox (server task on the current tokio runtime).
pub struct Sandbox {
    core: Arc<state::Core>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Binds `listen` (port 0 picks one) and serves in a background task.
    pub async fn start(listen: SocketAddr, config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        if !listen.ip().is_loopback() && config.uses_local_credentials() {
            return Err(SandboxError::LocalCredentialsOffLoopback(listen));
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
            addr: listen,
            source,
        })?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let base_url = format!("http://{host}:{}", addr.port());
        let keys = sageid::KeySet::new(config.seed)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SandboxError::Http(e.to_string()))?;
        let (shutdown, rx) = watch::channel(false);
        let clock = util::Clock::default();
        let mut bank = bank::DemoBank::new(&config, clock.now());
        bank.review_consents = config.payments_out.rails.consent_review;
        let po = payments_out::PoState::new(&config.payments_out, config.seed);
        let core = Arc::new(state::Core {
            issuer: format!("{base_url}/"),
            base_url,
            state: Mutex::new(state::State::new(&config)),
            keys: RwLock::new(keys),
            foreign_key: Mutex::new(None),
            clock,
            http,
            shutdown,
            bank: Mutex::new(bank),
            po: Mutex::new(po),
            cfg: config,
        });
        let app = server::router(core.clone());
        let server = tokio::spawn(server::serve(listener, app, rx));
        Ok(Sandbox { core, addr, server })
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.core.base_url.clone()
    }

    /// `base_url + "/"`: token URL = issuer + `oauth/token`, JWKS = issuer + `.well-known/jwks.json`.
    pub fn issuer(&self) -> String {
        self.core.issuer.clone()
    }

    /// `base_url + "/bank"`: the demo bank's Bank Data API.
    pub fn bank_api_url(&self) -> String {
        format!("{}/bank", self.core.base_url)
    }

    pub fn token_url(&self) -> String {
        format!("{}oauth/token", self.core.issuer)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}.well-known/jwks.json", self.core.issuer)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.core.cfg
    }

    /// The in-process driver (Banking Service's outbound side).
    pub fn driver(&self) -> driver::Driver {
        driver::Driver::new(self.core.clone())
    }

    /// A typed HTTP client of this sandbox's control and inspection API.
    pub fn client(&self) -> client::SandboxClient {
        client::SandboxClient::new(self.base_url())
    }

    /// Stops accepting, closes connections and background tasks; frees the port.
    pub async fn shutdown(self) {
        let _ = self.core.shutdown.send(true);
        let _ = self.server.await;
    }
}
