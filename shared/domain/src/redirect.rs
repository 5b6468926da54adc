//! `redirect_uri` rules of `/auth` and `/authrefresh` (spec §4.3).

use url::Url;

/// The query of a browser's `GET /auth` or `GET /authrefresh` (spec §4.3), checked: every
/// parameter present and well formed, and `redirect_uri` on the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartLink {
    pub authorisation_id: uuid::Uuid,
    pub redirect: Url,
    pub state: String,
    /// `/auth`: the bank the product chose.
    pub bank: Option<uuid::Uuid>,
    /// `/authrefresh`: the account being re-authorised.
    pub external_id: Option<String>,
    /// `/authrefresh`: `bankaccount`, a cross-check only (spec §4.4); ignored when malformed.
    pub cross_check: Option<uuid::Uuid>,
}

/// Why a start link is refused (the page says only that the link is invalid).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartLinkError {
    #[error("{0} is missing or malformed")]
    Param(&'static str),
    #[error(transparent)]
    Redirect(#[from] RedirectError),
}

impl StartLink {
    /// `refresh`: `/authrefresh` (needs `externalId`) rather than `/auth` (needs `bank`).
    pub fn parse<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
        refresh: bool,
        allow: &RedirectAllowList,
    ) -> Result<Self, StartLinkError> {
        let present = |k: &'static str| {
            get(k)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or(StartLinkError::Param(k))
        };
        let authorisation_id = uuid::Uuid::parse_str(present("authorisation_id")?)
            .map_err(|_| StartLinkError::Param("authorisation_id"))?;
        let redirect = present("redirect_uri")?;
        let state = get("state")
            .filter(|s| !s.is_empty() && s.chars().count() <= 512)
            .ok_or(StartLinkError::Param("state"))?
            .to_string();
        let redirect = allow.check(redirect)?;
        let (bank, external_id) = if refresh {
            let ext = present("externalId")?;
            if ext.chars().count() > 255 {
                return Err(StartLinkError::Param("externalId"));
            }
            (None, Some(ext.to_string()))
        } else {
            let bank = uuid::Uuid::parse_str(present("bank")?)
                .map_err(|_| StartLinkError::Param("bank"))?;
            (Some(bank), None)
        };
        let cross_check = get("bankaccount").and_then(|v| uuid::Uuid::parse_str(v.trim()).ok());
        Ok(Self {
            authorisation_id,
            redirect,
            state,
            bank,
            external_id,
            cross_check,
        })
    }
}

/// Hosts a browser may be sent back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectAllowList {
    /// Exact hosts (`money.sage.com`) and suffix patterns (`*.sagebankdrive.com`), lower case.
    patterns: Vec<String>,
    /// `http://127.0.0.1:*` and `http://localhost:*` for local tests only.
    allow_http_loopback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("redirect_uri is not an absolute URL")]
    NotAbsolute,
    #[error("redirect_uri must use https")]
    NotHttps,
    #[error("redirect_uri host is not allowed")]
    HostNotAllowed,
    #[error("redirect_uri must not carry credentials")]
    HasCredentials,
}

impl RedirectAllowList {
    /// Parses a comma-separated list such as `*.sagebankdrive.com,money.sage.com`.
    pub fn parse(list: &str, allow_http_loopback: bool) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let host = item.strip_prefix("*.").unwrap_or(item);
            let ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                && !host.starts_with('.')
                && host.contains('.');
            if !ok {
                return Err(format!("`{item}` is not a host name or `*.domain` pattern"));
            }
            patterns.push(item.to_ascii_lowercase());
        }
        if patterns.is_empty() && !allow_http_loopback {
            return Err("the allow-list is empty".into());
        }
        Ok(Self {
            patterns,
            allow_http_loopback,
        })
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.patterns.iter().any(|p| match p.strip_prefix("*.") {
            // `*.x.com` matches `a.x.com` and `a.b.x.com`, never `x.com` or `evilx.com`.
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => host == *p,
        })
    }

    /// Accepts an absolute `https` URL on an allowed host (or loopback `http` when enabled).
    pub fn check(&self, redirect_uri: &str) -> Result<Url, RedirectError> {
        let url = Url::parse(redirect_uri.trim()).map_err(|_| RedirectError::NotAbsolute)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RedirectError::HasCredentials);
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return Err(RedirectError::NotAbsolute),
        };
        let loopback = host == "127.0.0.1" || host == "localhost" || host == "[::1]";
        match url.scheme() {
            "https" if self.host_allowed(&host) => Ok(url),
            "https" if loopback && self.allow_http_loopback => Ok(url),
            "http" if loopback && self.allow_http_loopback => Ok(url),
            "https" => Err(RedirectError::HostNotAllowed),
            "http" => Err(RedirectError::NotHttps),
            _ => Err(RedirectError::NotAbsolute),
        }
    }
}

/// `{redirect_uri}?state=…` or `…&state=…` when it already has a query; the fragment stays last.
pub fn with_state(redirect_uri: &Url, state: &str) -> String {
    let mut url = redirect_uri.clone();
    url.query_pairs_mut().append_pair("state", state);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> RedirectAllowList {
        RedirectAllowList::parse("*.sagebankdrive.com, money.sage.com", false).unwrap()
    }

    #[test]
    fn allows_only_the_listed_hosts_over_https() {
        let l = list();
        assert!(l.check("https://snd01eu.sagebankdrive.com/ui/x").is_ok());
        assert!(l.check("https://a.b.sagebankdrive.com/").is_ok());
        assert!(l.check("https://money.sage.com/back").is_ok());
        assert_eq!(
            l.check("https://sagebankdrive.com/"),
            Err(RedirectError::HostNotAllowed)
        );
        assert_eq!(
            l.check("https://evilsagebankdrive.com/"),
            Err(RedirectError::HostNotAllowed)
        );
        assert_eq!(
            l.check("https://money.sage.com.evil.com/"),
            Err(RedirectError::HostNotAllowed)
        );
        assert_eq!(
            l.check("http://money.sage.com/"),
            Err(RedirectError::NotHttps)
        );
        assert_eq!(
            l.check("https://user:pw@money.sage.com/"),
            Err(RedirectError::HasCredentials)
        );
        assert_eq!(l.check("/relative"), Err(RedirectError::NotAbsolute));
        assert_eq!(
            l.check("javascript:alert(1)"),
            Err(RedirectError::NotAbsolute)
        );
        assert_eq!(
            l.check("http://127.0.0.1:8080/x"),
            Err(RedirectError::NotHttps)
        );
    }

    #[test]
    fn loopback_http_only_when_enabled() {
        let l = RedirectAllowList::parse("money.sage.com", true).unwrap();
        assert!(
            l.check("http://127.0.0.1:8080/ui/v1/indirectredirect/x")
                .is_ok()
        );
        assert!(l.check("http://localhost:1/").is_ok());
        assert_eq!(l.check("http://10.0.0.1/"), Err(RedirectError::NotHttps));
    }

    #[test]
    fn state_is_appended_encoded_with_the_fragment_last() {
        let u = Url::parse("https://money.sage.com/cb?x=1#frag").unwrap();
        assert_eq!(
            with_state(&u, "a b&c=d/é"),
            "https://money.sage.com/cb?x=1&state=a+b%26c%3Dd%2F%C3%A9#frag"
        );
        let plain = Url::parse("https://money.sage.com/cb").unwrap();
        assert_eq!(
            with_state(&plain, "1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
            "https://money.sage.com/cb?state=1b4e28ba-2fa1-11d2-883f-0016d3cca427"
        );
    }

    #[test]
    fn a_malformed_list_is_a_configuration_error() {
        assert!(RedirectAllowList::parse("", false).is_err());
        assert!(RedirectAllowList::parse("https://x.com", false).is_err());
        assert!(RedirectAllowList::parse("*.", false).is_err());
    }
}
