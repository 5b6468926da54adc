//! Small shared pieces: seeded PRNG, clock, time formatting, escaping.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// SplitMix64: tiny, fast and deterministic per seed (jitter, generated data, ids).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// A generator derived from a seed and a label, so that each account's data does not depend on
    /// the order in which other data was generated.
    pub fn derived(seed: u64, label: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in label.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
        let mut r = Rng(h);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n = 0 gives 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// `base` ± `pct` percent.
    pub fn jitter(&mut self, base: u64, pct: u32) -> u64 {
        if base == 0 || pct == 0 {
            return base;
        }
        let spread = base as f64 * f64::from(pct.min(100)) / 100.0;
        let v = base as f64 - spread + 2.0 * spread * self.unit();
        v.max(0.0).round() as u64
    }

    /// Opaque identifier of `len` characters from a URL-safe alphabet.
    pub fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        (0..len)
            .map(|_| char::from(ALPHABET[self.below(ALPHABET.len() as u64) as usize]))
            .collect()
    }
}

/// Wall clock with an optional virtual offset (`POST /_sandbox/clock`); timers stay real.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        let off = self.offset_ms.load(Ordering::Relaxed);
        Utc::now() + chrono::Duration::milliseconds(off)
    }

    pub fn advance_ms(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn set(&self, at: DateTime<Utc>) {
        let off = (at - Utc::now()).num_milliseconds();
        self.offset_ms.store(off, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        self.offset_ms.store(0, Ordering::Relaxed);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

/// `2025-03-03T09:12:44.000Z`, the contract's date-time format.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 date-time in UTC (`Z` or `+00:00`), or a plain `YYYY-MM-DD` (start of day).
pub fn parse_time_or_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| n.and_utc())
}

/// Strict contract date-time: `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
pub fn parse_contract_time(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 20 || b.get(10) != Some(&b'T') || !s.ends_with('Z') {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters (query values).
pub fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Appends query parameters to a URL, using `&` when it already has a query and keeping a fragment last.
pub fn append_query(url: &str, params: &[(&str, &str)]) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let mut out = base.to_string();
    let mut sep = if base.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(&pct_encode(k));
        out.push('=');
        out.push_str(&pct_encode(v));
        sep = '&';
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// Form-urlencoded body or query string to pairs (decoding `+` and percent escapes).
pub fn parse_form(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

pub fn form_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        assert_eq!(
            Rng::derived(1, "x").next_u64(),
            Rng::derived(1, "x").next_u64()
        );
        assert_ne!(
            Rng::derived(1, "x").next_u64(),
            Rng::derived(1, "y").next_u64()
        );
    }

    #[test]
    fn jitter_stays_in_band() {
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            let v = r.jitter(1000, 20);
            assert!((800..=1200).contains(&v));
        }
    }

    #[test]
    fn append_query_uses_ampersand_and_keeps_fragment() {
        assert_eq!(
            append_query("http://a/b", &[("state", "x y")]),
            "http://a/b?state=x%20y"
        );
        assert_eq!(
            append_query("http://a/b?q=1#f", &[("state", "s")]),
            "http://a/b?q=1&state=s#f"
        );
    }

    #[test]
    fn contract_time_is_strict() {
        assert!(parse_contract_time("2025-03-03T09:12:44.000Z").is_some());
        assert!(parse_contract_time("2025-03-03T09:12:44Z").is_some());
        assert!(parse_contract_time("2025-03-03T09:12:44+01:00").is_none());
        assert!(parse_contract_time("2025-03-03").is_none());
    }
}
