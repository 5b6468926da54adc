//! TLS against a server on loopback: the outbound client and the AWS SDK's client each trust
//! exactly the anchors they are given. The fixtures are a test CA and a server certificate for 127.0.0.1 and localhost
//! (valid until 2126; the CA's key was discarded once the certificate was signed).

use std::sync::Arc;

use connector_wiring::context::{RootSource, outbound_client, outbound_roots};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CA: &[u8] = include_bytes!("fixtures/tls/ca.pem");
const SERVER_CERT: &[u8] = include_bytes!("fixtures/tls/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("fixtures/tls/server.key");

/// An HTTPS server on 127.0.0.1 answering every request `200 ok`; returns its port.
async fn serve() -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(SERVER_CERT)
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust us ends the handshake: nothing to answer.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

fn roots_of(pem: &[u8]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(pem).map(|c| c.unwrap());
    let (added, _) = roots.add_parsable_certificates(certs);
    assert_eq!(added, 1);
    roots
}

#[tokio::test]
async fn the_outbound_client_trusts_the_anchors_it_is_given_and_no_others() {
    let port = serve().await;
    // A bank's private CA (what SSL_CERT_FILE adds): the handshake and the request succeed,
    // by IP address and by name.
    let private = outbound_client(roots_of(CA)).unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let answer = private
            .get(format!("https://{host}:{port}/jwks"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(answer.status(), 200, "{host}");
        assert_eq!(answer.text().await.unwrap(), "ok");
    }
    // The compiled-in Mozilla set does not know that CA: refused before any request is sent.
    let public = outbound_client(outbound_roots(RootSource::Bundled).unwrap()).unwrap();
    let refused = public
        .get(format!("https://127.0.0.1:{port}/jwks"))
        .send()
        .await
        .expect_err("a certificate from an unknown CA must be refused");
    assert!(refused.is_connect(), "{refused:?}");
    let chain = format!("{:?}", refused);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
}

#[tokio::test]
async fn the_aws_sdk_trusts_aws_ca_bundle_or_the_amazon_roots_and_no_others() {
    use aws_sdk_dynamodb::error::SdkError;
    let port = serve().await;
    let dir = std::env::temp_dir().join(format!("sdk-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = dir.join("ca.pem");
    std::fs::write(&bundle, CA).unwrap();
    let client = |sdk: &aws_config::SdkConfig| {
        let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
            .endpoint_url(format!("https://localhost:{port}"))
            .region(aws_sdk_dynamodb::config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::for_tests())
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    };

    // With the test CA as AWS_CA_BUNDLE the request gets through TLS; the server's "ok" is not
    // a DynamoDB answer, so the call fails on the response, not on the connection.
    let trusting = connector_aws::sdk_config_trusting(bundle.to_str())
        .await
        .unwrap();
    let answered = client(&trusting).list_tables().send().await.unwrap_err();
    assert!(
        matches!(
            answered,
            SdkError::ServiceError(_) | SdkError::ResponseError(_)
        ),
        "{answered:?}"
    );
    // With the Amazon roots the same server is refused during the handshake.
    let amazon = connector_aws::sdk_config_trusting(None).await.unwrap();
    let refused = client(&amazon).list_tables().send().await.unwrap_err();
    assert!(
        matches!(refused, SdkError::DispatchFailure(_)),
        "{refused:?}"
    );
    let chain = format!("{refused:?}");
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    std::fs::remove_dir_all(&dir).unwrap();
}
