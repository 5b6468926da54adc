//! A secret kept in Secrets Manager (moto here) and rotated while a function runs: the holder
//! reads it again once the party it is sent to refuses it, without a restart, and keeps the
//! value it has while Secrets Manager cannot be read.

use std::time::Duration;

use connector_sage::secret::MIN_REFETCH;
use connector_wiring::config::SecretSource;
use local_stack::moto::Moto;
use local_stack::stack::sdk_config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_reaches_a_running_holder_after_a_refusal() {
    let moto = Moto::start().await.expect("moto");
    let sdk = sdk_config(&moto.endpoint, "secrets-test").await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let arn = sm
        .create_secret()
        .name("connector/bank-client-secret")
        .secret_string("old-value\n")
        .send()
        .await
        .expect("create")
        .arn
        .expect("arn");
    let secret = SecretSource::new(Some(sdk.clone()))
        .resolve_named("BANK_CLIENT_SECRET", arn.clone())
        .await
        .expect("resolved");
    assert_eq!(&*secret.fresh().await, "old-value", "trimmed");

    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string("new-value")
        .send()
        .await
        .expect("rotate");
    assert_eq!(
        &*secret.fresh().await,
        "old-value",
        "not read on every call"
    );
    tokio::time::sleep(MIN_REFETCH).await;
    secret.refused();
    assert_eq!(&*secret.fresh().await, "new-value");

    // Secrets Manager gone: the value held stays in use.
    moto.stop().await;
    tokio::time::sleep(MIN_REFETCH + Duration::from_millis(100)).await;
    secret.refused();
    assert_eq!(&*secret.fresh().await, "new-value");
}
