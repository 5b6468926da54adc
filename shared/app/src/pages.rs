//! The few HTML pages a customer sees: small, readable on a phone, no script, every value
//! escaped, no internal detail.

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;\
padding:1.5rem;color:#1b1b1b;background:#f7f7f8}main{max-width:28rem;margin:0 auto;background:#fff;\
border-radius:.75rem;padding:1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.12)}h1{font-size:1.3rem;\
margin-top:0}p{line-height:1.45}button,.button{display:block;width:100%;box-sizing:border-box;\
font-size:1rem;padding:.8rem;margin-top:.75rem;border-radius:.5rem;border:1px solid #00815d;\
text-align:center;text-decoration:none;cursor:pointer}.primary{background:#00815d;color:#fff}\
.secondary{background:#fff;color:#00815d}";

fn layout(title: &str, body: &str) -> String {
    layout_with(title, "", body)
}

/// `head` is markup the caller built (and escaped).
fn layout_with(title: &str, head: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{head}\
<title>{title}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        title = escape_html(title)
    )
}

/// A page that loads `url` (relative to the page) again after `after_s` seconds, without
/// script (`<meta http-equiv="refresh">`), and offers a link doing the same.
pub fn retry_page(title: &str, message: &str, url: &str, after_s: u64) -> String {
    let url = escape_html(url);
    layout_with(
        title,
        &format!("<meta http-equiv=\"refresh\" content=\"{after_s};url={url}\">"),
        &format!(
            "<h1>{}</h1><p>{}</p><a class=\"button secondary\" href=\"{url}\">Try again</a>",
            escape_html(title),
            escape_html(message)
        ),
    )
}

/// The page before the bank's login: continue or cancel. `ui_token` is rotated on every load.
pub fn consent_page(
    action: &str,
    bank_name: &str,
    renew: bool,
    authorisation_id: &str,
    ui_token: &str,
) -> String {
    let (title, text) = if renew {
        (
            "Renew your bank feed",
            format!(
                "Your bank feed to Sage needs your permission again. You will sign in at {} to renew it.",
                escape_html(bank_name)
            ),
        )
    } else {
        (
            "Connect your bank account",
            format!(
                "Sage will receive your account details and transactions from {}. You will sign in at your bank and choose the accounts to share.",
                escape_html(bank_name)
            ),
        )
    };
    layout(
        title,
        &format!(
            "<h1>{title}</h1><p>{text}</p>\
<form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"authorisation_id\" value=\"{id}\">\
<input type=\"hidden\" name=\"ui_token\" value=\"{token}\">\
<button class=\"primary\" type=\"submit\" name=\"action\" value=\"continue\">Continue to {bank}</button>\
<button class=\"secondary\" type=\"submit\" name=\"action\" value=\"cancel\">Cancel</button>\
</form>",
            action = escape_html(action),
            id = escape_html(authorisation_id),
            token = escape_html(ui_token),
            bank = escape_html(bank_name),
        ),
    )
}

/// The Payments Out authorisation page: what the customer agrees to, then continue to the bank
/// or cancel. `hidden` are the product's `returnUrl` and `state`, carried to the next step.
pub fn authorise_page(action: &str, bank_name: &str, hidden: &[(&str, &str)]) -> String {
    let bank = escape_html(bank_name);
    let fields: String = hidden
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape_html(name),
                escape_html(value)
            )
        })
        .collect();
    layout(
        "Authorise payments",
        &format!(
            "<h1>Authorise payments</h1><p>Your Sage product will send payments to {bank} for you \
to approve in Sage. You will sign in at {bank} and choose the accounts payments may be made from.</p>\
<form method=\"post\" action=\"{action}\">{fields}\
<button class=\"primary\" type=\"submit\" name=\"action\" value=\"continue\">Continue to {bank}</button>\
<button class=\"secondary\" type=\"submit\" name=\"action\" value=\"cancel\">Cancel</button>\
</form>",
            action = escape_html(action),
        ),
    )
}

/// A plain error page; `back` offers a way back to Sage when it is a trusted URL.
pub fn error_page(title: &str, message: &str, back: Option<&str>) -> String {
    let link = back
        .map(|b| {
            format!(
                "<a class=\"button primary\" href=\"{}\">Return to Sage</a>",
                escape_html(b)
            )
        })
        .unwrap_or_default();
    layout(
        title,
        &format!(
            "<h1>{}</h1><p>{}</p>{link}",
            escape_html(title),
            escape_html(message)
        ),
    )
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

/// What the headers of the browser pages allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagePolicy {
    /// CSP `frame-ancestors`: who may frame the pages.
    pub frame_ancestors: String,
    /// Forms may also go to plain `http` on loopback (`REDIRECT_ALLOW_HTTP_LOOPBACK`, local runs
    /// only: the local bank login is there).
    pub allow_http_loopback: bool,
}

impl PagePolicy {
    pub fn content_security_policy(&self) -> String {
        let loopback = if self.allow_http_loopback {
            " http://127.0.0.1:* http://localhost:*"
        } else {
            ""
        };
        format!(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https:{loopback}; base-uri 'none'; frame-ancestors {}",
            self.frame_ancestors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflected_values_are_escaped() {
        let page = consent_page("/auth", "<b>Bank</b>", false, "\"><script>", "t'");
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<b>Bank"));
        assert!(page.contains("&quot;&gt;&lt;script&gt;"));
        assert!(page.len() < 4096, "pages stay small");
        let err = error_page(
            "Oops",
            "<img src=x onerror=1>",
            Some("https://a.sagebankdrive.com/?x=\"1\""),
        );
        assert!(!err.contains("<img"));
        assert!(err.contains("href=\"https://a.sagebankdrive.com/?x=&quot;1&quot;\""));
        let authorise = authorise_page(
            "/authorise/x\"",
            "<i>Bank</i>",
            &[
                ("returnUrl", "https://a.intacct.com/?q=\"><script>"),
                ("state", "<s>"),
            ],
        );
        assert!(
            !authorise.contains("<script>")
                && !authorise.contains("<i>")
                && !authorise.contains("<s>")
        );
        assert!(authorise.contains("action=\"/authorise/x&quot;\""));
        let retry = retry_page("Wait", "<b>", "?a=1&b=\"><script>", 1);
        assert!(!retry.contains("<script>") && !retry.contains("<b>"));
        assert!(retry.contains(
            "<meta http-equiv=\"refresh\" content=\"1;url=?a=1&amp;b=&quot;&gt;&lt;script&gt;\">"
        ));
    }

    #[test]
    fn html_escaping_covers_attributes_and_content() {
        assert_eq!(
            escape_html(r#"<script>alert("x")</script>'&"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#x27;&amp;"
        );
    }
}
