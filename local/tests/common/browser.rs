//! The browser the customer pages are tested in: headless Chromium through ChromeDriver, a
//! fresh profile per session, driven from the keyboard; each page checked for script and with
//! axe-core (WCAG 2.1 A and AA), and screenshots of what the customer sees.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use local_stack::browser::{BrowserTools, CHROMIUM_FLAGS, ChromeDriver};
use sandbox::SandboxConfig;

pub const LONG: Duration = Duration::from_secs(60);

/// A Chromium session of its own (fresh profile), and the ChromeDriver that runs it.
pub struct Browser {
    pub client: Client,
    driver: ChromeDriver,
    tools: BrowserTools,
    profile: PathBuf,
    shots: PathBuf,
    prefix: &'static str,
    shot: u32,
}

impl Browser {
    pub async fn start(prefix: &'static str) -> Browser {
        let tools = tokio::task::spawn_blocking(local_stack::browser::ensure_installed)
            .await
            .expect("install task")
            .unwrap_or_else(|e| panic!("browser tools: {e:#}"));
        let driver = ChromeDriver::start(&tools)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let profile =
            std::env::temp_dir().join(format!("connector-chromium-{}", uuid::Uuid::new_v4()));
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": tools.chromium,
                "args": args,
                // Third-party cookies blocked, as browsers increasingly do by default.
                "prefs": {
                    "profile.block_third_party_cookies": true,
                    "profile.cookie_controls_mode": 1,
                },
            }),
        );
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("starting a Chromium session: {e}"));
        let shots = std::env::var_os("CONNECTOR_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                local_stack::moto::repo_root()
                    .join("target")
                    .join("browser-screenshots")
            });
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        let b = Browser {
            client,
            driver,
            tools,
            profile,
            shots,
            prefix,
            shot: 0,
        };
        b.axe_finds_violations().await;
        b
    }

    /// Ends the session, Chromium and ChromeDriver.
    pub async fn stop(self) {
        let _ = self.client.close().await;
        self.driver.stop().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Into the product page's iframe (the connector's, the bank's or Banking Service's page).
    pub async fn enter_frame(&self) {
        self.client.enter_parent_frame().await.expect("top");
        self.client
            .enter_frame(0)
            .await
            .expect("the product page has an iframe");
    }

    pub async fn to_top(&self) {
        // Twice the parent of a first-level frame is the top.
        let _ = self.client.enter_parent_frame().await;
    }

    /// Waits for `css` in the current browsing context (reloads and redirects included).
    pub async fn wait_for(&self, css: &str, in_frame: bool) {
        let started = Instant::now();
        loop {
            if in_frame {
                self.enter_frame().await;
            }
            if self.client.find(Locator::Css(css)).await.is_ok() {
                return;
            }
            if started.elapsed() > LONG {
                let text = self
                    .js("return document.body ? document.body.innerText : ''")
                    .await;
                panic!("timed out waiting for {css}; the page says: {text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the current context's first `h1` says `heading`: after a form is sent, the
    /// page that sent it stays until the next one has loaded.
    pub async fn wait_for_heading(&self, heading: &str) {
        let started = Instant::now();
        loop {
            let h1 = self
                .js("const h = document.querySelector('h1'); return h ? h.innerText : null")
                .await;
            if h1 == json!(heading) {
                return;
            }
            if started.elapsed() > LONG {
                let text = self
                    .js("return document.body ? document.body.innerText : ''")
                    .await;
                panic!("timed out waiting for the heading {heading:?}; the page says: {text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The HTTP status the top-level page was served with, as the browser saw it.
    pub async fn status(&self) -> u16 {
        let status = self
            .js("return performance.getEntriesByType('navigation')[0].responseStatus")
            .await;
        status
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or_else(|| panic!("no response status: {status}"))
    }

    /// The current context's URL.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current URL")
            .to_string()
    }

    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap_or_default()
    }

    pub async fn press(&self, key: Key) {
        let k: char = key.into();
        self.client
            .perform_actions(
                KeyActions::new("keyboard".into())
                    .then(KeyAction::Down { value: k })
                    .then(KeyAction::Up { value: k }),
            )
            .await
            .expect("key press");
    }

    /// Presses Tab until the focused element of the current context matches `css`: the control
    /// is reachable by keyboard, in the page's order.
    pub async fn tab_to(&self, css: &str) {
        let check = format!(
            "const e = document.activeElement; return !!(e && e.matches({}));",
            json!(css)
        );
        for _ in 0..40 {
            self.press(Key::Tab).await;
            if self.js(&check).await == json!(true) {
                return;
            }
        }
        panic!("{css} is not reachable with the Tab key");
    }

    pub async fn type_text(&self, text: &str) {
        let mut seq = KeyActions::new("keyboard".into());
        for c in text.chars() {
            seq = seq
                .then(KeyAction::Down { value: c })
                .then(KeyAction::Up { value: c });
        }
        self.client.perform_actions(seq).await.expect("typing");
    }

    /// Checks the page of the current context: no script to run (no `<script>`, no `on…`
    /// handler, no `javascript:` URL) and no axe-core violation at WCAG 2.1 A and AA.
    pub async fn check_page(&self, what: &str) {
        let scripted = self
            .js(
                "return document.scripts.length + Array.from(document.querySelectorAll('*')).filter(e => \
                 Array.from(e.attributes).some(a => a.name.startsWith('on') || /^\\s*javascript:/i.test(a.value))).length;",
            )
            .await;
        assert_eq!(scripted, json!(0), "{what}: the page relies on script");
        let axe = std::fs::read_to_string(&self.tools.axe_js).expect("axe.min.js");
        self.js(&axe).await;
        let violations = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}, iframes: false})\
                 .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,\
                   nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + n.failureSummary)}))))\
                 .catch(e => done([{id: 'axe-error', help: String(e)}]));",
                vec![],
            )
            .await
            .expect("axe.run");
        assert_eq!(
            violations,
            json!([]),
            "{what}: accessibility violations (WCAG 2.1 AA)"
        );
    }

    /// axe-core finds what it must on a page made to fail (no language, an image without a
    /// text alternative, a field without a label): its silence on the real pages means something.
    pub async fn axe_finds_violations(&self) {
        self.goto("data:text/html,<!doctype html><title>t</title><img src='x.png'><input>")
            .await;
        let axe = std::fs::read_to_string(&self.tools.axe_js).expect("axe.min.js");
        self.js(&axe).await;
        let ids = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})\
                 .then(r => done(r.violations.map(v => v.id).sort()));",
                vec![],
            )
            .await
            .expect("axe.run");
        assert_eq!(ids, json!(["html-has-lang", "image-alt", "label"]));
    }

    /// Saves what the customer sees (the whole window, the framed page included).
    pub async fn screenshot(&mut self, name: &str) {
        self.shot += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        let file = self
            .shots
            .join(format!("{}-{:02}-{name}.png", self.prefix, self.shot));
        std::fs::write(&file, png).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }

    /// Can a page of the current context keep a cookie? (`SameSite=None; Secure`, which
    /// loopback origins may set: only the third-party blocking refuses it.)
    pub async fn can_set_cookie(&self) -> bool {
        self.js(
            "document.cookie = 'probe=1; SameSite=None; Secure; path=/'; \
             const ok = document.cookie.includes('probe=1'); \
             document.cookie = 'probe=; Max-Age=0; SameSite=None; Secure; path=/'; return ok;",
        )
        .await
            == json!(true)
    }
}

/// A stack whose bank is called "Demo Bank" on the connector's pages; `extra` adds to the
/// functions' environment.
pub async fn start_stack(extra: &[(&str, &str)]) -> super::TestStack {
    let mut o = super::options(SandboxConfig::fast());
    o.env.insert("BANK_DISPLAY_NAME".into(), "Demo Bank".into());
    for (k, v) in extra {
        o.env.insert(k.to_string(), v.to_string());
    }
    super::start_with(o).await
}

/// On the demo bank's sign-in page (the current context): signs in as `demo` by keyboard.
pub async fn sign_in_at_bank(b: &Browser) {
    b.tab_to("input[name='username']").await;
    b.type_text("demo").await;
    b.tab_to("input[name='password']").await;
    b.type_text("demo").await;
}
