//! Sage's Consumer API as its published collections call it (sandbox README, "Product view"):
//! the request signature of the organisation + access-token handshake, and a product-side client
//! that signs, registers an organisation, gets a token and calls the product view with it.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use serde_json::Value;

use crate::client::ClientError;
use crate::util::pct_encode;

/// The Consumer API signature of a request.
///
/// Base string: `METHOD & enc(lower(route without query)) & enc(params) & enc(nonce)`, where
/// `params` is the sorted `name=value` list (each RFC 3986 encoded, joined with `&`) of the query
/// parameters plus, when there is a body, `body` = base64 of the body text; the signature is the
/// base64 HMAC-SHA1 of the base string keyed with `signing_key + "&null"`. `route` is what the
/// caller signed: Sage's collections sign the whole URL (scheme and host included), others the
/// path alone.
pub fn consumer_signature(
    method: &str,
    route: &str,
    body: Option<&str>,
    nonce: &str,
    signing_key: &str,
) -> String {
    let (path, query) = route.split_once('?').unwrap_or((route, ""));
    let mut params: Vec<(String, String)> = Vec::new();
    if let Some(b) = body.filter(|b| !b.is_empty()) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(b.as_bytes());
        params.push(("body".into(), pct_encode(&b64)));
    }
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        params.push((pct_encode(&k), pct_encode(&v)));
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let joined = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let base = format!(
        "{}&{}&{}&{}",
        method.to_uppercase(),
        pct_encode(&path.to_lowercase()),
        pct_encode(&joined),
        pct_encode(nonce)
    );
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{signing_key}&null").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, base.as_bytes()).as_ref())
}

/// JSON text without the whitespace between tokens (what `JSON.stringify` of the parsed body
/// gives for the same key order), so that a pretty-printed body verifies as its compact form.
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for ch in text.chars() {
        if in_string {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if ch == '"' {
            in_string = true;
            out.push(ch);
        } else if !ch.is_whitespace() {
            out.push(ch);
        }
    }
    out
}

/// One answer of the product view.
#[derive(Debug, Clone)]
pub struct ConsumerAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// `Value::Null` when the body is not JSON.
    pub body: Value,
    pub text: String,
}

/// A product-side client of the sandbox's Consumer-API-shaped view, calling it as Sage's
/// published collections do: `POST /organisations` signed with the application's signing key,
/// `GET /accesstoken` signed with the organisation's token, then `Authorization: Bearer <jwt>` and
/// `x-application` on every call; the bank lookup with `x-application` only; `GET {pollRoute}`
/// with no headers at all.
#[derive(Clone, Debug)]
pub struct ConsumerClient {
    http: reqwest::Client,
    /// `{sandbox}/api/v1`
    base: String,
    application: String,
    organisation_id: String,
    company_id: String,
    organisation_token: String,
    jwt: String,
}

impl ConsumerClient {
    /// Registers a new organisation (with one company) for `application` and gets its access
    /// token. `sandbox_url` is the sandbox's base URL (`http://127.0.0.1:PORT`).
    pub async fn register(
        sandbox_url: &str,
        application: &str,
        signing_key: &str,
    ) -> Result<ConsumerClient, ClientError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        let base = format!("{}/api/v1", sandbox_url.trim_end_matches('/'));
        let url = format!("{base}/organisations");
        let body = serde_json::json!({
            "company": { "name": "TestCompany", "postalCode": "NE139AA", "standardIndustrialCode": "99",
                         "vatNumber": "123456789", "languageCode": "en-GB" },
            "crmId": "123456789",
            "user": { "emailAddress": "test@example.com", "identity": "1001" },
        })
        .to_string();
        let nonce = uuid::Uuid::new_v4().to_string();
        let sig = consumer_signature("POST", &url, Some(&body), &nonce, signing_key);
        let req = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-application", application)
            .header("x-signature", sig)
            .header("x-nonce", &nonce)
            .body(body);
        let org = expect_ok(send("POST", &url, req).await?, "POST", &url)?;
        let organisation_id = string_at(&org.body, &["organisationId"], &url)?;
        let company_id = string_at(&org.body, &["companies", "0"], &url)?;
        let organisation_token = string_at(&org.body, &["token"], &url)?;
        let mut client = ConsumerClient {
            http,
            base,
            application: application.to_string(),
            organisation_id,
            company_id,
            organisation_token,
            jwt: String::new(),
        };
        client.refresh_token().await?;
        Ok(client)
    }

    /// `GET /accesstoken` signed with the organisation's token; keeps the new `jwt`.
    pub async fn refresh_token(&mut self) -> Result<(), ClientError> {
        let url = format!("{}/accesstoken", self.base);
        let nonce = uuid::Uuid::new_v4().to_string();
        let sig = consumer_signature("GET", &url, None, &nonce, &self.organisation_token);
        let req = self
            .http
            .get(&url)
            .header("X-Organisation-Id", &self.organisation_id)
            .header("X-Company-Id", &self.company_id)
            .header("X-Nonce", &nonce)
            .header("X-Signature", sig)
            .header("X-Application", &self.application);
        let a = expect_ok(send("GET", &url, req).await?, "GET", &url)?;
        self.jwt = string_at(&a.body, &["jwt"], &url)?;
        Ok(())
    }

    pub fn organisation_id(&self) -> &str {
        &self.organisation_id
    }

    pub fn company_id(&self) -> &str {
        &self.company_id
    }

    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// `{sandbox}/api/v1/organisations/{org}/companies/{co}`
    pub fn company_url(&self) -> String {
        format!(
            "{}/organisations/{}/companies/{}",
            self.base, self.organisation_id, self.company_id
        )
    }

    /// A call with the bearer and `x-application`; `path` is relative to [`Self::company_url`]
    /// (e.g. `/bankaccounts`), or absolute when it starts with `http`.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ConsumerAnswer, ClientError> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.company_url())
        };
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("x-application", &self.application)
            .bearer_auth(&self.jwt);
        if let Some(b) = body {
            req = req.json(b);
        }
        send(method.as_str(), &url, req).await
    }

    pub async fn get(&self, path: &str) -> Result<ConsumerAnswer, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<ConsumerAnswer, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<ConsumerAnswer, ClientError> {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// `GET /banks/{bankId}` with `x-application` only.
    pub async fn bank(&self, bank_id: uuid::Uuid) -> Result<ConsumerAnswer, ClientError> {
        let url = format!("{}/banks/{bank_id}", self.base);
        let req = self
            .http
            .get(&url)
            .header("x-application", &self.application);
        send("GET", &url, req).await
    }

    /// `GET {pollRoute}`: the absolute URL as given, no headers.
    pub async fn poll(&self, poll_route: &str) -> Result<ConsumerAnswer, ClientError> {
        send("GET", poll_route, self.http.get(poll_route)).await
    }
}

async fn send(
    method: &str,
    url: &str,
    req: reqwest::RequestBuilder,
) -> Result<ConsumerAnswer, ClientError> {
    let resp = req.send().await.map_err(|e| ClientError::Http {
        method: method.to_string(),
        url: url.to_string(),
        error: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(ConsumerAnswer {
        status,
        headers,
        body,
        text,
    })
}

fn expect_ok(a: ConsumerAnswer, method: &str, url: &str) -> Result<ConsumerAnswer, ClientError> {
    if (200..300).contains(&a.status) {
        Ok(a)
    } else {
        Err(ClientError::Status {
            method: method.to_string(),
            url: url.to_string(),
            status: a.status,
            body: a.text,
        })
    }
}

fn string_at(v: &Value, path: &[&str], url: &str) -> Result<String, ClientError> {
    let mut cur = v;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[*p],
        };
    }
    cur.as_str()
        .map(str::to_string)
        .ok_or_else(|| ClientError::Decode {
            url: url.to_string(),
            error: format!("no string at {}", path.join(".")),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers computed independently, with the JavaScript of Sage's collection
    /// (`encodeURIComponent` + `!'()*`, `crypto.createHmac('sha1', key + '&null')`).
    #[test]
    fn signature_known_answers() {
        assert_eq!(
            consumer_signature(
                "post",
                "https://snd01eu.sagebankdrive.com/api/v1/Organisations",
                Some(r#"{"crmId":"123456789"}"#),
                "6f1c2a8e-0000-4000-8000-000000000001",
                "app-signing-key",
            ),
            KNOWN_POST
        );
        assert_eq!(
            consumer_signature(
                "GET",
                "/api/v1/organisations/o-1/companies/c-1/availablebankaccounts?bankAccountIds=a b&x=(1)",
                None,
                "n*1",
                "org-token",
            ),
            KNOWN_GET
        );
    }

    const KNOWN_POST: &str = "0SsbdpcJAKGF5JRC1lEP0h1at7c=";
    const KNOWN_GET: &str = "vvakHpg/8OMaRuphf2nvzFNR4v0=";

    #[test]
    fn compact_json_keeps_strings() {
        assert_eq!(
            compact_json("{\r\n  \"a\" : \"x y\\\" z\",\n \"b\": [1, 2]\n}"),
            r#"{"a":"x y\" z","b":[1,2]}"#
        );
    }
}
