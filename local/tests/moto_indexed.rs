//! The local stack's moto (`tools/moto_server.py`: queries read from the queried partition)
//! answers every query exactly as moto_server as published does. Both get the same writes and
//! the same queries, in the shapes the connector uses (transactions by sequence, the sparse
//! `pending` index, parked records by prefix), with paging, reverse order, filters and counts,
//! before and after items leave the index; every answer must be equal.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use local_stack::moto::{Flavour, Moto};
use local_stack::stack::{TABLE_NAME, create_table, sdk_config};
use local_stack::template::Template;

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// One query of the battery: key condition, values, and the options that change paging.
struct Q {
    index: Option<&'static str>,
    key: &'static str,
    values: Vec<(&'static str, AttributeValue)>,
    filter: Option<&'static str>,
    limit: Option<i32>,
    forward: bool,
    count: bool,
}

fn q(key: &'static str, values: Vec<(&'static str, AttributeValue)>) -> Q {
    Q {
        index: None,
        key,
        values,
        filter: None,
        limit: None,
        forward: true,
        count: false,
    }
}

/// Every page of a query, with its counts and the key it ended on.
async fn pages(c: &Client, query: &Q) -> Vec<Page> {
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let mut r = c
            .query()
            .table_name(TABLE_NAME)
            .set_index_name(query.index.map(str::to_string))
            .key_condition_expression(query.key)
            .set_filter_expression(query.filter.map(str::to_string))
            .set_limit(query.limit)
            .scan_index_forward(query.forward)
            .consistent_read(true)
            .set_exclusive_start_key(start.clone());
        if query.count {
            r = r.select(Select::Count);
        }
        for (k, v) in &query.values {
            r = r.expression_attribute_values(*k, v.clone());
        }
        let page = r.send().await.expect("query");
        let last = page.last_evaluated_key.clone();
        out.push((
            page.items.unwrap_or_default(),
            page.count,
            page.scanned_count,
            last.clone(),
        ));
        match last {
            Some(k) if out.len() < 1000 => start = Some(k),
            _ => return out,
        }
    }
}

fn battery(accounts: &[String]) -> Vec<Q> {
    let mut out = Vec::new();
    for a in accounts {
        out.push(q("pk = :pk", vec![(":pk", s(a))]));
        out.push(q(
            "pk = :pk AND begins_with(sk, :u)",
            vec![(":pk", s(a)), (":u", s("U#"))],
        ));
        out.push(Q {
            limit: Some(7),
            ..q(
                "pk = :pk AND sk > :after",
                vec![(":pk", s(a)), (":after", s("U#00000000000000000012"))],
            )
        });
        out.push(Q {
            forward: false,
            limit: Some(5),
            ..q(
                "pk = :pk AND sk BETWEEN :lo AND :hi",
                vec![
                    (":pk", s(a)),
                    (":lo", s("U#00000000000000000003")),
                    (":hi", s("U#00000000000000000031")),
                ],
            )
        });
        out.push(Q {
            filter: Some("amount > :min"),
            limit: Some(4),
            ..q(
                "pk = :pk AND begins_with(sk, :u)",
                vec![
                    (":pk", s(a)),
                    (":u", s("U#")),
                    (":min", AttributeValue::N("20".into())),
                ],
            )
        });
        out.push(Q {
            index: Some("pending"),
            ..q("pk = :pk", vec![(":pk", s(a))])
        });
        out.push(Q {
            index: Some("pending"),
            limit: Some(6),
            ..q(
                "pk = :pk AND pendingKey > :after",
                vec![(":pk", s(a)), (":after", s("P#00000000000000000010"))],
            )
        });
        out.push(Q {
            index: Some("pending"),
            count: true,
            ..q("pk = :pk", vec![(":pk", s(a))])
        });
        out.push(Q {
            index: Some("pending"),
            forward: false,
            limit: Some(3),
            ..q("pk = :pk", vec![(":pk", s(a))])
        });
    }
    out.push(q("pk = :pk", vec![(":pk", s("ACC#nobody"))]));
    out.push(Q {
        index: Some("pending"),
        ..q("pk = :pk", vec![(":pk", s("ACC#nobody"))])
    });
    out.push(Q {
        limit: Some(2),
        ..q(
            "pk = :pk AND begins_with(sk, :prefix)",
            vec![
                (":pk", s("PARKED")),
                (":prefix", s(format!("{}#", accounts[1]))),
            ],
        )
    });
    out
}

type Page = (Vec<Item>, i32, i32, Option<Item>);

fn item_count(pages: &[Page]) -> usize {
    pages.iter().map(|p| p.0.len()).sum()
}

async fn put_all(clients: &[&Client], item: Item) {
    for c in clients {
        c.put_item()
            .table_name(TABLE_NAME)
            .set_item(Some(item.clone()))
            .send()
            .await
            .expect("put");
    }
}

async fn answers(c: &Client, queries: &[Q]) -> Vec<Vec<Page>> {
    let mut out = Vec::new();
    for query in queries {
        out.push(pages(c, query).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_reads_answer_like_unpatched_moto() {
    let template = Template::load().expect("template");
    let indexed = Moto::start_flavour(Flavour::Indexed).await.expect("moto");
    let plain = Moto::start_flavour(Flavour::Unpatched).await.expect("moto");
    let a = Client::new(&sdk_config(&indexed.endpoint).await);
    let b = Client::new(&sdk_config(&plain.endpoint).await);
    create_table(&a, &template).await.expect("table");
    create_table(&b, &template).await.expect("table");

    // Five accounts of different sizes, interleaved writes, an account item in each partition,
    // half of the transactions pending, parked records in a shared partition.
    let accounts: Vec<String> = (0..5).map(|i| format!("ACC#{i:02}")).collect();
    for seq in 0..40u64 {
        for (i, acc) in accounts.iter().enumerate() {
            if seq >= 8 * (i as u64 + 1) {
                continue;
            }
            let mut item: Item = HashMap::from([
                ("pk".into(), s(acc)),
                ("sk".into(), s(format!("U#{seq:020}"))),
                (
                    "amount".into(),
                    AttributeValue::N(format!("{}", (seq * 7 + i as u64) % 50)),
                ),
            ]);
            if seq % 2 == 0 || i == 4 {
                item.insert("pendingKey".into(), s(format!("P#{seq:020}")));
            }
            put_all(&[&a, &b], item).await;
        }
    }
    for acc in &accounts {
        let account = HashMap::from([("pk".into(), s(acc)), ("sk".into(), s("ACCOUNT"))]);
        put_all(&[&a, &b], account).await;
        for n in 0..3 {
            let parked = HashMap::from([
                ("pk".into(), s("PARKED")),
                ("sk".into(), s(format!("{acc}#{n}"))),
            ]);
            put_all(&[&a, &b], parked).await;
        }
    }

    let queries = battery(&accounts);
    let first = answers(&a, &queries).await;
    assert_eq!(first, answers(&b, &queries).await, "answers before updates");
    // The battery found something: a comparison of empty answers proves nothing.
    let pending_of_last = &first[accounts.len() * 9 - 4];
    assert_eq!(item_count(pending_of_last), 40, "all of ACC#04 is pending");

    // Items leave the sparse index and one partition is emptied: still equal.
    for c in [&a, &b] {
        for seq in (0..24u64).step_by(4) {
            c.update_item()
                .table_name(TABLE_NAME)
                .key("pk", s("ACC#02"))
                .key("sk", s(format!("U#{seq:020}")))
                .update_expression("REMOVE pendingKey")
                .send()
                .await
                .expect("update");
        }
        for seq in 0..8u64 {
            c.delete_item()
                .table_name(TABLE_NAME)
                .key("pk", s("ACC#00"))
                .key("sk", s(format!("U#{seq:020}")))
                .send()
                .await
                .expect("delete");
        }
    }
    let second = answers(&a, &queries).await;
    assert_eq!(second, answers(&b, &queries).await, "answers after updates");
    assert_ne!(first, second, "the updates changed some answers");

    indexed.stop().await;
    plain.stop().await;
}
