//! The local stack itself behaves like the AWS pieces it stands in for: poison messages go to
//! the DLQ without blocking their queue; a function with missing configuration refuses to
//! start and names the variable; `invoke` runs one function against `up`'s stack and ends with
//! a function's start-up error; Ctrl-C leaves no process behind.

mod common;

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use sandbox::SandboxConfig;
use serde_json::json;

async fn dlq_messages(
    stack: &local_stack::LocalStack,
    dlq: &str,
) -> Vec<aws_sdk_sqs::types::Message> {
    let out = stack
        .sqs
        .receive_message()
        .queue_url(&stack.queue_urls[dlq])
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive from the DLQ");
    out.messages.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dlq_with_a_reason_and_never_block_their_group() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = stack.sandbox.client();
    let created = client
        .create_account(&sandbox::model::CreateAccountRequest::new(
            stack.bank_id,
            "acc_POISON",
            "2026-01-01T00:00:00.000Z",
        ))
        .await
        .unwrap();
    let id = created.account.bank_account_id;
    common::eventually("account known", Duration::from_secs(30), || async {
        common::table(&stack).get_account(id).await.ok().flatten()
    })
    .await;

    // Garbage in the account's FIFO group, then real work behind it in the same group.
    stack
        .sqs
        .send_message()
        .queue_url(&stack.queue_urls["PushQueue"])
        .message_body("{not json")
        .message_group_id(id.to_string())
        .message_deduplication_id("poison-1")
        .send()
        .await
        .unwrap();
    stack
        .sqs
        .send_message()
        .queue_url(&stack.queue_urls["NotificationsQueue"])
        .message_body(r#"{"kind":"somethingNew"}"#)
        .send()
        .await
        .unwrap();
    let (status, body) = common::ingest(
        &stack,
        &json!({"externalId": "acc_POISON", "transactions": [{
            "uniqueId": "p-1", "transactionAmount": "5.00", "transactionType": "CREDIT",
            "datePosted": "2026-11-01T10:00:00.000Z", "runningBalance": "5.00"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    common::wait_held(&stack, id, 1, Duration::from_secs(120)).await;

    for (dlq, expected) in [
        ("PushDLQ", "{not json"),
        ("NotificationsDLQ", r#"{"kind":"somethingNew"}"#),
    ] {
        let messages = common::eventually("poison in the DLQ", Duration::from_secs(30), || async {
            let m = dlq_messages(&stack, dlq).await;
            (!m.is_empty()).then_some(m)
        })
        .await;
        assert_eq!(messages[0].body(), Some(expected));
        let reason = messages[0]
            .message_attributes()
            .and_then(|a| a.get("poisonReason"))
            .and_then(|v| v.string_value())
            .unwrap_or_default()
            .to_string();
        assert!(reason.contains("malformed"), "{dlq}: reason {reason:?}");
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ingest_bodies_get_a_stable_json_error() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = reqwest::Client::new();
    for (body, status) in [
        ("not json", 400),
        (r#"{"transactions": []}"#, 400),
        (r#"{"externalId": "acc_NOBODY", "transactions": []}"#, 404),
    ] {
        let r = client
            .post(format!("{}/ingest", stack.api_url))
            .header("x-api-key", local_stack::stack::LOCAL_INGEST_KEY)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: serde_json::Value = r.json().await.expect("a JSON error body");
        assert!(v["error"]["code"].is_string() && v["data"].is_null(), "{v}");
    }
    let r = client
        .post(format!("{}/ingest", stack.api_url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "no API key");
    stack.finish().await;
}

#[tokio::test]
async fn a_function_without_its_configuration_refuses_to_start_and_names_the_variable() {
    let bin = local_stack::stack::default_bin_dir()
        .unwrap()
        .join("notification");
    let out = tokio::process::Command::new(bin)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .output()
        .await
        .expect("run the binary");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TABLE_NAME"), "{stderr}");
}

#[tokio::test]
async fn invoke_runs_a_function_against_up_and_ctrl_c_leaves_no_process_behind() {
    // A whole stack: it takes a slot like the others.
    let _slot = common::slots().acquire_owned().await.unwrap();
    let bin = local_stack::stack::default_bin_dir()
        .unwrap()
        .join("local-stack");
    let state = std::env::temp_dir().join(format!("connector-state-{}.json", uuid::Uuid::new_v4()));
    let mut child = tokio::process::Command::new(&bin)
        .args(["up", "--port", "0"])
        .env(local_stack::invoke::STATE_VARIABLE, &state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start local-stack up");
    let pid = child.id().expect("pid");
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("Ingest API key") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the stack did not come up");
    let descendants = |root: u32| -> Vec<u32> {
        // Children by walking /proc: every process whose parent chain reaches `root`.
        let mut parent = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                && let Some(rest) = stat.rsplit(')').next()
                && let Some(pp) = rest
                    .split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse::<u32>().ok())
            {
                parent.insert(p, pp);
            }
        }
        parent
            .keys()
            .copied()
            .filter(|p| {
                let mut cur = *p;
                while let Some(pp) = parent.get(&cur) {
                    if *pp == root {
                        return true;
                    }
                    cur = *pp;
                }
                false
            })
            .collect()
    };
    // `invoke` finds the running stack and prints the function's answer (the reconciler's
    // report of this empty stack)…
    let invoke = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.arg("invoke")
            .args(args)
            .env(local_stack::invoke::STATE_VARIABLE, &state)
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(Duration::from_secs(60), cmd.output())
                .await
                .expect("invoke ends")
                .expect("run invoke")
        }
    };
    let out = invoke(&["reconciler"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert_eq!(report["accounts"], json!(0), "{report}");
    // …and a function missing a variable ends the invocation with its start-up error.
    let started = std::time::Instant::now();
    let out = invoke(&["ingest", "--unset", "TABLE_NAME"]).await;
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ingest failed to start") && stderr.contains("TABLE_NAME"),
        "{stderr}"
    );
    // po-bank-events needs Payments Out's queue: its outcome windows run in po-worker.
    let out = invoke(&["po-bank-events", "--unset", "PAYOUTS_QUEUE_URL"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("po-bank-events failed to start") && stderr.contains("PAYOUTS_QUEUE_URL"),
        "{stderr}"
    );

    let children = descendants(pid);
    assert!(
        children.len() >= 10,
        "moto and the functions run: {children:?}"
    );
    // SAFETY: signalling the child we started.
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stopped within 30 s")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!state.exists(), "up forgets its stack when it stops");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A zombie (state Z) is dead, waiting for init to reap it.
    let alive: Vec<u32> = children
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|st| st.rsplit(')').next().map(|r| r.trim_start().to_string()))
                .is_some_and(|r| !r.starts_with('Z'))
        })
        .collect();
    assert!(alive.is_empty(), "left behind: {alive:?}");
}
