//! AWS adapters of the connector: the DynamoDB table, the SQS queues, and the platform ports of
//! `connector_domain::ports` (shared rate limiter, shared Sage ID token).

pub mod accounts;
pub mod consents;
pub mod handshakes;
pub mod idempotency;
pub mod kms;
pub mod payouts;
pub mod ports;
pub mod queues;
pub mod rate_limit;
pub mod table;
pub mod token_cache;
pub mod transactions;

pub use table::{StoreError, Table};

/// The roots the AWS SDK trusts by default: Amazon Trust Services, which every AWS endpoint's
/// certificate chains to. Five roots instead of the platform's ~145: reading and decoding the
/// platform store was most of a function's own cold-start work, and the outbound client
/// (Sage, the bank) keeps the platform store.
const AWS_ROOTS: &[u8] = include_bytes!("../certs/amazon-trust-services.pem");

/// `AWS_CA_BUNDLE` could not be used.
#[derive(Debug, thiserror::Error)]
#[error("AWS_CA_BUNDLE {path}: {reason}")]
pub struct CaBundleError {
    pub path: String,
    pub reason: String,
}

/// PEM certificates the SDK should trust: `AWS_CA_BUNDLE` (the variable the AWS CLI and other
/// SDKs read; for a TLS-inspecting egress proxy) replaces the bundled Amazon roots.
fn aws_trust_roots(bundle: Option<&str>) -> Result<Vec<u8>, CaBundleError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let Some(path) = bundle.filter(|p| !p.trim().is_empty()) else {
        return Ok(AWS_ROOTS.to_vec());
    };
    let error = |reason: String| CaBundleError {
        path: path.to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    // Checked here, the way the SDK's client reads them, because that client panics on a bundle
    // it cannot use (and only when it first connects: see `RootsChecked`).
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not a PEM certificate bundle ({e})")))?;
    if certs.is_empty() {
        return Err(error("no certificate in the file".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (n, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            error(format!(
                "certificate {} cannot be a trust anchor ({e})",
                n + 1
            ))
        })?;
    }
    Ok(pem)
}

/// The SDK's HTTPS client without the connector it builds and throws away each time a service
/// client is made (`validate_base_client_config`, there to load the platform's roots early).
/// Given roots as PEM, that build decodes them again for every client: about a sixth of the
/// reconciler's own start-up CPU in a perf profile (the endpoint tables are more), though within
/// the noise of `cargo xtask bench-coldstart`.
/// The connector that serves requests is built on the first request either way, and the roots
/// were checked by `aws_trust_roots`, so nothing is lost by skipping it.
#[derive(Debug)]
struct RootsChecked(aws_smithy_runtime_api::client::http::SharedHttpClient);

impl aws_smithy_runtime_api::client::http::HttpClient for RootsChecked {
    fn http_connector(
        &self,
        settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn validate_final_config(
        &self,
        components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        self.0.validate_final_config(components, cfg)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// Loads the AWS SDK configuration the standard way (environment, `AWS_ENDPOINT_URL` for local
/// emulators, the Lambda role in production), with an HTTPS client that trusts the Amazon
/// roots (or `AWS_CA_BUNDLE`).
pub async fn sdk_config() -> Result<aws_config::SdkConfig, CaBundleError> {
    sdk_config_trusting(std::env::var("AWS_CA_BUNDLE").ok().as_deref()).await
}

/// `sdk_config` with the CA bundle given (a PEM file's path; `None`: the Amazon roots).
pub async fn sdk_config_trusting(
    bundle: Option<&str>,
) -> Result<aws_config::SdkConfig, CaBundleError> {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(aws_trust_roots(bundle)?);
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| CaBundleError {
            path: bundle.unwrap_or_default().to_string(),
            reason: e.to_string(),
        })?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https();
    let http = aws_smithy_runtime_api::client::http::SharedHttpClient::new(RootsChecked(http));
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
    // Lambda hands every function its role's credentials and its region in the environment.
    // Taking them from there directly skips building the default chains (profile files, web
    // identity with its own STS client, ECS, IMDS), a fifth of a function's start-up measured
    // here; elsewhere (no such variables) the default chains apply as usual.
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_some() {
        loader = loader.credentials_provider(
            aws_config::environment::credentials::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    if let Some(region) = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
        loader = loader.region(aws_config::Region::new(region));
    }
    Ok(loader.load().await)
}

#[cfg(test)]
mod trust_tests {
    use super::*;

    #[test]
    fn the_bundled_amazon_roots_are_five_valid_certificates() {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = CertificateDer::pem_slice_iter(AWS_ROOTS)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), 5);
        assert_eq!(aws_trust_roots(None).unwrap(), AWS_ROOTS);
    }

    #[test]
    fn a_ca_bundle_replaces_the_roots_and_a_bad_one_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("ca-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.pem");
        let first = AWS_ROOTS
            .split(|b| *b == b'\n')
            .skip_while(|l| !l.starts_with(b"-----BEGIN"))
            .take_while(|l| !l.starts_with(b"-----END"))
            .chain(std::iter::once(&b"-----END CERTIFICATE-----"[..]))
            .collect::<Vec<_>>()
            .join(&b'\n');
        std::fs::write(&good, &first).unwrap();
        assert_eq!(aws_trust_roots(good.to_str()).unwrap(), first);

        let bad = dir.join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = aws_trust_roots(bad.to_str()).unwrap_err();
        assert!(
            e.to_string().contains("not a PEM certificate bundle"),
            "{e}"
        );
        // Well-formed PEM around something that is not a certificate: the SDK's client would
        // panic on it when it first connects; refused here at start-up instead.
        let not_cert = dir.join("not-cert.pem");
        std::fs::write(
            &not_cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = aws_trust_roots(not_cert.to_str()).unwrap_err();
        assert!(
            e.to_string()
                .contains("certificate 1 cannot be a trust anchor"),
            "{e}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = aws_trust_roots(empty.to_str()).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let e = aws_trust_roots(dir.join("missing.pem").to_str()).unwrap_err();
        assert!(e.to_string().starts_with("AWS_CA_BUNDLE "), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
