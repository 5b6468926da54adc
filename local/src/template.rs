//! Reads `template.yaml` — the single description of the stack — so that the local stack creates
//! the same table, queues, routes, event sources and environment as a deployment.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use serde_norway::Value;

/// The template, compiled in so the local stack always matches the code it was built with.
pub const TEMPLATE: &str = include_str!("../../template.yaml");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub logical_id: String,
    pub attributes: Vec<(String, String)>,
    pub hash_key: String,
    pub range_key: Option<String>,
    /// (index name, range key attribute)
    pub local_indexes: Vec<(String, String)>,
    pub ttl_attribute: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub logical_id: String,
    pub fifo: bool,
    pub content_based_dedup: bool,
    pub dedup_scope: Option<String>,
    pub throughput_limit: Option<String>,
    pub visibility_timeout: u32,
    /// (DLQ logical id, maxReceiveCount)
    pub redrive: Option<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSpec {
    Http {
        method: String,
        path: String,
        iam_auth: bool,
    },
    Sqs {
        queue: String,
        batch_size: u32,
        max_concurrency: u32,
        /// `FunctionResponseTypes: [ReportBatchItemFailures]`.
        partial_failures: bool,
    },
    Schedule {
        every_secs: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub logical_id: String,
    pub binary: String,
    pub timeout_secs: u64,
    pub memory_mb: u64,
    /// Environment as in the template, intrinsic functions not yet resolved.
    pub environment: BTreeMap<String, Value>,
    pub events: Vec<EventSpec>,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub parameters: BTreeMap<String, Value>,
    pub table: TableSpec,
    pub queues: Vec<QueueSpec>,
    pub functions: Vec<FunctionSpec>,
    /// Logical ids of the template's KMS keys.
    pub kms_keys: Vec<String>,
}

fn tagless(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => &t.value,
        other => other,
    }
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    tagless(v).as_mapping().and_then(|m| m.get(key))
}

fn text(v: &Value, key: &str) -> Option<String> {
    get(v, key).and_then(|x| match tagless(x) {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn number(v: &Value, key: &str) -> Option<u64> {
    text(v, key).and_then(|s| s.parse().ok())
}

/// The logical id a `!Ref X` or `!GetAtt X.Attr` points at.
pub fn referenced_id(v: &Value) -> Option<String> {
    match v {
        Value::Tagged(t) if t.tag == "!Ref" || t.tag == "Ref" => {
            t.value.as_str().map(str::to_string)
        }
        Value::Tagged(t) if t.tag == "!GetAtt" || t.tag == "GetAtt" => match &t.value {
            Value::String(s) => s.split('.').next().map(str::to_string),
            Value::Sequence(seq) => seq.first().and_then(|x| x.as_str()).map(str::to_string),
            _ => None,
        },
        _ => None,
    }
}

fn rate_seconds(expr: &str) -> Option<u64> {
    let inner = expr.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.trim().split_once(' ')?;
    let n: u64 = n.parse().ok()?;
    let per = match unit.trim().trim_end_matches('s') {
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        _ => return None,
    };
    Some(n * per)
}

impl Template {
    pub fn load() -> Result<Self> {
        Self::parse(TEMPLATE)
    }

    pub fn parse(source: &str) -> Result<Self> {
        let doc: Value = serde_norway::from_str(source).context("template.yaml is not YAML")?;
        let resources = get(&doc, "Resources")
            .and_then(|r| r.as_mapping())
            .ok_or_else(|| anyhow!("template has no Resources"))?;
        let globals = get(&doc, "Globals").and_then(|g| get(g, "Function"));
        let parameters: BTreeMap<String, Value> = get(&doc, "Parameters")
            .and_then(|p| p.as_mapping())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        Some((
                            k.as_str()?.to_string(),
                            get(v, "Default").cloned().unwrap_or(Value::Null),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();

        let mut table = None;
        let mut queues = Vec::new();
        let mut functions = Vec::new();
        let mut kms_keys = Vec::new();
        for (id, res) in resources {
            let id = id.as_str().unwrap_or_default().to_string();
            let kind = text(res, "Type").unwrap_or_default();
            let props = get(res, "Properties").cloned().unwrap_or(Value::Null);
            match kind.as_str() {
                "AWS::DynamoDB::Table" => table = Some(parse_table(&id, &props)?),
                "AWS::SQS::Queue" => queues.push(parse_queue(&id, &props)?),
                "AWS::KMS::Key" => kms_keys.push(id.clone()),
                "AWS::Serverless::Function" => {
                    functions.push(parse_function(&id, res, &props, globals)?)
                }
                _ => {}
            }
        }
        Ok(Self {
            parameters,
            table: table.ok_or_else(|| anyhow!("template has no DynamoDB table"))?,
            queues,
            functions,
            kms_keys,
        })
    }

    pub fn function(&self, binary: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.binary == binary)
    }

    pub fn queue(&self, logical_id: &str) -> Option<&QueueSpec> {
        self.queues.iter().find(|q| q.logical_id == logical_id)
    }
}

fn parse_table(id: &str, p: &Value) -> Result<TableSpec> {
    let attributes = get(p, "AttributeDefinitions")
        .and_then(|a| a.as_sequence())
        .ok_or_else(|| anyhow!("{id}: no AttributeDefinitions"))?
        .iter()
        .filter_map(|a| Some((text(a, "AttributeName")?, text(a, "AttributeType")?)))
        .collect();
    let keys = |v: &Value| -> (Option<String>, Option<String>) {
        let mut hash = None;
        let mut range = None;
        for k in v.as_sequence().into_iter().flatten() {
            match text(k, "KeyType").as_deref() {
                Some("HASH") => hash = text(k, "AttributeName"),
                Some("RANGE") => range = text(k, "AttributeName"),
                _ => {}
            }
        }
        (hash, range)
    };
    let (hash, range) = keys(get(p, "KeySchema").unwrap_or(&Value::Null));
    let local_indexes = get(p, "LocalSecondaryIndexes")
        .and_then(|l| l.as_sequence())
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let (_, r) = keys(get(i, "KeySchema")?);
            Some((text(i, "IndexName")?, r?))
        })
        .collect();
    Ok(TableSpec {
        logical_id: id.into(),
        attributes,
        hash_key: hash.ok_or_else(|| anyhow!("{id}: no HASH key"))?,
        range_key: range,
        local_indexes,
        ttl_attribute: get(p, "TimeToLiveSpecification").and_then(|t| text(t, "AttributeName")),
    })
}

fn parse_queue(id: &str, p: &Value) -> Result<QueueSpec> {
    let redrive = match get(p, "RedrivePolicy") {
        None => None,
        Some(r) => {
            let target = get(r, "deadLetterTargetArn")
                .and_then(referenced_id)
                .ok_or_else(|| anyhow!("{id}: RedrivePolicy without a DLQ reference"))?;
            let max = number(r, "maxReceiveCount").unwrap_or(10) as u32;
            Some((target, max))
        }
    };
    Ok(QueueSpec {
        logical_id: id.into(),
        fifo: text(p, "FifoQueue").as_deref() == Some("true"),
        content_based_dedup: text(p, "ContentBasedDeduplication").as_deref() == Some("true"),
        dedup_scope: text(p, "DeduplicationScope"),
        throughput_limit: text(p, "FifoThroughputLimit"),
        visibility_timeout: number(p, "VisibilityTimeout").unwrap_or(30) as u32,
        redrive,
    })
}

fn parse_function(
    id: &str,
    res: &Value,
    p: &Value,
    globals: Option<&Value>,
) -> Result<FunctionSpec> {
    let binary = get(res, "Metadata")
        .and_then(|m| get(m, "BuildProperties"))
        .and_then(|b| text(b, "Binary"))
        .ok_or_else(|| anyhow!("{id}: Metadata.BuildProperties.Binary missing"))?;
    let setting = |key: &str| number(p, key).or_else(|| globals.and_then(|g| number(g, key)));
    let mut environment = BTreeMap::new();
    for source in [globals, Some(p)].into_iter().flatten() {
        if let Some(vars) = get(source, "Environment")
            .and_then(|e| get(e, "Variables"))
            .and_then(|v| v.as_mapping())
        {
            for (k, v) in vars {
                if let Some(k) = k.as_str() {
                    environment.insert(k.to_string(), v.clone());
                }
            }
        }
    }
    let mut events = Vec::new();
    for (name, ev) in get(p, "Events")
        .and_then(|e| e.as_mapping())
        .into_iter()
        .flatten()
    {
        let name = name.as_str().unwrap_or_default();
        let ep = get(ev, "Properties").cloned().unwrap_or(Value::Null);
        match text(ev, "Type").as_deref() {
            Some("HttpApi") => events.push(EventSpec::Http {
                method: text(&ep, "Method")
                    .unwrap_or_else(|| "ANY".into())
                    .to_uppercase(),
                path: text(&ep, "Path").ok_or_else(|| anyhow!("{id}.{name}: no Path"))?,
                iam_auth: get(&ep, "Auth")
                    .and_then(|a| text(a, "Authorizer"))
                    .as_deref()
                    == Some("AWS_IAM"),
            }),
            Some("SQS") => events.push(EventSpec::Sqs {
                queue: get(&ep, "Queue")
                    .and_then(referenced_id)
                    .ok_or_else(|| anyhow!("{id}.{name}: Queue must reference a queue"))?,
                batch_size: number(&ep, "BatchSize").unwrap_or(10) as u32,
                max_concurrency: get(&ep, "ScalingConfig")
                    .and_then(|s| number(s, "MaximumConcurrency"))
                    .unwrap_or(2) as u32,
                partial_failures: get(&ep, "FunctionResponseTypes")
                    .and_then(|v| v.as_sequence())
                    .is_some_and(|s| {
                        s.iter()
                            .any(|x| x.as_str() == Some("ReportBatchItemFailures"))
                    }),
            }),
            Some("Schedule") | Some("ScheduleV2") => {
                let expr = text(&ep, "ScheduleExpression")
                    .or_else(|| text(&ep, "Schedule"))
                    .ok_or_else(|| anyhow!("{id}.{name}: no schedule expression"))?;
                events.push(EventSpec::Schedule {
                    every_secs: rate_seconds(&expr).ok_or_else(|| {
                        anyhow!("{id}.{name}: only rate(...) schedules run locally")
                    })?,
                });
            }
            Some(other) => bail!("{id}.{name}: event type {other} is not supported locally"),
            None => bail!("{id}.{name}: event without Type"),
        }
    }
    Ok(FunctionSpec {
        logical_id: id.into(),
        binary,
        timeout_secs: setting("Timeout").unwrap_or(3),
        memory_mb: setting("MemorySize").unwrap_or(128),
        environment,
        events,
    })
}

/// Values the intrinsic functions resolve to on this machine.
pub struct Resolver<'a> {
    pub parameters: &'a BTreeMap<String, String>,
    /// `!Ref` of a resource (table name, queue URL).
    pub refs: &'a BTreeMap<String, String>,
    /// `!GetAtt Resource.Attribute`.
    pub attributes: &'a BTreeMap<String, String>,
    pub conditions: &'a BTreeMap<String, bool>,
}

impl Resolver<'_> {
    /// Resolves a value; `Ok(None)` for `AWS::NoValue`.
    pub fn resolve(&self, v: &Value) -> Result<Option<String>> {
        Ok(match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Tagged(t) => match t.tag.to_string().trim_start_matches('!') {
                "Ref" => {
                    let name = t.value.as_str().unwrap_or_default();
                    if name == "AWS::NoValue" {
                        None
                    } else {
                        Some(
                            self.parameters
                                .get(name)
                                .or_else(|| self.refs.get(name))
                                .cloned()
                                .ok_or_else(|| anyhow!("no local value for !Ref {name}"))?,
                        )
                    }
                }
                "GetAtt" => {
                    let path = match &t.value {
                        Value::String(s) => s.clone(),
                        Value::Sequence(seq) => seq
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join("."),
                        _ => bail!("malformed !GetAtt"),
                    };
                    Some(
                        self.attributes
                            .get(&path)
                            .cloned()
                            .ok_or_else(|| anyhow!("no local value for !GetAtt {path}"))?,
                    )
                }
                "Sub" => {
                    let mut s = t
                        .value
                        .as_str()
                        .ok_or_else(|| anyhow!("only the one-argument !Sub runs locally"))?
                        .to_string();
                    while let Some(start) = s.find("${") {
                        let end = s[start..]
                            .find('}')
                            .map(|e| start + e)
                            .ok_or_else(|| anyhow!("unterminated ${{ in !Sub"))?;
                        let name = &s[start + 2..end];
                        let value = self
                            .parameters
                            .get(name)
                            .or_else(|| self.refs.get(name))
                            .cloned()
                            .ok_or_else(|| anyhow!("no local value for ${{{name}}}"))?;
                        s.replace_range(start..=end, &value);
                    }
                    Some(s)
                }
                "If" => {
                    let args = t
                        .value
                        .as_sequence()
                        .filter(|a| a.len() == 3)
                        .ok_or_else(|| anyhow!("!If takes three arguments"))?;
                    let cond = args[0].as_str().unwrap_or_default();
                    let holds = *self
                        .conditions
                        .get(cond)
                        .ok_or_else(|| anyhow!("unknown condition {cond}"))?;
                    self.resolve(&args[if holds { 1 } else { 2 }])?
                }
                other => bail!("intrinsic !{other} is not supported locally"),
            },
            Value::Null => None,
            other => bail!("cannot use {other:?} as an environment value"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_function_queue_and_the_table() {
        let t = Template::load().unwrap();
        let binaries: Vec<&str> = t.functions.iter().map(|f| f.binary.as_str()).collect();
        for expected in [
            "notification",
            "auth",
            "authrefresh",
            "availableaccounts",
            "notification-worker",
            "ingest",
            "statement-pusher",
            "statement-poller",
            "reconciler",
            "po-intake",
            "po-worker",
            "po-authorise",
            "po-bank-events",
            "po-reconciler",
        ] {
            assert!(
                binaries.contains(&expected),
                "{expected} missing from template.yaml"
            );
        }
        assert_eq!(t.table.hash_key, "pk");
        assert_eq!(t.table.range_key.as_deref(), Some("sk"));
        assert_eq!(t.table.ttl_attribute.as_deref(), Some("expiresAt"));
        assert_eq!(
            t.table.local_indexes,
            vec![("pending".to_string(), "pendingKey".to_string())]
        );
        let push = t.queue("PushQueue").unwrap();
        assert!(push.fifo && !push.content_based_dedup);
        assert_eq!(push.redrive, Some(("PushDLQ".into(), 5)));
        assert!(t.queue("PushDLQ").unwrap().fifo);
    }

    #[test]
    fn consumers_follow_the_event_source_rules() {
        let t = Template::load().unwrap();
        for f in &t.functions {
            for e in &f.events {
                if let EventSpec::Sqs {
                    queue,
                    partial_failures,
                    max_concurrency,
                    ..
                } = e
                {
                    assert!(partial_failures, "{queue}: ReportBatchItemFailures missing");
                    assert!(*max_concurrency >= 2, "{queue}: MaximumConcurrency below 2");
                    let q = t.queue(queue).unwrap();
                    // AWS's advice: visibility timeout at least 6 x the consumer's timeout.
                    assert!(
                        u64::from(q.visibility_timeout) >= 6 * f.timeout_secs,
                        "{queue}: visibility {} < 6 x {} of {}",
                        q.visibility_timeout,
                        f.timeout_secs,
                        f.binary
                    );
                    assert!(q.redrive.is_some(), "{queue} has no DLQ");
                }
            }
        }
    }

    #[test]
    fn parses_schedules() {
        assert_eq!(rate_seconds("rate(5 minutes)"), Some(300));
        assert_eq!(rate_seconds("rate(1 hour)"), Some(3600));
        assert_eq!(rate_seconds("cron(0 * * * ? *)"), None);
    }

    /// Issue 6: every DLQ, queue and function is watched, every alarm notifies the alarm topic
    /// and is on the dashboard, and the dashboard is valid JSON naming only resources of the
    /// template and metrics the code emits.
    #[test]
    fn alarms_and_dashboard_cover_the_stack() {
        let root: Value = serde_norway::from_str(TEMPLATE).unwrap();
        let resources = get(&root, "Resources").unwrap().as_mapping().unwrap();
        let kind = |v: &Value| text(v, "Type").unwrap_or_default();
        let ids: Vec<String> = resources
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        let alarms: Vec<(String, &Value)> = resources
            .iter()
            .filter(|(_, v)| kind(v) == "AWS::CloudWatch::Alarm")
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_string(),
                    get(v, "Properties").unwrap(),
                )
            })
            .collect();
        for (id, p) in &alarms {
            let actions = get(p, "AlarmActions").and_then(Value::as_sequence);
            assert!(
                actions.is_some_and(|a| a
                    .iter()
                    .any(|x| referenced_id(x).as_deref() == Some("AlarmTopic"))),
                "{id} notifies nobody"
            );
            assert!(text(p, "AlarmDescription").is_some_and(|d| d.contains("docs/operations.md")));
        }
        let watched = |dimension_value: &str| {
            alarms.iter().any(|(_, p)| {
                let yaml = serde_norway::to_string(p).unwrap();
                yaml.contains(&format!("!Ref {dimension_value}\n"))
                    || yaml.contains(&format!("!GetAtt {dimension_value}.QueueName"))
            })
        };
        let t = Template::load().unwrap();
        for q in &t.queues {
            assert!(watched(&q.logical_id), "no alarm watches {}", q.logical_id);
        }
        for f in &t.functions {
            assert!(watched(&f.logical_id), "no alarm watches {}", f.logical_id);
        }
        for (id, p) in &alarms {
            if text(p, "Namespace").as_deref() == Some(connector_metrics::NAMESPACE) {
                let name = text(p, "MetricName").unwrap();
                assert!(
                    connector_metrics::NAMES.contains(&name.as_str()),
                    "{id} watches {name}, which nothing emits"
                );
            }
        }

        let dashboard = resources
            .values()
            .find(|v| kind(v) == "AWS::CloudWatch::Dashboard")
            .expect("a dashboard");
        let body = get(get(dashboard, "Properties").unwrap(), "DashboardBody").unwrap();
        let body = match body {
            Value::Tagged(t) if t.tag == "!Sub" => t.value.as_str().unwrap().to_string(),
            other => panic!("DashboardBody is not a !Sub string: {other:?}"),
        };
        // Every ${X} or ${X.Attr} names a resource or a pseudo parameter.
        let mut plain = String::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("${") {
            plain.push_str(&rest[..start]);
            let end = rest[start..].find('}').unwrap() + start;
            let name = &rest[start + 2..end];
            let id = name.split('.').next().unwrap();
            assert!(
                id.starts_with("AWS::") || ids.iter().any(|r| r == id),
                "the dashboard names {name}, not in the template"
            );
            plain.push('X');
            rest = &rest[end + 1..];
        }
        plain.push_str(rest);
        let json: serde_json::Value = serde_json::from_str(&plain).expect("dashboard JSON");
        let widgets = json["widgets"].as_array().unwrap();
        let alarm_widget = widgets
            .iter()
            .find(|w| w["type"] == "alarm")
            .expect("an alarm widget");
        assert_eq!(
            alarm_widget["properties"]["alarms"]
                .as_array()
                .unwrap()
                .len(),
            alarms.len()
        );
        for (id, _) in &alarms {
            assert!(
                body.contains(&format!("${{{id}.Arn}}")),
                "{id} not on the dashboard"
            );
        }
        for w in widgets.iter().filter(|w| w["type"] == "metric") {
            for m in w["properties"]["metrics"].as_array().unwrap() {
                if m[0] == connector_metrics::NAMESPACE {
                    let name = m[1].as_str().unwrap();
                    assert!(
                        connector_metrics::NAMES.contains(&name),
                        "the dashboard graphs {name}, which nothing emits"
                    );
                }
            }
        }
    }
}
