//! Creditors' bank details sealed with a KMS key (`CREDITOR_KEY_ID`): KMS encrypts and decrypts,
//! so the key never leaves it; the encryption context names what the ciphertext is for, so a
//! ciphertext of anything else does not open as bank details.

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use connector_domain::ports::{BoxFuture, SealError, Sealer};

const CONTEXT: (&str, &str) = ("purpose", "creditor-bank-account");

#[derive(Clone, Debug)]
pub struct KmsSealer {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsSealer {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

/// Access refused, a missing or disabled key: configuration; the rest may pass.
fn from_sdk<E, R>(err: SdkError<E, R>) -> SealError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = |code: &str| format!("{code}: {}", err.message().unwrap_or(""));
    match err.code() {
        Some(
            code @ ("AccessDeniedException"
            | "NotFoundException"
            | "DisabledException"
            | "InvalidKeyUsageException"
            | "KMSInvalidStateException"
            | "InvalidCiphertextException"
            | "IncorrectKeyException"),
        ) => SealError::Configuration(text(code)),
        Some(code) => SealError::Unavailable(text(code)),
        None => {
            SealError::Unavailable(format!("{}", aws_sdk_kms::error::DisplayErrorContext(&err)))
        }
    }
}

impl Sealer for KmsSealer {
    fn seal<'a>(&'a self, plaintext: &'a [u8]) -> BoxFuture<'a, Result<String, SealError>> {
        Box::pin(async move {
            let out = self
                .client
                .encrypt()
                .key_id(&self.key_id)
                .plaintext(Blob::new(plaintext))
                .encryption_context(CONTEXT.0, CONTEXT.1)
                .send()
                .await
                .map_err(from_sdk)?;
            let blob = out
                .ciphertext_blob
                .ok_or_else(|| SealError::Unavailable("KMS returned no ciphertext".into()))?;
            Ok(STANDARD.encode(blob.as_ref()))
        })
    }

    fn open<'a>(&'a self, sealed: &'a str) -> BoxFuture<'a, Result<Vec<u8>, SealError>> {
        Box::pin(async move {
            let blob = STANDARD
                .decode(sealed)
                .map_err(|e| SealError::Configuration(format!("not a sealed value: {e}")))?;
            let out = self
                .client
                .decrypt()
                .key_id(&self.key_id)
                .ciphertext_blob(Blob::new(blob))
                .encryption_context(CONTEXT.0, CONTEXT.1)
                .send()
                .await
                .map_err(from_sdk)?;
            out.plaintext
                .map(|p| p.into_inner())
                .ok_or_else(|| SealError::Unavailable("KMS returned no plaintext".into()))
        })
    }
}
