//! The whole connector on one machine: DynamoDB Local and moto (SQS) behind one metering AWS
//! endpoint, the table and queues of the template, the sandbox, every function binary behind its
//! trigger, and the bank registered with Bank Sync.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, LocalSecondaryIndex, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use sandbox::{Sandbox, SandboxConfig};
use uuid::Uuid;

use crate::events::{SourceStats, SqsSource, run_schedule};
use crate::fauxqs::{Fauxqs, SqsEmulator};
use crate::gateway::{Gateway, Route};
use crate::moto::Moto;
use crate::runtime::{Function, FunctionConfig};
use crate::template::{EventSpec, Resolver, Template};

/// The API key the bank's systems use for `/ingest` locally (IAM authorises it on AWS).
pub const LOCAL_INGEST_KEY: &str = "local-ingest-key";
pub const TABLE_NAME: &str = "connector-local";
/// Prefix of the caller name of a function's event source mapping in the meter
/// (`LocalStack::aws_usage_by_caller`; `permissions::event_source_caller`).
pub const EVENT_SOURCES_PREFIX: &str = "event-source-mapping:";

#[derive(Clone, Debug)]
pub struct Options {
    /// Where the function binaries are (`target/debug` or `target/release`).
    pub bin_dir: PathBuf,
    pub sandbox: SandboxConfig,
    /// Loopback port of the API; 0 picks a free one.
    pub api_port: u16,
    /// Instances per HTTP function.
    pub http_instances: usize,
    /// Upper bound of pollers (and instances) per SQS consumer; the template's
    /// `MaximumConcurrency` applies below it.
    pub max_consumer_concurrency: usize,
    /// A failed message becomes visible again after this long (instead of the queue's timeout).
    pub retry_visibility: Option<Duration>,
    /// Run scheduled functions this often instead of the template's rate; `None` = template.
    pub schedule_every: Option<Duration>,
    /// Extra environment for every function (tests tune timings this way).
    pub env: BTreeMap<String, String>,
    /// Banks registered with Bank Sync by other Sage clients (one bank per client, each client
    /// also in `sandbox.clients`), and configured for the functions through `BANKS_CONFIG`
    /// (their client id, secret and API key; unless `env` sets `BANKS_CONFIG` itself).
    pub more_banks: Vec<sandbox::ProviderClient>,
    pub echo_logs: bool,
    pub log_dir: PathBuf,
    /// Sage elsewhere (`--sage FILE`): Banking Service and Sage ID (and Payments Out when the
    /// file names it) are external; the built-in sandbox stays the demo bank.
    pub sage: Option<crate::external::SageParameters>,
    /// The SQS emulator (moto unless a benchmark asks for fauxqs).
    pub sqs: SqsEmulator,
}

impl Options {
    pub fn new(bin_dir: PathBuf) -> Self {
        let log_dir = crate::moto::repo_root().join(".local-stack").join("logs");
        Self {
            bin_dir,
            sandbox: SandboxConfig::default(),
            api_port: 0,
            http_instances: 2,
            max_consumer_concurrency: 4,
            retry_visibility: None,
            schedule_every: None,
            env: BTreeMap::new(),
            more_banks: Vec::new(),
            echo_logs: false,
            log_dir,
            sage: None,
            sqs: SqsEmulator::Moto,
        }
    }
}

/// The directory holding the binaries next to the running executable (also from a test binary
/// in `target/<profile>/deps`).
pub fn default_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("no directory for {}", exe.display()))?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

pub struct LocalStack {
    pub api_url: String,
    pub sandbox: Sandbox,
    pub bank_id: Uuid,
    /// The banks of `Options::more_banks`, in order.
    pub more_bank_ids: Vec<Uuid>,
    pub table_name: String,
    /// Queue URLs by the template's logical id.
    pub queue_urls: BTreeMap<String, String>,
    /// The AWS endpoint for tools and tests (DynamoDB and SQS, metered as `tools`); sign with
    /// `aws_access_key`, the key that selects this stack's own DynamoDB Local database.
    pub aws_endpoint: String,
    pub aws_access_key: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub functions: BTreeMap<String, Arc<Function>>,
    pub source_stats: BTreeMap<String, Arc<SourceStats>>,
    /// Per queue: disable or enable its event source mapping.
    pub source_paused: BTreeMap<String, Arc<AtomicBool>>,
    /// Each function's resolved environment (binary name -> variables).
    pub environment: BTreeMap<String, BTreeMap<String, String>>,
    /// The external Sage the connector talks to, if not the built-in sandbox.
    pub sage: Option<crate::external::SageParameters>,
    moto: Option<Moto>,
    fauxqs: Option<Fauxqs>,
    meter: crate::meter::Meter,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// SDK settings for talking to a local emulator at `endpoint` with the access key `key`.
pub async fn sdk_config(endpoint: &str, key: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            key,
            "local",
            None,
            None,
            "local-stack",
        ))
        .load()
        .await
}

impl LocalStack {
    pub async fn start(mut options: Options) -> Result<Self> {
        let template = Template::load()?;
        let (moto, dynamodb_endpoint) =
            tokio::try_join!(Moto::start(), crate::dynamodb_local::shared_endpoint())?;
        let fauxqs = match options.sqs {
            SqsEmulator::Moto => None,
            SqsEmulator::Fauxqs => Some(Fauxqs::start().await?),
        };
        let sqs_endpoint = fauxqs
            .as_ref()
            .map_or(&moto.endpoint, |f| &f.endpoint)
            .clone();
        let key = crate::dynamodb_local::stack_access_key();
        // The stack's own set-up and the clients it lends to tests go to the emulators
        // directly; the functions and the event sources go through the meter, each under its
        // own name.
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk_config(&dynamodb_endpoint, &key).await);
        let sqs = aws_sdk_sqs::Client::new(&sdk_config(&sqs_endpoint, &key).await);
        let meter =
            crate::meter::Meter::start(&dynamodb_endpoint, &sqs_endpoint, &moto.endpoint).await?;
        let mut aws_endpoints = BTreeMap::new();
        let mut source_sqs = BTreeMap::new();
        for f in &template.functions {
            aws_endpoints.insert(f.binary.clone(), meter.endpoint_for(&f.binary).await?);
            let mapping = crate::permissions::event_source_caller(&f.binary);
            let sdk = sdk_config(&meter.endpoint_for(&mapping).await?, &key).await;
            source_sqs.insert(f.binary.clone(), aws_sdk_sqs::Client::new(&sdk));
        }

        let (queue_urls, mut queue_arns) = create_queues(&sqs, &template).await?;
        // KMS keys in moto: `!Ref` gives the key id, `!GetAtt .Arn` its ARN.
        let kms = aws_sdk_kms::Client::new(&sdk_config(&moto.endpoint, &key).await);
        let mut refs_extra = BTreeMap::new();
        for id in &template.kms_keys {
            let made = kms
                .create_key()
                .description(format!("local {id}"))
                .send()
                .await
                .with_context(|| format!("creating the KMS key {id} in moto"))?;
            let meta = made
                .key_metadata
                .ok_or_else(|| anyhow!("moto created {id} without metadata"))?;
            refs_extra.insert(id.clone(), meta.key_id.clone());
            queue_arns.insert(id.clone(), meta.arn.unwrap_or_default());
        }
        let mut ref_values = queue_urls.clone();
        ref_values.extend(refs_extra);
        create_table(&dynamodb, &template).await?;

        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], options.api_port)))
                .await
                .context("binding the local API port")?;
        let api_url = format!("http://{}", listener.local_addr()?);

        let sandbox = Sandbox::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            options.sandbox.clone(),
        )
        .await
        .map_err(|e| anyhow!("starting the sandbox: {e}"))?;
        let bank_id = match &options.sage {
            None => register_bank(&sandbox, &api_url).await?,
            Some(sage) => external_bank(sage, &api_url).await?,
        };
        if !options.sage.as_ref().is_some_and(|s| s.payments_out()) {
            register_payments_out(&sandbox, &api_url).await?;
        }
        let mut more_bank_ids = Vec::new();
        let mut banks_config = serde_json::Map::new();
        for client in &options.more_banks {
            let id = register_bank_as(&sandbox, &api_url, client).await?;
            more_bank_ids.push(id);
            let mut entry = serde_json::json!({
                "clientId": client.client_id,
                "clientSecretRef": client.client_secret,
                "apiKeyRef": client.api_key,
            });
            // A provider registered with its own notification settings (docs/configuration.md).
            if let Some(audience) = &client.notification_audience {
                entry["notificationAudience"] = audience.clone().into();
            }
            if let Some(h) = &client.custom_header {
                entry["customHeaderName"] = h.name.clone().into();
                entry["customHeaderValueRef"] = h.value.clone().into();
            }
            banks_config.insert(id.to_string(), entry);
        }
        if !banks_config.is_empty() {
            options
                .env
                .entry("BANKS_CONFIG".into())
                .or_insert_with(|| serde_json::Value::Object(banks_config).to_string());
        }

        let environment = resolve_environment(
            &template,
            &options,
            &Registered {
                api_url: &api_url,
                bank_id,
            },
            &sandbox,
            &Aws {
                endpoints: &aws_endpoints,
                access_key: &key,
            },
            &ref_values,
            &queue_arns,
        )?;
        let mut functions = BTreeMap::new();
        for f in &template.functions {
            let is_consumer = f.events.iter().any(|e| matches!(e, EventSpec::Sqs { .. }));
            let instances = if is_consumer {
                f.events
                    .iter()
                    .filter_map(|e| match e {
                        EventSpec::Sqs {
                            max_concurrency, ..
                        } => Some(*max_concurrency as usize),
                        _ => None,
                    })
                    .sum::<usize>()
                    .min(options.max_consumer_concurrency)
                    .max(1)
            } else if f.events.iter().any(|e| matches!(e, EventSpec::Http { .. })) {
                options.http_instances
            } else {
                1
            };
            let env = environment
                .get(&f.binary)
                .cloned()
                .ok_or_else(|| anyhow!("no environment for {}", f.binary))?;
            let function = Function::start(FunctionConfig {
                name: f.binary.clone(),
                binary: options.bin_dir.join(&f.binary),
                environment: env,
                timeout: Duration::from_secs(f.timeout_secs),
                memory_mb: f.memory_mb,
                instances,
                log_file: options.log_dir.join(format!("{}.log", f.binary)),
                echo_logs: options.echo_logs,
            })
            .await?;
            functions.insert(f.binary.clone(), Arc::new(function));
        }
        for f in functions.values() {
            f.wait_ready(Duration::from_secs(30)).await?;
        }

        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let mut source_stats = BTreeMap::new();
        let mut source_paused = BTreeMap::new();
        let mut routes = Vec::new();
        for f in &template.functions {
            let function = functions[&f.binary].clone();
            for e in &f.events {
                match e {
                    EventSpec::Http { method, path, .. } => routes.push(Route {
                        method: method.clone(),
                        path: path.clone(),
                        function: function.clone(),
                    }),
                    EventSpec::Sqs {
                        queue,
                        batch_size,
                        max_concurrency,
                        partial_failures,
                    } => {
                        let stats = Arc::new(SourceStats::default());
                        source_stats.insert(queue.clone(), stats.clone());
                        let paused = Arc::new(AtomicBool::new(false));
                        source_paused.insert(queue.clone(), paused.clone());
                        let source = Arc::new(SqsSource {
                            client: source_sqs[&f.binary].clone(),
                            queue_url: queue_urls[queue].clone(),
                            queue_arn: queue_arns[queue].clone(),
                            batch_size: *batch_size,
                            partial_failures: *partial_failures,
                            function: function.clone(),
                            retry_visibility: options.retry_visibility,
                            stats,
                            paused,
                        });
                        let concurrency = (*max_concurrency as usize)
                            .min(options.max_consumer_concurrency)
                            .max(1);
                        if template.queue(queue).is_some_and(|q| q.fifo) {
                            // One receiver honouring the group lock, batches run concurrently.
                            tasks.push(tokio::spawn(
                                source.clone().run_dispatching(stop.clone(), concurrency),
                            ));
                        } else {
                            for _ in 0..concurrency {
                                tasks.push(tokio::spawn(source.clone().run(stop.clone())));
                            }
                        }
                    }
                    EventSpec::Schedule { every_secs } => {
                        let every = options
                            .schedule_every
                            .unwrap_or(Duration::from_secs(*every_secs));
                        tasks.push(tokio::spawn(run_schedule(
                            function.clone(),
                            every,
                            stop.clone(),
                        )));
                    }
                }
            }
        }
        let app = crate::gateway::router(Arc::new(Gateway { routes }));
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });

        Ok(Self {
            api_url,
            sandbox,
            bank_id,
            more_bank_ids,
            table_name: TABLE_NAME.into(),
            queue_urls,
            aws_endpoint: meter.endpoint.clone(),
            aws_access_key: key,
            dynamodb,
            sqs,
            functions,
            source_stats,
            source_paused,
            environment,
            sage: options.sage.clone(),
            moto: Some(moto),
            fauxqs,
            meter,
            stop,
            tasks,
            server: Some(server),
        })
    }

    /// A client of the Banking Service the connector talks to: the built-in sandbox, or the
    /// external one `--sage` names (its `/_sandbox` API exists only on a sandbox).
    pub fn sage_client(&self) -> sandbox::client::SandboxClient {
        match self.sage.as_ref().and_then(|s| s.get("BankingServiceUrl")) {
            Some(url) => sandbox::client::SandboxClient::new(url),
            None => self.sandbox.client(),
        }
    }

    /// Disables (or enables again) the event source mapping of a queue (logical id).
    pub fn set_source_paused(&self, queue: &str, paused: bool) -> Result<()> {
        self.source_paused
            .get(queue)
            .ok_or_else(|| anyhow!("no event source for {queue}"))?
            .store(paused, Ordering::SeqCst);
        Ok(())
    }

    /// AWS requests of the functions, the event sources and tools so far, by operation.
    pub fn aws_usage(&self) -> BTreeMap<String, crate::meter::OperationCount> {
        self.meter.snapshot()
    }

    /// AWS requests so far by caller (a function's binary name, its event source mapping or
    /// `meter::TOOLS`), then by operation.
    pub fn aws_usage_by_caller(
        &self,
    ) -> BTreeMap<String, BTreeMap<String, crate::meter::OperationCount>> {
        self.meter.by_caller()
    }

    /// Whether the connector has committed everything of an account: no statement in flight
    /// (its outcome, delivered count included, is written when the claim is released) and
    /// nothing pending after the watermark. An unknown account is not settled.
    pub async fn account_settled(&self, id: Uuid) -> Result<bool> {
        let table = connector_aws::Table::new(self.dynamodb.clone(), self.table_name.clone());
        let Some(account) = table.get_account(id).await? else {
            return Ok(false);
        };
        let pending = table
            .count_pending(id, account.delivered_through.as_deref())
            .await?;
        Ok(account.in_flight.is_none() && pending == 0)
    }

    /// Every AWS operation a function or its event source mapping made that the function's
    /// `aws-actions.txt` lacks (empty when all were permitted).
    pub fn calls_not_permitted(&self) -> Result<Vec<String>> {
        let functions: Vec<String> = self.functions.keys().cloned().collect();
        crate::permissions::calls_not_listed(&self.aws_usage_by_caller(), &functions)
    }

    pub fn moto_pid(&self) -> Option<u32> {
        self.moto.as_ref().and_then(Moto::pid)
    }

    /// The process serving SQS (moto unless `Options::sqs` picked fauxqs).
    pub fn sqs_pid(&self) -> Option<u32> {
        match &self.fauxqs {
            Some(f) => f.pid(),
            None => self.moto_pid(),
        }
    }

    pub fn function(&self, binary: &str) -> Result<&Arc<Function>> {
        self.functions
            .get(binary)
            .ok_or_else(|| anyhow!("no function {binary}"))
    }

    /// Stops everything it started; no process is left behind.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = self.server.take() {
            s.abort();
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let functions = std::mem::take(&mut self.functions);
        futures::future::join_all(functions.values().map(|f| f.stop())).await;
        self.meter.stop();
        if let Some(m) = self.moto.take() {
            m.stop().await;
        }
        if let Some(f) = self.fauxqs.take() {
            f.stop().await;
        }
        self.sandbox.shutdown().await;
    }
}

async fn create_queues(
    sqs: &aws_sdk_sqs::Client,
    template: &Template,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let mut urls = BTreeMap::new();
    let mut arns = BTreeMap::new();
    // DLQs first: the others name them in their redrive policy.
    let mut order: Vec<_> = template.queues.iter().collect();
    order.sort_by_key(|q| q.redrive.is_some());
    for q in order {
        let name = if q.fifo {
            format!("{}.fifo", q.logical_id)
        } else {
            q.logical_id.clone()
        };
        let mut req = sqs.create_queue().queue_name(&name).attributes(
            QueueAttributeName::VisibilityTimeout,
            q.visibility_timeout.to_string(),
        );
        if q.fifo {
            req = req
                .attributes(QueueAttributeName::FifoQueue, "true")
                .attributes(
                    QueueAttributeName::ContentBasedDeduplication,
                    q.content_based_dedup.to_string(),
                );
            if let Some(s) = &q.dedup_scope {
                req = req.attributes(QueueAttributeName::DeduplicationScope, s);
            }
            if let Some(l) = &q.throughput_limit {
                req = req.attributes(QueueAttributeName::FifoThroughputLimit, l);
            }
        }
        if let Some((dlq, max)) = &q.redrive {
            let target = arns
                .get(dlq)
                .ok_or_else(|| anyhow!("{}: DLQ {dlq} not created", q.logical_id))?;
            req = req.attributes(
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({"deadLetterTargetArn": target, "maxReceiveCount": max})
                    .to_string(),
            );
        }
        let url = req
            .send()
            .await
            .with_context(|| format!("creating queue {name}"))?
            .queue_url
            .ok_or_else(|| anyhow!("no URL for {name}"))?;
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| anyhow!("no ARN for {name}"))?;
        urls.insert(q.logical_id.clone(), url);
        arns.insert(q.logical_id.clone(), arn);
    }
    Ok((urls, arns))
}

/// Creates the template's table (keys, local indexes, TTL) in the emulator.
pub async fn create_table(dynamodb: &aws_sdk_dynamodb::Client, template: &Template) -> Result<()> {
    let t = &template.table;
    let mut req = dynamodb
        .create_table()
        .table_name(TABLE_NAME)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, kind) in &t.attributes {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()?,
        );
    }
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    req = req.key_schema(key(&t.hash_key, KeyType::Hash)?);
    if let Some(r) = &t.range_key {
        req = req.key_schema(key(r, KeyType::Range)?);
    }
    for (index, range) in &t.local_indexes {
        req = req.local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name(index)
                .key_schema(key(&t.hash_key, KeyType::Hash)?)
                .key_schema(key(range, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?,
        );
    }
    req.send().await.context("creating the table")?;
    if let Some(attr) = &t.ttl_attribute {
        dynamodb
            .update_time_to_live()
            .table_name(TABLE_NAME)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attr)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await?;
    }
    Ok(())
}

/// Registers the demo bank with Bank Sync, as the provider's tooling does, with this stack's
/// Connector API as its callbacks. Returns Banking Service's `bankId`.
async fn register_bank(sandbox: &Sandbox, api_url: &str) -> Result<Uuid> {
    let client = sandbox
        .config()
        .clients
        .first()
        .cloned()
        .unwrap_or_else(sandbox::ProviderClient::local);
    register_bank_as(sandbox, api_url, &client).await
}

/// Registers a bank with the built-in sandbox's Bank Sync as `client`'s provider.
async fn register_bank_as(
    sandbox: &Sandbox,
    api_url: &str,
    client: &sandbox::ProviderClient,
) -> Result<Uuid> {
    let audience = client
        .allowed_audiences
        .first()
        .map(String::as_str)
        .unwrap_or("");
    let sync = BankSync {
        url: sandbox.base_url(),
        token_url: sandbox.token_url(),
        client_id: &client.client_id,
        client_secret: &client.client_secret,
        audience,
        api_key: &client.api_key,
    };
    register_at(&sync, api_url).await
}

/// The external Sage's bank: the one the file names, else one registered now with callbacks
/// to `PublicBaseUrl` (or the local API).
async fn external_bank(sage: &crate::external::SageParameters, api_url: &str) -> Result<Uuid> {
    if let Some(id) = sage.bank_id()? {
        return Ok(id);
    }
    let get = |k: &str| sage.get(k).unwrap_or_default();
    let sync = BankSync {
        url: get("BankingServiceUrl").trim_end_matches('/').to_string(),
        token_url: sage.token_url(),
        client_id: get("SageIdClientId"),
        client_secret: get("SageIdClientSecretArn"),
        audience: get("SageIdAudience"),
        api_key: get("ProviderApiKeyArn"),
    };
    let public = sage.get("PublicBaseUrl").unwrap_or(api_url);
    register_at(&sync, public)
        .await
        .with_context(|| format!("registering Demo Bank with the Bank Sync of {}", sync.url))
}

/// Where and as whom a bank is registered.
struct BankSync<'a> {
    url: String,
    token_url: String,
    client_id: &'a str,
    client_secret: &'a str,
    audience: &'a str,
    api_key: &'a str,
}

/// `POST /v1/banks` with the connector's callback URLs under `api_url`.
async fn register_at(sync: &BankSync<'_>, api_url: &str) -> Result<Uuid> {
    let http = reqwest::Client::new();
    let access = client_token(
        &http,
        &sync.token_url,
        (sync.client_id, sync.client_secret),
        sync.audience,
    )
    .await
    .context("Sage ID token for Bank Sync")?;
    let body = serde_json::json!({"data": {"toCreate": [{
        "name": "Demo Bank",
        "countryCode": "GB",
        "url": "https://demo-bank.example",
        "supportiframe": true,
        "externalRef": Uuid::new_v4(),
        "callbackURLs": {
            "auth": format!("{api_url}/auth"),
            "reAuth": format!("{api_url}/authrefresh"),
            "notification": format!("{api_url}/notification"),
            "availableAccounts": format!("{api_url}/availableaccounts"),
        }
    }]}});
    let answer: serde_json::Value = http
        .post(format!("{}/v1/banks", sync.url))
        .header("x-api-key", sync.api_key)
        .bearer_auth(&access)
        .json(&body)
        .send()
        .await?
        .error_for_status()
        .context("Bank Sync")?
        .json()
        .await?;
    let id = answer["data"]["created"][0]["principalId"]
        .as_str()
        .ok_or_else(|| anyhow!("Bank Sync answered without a principalId: {answer}"))?;
    Ok(Uuid::parse_str(id)?)
}

/// A client-credentials token from the Sage ID at `token_url`.
async fn client_token(
    http: &reqwest::Client,
    token_url: &str,
    (client_id, client_secret): (&str, &str),
    audience: &str,
) -> Result<String> {
    let token: serde_json::Value = http
        .post(token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("audience", audience),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    token["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no access_token"))
}

/// Registers the connector with the sandbox's Payments Out as a bank does at set-up: its
/// provider configuration names `/notifications`, `/subscription` and the custom header. The
/// configuration is replaced whole by a PATCH, so it is read, edited and sent back.
async fn register_payments_out(sandbox: &Sandbox, api_url: &str) -> Result<()> {
    use sandbox::payments_out::defaults;
    let http = reqwest::Client::new();
    let client = (
        sandbox::config::local::CLIENT_ID,
        sandbox::config::local::CLIENT_SECRET,
    );
    let access = client_token(&http, &sandbox.token_url(), client, defaults::AUDIENCE)
        .await
        .context("Sage ID token for Payments Out")?;
    let cfg = sandbox.config();
    let url = format!(
        "{}{}/providers/{}",
        sandbox.base_url(),
        cfg.payments_out.provider_prefix,
        cfg.payments_out.provider_id
    );
    let call = |method: reqwest::Method| {
        http.request(method, &url)
            .header("x-api-key", defaults::API_KEY)
            .header("x-application", defaults::APPLICATION)
            .bearer_auth(&access)
    };
    let current: serde_json::Value = call(reqwest::Method::GET)
        .send()
        .await?
        .error_for_status()
        .context("reading the Payments Out provider configuration")?
        .json()
        .await?;
    let mut data = current["data"].clone();
    data["notificationUrl"] = format!("{api_url}/notifications").into();
    data["subscriptionUrl"] = format!("{api_url}/subscription").into();
    data["providerHeaderKeyName"] = defaults::HEADER_NAME.into();
    call(reqwest::Method::PATCH)
        .json(&serde_json::json!({ "data": data }))
        .send()
        .await?
        .error_for_status()
        .context("registering the connector with Payments Out")?;
    // The demo bank pushes payment outcomes and consent decisions to the connector, with the
    // key the connector's bank routes take locally (IAM on AWS).
    let rails = format!("{}/_sandbox/payments-out/bank/config", sandbox.base_url());
    let mut config: serde_json::Value = http
        .get(&rails)
        .send()
        .await?
        .error_for_status()
        .context("reading the demo bank's configuration")?
        .json()
        .await?;
    config["eventsUrl"] = format!("{api_url}/bank/payment-events").into();
    config["consentEventsUrl"] = format!("{api_url}/bank/consent-events").into();
    config["eventsApiKey"] = LOCAL_INGEST_KEY.into();
    http.put(&rails)
        .json(&config)
        .send()
        .await?
        .error_for_status()
        .context("registering the connector's bank event routes with the demo bank")?;
    Ok(())
}

/// Where each function reaches AWS, and with which key.
struct Aws<'a> {
    endpoints: &'a BTreeMap<String, String>,
    access_key: &'a str,
}

/// What the bank knows once its stack is up: where the Connector API is, and the `bankId` Bank
/// Sync gave it.
struct Registered<'a> {
    api_url: &'a str,
    bank_id: Uuid,
}

fn resolve_environment(
    template: &Template,
    options: &Options,
    registered: &Registered<'_>,
    sandbox: &Sandbox,
    aws: &Aws<'_>,
    queue_urls: &BTreeMap<String, String>,
    queue_arns: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let cfg = sandbox.config();
    let client = cfg
        .clients
        .first()
        .cloned()
        .unwrap_or_else(sandbox::ProviderClient::local);
    let header = cfg.custom_header.clone();
    let rps = if cfg.ratelimit_rate_per_s > 0.0 {
        cfg.ratelimit_rate_per_s
    } else {
        1000.0
    };
    // Template parameters as a bank would fill them in for the sandbox environment; secrets go
    // in as values (the code resolves only `arn:aws:secretsmanager:` values through AWS).
    let mut parameters: BTreeMap<String, String> = template
        .parameters
        .iter()
        .filter_map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .or_else(|| v.as_u64().map(|n| (k.clone(), n.to_string())))
        })
        .collect();
    for (k, v) in [
        ("Environment", "sandbox".to_string()),
        ("BankingServiceUrl", sandbox.base_url()),
        ("SageIdIssuer", sandbox.issuer()),
        (
            "SageIdAudience",
            client
                .allowed_audiences
                .first()
                .cloned()
                .unwrap_or_default(),
        ),
        ("NotificationAudience", cfg.notification_audience.clone()),
        ("SageIdClientId", client.client_id.clone()),
        ("SageIdClientSecretArn", client.client_secret.clone()),
        ("ProviderApiKeyArn", client.api_key.clone()),
        (
            "NotificationHeaderName",
            header.as_ref().map(|h| h.name.clone()).unwrap_or_default(),
        ),
        (
            "NotificationHeaderValueArn",
            header.as_ref().map(|h| h.value.clone()).unwrap_or_default(),
        ),
        // Payments Out as the sandbox plays it (`sandbox::payments_out`): its notification
        // audience, and the custom header registered as the provider's `providerHeaderKeyName`.
        (
            "PaymentsOutNotificationAudience",
            cfg.payments_out.notification_audience.clone(),
        ),
        (
            "PaymentsOutHeaderName",
            sandbox::payments_out::defaults::HEADER_NAME.to_string(),
        ),
        (
            "PaymentsOutHeaderValueArn",
            cfg.payments_out.header_value.clone(),
        ),
        ("PaymentsOutUrl", sandbox.base_url()),
        (
            "PaymentsOutAudience",
            sandbox::payments_out::defaults::AUDIENCE.to_string(),
        ),
        (
            "PaymentsOutProviderId",
            cfg.payments_out.provider_id.to_string(),
        ),
        ("PaymentsOutApiKeyArn", cfg.payments_out.api_key.clone()),
        ("BankApiUrl", sandbox.bank_api_url()),
        ("BankClientId", cfg.bank_client_id.clone()),
        ("BankClientSecretArn", cfg.bank_client_secret.clone()),
        ("ProviderRateLimitRps", format!("{rps}")),
        // The functions never build their URLs from a request's Host header, and off Lambda
        // there is no API Gateway domain: the local API's address is the public base URL.
        ("PublicBaseUrl", registered.api_url.to_string()),
        // A single-bank deployment, as the local stack is (tests may set it empty).
        ("BankingServiceBankId", registered.bank_id.to_string()),
        // Sage's hosts, and the sandbox's product pages (`sandbox::ui`, on `localhost`: another
        // site than the connector on 127.0.0.1), which frame `/auth` as Sage's products do.
        (
            "FrameAncestors",
            format!(
                "{} {}",
                parameters
                    .get("FrameAncestors")
                    .cloned()
                    .unwrap_or_else(|| "'self'".into()),
                sandbox::ui::product_base(&sandbox.base_url())
            ),
        ),
    ] {
        parameters.insert(k.to_string(), v);
    }
    if let Some(sage) = &options.sage {
        // Sage's own rate, as the template has it, unless the file says otherwise.
        if let Some(default) = template.parameters.get("ProviderRateLimitRps") {
            let rps = default.as_u64().map(|n| n.to_string());
            parameters.insert("ProviderRateLimitRps".into(), rps.unwrap_or_default());
        }
        for (k, v) in &sage.values {
            parameters.insert(k.clone(), v.clone());
        }
    }
    let mut refs: BTreeMap<String, String> = queue_urls.clone();
    refs.insert(template.table.logical_id.clone(), TABLE_NAME.into());
    refs.insert("AWS::Region".into(), "eu-west-1".into());
    // Only in API Gateway's own domain name, which PUBLIC_BASE_URL (the local API) overrides.
    refs.insert("ConnectorApi".into(), "local".into());
    refs.insert("AWS::URLSuffix".into(), "amazonaws.com".into());
    let mut attributes = BTreeMap::new();
    for (id, arn) in queue_arns {
        attributes.insert(format!("{id}.Arn"), arn.clone());
        attributes.insert(
            format!("{id}.QueueName"),
            arn.rsplit(':').next().unwrap_or_default().to_string(),
        );
    }
    let conditions: BTreeMap<String, bool> = [
        ("HasNotificationHeader", "NotificationHeaderValueArn"),
        ("HasPaymentsOutHeader", "PaymentsOutHeaderValueArn"),
        ("HasPaymentsOutApiKey", "PaymentsOutApiKeyArn"),
    ]
    .into_iter()
    .map(|(condition, on)| {
        let set = parameters.get(on).is_some_and(|v| !v.is_empty());
        (condition.to_string(), set)
    })
    .collect();
    let resolver = Resolver {
        parameters: &parameters,
        refs: &refs,
        attributes: &attributes,
        conditions: &conditions,
    };
    let mut out = BTreeMap::new();
    for f in &template.functions {
        let mut env = BTreeMap::new();
        for (k, v) in &f.environment {
            if let Some(value) = resolver
                .resolve(v)
                .with_context(|| format!("{}: {k}", f.binary))?
            {
                env.insert(k.clone(), value);
            }
        }
        let endpoint = aws
            .endpoints
            .get(&f.binary)
            .ok_or_else(|| anyhow!("no AWS endpoint for {}", f.binary))?;
        for (k, v) in [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", aws.access_key),
            ("AWS_SECRET_ACCESS_KEY", "local"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            // Local only: the sandbox's UI lands on http://127.0.0.1, and /ingest has no IAM.
            ("REDIRECT_ALLOW_HTTP_LOOPBACK", "true"),
            ("INGEST_API_KEY", LOCAL_INGEST_KEY),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        if let Ok(level) = std::env::var("RUST_LOG") {
            env.insert("RUST_LOG".into(), level);
        }
        for (k, v) in &options.env {
            env.insert(k.clone(), v.clone());
        }
        out.insert(f.binary.clone(), env);
    }
    if parameters.is_empty() {
        bail!("template has no parameters");
    }
    Ok(out)
}

/// True when `path` holds every binary of the template.
pub fn binaries_present(dir: &Path) -> Result<(), Vec<String>> {
    let Ok(t) = Template::load() else {
        return Err(vec!["template.yaml".into()]);
    };
    let missing: Vec<String> = t
        .functions
        .iter()
        .filter(|f| !dir.join(&f.binary).exists())
        .map(|f| f.binary.clone())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}
