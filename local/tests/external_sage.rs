//! `--sage FILE`: the connector pointed at an external Banking Service and Sage ID. A second
//! sandbox process plays Sage's remote sandbox, with its own notification audience and custom
//! header, so that a connector still using the built-in sandbox's settings would fail.

mod common;

use std::process::Stdio;
use std::time::Duration;

use local_stack::external::SageParameters;
use local_stack::stack::default_bin_dir;
use local_stack::template::Template;
use sandbox::SandboxConfig;
use sandbox::config::local;

const AUDIENCE: &str = "external-connector";
const HEADER: (&str, &str) = ("X-External-Key", "external-header-value");

/// The sandbox binary on a free loopback port; killed when dropped.
struct External {
    child: tokio::process::Child,
    base: String,
}

impl External {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = tokio::process::Command::new(default_bin_dir().unwrap().join("sandbox"))
            .args(["--fast", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--notification-audience", AUDIENCE])
            .args(["--custom-header-name", HEADER.0])
            .args(["--custom-header-value", HEADER.1])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting the sandbox binary (cargo build --bins)");
        let base = format!("http://127.0.0.1:{port}");
        let jwks = format!("{base}/.well-known/jwks.json");
        common::eventually(
            "the external sandbox answers",
            Duration::from_secs(20),
            || {
                let jwks = jwks.clone();
                async move {
                    reqwest::get(&jwks)
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                }
            },
        )
        .await;
        Self { child, base }
    }

    /// The parameters a bank writes for it, as for `sam deploy` (the secrets as values).
    fn parameters(&self) -> String {
        let b = &self.base;
        format!(
            "# the external sandbox\n\
             BankingServiceUrl={b}\nSageIdIssuer={b}/\nSageIdAudience={}\n\
             NotificationAudience={AUDIENCE}\nSageIdClientId={}\nSageIdClientSecretArn={}\n\
             ProviderApiKeyArn={}\nNotificationHeaderName={}\nNotificationHeaderValueArn=\"{}\"\n",
            local::PROVIDER_AUDIENCE,
            local::CLIENT_ID,
            local::CLIENT_SECRET,
            local::API_KEY,
            HEADER.0,
            HEADER.1,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_against_an_external_sage_and_the_built_in_one_sees_nothing() {
    let external = External::start().await;
    let file = std::env::temp_dir().join(format!("sage-{}.env", uuid::Uuid::new_v4()));
    std::fs::write(&file, external.parameters()).unwrap();
    let mut options = common::options(SandboxConfig::fast());
    options.sage = Some(SageParameters::load(&file, &Template::load().unwrap()).unwrap());
    let stack = common::start_with(options).await;
    assert_eq!(stack.sage_client().base_url(), external.base);

    let report = local_stack::demo::run(&stack, 20, false)
        .await
        .unwrap_or_else(|e| panic!("the demo against the external sandbox: {e:#}"));
    assert!(report.backfilled > 0, "{report:?}");
    assert_eq!(report.pushed, 20, "{report:?}");
    assert_eq!(report.delivered, report.backfilled + report.pushed);
    assert_eq!(report.violations, 0);

    // The bank was registered, the account created and the statements sent at the external
    // Sage; the built-in sandbox (still the demo bank) saw none of it.
    let outside = sandbox::client::SandboxClient::new(&external.base);
    let at_external = outside.banks().await.unwrap();
    assert!(at_external.iter().any(|b| b.principal_id == stack.bank_id));
    let statements = outside
        .statements(Some(report.bank_account_id))
        .await
        .unwrap();
    assert!(!statements.is_empty());
    let inside = stack.sandbox.client();
    assert!(inside.accounts().await.unwrap().is_empty());
    assert!(
        inside.statements(None).await.unwrap().is_empty(),
        "statements reached the built-in sandbox"
    );

    stack.finish().await;
    let _ = std::fs::remove_file(file);
    drop(external.child);
}
