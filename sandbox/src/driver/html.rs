//! A small HTML scanner for our own pages and the connector's: forms with their inputs,
//! `<meta http-equiv="refresh">`, and `window.location` redirects. Not a general HTML parser.

/// One `<input>`, `<button>` or `<textarea>` inside a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub tag: String,
    pub kind: String,
    pub name: String,
    pub value: String,
    pub checked: bool,
    pub attrs: Vec<(String, String)>,
}

impl Field {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_submit(&self) -> bool {
        (self.tag == "button" && (self.kind.is_empty() || self.kind == "submit"))
            || (self.tag == "input" && matches!(self.kind.as_str(), "submit" | "image"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub method: String,
    pub action: Option<String>,
    pub attrs: Vec<(String, String)>,
    pub fields: Vec<Field>,
}

impl Form {
    pub fn has_attr(&self, name: &str) -> bool {
        self.attrs.iter().any(|(k, _)| k == name)
    }

    /// The fields a browser submits without user input: every named non-submit control with its
    /// value (checkboxes and radios only when checked), plus the first named submit button.
    pub fn default_submission(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for f in &self.fields {
            if f.name.is_empty() || f.is_submit() {
                continue;
            }
            if matches!(f.kind.as_str(), "checkbox" | "radio") && !f.checked {
                continue;
            }
            out.push((f.name.clone(), f.value.clone()));
        }
        if let Some(b) = self
            .fields
            .iter()
            .find(|f| f.is_submit() && !f.name.is_empty())
        {
            out.push((b.name.clone(), b.value.clone()));
        }
        out
    }
}

/// Decodes the character references our pages and typical templates use.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let ent = &tail[1..end];
        let decoded = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ if ent.starts_with("#x") || ent.starts_with("#X") => {
                u32::from_str_radix(&ent[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
            }
            _ if ent.starts_with('#') => ent[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

type Attrs = Vec<(String, String)>;

/// A start tag: name, attributes, byte offset of `<`, byte offset after `>`.
type Tag = (String, Attrs, usize, usize);

/// A start tag at `html[start]` (just after `<`): its name, attributes and the index after `>`.
fn parse_tag(html: &str, start: usize) -> Option<(String, Attrs, usize)> {
    let b = html.as_bytes();
    let mut i = start;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-') {
        i += 1;
    }
    let name = html[start..i].to_ascii_lowercase();
    if name.is_empty() {
        return None;
    }
    let mut attrs = Vec::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return None;
        }
        if b[i] == b'>' {
            return Some((name, attrs, i + 1));
        }
        if b[i] == b'/' {
            i += 1;
            continue;
        }
        let ks = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let key = html[ks..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let vs = i + 1;
                let ve = html[vs..].find(char::from(q)).map(|e| vs + e)?;
                value = decode_entities(&html[vs..ve]);
                i = ve + 1;
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                    i += 1;
                }
                value = decode_entities(&html[vs..i]);
            }
        }
        if !key.is_empty() {
            attrs.push((key, value));
        }
    }
}

fn attr<'a>(attrs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

/// Every start tag in order: (name, attributes, byte offset after the tag).
fn tags(html: &str) -> Vec<Tag> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        let at = i + off;
        let next = at + 1;
        if html[next..].starts_with("!--") {
            i = html[next..]
                .find("-->")
                .map_or(html.len(), |e| next + e + 3);
            continue;
        }
        if html[next..].starts_with('/') {
            // An unterminated end tag ends the scan (and keeps slicing on char boundaries).
            let Some(e) = html[next..].find('>') else {
                break;
            };
            let end = next + e + 1;
            let name: String = html[next + 1..end - 1].trim().to_ascii_lowercase();
            out.push((format!("/{name}"), Vec::new(), at, end));
            i = end;
            continue;
        }
        match parse_tag(html, next) {
            Some((name, attrs, end)) => {
                let is_raw = name == "script" || name == "style";
                out.push((name.clone(), attrs, at, end));
                i = end;
                if is_raw {
                    // Skip raw text so that markup inside scripts is not read as tags.
                    let close = format!("</{name}");
                    i = html[end..]
                        .to_ascii_lowercase()
                        .find(&close)
                        .map_or(html.len(), |e| end + e);
                }
            }
            None => i = next,
        }
    }
    out
}

pub fn forms(html: &str) -> Vec<Form> {
    let mut out: Vec<Form> = Vec::new();
    let mut current: Option<Form> = None;
    let all = tags(html);
    let mut idx = 0;
    while idx < all.len() {
        let (name, attrs, _start, end) = &all[idx];
        match name.as_str() {
            "form" => {
                if let Some(f) = current.take() {
                    out.push(f);
                }
                current = Some(Form {
                    method: attr(attrs, "method").unwrap_or("get").to_ascii_lowercase(),
                    action: attr(attrs, "action").map(str::to_string),
                    attrs: attrs.clone(),
                    fields: Vec::new(),
                });
            }
            "/form" => {
                if let Some(f) = current.take() {
                    out.push(f);
                }
            }
            "input" | "button" | "textarea" => {
                if let Some(f) = current.as_mut() {
                    let kind = attr(attrs, "type")
                        .unwrap_or(if name == "input" { "text" } else { "" })
                        .to_ascii_lowercase();
                    let mut value = attr(attrs, "value").unwrap_or("").to_string();
                    if name == "textarea" {
                        let close = all[idx + 1..]
                            .iter()
                            .find(|t| t.0 == "/textarea")
                            .map(|t| t.2);
                        if let Some(c) = close {
                            value = decode_entities(&html[*end..c]);
                        }
                    }
                    f.fields.push(Field {
                        tag: name.clone(),
                        kind: if name == "button" && kind.is_empty() {
                            "submit".into()
                        } else {
                            kind
                        },
                        name: attr(attrs, "name").unwrap_or("").to_string(),
                        value,
                        checked: attr(attrs, "checked").is_some(),
                        attrs: attrs.clone(),
                    });
                }
            }
            _ => {}
        }
        idx += 1;
    }
    if let Some(f) = current.take() {
        out.push(f);
    }
    out
}

/// `<meta http-equiv="refresh" content="0;url=...">` target.
pub fn meta_refresh(html: &str) -> Option<String> {
    tags(html).into_iter().find_map(|(name, attrs, _, _)| {
        if name != "meta"
            || !attr(&attrs, "http-equiv").is_some_and(|v| v.eq_ignore_ascii_case("refresh"))
        {
            return None;
        }
        let content = attr(&attrs, "content")?;
        let (_, rest) = content.split_once(';')?;
        let rest = rest.trim();
        let url = rest
            .strip_prefix("url=")
            .or_else(|| rest.strip_prefix("URL="))?;
        Some(
            url.trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_string(),
        )
    })
}

/// A string literal assigned by `window.location = "..."`, `location.href = '...'`,
/// `location.replace("...")` or `location.assign("...")` in an inline script.
pub fn script_redirect(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let mut search = 0;
    while let Some(off) = lower[search..].find("location") {
        let at = search + off + "location".len();
        search = at;
        let rest = &html[at..];
        let rest = rest
            .strip_prefix(".href")
            .or_else(|| rest.strip_prefix(".replace"))
            .or_else(|| rest.strip_prefix(".assign"))
            .unwrap_or(rest)
            .trim_start();
        let rest = rest
            .strip_prefix('=')
            .or_else(|| rest.strip_prefix('('))
            .map(str::trim_start);
        let Some(rest) = rest else { continue };
        let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let body = &rest[1..];
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('/') => out.push('/'),
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).collect();
                        if let Some(ch) =
                            u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            out.push(ch);
                        }
                    }
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        if let Some(ch) =
                            u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            out.push(ch);
                        }
                    }
                    Some(o) => out.push(o),
                    None => break,
                },
                c if c == q => return Some(decode_entities(&out)),
                c => out.push(c),
            }
        }
    }
    None
}

/// Visible text, whitespace-collapsed, for error reports.
pub fn text_excerpt(html: &str, max: usize) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let collapsed = decode_entities(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    collapsed.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_forms_and_inputs() {
        let html = r#"<html><form method="POST" action="/x?a=1&amp;b=2" data-bank-login>
            <input type=hidden name=state value="a&quot;b">
            <input name="username"><input type="checkbox" name="account" value="1" checked>
            <input type="checkbox" name="account" value="2">
            <button type="submit" name="action" value="approve">OK</button>
            <button name="action" value="cancel">No</button></form>
            <form><input type="hidden" name="t" value="x"></form>"#;
        let f = forms(html);
        assert_eq!(f.len(), 2);
        assert!(f[0].has_attr("data-bank-login"));
        assert_eq!(f[0].method, "post");
        assert_eq!(f[0].action.as_deref(), Some("/x?a=1&b=2"));
        let sub = f[0].default_submission();
        assert!(sub.contains(&("state".into(), "a\"b".into())));
        assert!(sub.contains(&("account".into(), "1".into())));
        assert!(!sub.contains(&("account".into(), "2".into())));
        assert!(sub.contains(&("action".into(), "approve".into())));
        assert!(!sub.contains(&("action".into(), "cancel".into())));
    }

    #[test]
    fn finds_redirects() {
        assert_eq!(
            meta_refresh(r#"<meta http-equiv="refresh" content="0;url=https://a/b?x=1&amp;y=2">"#)
                .as_deref(),
            Some("https://a/b?x=1&y=2")
        );
        assert_eq!(
            script_redirect(r#"<script>window.location.replace("https:\/\/a\/b?s=1");</script>"#)
                .as_deref(),
            Some("https://a/b?s=1")
        );
        assert_eq!(script_redirect("<p>no location here</p>"), None);
    }

    proptest::proptest! {
        /// The scanner never panics, whatever the page.
        #[test]
        fn never_panics(s in "\\PC*", t in "(<|>|/|=|\"|'|&|;|#|x|é|form|input|meta|script| )*") {
            for page in [s.as_str(), t.as_str()] {
                let _ = forms(page);
                let _ = meta_refresh(page);
                let _ = script_redirect(page);
                let _ = text_excerpt(page, 20);
                let _ = decode_entities(page);
            }
        }
    }

    #[test]
    fn ignores_markup_in_scripts() {
        let html = "<script>var s = '<form action=x>';</script><form action=\"/y\"></form>";
        let f = forms(html);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].action.as_deref(), Some("/y"));
    }
}
