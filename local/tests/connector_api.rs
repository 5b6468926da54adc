//! The spec's flows end to end (spec §8, test plan §9) against the local stack,
//! driven by the sandbox playing Banking Service and a customer's browser.

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use connector_domain::account::AccountStatus as Ours;
use sandbox::SandboxConfig;
use sandbox::driver::{AccountPick, OnboardOptions, ProbeVariant, ReauthOptions};
use sandbox::model::AccountStatus;

fn onboarding(stack: &local_stack::LocalStack) -> OnboardOptions {
    OnboardOptions {
        bank_id: Some(stack.bank_id),
        ..OnboardOptions::default()
    }
}

const LONG: Duration = Duration::from_secs(60);

/// Sage's own example notifications carry only `externalId`: with no `bankId` notified and no
/// single bank configured, the bank the customer picked at `/auth` is the account's bank, and
/// its transactions are delivered, never parked as `MissingBankId`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_notified_bank_id_the_customers_pick_at_auth_gives_it() {
    let mut o = common::options(SandboxConfig::fast().omitting_optional_fields(1.0));
    o.env
        .insert("BANKING_SERVICE_BANK_ID".into(), String::new());
    let stack = common::start_with(o).await;
    let client = stack.sandbox.client();
    let onboarded = stack
        .sandbox
        .driver()
        .onboard(OnboardOptions {
            create: AccountPick::First,
            ..onboarding(&stack)
        })
        .await
        .expect("onboarding");
    let id = onboarded.created[0].bank_account_id;
    common::eventually("the history makes the account active", LONG, || async {
        (client.account(id).await.ok()?.status == AccountStatus::Active).then_some(())
    })
    .await;
    // The notifications really named no bank.
    let notified = client.notifications().await.unwrap();
    let created: Vec<_> = notified
        .iter()
        .filter(|n| n.kind == "resourceCreated/bankAccount")
        .collect();
    assert!(!created.is_empty());
    assert!(
        created
            .iter()
            .all(|n| n.omitted.iter().any(|f| f == "bankId")),
        "{created:?}"
    );
    let table = common::table(&stack);
    assert!(table.parked_records(Some(id), 10).await.unwrap().is_empty());
    assert!(client.violations().await.unwrap().is_empty());
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_offers_every_granted_account_and_creates_pending_accounts() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = stack.sandbox.client();

    // PATCH with several accounts: all offered for selection; the product picks one.
    let first = stack
        .sandbox
        .driver()
        .onboard(OnboardOptions {
            create: AccountPick::First,
            ..onboarding(&stack)
        })
        .await
        .expect("onboarding");
    assert_eq!(first.patched_accounts.len(), 3, "demo has three accounts");
    let patch = first.patch.as_ref().expect("PATCH recorded");
    assert_eq!(patch.status, "success");
    assert!(
        first
            .final_redirect
            .contains(&format!("state={}", first.state))
    );
    let a = first.created[0].bank_account_id;
    assert_eq!(
        client.account(a).await.unwrap().status,
        AccountStatus::Pending
    );

    // A second onboarding in a new run, PATCH with one account: that one is offered.
    let second = stack
        .sandbox
        .driver()
        .onboard(OnboardOptions {
            username: "alice".into(),
            password: "alice".into(),
            consent: AccountPick::First,
            create: AccountPick::First,
            ..onboarding(&stack)
        })
        .await
        .expect("second onboarding");
    assert_eq!(second.patched_accounts.len(), 1);
    let b = second.created[0].bank_account_id;
    assert_eq!(
        client.account(b).await.unwrap().status,
        AccountStatus::Pending
    );

    // Both accounts are known to the connector, and their history reaches Banking Service,
    // which makes them active.
    let table = common::table(&stack);
    for id in [a, b] {
        common::eventually("account stored", LONG, || async {
            table.get_account(id).await.ok().flatten()
        })
        .await;
        common::eventually(
            "first transactions make the account active",
            LONG,
            || async {
                (client.account(id).await.ok()?.status == AccountStatus::Active).then_some(())
            },
        )
        .await;
    }
    assert!(client.violations().await.unwrap().is_empty());
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_uri_with_a_query_gets_and_state_and_cancel_patches_cancelled() {
    let stack = common::start(SandboxConfig::fast()).await;
    let with_query = stack
        .sandbox
        .driver()
        .onboard(OnboardOptions {
            redirect_query: Some("src=probe".into()),
            state: Some("a b&c=d/é".into()),
            create: AccountPick::None,
            ..onboarding(&stack)
        })
        .await
        .expect("onboarding with a query in redirect_uri");
    assert!(
        with_query.final_redirect.contains("?src=probe&state="),
        "{}",
        with_query.final_redirect
    );

    let cancelled = stack
        .sandbox
        .driver()
        .onboard(OnboardOptions {
            cancel: true,
            create: AccountPick::None,
            ..onboarding(&stack)
        })
        .await
        .expect("cancelled onboarding still ends in a redirect");
    let patch = cancelled.patch.expect("PATCH recorded");
    assert_eq!(patch.status, "cancelled");
    assert!(cancelled.patched_accounts.is_empty());
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_probes_never_patch_and_never_redirect_off_the_allow_list() {
    let stack = common::start(SandboxConfig::fast()).await;
    for variant in [
        ProbeVariant::UnknownAuthorisationId,
        ProbeVariant::ReusedAuthorisationId,
        ProbeVariant::BankMismatch,
        ProbeVariant::ForeignRedirectUri,
        ProbeVariant::MissingState,
        ProbeVariant::ReservedCharactersState,
        ProbeVariant::RedirectUriWithQuery,
    ] {
        let outcome = stack
            .sandbox
            .driver()
            .probe_auth(variant, Some(stack.bank_id))
            .await
            .expect("probe ran");
        assert!(
            outcome.ok,
            "{variant:?}: {:?} (status {}, {})",
            outcome.problems, outcome.status, outcome.excerpt
        );
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_authorisation_id_gets_410_and_no_patch() {
    let mut options = common::options(SandboxConfig::fast());
    options
        .env
        .insert("AUTH_HANDSHAKE_TTL_S".into(), "2".into());
    let stack = common::start_with(options).await;
    let client = stack.sandbox.client();
    let auth = client
        .create_authorisation(stack.bank_id, None, true)
        .await
        .expect("announced authorisation");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let url = format!(
        "{}/auth?bank={}&authorisation_id={}&redirect_uri={}&state=s1",
        stack.api_url,
        stack.bank_id,
        auth.id,
        urlencode(&format!(
            "{}/ui/v1/indirectredirect/{}",
            stack.sandbox.base_url(),
            auth.id
        )),
    );
    let r = no_redirects().get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 410);
    assert!(r.headers().get("location").is_none());
    assert!(client.authorisation(auth.id).await.unwrap().patch.is_none());
    stack.finish().await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_query_parameters_are_refused_and_never_reflected() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = stack.sandbox.client();
    let auth = client
        .create_authorisation(stack.bank_id, None, true)
        .await
        .expect("announced authorisation");
    let good_redirect = format!(
        "{}/ui/v1/indirectredirect/{}",
        stack.sandbox.base_url(),
        auth.id
    );
    let payload = "\"><script>alert(1)</script>";
    let base = [
        ("bank", stack.bank_id.to_string()),
        ("authorisation_id", auth.id.to_string()),
        ("redirect_uri", good_redirect.clone()),
        ("state", "s".to_string()),
    ];
    // A script payload in each parameter in turn, then open-redirect attempts.
    let mut cases: Vec<Vec<(&str, String)>> = Vec::new();
    for i in 0..base.len() {
        let mut q = base.to_vec();
        q[i].1 = if q[i].0 == "state" {
            "x".repeat(600)
        } else {
            payload.to_string()
        };
        cases.push(q);
    }
    for hostile in [
        "https://evil.example/",
        "https://sagebankdrive.com.evil.example/",
        "javascript:alert(1)",
        "//evil.example/",
        "http://evil.example/",
    ] {
        let mut q = base.to_vec();
        q[2].1 = hostile.to_string();
        cases.push(q);
    }
    for q in cases {
        for path in ["/auth", "/authrefresh"] {
            let r = no_redirects()
                .get(format!("{}{path}", stack.api_url))
                .query(&q)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            assert!(
                r.headers().get("location").is_none(),
                "{path} {q:?} redirected"
            );
            let csp = r
                .headers()
                .get("content-security-policy")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            assert!(
                csp.contains("frame-ancestors"),
                "{path}: no CSP frame-ancestors"
            );
            assert!(r.headers().get("x-frame-options").is_none());
            let body = r.text().await.unwrap();
            assert!(
                (400..500).contains(&status),
                "{path} {q:?} answered {status}"
            );
            assert!(
                !body.contains("<script>"),
                "{path} reflected a script: {body}"
            );
        }
    }
    assert!(
        client.authorisation(auth.id).await.unwrap().patch.is_none(),
        "nothing may reach Banking Service"
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthorisation_after_consent_expiry_pauses_and_resumes_every_account_of_the_consent() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = stack.sandbox.client();
    let table = common::table(&stack);
    let onboarded = stack
        .sandbox
        .driver()
        .onboard(OnboardOptions {
            create: AccountPick::Indexes(vec![0, 1]),
            ..onboarding(&stack)
        })
        .await
        .expect("onboarding");
    let ids: Vec<_> = onboarded
        .created
        .iter()
        .map(|c| c.bank_account_id)
        .collect();
    for id in &ids {
        common::eventually("account active", LONG, || async {
            (client.account(*id).await.ok()?.status == AccountStatus::Active).then_some(())
        })
        .await;
    }
    // The consent expires at the bank; the reconciler notices it.
    let ext = onboarded.created[0].external_id.clone();
    let consent = table
        .granted_account(&ext)
        .await
        .unwrap()
        .expect("consent known")
        .consent_id;
    client
        .expire_consent(&consent)
        .await
        .expect("expire consent");
    let reconciler = stack.function("reconciler").unwrap();
    let event = serde_json::to_vec(&local_stack::events::scheduled_event()).unwrap();
    reconciler.invoke(event).await.expect("reconciler ran");

    // A 0-transaction authRequired statement per account: Banking Service marks them.
    for id in &ids {
        common::eventually("account authRequired at Banking Service", LONG, || async {
            (client.account(*id).await.ok()?.status == AccountStatus::AuthRequired).then_some(())
        })
        .await;
        let ours = table.get_account(*id).await.unwrap().unwrap();
        assert_eq!(ours.status, Ours::AuthRequired);
    }
    // Pushes pause: a new transaction waits.
    let before = common::held(&stack, ids[0]).await;
    let fresh = client.generate_transactions(&ext, 3).await.unwrap();
    common::push_bank_transactions(&stack, &ext, &fresh).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        common::held(&stack, ids[0]).await,
        before,
        "pushed while paused"
    );

    // Re-authorise one account: every account under the consent comes back, posting resumes.
    let re = stack
        .sandbox
        .driver()
        .reauth(ids[0], ReauthOptions::default())
        .await
        .expect("re-authorisation");
    assert_eq!(re.patch.expect("PATCH").status, "success");
    for id in &ids {
        common::eventually("account active again", LONG, || async {
            (client.account(*id).await.ok()?.status == AccountStatus::Active).then_some(())
        })
        .await;
    }
    let booked = fresh.iter().filter(|t| t.status == "booked").count();
    common::wait_held(&stack, ids[0], before + booked, LONG).await;
    assert!(client.violations().await.unwrap().is_empty());
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthorisation_by_someone_else_is_refused_without_a_patch() {
    let stack = common::start(SandboxConfig::fast()).await;
    let onboarded = stack
        .sandbox
        .driver()
        .onboard(OnboardOptions {
            create: AccountPick::First,
            ..onboarding(&stack)
        })
        .await
        .expect("onboarding");
    let id = onboarded.created[0].bank_account_id;
    common::eventually("account stored", LONG, || async {
        common::table(&stack).get_account(id).await.ok().flatten()
    })
    .await;
    let outcome = stack
        .sandbox
        .driver()
        .reauth(
            id,
            ReauthOptions {
                username: "alice".into(),
                password: "alice".into(),
                ..ReauthOptions::default()
            },
        )
        .await;
    let auths = stack.sandbox.client().authorisations().await.unwrap();
    let reauth = auths
        .iter()
        .rfind(|a| a.bank_account_id == Some(id))
        .expect("a re-authorisation was created");
    assert!(
        reauth.patch.is_none(),
        "PATCH sent for a foreign customer: {outcome:?}"
    );
    assert!(outcome.is_err(), "the browser must not end on Sage's page");

    // An externalId that is not the account's: refused, no PATCH either.
    let probe = stack
        .sandbox
        .driver()
        .reauth(
            id,
            ReauthOptions {
                external_id_override: Some("acc_NOT_THEIRS".into()),
                ..ReauthOptions::default()
            },
        )
        .await;
    assert!(probe.is_err());
    let patched = stack
        .sandbox
        .client()
        .authorisations()
        .await
        .unwrap()
        .iter()
        .filter(|a| a.bank_account_id == Some(id) && a.patch.is_some())
        .count();
    assert_eq!(patched, 0);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_account_linking_offers_new_accounts_and_statements_flow_for_each() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = stack.sandbox.client();
    let driver = stack.sandbox.driver();
    let onboarded = driver
        .onboard(OnboardOptions {
            create: AccountPick::First,
            ..onboarding(&stack)
        })
        .await
        .expect("onboarding");
    let first = onboarded.created[0].bank_account_id;
    common::eventually("first account active", LONG, || async {
        (client.account(first).await.ok()?.status == AccountStatus::Active).then_some(())
    })
    .await;

    // An account opened at the bank after onboarding appears as a candidate.
    let opened = client
        .open_bank_account("demo", "savings", Some("Rainy Day ****4242"))
        .await
        .expect("open account");
    let candidates = driver
        .available_accounts(first)
        .await
        .expect("available accounts");
    assert_eq!(candidates.len(), 4, "{candidates:?}");
    let connected: Vec<_> = candidates.iter().filter(|c| c.metadata.connected).collect();
    assert_eq!(connected.len(), 1);
    assert_eq!(connected[0].external_id, onboarded.created[0].external_id);
    assert!(
        candidates
            .iter()
            .any(|c| c.account_name.contains("Rainy Day")),
        "{opened:?}"
    );

    // Link one, then two: each gets its notification and its statements.
    let mut linked = Vec::new();
    for c in candidates.iter().filter(|c| !c.metadata.connected).take(2) {
        let created = driver
            .link(c.bank_account_candidate_id, "2026-10-01T00:00:00.000Z")
            .await
            .expect("link");
        assert_eq!(
            created.notification.as_ref().and_then(|n| n.final_status),
            Some(200)
        );
        linked.push(created.bank_account_id);
    }
    for id in &linked {
        common::eventually("linked account active", LONG, || async {
            (client.account(*id).await.ok()?.status == AccountStatus::Active).then_some(())
        })
        .await;
    }
    let after = driver.available_accounts(first).await.unwrap();
    assert_eq!(after.iter().filter(|c| c.metadata.connected).count(), 3);

    // Unknown externalId → 404; a bad token → 401.
    let (status, body) =
        common::available_accounts_raw(&stack, "acc_UNKNOWN", sandbox::TokenVariant::Valid).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "NotFoundError");
    let (status, _) = common::available_accounts_raw(
        &stack,
        &onboarded.created[0].external_id,
        sandbox::TokenVariant::Expired,
    )
    .await;
    assert_eq!(status, 401);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_stops_pushes_and_a_reconnection_starts_afresh() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = stack.sandbox.client();
    let table = common::table(&stack);
    let driver = stack.sandbox.driver();
    let onboarded = driver
        .onboard(OnboardOptions {
            create: AccountPick::First,
            ..onboarding(&stack)
        })
        .await
        .expect("onboarding");
    let id = onboarded.created[0].bank_account_id;
    let ext = onboarded.created[0].external_id.clone();
    common::eventually("account active", LONG, || async {
        (client.account(id).await.ok()?.status == AccountStatus::Active).then_some(())
    })
    .await;

    let (view, delivery) = driver.delete_account(id).await.expect("delete");
    assert_eq!(view.status, AccountStatus::Cancelled);
    assert_eq!(delivery.final_status, Some(200));
    common::eventually("the connector tombstones the account", LONG, || async {
        (table.get_account(id).await.ok()??.status == Ours::Cancelled).then_some(())
    })
    .await;
    // The same resourceDeleted again is a no-op answered 200.
    let again = driver
        .send_notification(sandbox::driver::NotificationRequest {
            bank_id: Some(stack.bank_id),
            notification: sandbox::driver::NotificationSpec::BankAccountDeleted {
                bank_account_id: id,
                external_id: ext.clone(),
            },
            token: sandbox::TokenVariant::Valid,
            header: Default::default(),
            retry: false,
            delivery: Default::default(),
        })
        .await
        .expect("redelivery");
    assert_eq!(again.final_status, Some(200));

    // Nothing more is posted for it.
    let statements = client.statements(Some(id)).await.unwrap().len();
    let fresh = client.generate_transactions(&ext, 3).await.unwrap();
    let records: Vec<_> = fresh.iter().map(local_stack::demo::ingest_record).collect();
    let (status, _) = common::ingest(
        &stack,
        &serde_json::json!({"externalId": ext, "transactions": records}),
    )
    .await;
    assert_eq!(status, 404, "ingest for an offboarded account");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(client.statements(Some(id)).await.unwrap().len(), statements);

    // Reconnecting the same real account: a new bankAccountId, history from its own start.
    let again = driver
        .onboard(OnboardOptions {
            create: AccountPick::Ids(vec![ext.clone()]),
            requested_start_date: Some("2026-11-01T00:00:00.000Z".into()),
            ..onboarding(&stack)
        })
        .await
        .expect("reconnection");
    let new_id = again.created[0].bank_account_id;
    assert_ne!(new_id, id);
    common::eventually("the reconnected account is active", LONG, || async {
        (client.account(new_id).await.ok()?.status == AccountStatus::Active).then_some(())
    })
    .await;
    let stored = client.stored_transactions(new_id).await.unwrap();
    assert!(!stored.is_empty());
    assert!(
        stored
            .iter()
            .all(|t| t.date_posted.as_str() >= "2026-11-01"),
        "history before the new start date was sent"
    );
    assert!(client.violations().await.unwrap().is_empty());
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_to_an_account_cancelled_behind_our_back_gets_409_and_stops() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = stack.sandbox.client();
    let table = common::table(&stack);
    let onboarded = stack
        .sandbox
        .driver()
        .onboard(OnboardOptions {
            create: AccountPick::First,
            ..onboarding(&stack)
        })
        .await
        .expect("onboarding");
    let id = onboarded.created[0].bank_account_id;
    let ext = onboarded.created[0].external_id.clone();
    common::eventually("account active", LONG, || async {
        (client.account(id).await.ok()?.status == AccountStatus::Active).then_some(())
    })
    .await;
    // Cancel at Banking Service, its notification held back for a minute.
    let r = reqwest::Client::new()
        .delete(format!(
            "{}/_sandbox/bankaccounts/{id}",
            stack.sandbox.base_url()
        ))
        .json(&serde_json::json!({"skipWait": true, "delayMs": 60000}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let fresh = client.generate_transactions(&ext, 2).await.unwrap();
    common::push_bank_transactions(&stack, &ext, &fresh).await;
    common::eventually(
        "the connector learns of the cancellation from the 409",
        LONG,
        || async { (table.get_account(id).await.ok()??.status == Ours::Cancelled).then_some(()) },
    )
    .await;
    // The status is written first, then the pending records parked.
    let parked = common::eventually("the pending records parked", LONG, || async {
        let parked = table.parked_records(Some(id), 100).await.ok()?;
        (!parked.is_empty()).then_some(parked)
    })
    .await;
    assert!(
        parked.iter().all(|p| p.reason == "AccountCancelled"),
        "{parked:?}"
    );
    let metrics = serde_json::to_value(client.metrics().await.unwrap()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = serde_json::to_value(client.metrics().await.unwrap()).unwrap();
    assert_eq!(
        metrics["requests"], later["requests"],
        "the connector kept calling Banking Service for a cancelled account"
    );
    stack.finish().await;
}

/// An authorisation announced to the connector (stored by its worker).
async fn announced(stack: &local_stack::LocalStack) -> uuid::Uuid {
    let auth = stack
        .sandbox
        .client()
        .create_authorisation(stack.bank_id, None, true)
        .await
        .expect("announced authorisation");
    let table = common::table(stack);
    common::eventually("the handshake stored", LONG, || async {
        table.handshake(auth.id).await.ok().flatten()
    })
    .await;
    auth.id
}

/// `GET /auth` for `id` as Banking Service links to it.
fn start_url(stack: &local_stack::LocalStack, id: uuid::Uuid) -> String {
    format!(
        "{}/auth?bank={}&authorisation_id={id}&redirect_uri={}&state=s1",
        stack.api_url,
        stack.bank_id,
        urlencode(&format!(
            "{}/ui/v1/indirectredirect/{id}",
            stack.sandbox.base_url()
        )),
    )
}

/// The hidden `ui_token` of a consent page.
fn ui_token(page: &str) -> String {
    let at = page
        .find("name=\"ui_token\" value=\"")
        .unwrap_or_else(|| panic!("no ui_token in {page}"));
    let rest = &page[at + "name=\"ui_token\" value=\"".len()..];
    rest[..rest.find('"').expect("closing quote")].to_string()
}

/// Loads the consent page; its status and `ui_token` (empty when it is not the consent page).
async fn open_page(stack: &local_stack::LocalStack, id: uuid::Uuid) -> (u16, String) {
    let r = no_redirects()
        .get(start_url(stack, id))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let token = if status == 200 {
        ui_token(&body)
    } else {
        String::new()
    };
    (status, token)
}

/// Submits the consent page's form with "Cancel": the connector PATCHes `cancelled` at once.
async fn cancel(
    stack: &local_stack::LocalStack,
    id: uuid::Uuid,
    token: &str,
) -> (u16, Option<String>) {
    let r = no_redirects()
        .post(format!("{}/auth", stack.api_url))
        .form(&[
            ("authorisation_id", id.to_string().as_str()),
            ("ui_token", token),
            ("action", "cancel"),
        ])
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (r.status().as_u16(), location)
}

/// `PATCH /v1/authorisations/{id}` requests Banking Service received.
async fn patch_requests(stack: &local_stack::LocalStack, id: uuid::Uuid) -> usize {
    let path = format!("/v1/authorisations/{id}");
    stack
        .sandbox
        .client()
        .requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == path)
        .count()
}

/// The handshake's `state` and whether it carries a claim's lease, as stored.
async fn stored_handshake(stack: &local_stack::LocalStack, id: uuid::Uuid) -> (String, bool) {
    let item = stack
        .dynamodb
        .get_item()
        .table_name(&stack.table_name)
        .key("pk", AttributeValue::S(format!("AUTH#{id}")))
        .key("sk", AttributeValue::S("AUTH".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("handshake item");
    let state = item
        .get("state")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    (state, item.contains_key("patchLeaseUntil"))
}

fn patch_fault(fault: sandbox::model::RouteFault) -> sandbox::model::FaultSet {
    sandbox::model::FaultSet {
        routes: vec![sandbox::model::RouteFault {
            route: "PATCH /v1/authorisations/{authorisationId}".into(),
            ..fault
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_completes_only_after_the_patch_and_two_tabs_patch_once() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = stack.sandbox.client();
    let id = announced(&stack).await;
    let (status, token) = open_page(&stack, id).await;
    assert_eq!(status, 200);

    // A PATCH that fails on every attempt gives the handshake back: the customer may try again.
    client
        .set_faults(&patch_fault(sandbox::model::RouteFault {
            error_rate: 1.0,
            error_status: 503,
            remaining: Some(3),
            ..Default::default()
        }))
        .await
        .unwrap();
    let (status, _) = cancel(&stack, id, &token).await;
    assert_eq!(status, 500);
    assert_eq!(stored_handshake(&stack, id).await.0, "opened");

    // The same form submitted from two tabs at once (a duplicated tab carries the same token),
    // with a slow PATCH: one claims and PATCHes, the other is refused without a PATCH, and the
    // handshake is `completed` only once Banking Service answered.
    client
        .set_faults(&patch_fault(sandbox::model::RouteFault {
            latency_ms: 3000,
            ..Default::default()
        }))
        .await
        .unwrap();
    let before = patch_requests(&stack, id).await;
    let (a, b, during) = tokio::join!(
        cancel(&stack, id, &token),
        cancel(&stack, id, &token),
        async {
            // Read until the claim lands; the PATCH it waits on takes 3 s.
            let claimed = "the claim, while the PATCH is in flight";
            common::eventually(claimed, Duration::from_millis(2500), || async {
                let state = stored_handshake(&stack, id).await.0;
                (state == "patching").then_some(state)
            })
            .await
        }
    );
    assert_eq!(
        during, "patching",
        "the handshake's state while the PATCH was in flight"
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [303, 409], "{a:?} {b:?}");
    let location = a.1.or(b.1).unwrap();
    assert!(location.contains("state=s1"), "{location}");
    assert_eq!(patch_requests(&stack, id).await, before + 1);
    assert_eq!(
        stored_handshake(&stack, id).await,
        ("completed".into(), false)
    );
    assert_eq!(
        client
            .authorisation(id)
            .await
            .unwrap()
            .patch
            .unwrap()
            .status,
        "cancelled"
    );
    client.clear_faults().await.unwrap();
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_by_a_crash_lapses_and_the_flow_can_be_retried() {
    let stack = common::start(SandboxConfig::fast()).await;
    let id = announced(&stack).await;
    let (status, token) = open_page(&stack, id).await;
    assert_eq!(status, 200);

    // A function claimed the handshake for its PATCH and died before completing it.
    let lease_until = chrono::Utc::now() + chrono::TimeDelta::seconds(4);
    stack
        .dynamodb
        .update_item()
        .table_name(&stack.table_name)
        .key("pk", AttributeValue::S(format!("AUTH#{id}")))
        .key("sk", AttributeValue::S("AUTH".into()))
        .update_expression("SET #state = :patching, patchLeaseUntil = :until, patchClaim = :c")
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(":patching", AttributeValue::S("patching".into()))
        .expression_attribute_values(
            ":until",
            AttributeValue::N(lease_until.timestamp_millis().to_string()),
        )
        .expression_attribute_values(":c", AttributeValue::S("crashed".into()))
        .send()
        .await
        .unwrap();

    // While the claim holds, neither a reload nor the form gets anywhere, and nothing is sent.
    let (status, _) = open_page(&stack, id).await;
    assert_eq!(status, 409, "reload while claimed");
    let (status, location) = cancel(&stack, id, &token).await;
    assert_eq!(status, 409, "form while claimed");
    assert!(location.is_none());
    assert_eq!(patch_requests(&stack, id).await, 0);
    assert_eq!(
        stored_handshake(&stack, id).await,
        ("patching".into(), true)
    );

    // Once the lease ran out the customer starts again from the link, and this time it is
    // reported and completed.
    let wait = (lease_until - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(500)).await;
    let (status, token) = open_page(&stack, id).await;
    assert_eq!(status, 200, "reload after the claim lapsed");
    let (status, location) = cancel(&stack, id, &token).await;
    assert_eq!(status, 303);
    assert!(location.unwrap().contains("state=s1"));
    assert_eq!(patch_requests(&stack, id).await, 1);
    assert_eq!(
        stored_handshake(&stack, id).await,
        ("completed".into(), false)
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn available_accounts_answers_from_the_cache_in_time_when_the_bank_hangs() {
    use connector_aws::consents::{ConsentRecord, GrantedAccount};
    // A bank that takes connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut options = common::options(SandboxConfig::fast());
    options.env.insert(
        "BANK_API_URL".into(),
        format!("http://{}/bank", silent.local_addr().unwrap()),
    );
    let stack = common::start_with(options).await;
    let table = common::table(&stack);
    let account = |external_id: &str, name: &str| GrantedAccount {
        external_id: external_id.into(),
        consent_id: "consent-silent-bank".into(),
        customer_id: "cust-silent".into(),
        name: name.into(),
        kind: "business".into(),
        identifier: format!("{}", name.len()),
        branch: None,
        bank_code: None,
        bank_id: Some(stack.bank_id),
        granted_at: None,
    };
    let accounts = vec![
        account("acc_SILENT1", "Current ****0001"),
        account("acc_SILENT2", "Savings ****0002"),
    ];
    table.put_granted_account(&accounts[0]).await.unwrap();
    table
        .put_consent(&ConsentRecord {
            consent_id: "consent-silent-bank".into(),
            customer_id: "cust-silent".into(),
            status: "active".into(),
            expires_at: chrono::Utc::now() + chrono::TimeDelta::days(30),
            accounts: accounts.clone(),
            updated_at: chrono::Utc::now(),
        })
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let (status, body) =
        common::available_accounts_raw(&stack, "acc_SILENT1", sandbox::TokenVariant::Valid).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|a| a["externalId"].as_str())
        .collect();
    assert_eq!(names, ["acc_SILENT1", "acc_SILENT2"], "the cached list");
    // Banking Service gives up after 10 s; the function's timeout is 10 s too.
    assert!(took < Duration::from_secs(9), "answered after {took:?}");
    drop(silent);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_callback_url_never_comes_from_the_host_header() {
    let stack = common::start(SandboxConfig::fast()).await;
    let id = announced(&stack).await;
    let spoofed = "evil.example";
    let r = no_redirects()
        .get(start_url(&stack, id))
        .header("host", spoofed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let token = ui_token(&r.text().await.unwrap());
    let r = no_redirects()
        .post(format!("{}/auth", stack.api_url))
        .header("host", spoofed)
        .form(&[
            ("authorisation_id", id.to_string().as_str()),
            ("ui_token", token.as_str()),
            ("action", "continue"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let login = url::Url::parse(
        r.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("a redirect to the bank's login"),
    )
    .unwrap();
    let callback = login
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.to_string())
        .expect("redirect_uri");
    assert_eq!(callback, format!("{}/auth/callback", stack.api_url));
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_functions_refuse_to_start_off_lambda_without_a_public_base_url() {
    let mut options = common::options(SandboxConfig::fast());
    options.env.insert("PUBLIC_BASE_URL".into(), String::new());
    let logs = options.log_dir.clone();
    let _slot = common::slots().acquire_owned().await.unwrap();
    let error = match local_stack::LocalStack::start(options).await {
        Ok(stack) => {
            stack.shutdown().await;
            panic!("the stack started without PUBLIC_BASE_URL");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("auth") && error.contains("PUBLIC_BASE_URL"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(logs);
}

/// `GET` a start link: status, body and how long it took.
async fn timed_get(url: &str) -> (u16, String, Duration) {
    let started = std::time::Instant::now();
    let r = no_redirects().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (status, body, started.elapsed())
}

/// The target of a page's `<meta http-equiv="refresh">`, resolved against `base`.
fn refresh_target(base: &str, page: &str) -> Option<String> {
    let at = page.find("http-equiv=\"refresh\" content=\"")?;
    let rest = &page[at + "http-equiv=\"refresh\" content=\"".len()..];
    let content = &rest[..rest.find('"')?];
    let target = content.split_once("url=")?.1.replace("&amp;", "&");
    Some(url::Url::parse(base).ok()?.join(&target).ok()?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_authorisation_ids_hold_few_instances_and_the_rest_get_a_page_that_retries() {
    const GRACE: Duration = Duration::from_secs(4);
    let mut options = common::options(SandboxConfig::fast());
    options
        .env
        .insert("AUTH_GRACE_S".into(), GRACE.as_secs().to_string());
    // One instance more than the waits allowed at once (`GRACE_WAITS` in
    // shared/app/src/browser.rs), and one for the late customer.
    let waits = 4;
    options.http_instances = waits + 2;
    let stack = common::start_with(options).await;
    let client = stack.sandbox.client();

    // Made-up ids, all at once: at most GRACE_WAITS of them wait for a notification.
    let made_up: Vec<_> = (0..=waits)
        .map(|_| {
            let url = start_url(&stack, uuid::Uuid::new_v4());
            tokio::spawn(async move { timed_get(&url).await })
        })
        .collect();

    // A real customer whose notification is late, while the waits are taken: a page that
    // comes back, answered at once, which lands on the consent page once the notification is in.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let late = client
        .create_authorisation(stack.bank_id, None, false)
        .await
        .expect("authorisation");
    let link = start_url(&stack, late.id);
    let (status, page, took) = timed_get(&link).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        took < Duration::from_secs(2),
        "the retry page took {took:?}"
    );
    let again = refresh_target(&link, &page).unwrap_or_else(|| panic!("no refresh: {page}"));
    stack
        .sandbox
        .driver()
        .send_notification(sandbox::driver::NotificationRequest {
            bank_id: Some(stack.bank_id),
            notification: sandbox::driver::NotificationSpec::AuthorisationCreated {
                authorisation_id: Some(late.id),
            },
            token: sandbox::TokenVariant::Valid,
            header: Default::default(),
            retry: true,
            delivery: Default::default(),
        })
        .await
        .expect("the late notification");
    // Sage's notification is answered once queued; it is in once the worker has stored it.
    let table = common::table(&stack);
    common::eventually("the late handshake stored", LONG, || async {
        table.handshake(late.id).await.ok().flatten()
    })
    .await;
    let (status, page, _) = timed_get(&again).await;
    assert_eq!(status, 200);
    ui_token(&page);

    let mut waited = 0;
    let mut retried = 0;
    for task in made_up {
        let (status, page, took) = task.await.unwrap();
        match status {
            403 => {
                assert!(took >= GRACE - Duration::from_millis(500), "{took:?}");
                waited += 1;
            }
            200 => {
                assert!(refresh_target(&link, &page).is_some(), "{page}");
                assert!(
                    took < Duration::from_secs(2),
                    "the retry page took {took:?}"
                );
                retried += 1;
            }
            other => panic!("made-up id answered {other}: {page}"),
        }
    }
    assert!(waited <= waits, "{waited} waits at once");
    assert!(retried >= 1, "none got the retry page");

    // A reload once the grace period is used up is refused at once.
    let spent = format!(
        "{}&grace_retry={}",
        start_url(&stack, uuid::Uuid::new_v4()),
        GRACE.as_secs()
    );
    let (status, _, took) = timed_get(&spent).await;
    assert_eq!(status, 403);
    assert!(took < Duration::from_secs(2), "{took:?}");
    stack.finish().await;
}
