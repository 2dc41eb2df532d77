//! The stack the functions run in: one bucket with EventBridge on, one EventBridge rule,
//! SQS queue and dead-letter queue per function (from `template.yaml`), and the Glue
//! database with all eight tables (from the shared schemas). Against moto_server locally,
//! or real AWS when no endpoint is set.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use aws_sdk_eventbridge::types::Target;
use aws_sdk_glue::types::DatabaseInput;
use aws_sdk_s3::types::{EventBridgeConfiguration, NotificationConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;
use stedi::catalog;
use stedi::config::Config;
use stedi::lambda::Function;
use stedi::schema::Table;

use crate::template::{self, Route};

/// Where the stack lives and how to name its parts.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// `AWS_ENDPOINT_URL`, or `None` for real AWS.
    pub endpoint: Option<String>,
    /// The lake bucket.
    pub bucket: String,
    /// The Glue database.
    pub database: String,
    /// Prefix of queue and rule names, so several stacks share one endpoint.
    pub name_prefix: String,
    /// Deliveries before a message is parked in the dead-letter queue.
    pub max_receive_count: u32,
    /// Seconds a received message stays invisible before it is redelivered.
    pub visibility_timeout: u32,
    /// Function configuration.
    pub function: Config,
}

/// A bootstrapped (or bootstrappable) stack with its clients.
pub struct Stack {
    /// Its configuration.
    pub cfg: StackConfig,
    /// The routes from `template.yaml`.
    pub routes: Vec<Route>,
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// Glue.
    pub glue: aws_sdk_glue::Client,
    /// DynamoDB (the lookup index table).
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// EventBridge.
    pub events: aws_sdk_eventbridge::Client,
}

/// A queue of the stack, resolved.
#[derive(Debug, Clone)]
pub struct QueueInfo {
    /// The function it feeds.
    pub function: Function,
    /// Its URL.
    pub url: String,
    /// Its dead-letter queue's URL.
    pub dlq_url: String,
    /// Records per invocation at most (the template's `BatchSize`).
    pub batch_size: usize,
    /// The function's identity policy with this stack's bucket, which the runner enforces.
    pub policy: std::sync::Arc<template::IamPolicy>,
    /// The queues the function sends to, by the environment variable that names each in
    /// the template (`STEP_TRAINER_QUEUE_URL`, `RECONCILE_QUEUE_URL`): their local URLs.
    pub sends_to: BTreeMap<String, String>,
}

impl Stack {
    /// Clients for `cfg`, routes from `template`.
    pub async fn connect(cfg: StackConfig, template: &Path) -> Result<Stack> {
        let routes = template::routes_from_file(template)?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(ep) = &cfg.endpoint {
            loader = loader.endpoint_url(ep);
            if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
                loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                    "testing", "testing", None, None, "local",
                ));
            }
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err()
            {
                loader = loader.region(aws_config::Region::new("us-east-1"));
            }
        }
        let sdk = loader.load().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(cfg.endpoint.is_some())
                .build(),
        );
        Ok(Stack {
            glue: aws_sdk_glue::Client::new(&sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            events: aws_sdk_eventbridge::Client::new(&sdk),
            s3,
            routes,
            cfg,
        })
    }

    /// The function context the handlers run with (same clients as the stack).
    pub fn function_context(&self) -> stedi::Ctx {
        stedi::Ctx::new(
            self.s3.clone(),
            self.glue.clone(),
            self.dynamodb.clone(),
            self.cfg.function.clone(),
        )
    }

    fn queue_name(&self, logical_id: &str) -> String {
        format!("{}{logical_id}", self.cfg.name_prefix)
    }

    /// Creates everything; running it again changes nothing.
    pub async fn bootstrap(&self) -> Result<()> {
        let bucket = &self.cfg.bucket;
        if self.s3.head_bucket().bucket(bucket).send().await.is_err() {
            self.s3
                .create_bucket()
                .bucket(bucket)
                .send()
                .await
                .with_context(|| format!("creating bucket {bucket}"))?;
        }
        self.s3
            .put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(
                NotificationConfiguration::builder()
                    .event_bridge_configuration(EventBridgeConfiguration::builder().build())
                    .build(),
            )
            .send()
            .await
            .context("turning on EventBridge notifications")?;
        for route in &self.routes {
            let dlq = self.ensure_queue(&route.dead_letter_queue, None).await?;
            let dlq_arn = self.queue_arn(&dlq).await?;
            let q = self.ensure_queue(&route.queue, Some(&dlq_arn)).await?;
            let q_arn = self.queue_arn(&q).await?;
            let Some(rule) = &route.rule else {
                continue;
            };
            let patterns: Vec<_> = route
                .key_patterns
                .iter()
                .map(|p| json!({ "wildcard": p }))
                .collect();
            let mut pattern = json!({
                "source": ["aws.s3"],
                "detail-type": route.detail_types,
                "detail": {"bucket": {"name": [bucket]}, "object": {"key": patterns}},
            });
            if let Some(deletion) = &route.deletion_type {
                pattern["detail"]["deletion-type"] = deletion.clone();
            }
            let rule = self.queue_name(rule);
            self.events
                .put_rule()
                .name(&rule)
                .event_pattern(pattern.to_string())
                .send()
                .await
                .with_context(|| format!("creating rule {rule}"))?;
            self.events
                .put_targets()
                .rule(&rule)
                .targets(Target::builder().id("queue").arn(q_arn).build()?)
                .send()
                .await
                .with_context(|| format!("targeting {rule}"))?;
        }
        let db = &self.cfg.database;
        let exists = self.glue.get_database().name(db).send().await.is_ok();
        if !exists {
            self.glue
                .create_database()
                .database_input(DatabaseInput::builder().name(db).build()?)
                .send()
                .await
                .with_context(|| format!("creating database {db}"))?;
        }
        for table in Table::ALL {
            let input = catalog::table_input(table, bucket)?;
            let present = self
                .glue
                .get_table()
                .database_name(db)
                .name(table.name())
                .send()
                .await
                .is_ok();
            let what = format!("defining table {db}.{}", table.name());
            if present {
                self.glue
                    .update_table()
                    .database_name(db)
                    .table_input(input)
                    .send()
                    .await
                    .context(what)?;
            } else {
                self.glue
                    .create_table()
                    .database_name(db)
                    .table_input(input)
                    .send()
                    .await
                    .context(what)?;
            }
        }
        self.ensure_index_table().await
    }

    /// The lookup index table (`INDEX_TABLE`), as the template defines it: on demand,
    /// partition key `pk`, sort key `sk`.
    async fn ensure_index_table(&self) -> Result<()> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        let name = &self.cfg.function.index_table;
        let present = self
            .dynamodb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .is_ok();
        if present {
            return Ok(());
        }
        let attribute = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |n: &str, t| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
        };
        self.dynamodb
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .send()
            .await
            .with_context(|| format!("creating DynamoDB table {name}"))?;
        Ok(())
    }

    async fn ensure_queue(&self, logical_id: &str, dlq_arn: Option<&str>) -> Result<String> {
        let name = self.queue_name(logical_id);
        let mut req = self.sqs.create_queue().queue_name(&name).attributes(
            QueueAttributeName::VisibilityTimeout,
            self.cfg.visibility_timeout.to_string(),
        );
        if let Some(arn) = dlq_arn {
            let redrive = json!({
                "deadLetterTargetArn": arn,
                "maxReceiveCount": self.cfg.max_receive_count,
            });
            req = req.attributes(QueueAttributeName::RedrivePolicy, redrive.to_string());
        }
        let out = req
            .send()
            .await
            .with_context(|| format!("creating queue {name}"))?;
        out.queue_url
            .with_context(|| format!("queue {name} has no URL"))
    }

    async fn queue_arn(&self, url: &str) -> Result<String> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .with_context(|| format!("reading {url}"))?;
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .with_context(|| format!("{url} has no ARN"))
    }

    /// The URL of `function`'s queue.
    pub async fn queue_url(&self, function: Function) -> Result<String> {
        self.queues()
            .await?
            .into_iter()
            .find(|q| q.function == function)
            .map(|q| q.url)
            .with_context(|| format!("no queue for {} in template.yaml", function.name()))
    }

    /// The stack's queues (they must exist: run bootstrap first).
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let mut out = Vec::new();
        for route in &self.routes {
            let Some(function) = Function::from_name(&route.function) else {
                bail!("template.yaml names an unknown function {}", route.function);
            };
            let url = |id: &str| {
                let name = self.queue_name(id);
                async move {
                    self.sqs
                        .get_queue_url()
                        .queue_name(&name)
                        .send()
                        .await
                        .with_context(|| format!("queue {name} not found: run `stedi bootstrap`"))
                        .map(|o| o.queue_url.unwrap_or_default())
                }
            };
            let mut sends_to = BTreeMap::new();
            for (var, queue) in &route.queue_env {
                sends_to.insert(var.clone(), url(queue).await?);
            }
            out.push(QueueInfo {
                function,
                url: url(&route.queue).await?,
                dlq_url: url(&route.dead_letter_queue).await?,
                batch_size: route.batch_size,
                policy: std::sync::Arc::new(route.policy.for_stack(
                    &self.cfg.bucket,
                    &self.cfg.database,
                    &self.cfg.name_prefix,
                    &self.cfg.function.index_table,
                )),
                sends_to,
            });
        }
        Ok(out)
    }
}
