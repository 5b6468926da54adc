//! Sage ID emulation: RSA signing keys, JWKS, access and notification tokens (sandbox spec §3).

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::SandboxError;
use crate::util::b64url;

/// One RS256 signing key with its public parts.
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    /// PKCS#1 `RSAPublicKey` DER, what the verifier takes.
    public_pkcs1: Vec<u8>,
    /// SPKI PEM: the "public key as HMAC secret" attack uses these bytes.
    pub public_pem: String,
    pub n: String,
    pub e: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl SigningKey {
    pub fn generate(kid: String) -> Result<Self, SandboxError> {
        let key = |what: &str| SandboxError::Key(what.to_string());
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| key("RSA key generation"))?;
        let pkcs8 = pair.as_der().map_err(|_| key("PKCS#8 export"))?;
        let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
            .map_err(|e| key(&format!("encoding key: {e}")))?;
        let public = pair.public_key();
        let spki = public.as_der().map_err(|_| key("SPKI export"))?;
        Ok(SigningKey {
            kid,
            encoding,
            public_pkcs1: public.as_ref().to_vec(),
            public_pem: pem("PUBLIC KEY", spki.as_ref()),
            n: b64url(public.modulus().big_endian_without_leading_zero()),
            e: b64url(public.exponent().big_endian_without_leading_zero()),
        })
    }

    pub fn sign(&self, claims: &impl Serialize) -> Result<String, SandboxError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        self.sign_with_header(&header, claims)
    }

    pub fn sign_with_header(
        &self,
        header: &Header,
        claims: &impl Serialize,
    ) -> Result<String, SandboxError> {
        jsonwebtoken::encode(header, claims, &self.encoding)
            .map_err(|e| SandboxError::Key(format!("signing: {e}")))
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.public_pkcs1)
            .verify(message, sig)
            .is_ok()
    }

    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e,
        })
    }
}

/// Current and previous signing keys; the JWKS publishes both.
#[derive(Debug, Clone)]
pub struct KeySet {
    pub current: Arc<SigningKey>,
    pub previous: Option<Arc<SigningKey>>,
    generation: u64,
}

impl KeySet {
    pub fn new(seed: u64) -> Result<Self, SandboxError> {
        Ok(KeySet {
            current: Arc::new(SigningKey::generate(format!("sandbox-{seed:x}-1"))?),
            previous: None,
            generation: 1,
        })
    }

    pub fn rotate(&mut self, seed: u64) -> Result<(), SandboxError> {
        let next = SigningKey::generate(format!("sandbox-{seed:x}-{}", self.generation + 1))?;
        self.previous = Some(std::mem::replace(&mut self.current, Arc::new(next)));
        self.generation += 1;
        Ok(())
    }

    pub fn find(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        if self.current.kid == kid {
            return Some(&self.current);
        }
        self.previous.as_ref().filter(|k| k.kid == kid)
    }

    pub fn jwks(&self) -> serde_json::Value {
        let mut keys = vec![self.current.jwk()];
        if let Some(p) = &self.previous {
            keys.push(p.jwk());
        }
        serde_json::json!({ "keys": keys })
    }
}

/// Claims of the access tokens the sandbox issues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub azp: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Claims of notification tokens (every field optional so that variants can drop them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NotificationClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Why a bearer token was refused (logged, never shown to the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRejection {
    Missing,
    Malformed,
    Algorithm(String),
    UnknownKid,
    BadSignature,
    Issuer,
    Audience,
    Expired,
    Revoked,
    UnknownClient,
}

/// Verified content of an access token.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub kid: String,
    pub claims: AccessClaims,
}

#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct LooseClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    azp: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
    jti: Option<String>,
}

/// Signature, `alg`, `kid`, `iss`, `aud` and `exp` (no leeway). Revocation is the caller's.
pub fn verify_access_token(
    keys: &KeySet,
    token: &str,
    issuer: &str,
    audience: &str,
    now: i64,
) -> Result<VerifiedToken, TokenRejection> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed);
    };
    let header: JwtHeader = crate::util::b64url_decode(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenRejection::Malformed)?;
    if header.alg != "RS256" {
        return Err(TokenRejection::Algorithm(header.alg));
    }
    let kid = header.kid.ok_or(TokenRejection::UnknownKid)?;
    let key = keys.find(&kid).ok_or(TokenRejection::UnknownKid)?;
    let sig = crate::util::b64url_decode(s).ok_or(TokenRejection::Malformed)?;
    let signed_len = h.len() + 1 + p.len();
    if !key.verify(&token.as_bytes()[..signed_len], &sig) {
        return Err(TokenRejection::BadSignature);
    }
    let claims: LooseClaims = crate::util::b64url_decode(p)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenRejection::Malformed)?;
    if claims.iss.as_deref() != Some(issuer) {
        return Err(TokenRejection::Issuer);
    }
    let aud_ok = match &claims.aud {
        Some(Audience::One(a)) => a == audience,
        Some(Audience::Many(v)) => v.iter().any(|a| a == audience),
        None => false,
    };
    if !aud_ok {
        return Err(TokenRejection::Audience);
    }
    let exp = claims.exp.ok_or(TokenRejection::Expired)?;
    if exp <= now {
        return Err(TokenRejection::Expired);
    }
    let azp = claims.azp.ok_or(TokenRejection::UnknownClient)?;
    Ok(VerifiedToken {
        kid,
        claims: AccessClaims {
            iss: issuer.to_string(),
            sub: claims.sub.unwrap_or_else(|| azp.clone()),
            aud: audience.to_string(),
            azp,
            iat: claims.iat.unwrap_or(0),
            exp,
            jti: claims.jti.unwrap_or_default(),
        },
    })
}

/// Negative-test variants of the token Banking Service presents to the connector (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum TokenVariant {
    #[default]
    Valid,
    /// No `Authorization` header at all.
    Missing,
    Expired,
    NotYetValid,
    OtherIssuer,
    OtherAudience,
    NoScope,
    UnknownKid,
    /// Signed by a key that is not in the JWKS, with the current `kid`.
    ForeignKey,
    AlgNone,
    /// HS256 with the public key's PEM as the HMAC secret (key-confusion attack).
    Hs256PublicKey,
    /// Not a JWT.
    Garbage,
}

impl TokenVariant {
    pub const ALL: [TokenVariant; 12] = [
        TokenVariant::Valid,
        TokenVariant::Missing,
        TokenVariant::Expired,
        TokenVariant::NotYetValid,
        TokenVariant::OtherIssuer,
        TokenVariant::OtherAudience,
        TokenVariant::NoScope,
        TokenVariant::UnknownKid,
        TokenVariant::ForeignKey,
        TokenVariant::AlgNone,
        TokenVariant::Hs256PublicKey,
        TokenVariant::Garbage,
    ];
}

/// What a notification token needs from the configuration.
pub struct NotificationTokenSpec<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub azp: &'a str,
    pub scope: &'a str,
    pub now: i64,
    pub jti: String,
}

/// Mints the bearer for a notification or `/availableaccounts` call; `None` for [`TokenVariant::Missing`].
pub fn mint_notification_token(
    keys: &KeySet,
    foreign: &SigningKey,
    spec: &NotificationTokenSpec<'_>,
    variant: TokenVariant,
) -> Result<Option<String>, SandboxError> {
    let now = spec.now;
    let mut claims = NotificationClaims {
        iss: Some(spec.issuer.to_string()),
        sub: Some(spec.azp.to_string()),
        aud: Some(spec.audience.to_string()),
        azp: Some(spec.azp.to_string()),
        scope: Some(spec.scope.to_string()),
        iat: Some(now),
        nbf: None,
        exp: Some(now + 3600),
        jti: Some(spec.jti.clone()),
    };
    let key = &keys.current;
    let token = match variant {
        TokenVariant::Missing => return Ok(None),
        TokenVariant::Garbage => "not-a-jwt".to_string(),
        TokenVariant::Valid => key.sign(&claims)?,
        TokenVariant::Expired => {
            claims.iat = Some(now - 7200);
            claims.exp = Some(now - 3600);
            key.sign(&claims)?
        }
        TokenVariant::NotYetValid => {
            claims.nbf = Some(now + 3600);
            claims.exp = Some(now + 7200);
            key.sign(&claims)?
        }
        TokenVariant::OtherIssuer => {
            claims.iss = Some("https://other-issuer.invalid/".into());
            key.sign(&claims)?
        }
        TokenVariant::OtherAudience => {
            claims.aud = Some("some-other-audience".into());
            key.sign(&claims)?
        }
        TokenVariant::NoScope => {
            claims.scope = None;
            key.sign(&claims)?
        }
        TokenVariant::UnknownKid => {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some("unknown-kid".into());
            key.sign_with_header(&header, &claims)?
        }
        TokenVariant::ForeignKey => {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(key.kid.clone());
            foreign.sign_with_header(&header, &claims)?
        }
        TokenVariant::AlgNone => {
            let header = serde_json::json!({ "alg": "none", "typ": "JWT", "kid": key.kid });
            let h = b64url(header.to_string().as_bytes());
            let p = b64url(
                serde_json::to_string(&claims)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            format!("{h}.{p}.")
        }
        TokenVariant::Hs256PublicKey => {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(key.kid.clone());
            jsonwebtoken::encode(
                &header,
                &claims,
                &EncodingKey::from_secret(key.public_pem.as_bytes()),
            )
            .map_err(|e| SandboxError::Key(format!("signing: {e}")))?
        }
    };
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() -> Result<(), SandboxError> {
        let mut keys = KeySet::new(1)?;
        let claims = AccessClaims {
            iss: "http://x/".into(),
            sub: "c".into(),
            aud: "aud".into(),
            azp: "c".into(),
            iat: 100,
            exp: 200,
            jti: "j".into(),
        };
        let t = keys.current.sign(&claims)?;
        assert!(verify_access_token(&keys, &t, "http://x/", "aud", 150).is_ok());
        assert_eq!(
            verify_access_token(&keys, &t, "http://x/", "aud", 200).err(),
            Some(TokenRejection::Expired)
        );
        assert_eq!(
            verify_access_token(&keys, &t, "http://y/", "aud", 150).err(),
            Some(TokenRejection::Issuer)
        );
        keys.rotate(1)?;
        assert!(
            verify_access_token(&keys, &t, "http://x/", "aud", 150).is_ok(),
            "previous key"
        );
        keys.rotate(1)?;
        assert_eq!(
            verify_access_token(&keys, &t, "http://x/", "aud", 150).err(),
            Some(TokenRejection::UnknownKid)
        );
        Ok(())
    }
}
