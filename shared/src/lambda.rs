//! The Lambda entry point every function shares: parse the event, run the transition on
//! each object, report failed SQS records for redelivery, log one summary line.

use std::time::Instant;

use serde_json::{Value, json};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::parse_event;
use crate::keys;
use crate::reconcile;
use crate::summary::Summary;
use crate::transitions::{Ctx, Transition};

/// Every function of the product: the five transitions and `reconcile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// A zone transition.
    Transition(Transition),
    /// The reconcile planner / worker.
    Reconcile,
}

impl Function {
    /// Looks a function up by its binary name.
    pub fn from_name(name: &str) -> Option<Function> {
        match name {
            "reconcile" => Some(Function::Reconcile),
            _ => Transition::from_name(name).map(Function::Transition),
        }
    }

    /// The binary name.
    pub fn name(self) -> &'static str {
        match self {
            Function::Transition(t) => t.name(),
            Function::Reconcile => "reconcile",
        }
    }
}

/// Handles one invocation payload of any function.
pub async fn handle_function(ctx: &Ctx, f: Function, payload: &Value) -> Result<(Value, Summary)> {
    // Boxed so the Lambda main's future stays shallow.
    match f {
        Function::Transition(t) => Box::pin(handle(ctx, t, payload)).await,
        Function::Reconcile => Box::pin(handle_reconcile(ctx, payload)).await,
    }
}

/// `reconcile`: an SQS batch of work items is executed (failed records reported for
/// redelivery); anything else (the schedule, a direct invocation, a `plan` message) plans
/// and fans the items out through the reconcile queue, with a follow-up `plan` message so
/// the next stage starts once these are done. Without a queue the items run inline.
pub async fn handle_reconcile(ctx: &Ctx, payload: &Value) -> Result<(Value, Summary)> {
    let started = Instant::now();
    let mut total = Summary::default();
    let records = payload.get("Records").and_then(Value::as_array);
    let Some(records) = records.filter(|r| {
        r.first()
            .and_then(|r| r.get("eventSource"))
            .and_then(Value::as_str)
            == Some("aws:sqs")
    }) else {
        total.absorb(plan_and_fan_out(ctx, payload).await?);
        total.ms = started.elapsed().as_millis() as u64;
        return Ok((json!({ "batchItemFailures": [] }), total));
    };
    let mut failures = Vec::new();
    for r in records {
        let id = r
            .get("messageId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let body = r.get("body").and_then(Value::as_str).unwrap_or_default();
        let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let outcome = if body.get("item").is_some() {
            let item = serde_json::from_value::<reconcile::Item>(body.clone())
                .map_err(|e| Error::BadEvent(format!("reconcile item: {e}")));
            match (item, message_bucket(&body)) {
                (Ok(item), Ok(bucket)) => reconcile::execute(ctx, &bucket, &item).await,
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        } else {
            plan_and_fan_out(ctx, &body).await
        };
        match outcome {
            Ok(s) => total.absorb(s),
            Err(e) if e.is_retryable() => {
                total.errors.push(e.to_string());
                failures.push(json!({ "itemIdentifier": id }));
            }
            Err(e) => {
                tracing::error!(error = %e, "reconcile record dropped");
                total.errors.push(e.to_string());
            }
        }
    }
    total.ms = started.elapsed().as_millis() as u64;
    Ok((json!({ "batchItemFailures": failures }), total))
}

/// The lake bucket a reconcile message names, else `LAKE_BUCKET`.
fn message_bucket(message: &Value) -> Result<String> {
    message
        .get("bucket")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| std::env::var("LAKE_BUCKET").ok())
        .ok_or_else(|| Error::Config {
            name: "LAKE_BUCKET",
            value: String::new(),
            reason: "reconcile needs the lake bucket".into(),
        })
}

async fn plan_and_fan_out(ctx: &Ctx, message: &Value) -> Result<Summary> {
    let bucket = message_bucket(message)?;
    let Some((sqs, url)) = &ctx.reconcile_queue else {
        let report = reconcile::run_inline(ctx, &bucket).await?;
        return Ok(report.summary);
    };
    let plan = reconcile::plan(ctx, &bucket).await?;
    let mut s = Summary::default();
    for (t, added, removed) in &plan.snapshots {
        s.outputs
            .push(format!("{} (+{added} -{removed})", t.name()));
    }
    if plan.items.is_empty() && plan.stage.is_none() {
        return Ok(s);
    }
    let mut bodies: Vec<String> = plan
        .items
        .iter()
        .map(|item| {
            let mut v = serde_json::to_value(item).unwrap_or(Value::Null);
            v["bucket"] = Value::String(bucket.clone());
            v.to_string()
        })
        .collect();
    for chunk in bodies.chunks(10) {
        send_batch(sqs, url, chunk, 0).await?;
    }
    // Plan again once these items have had time to run: the next stage follows.
    bodies = vec![json!({ "reconcile": "plan", "bucket": bucket }).to_string()];
    send_batch(sqs, url, &bodies, 60).await?;
    s.rows_out = plan.items.len() as u64;
    Ok(s)
}

async fn send_batch(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    bodies: &[String],
    delay: i32,
) -> Result<()> {
    let entries = bodies
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(b)
                .delay_seconds(delay)
                .build()
                .ok()
        })
        .collect();
    let out = sqs
        .send_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| Error::S3 {
            op: "SendMessageBatch",
            bucket: url.to_string(),
            key: String::new(),
            message: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
            retryable: true,
        })?;
    if !out.failed().is_empty() {
        return Err(Error::S3 {
            op: "SendMessageBatch",
            bucket: url.to_string(),
            key: String::new(),
            message: format!("{} entries refused", out.failed().len()),
            retryable: true,
        });
    }
    Ok(())
}

/// Handles one invocation payload. For SQS batches the result lists the records to
/// redeliver (`batchItemFailures`); for a direct invocation a retryable failure is the
/// invocation's error. The summary is returned for the caller to log
/// ([`summary_line`]), also when the invocation fails (inside the error's log).
pub async fn handle(ctx: &Ctx, t: Transition, payload: &Value) -> Result<(Value, Summary)> {
    let started = Instant::now();
    let ev = parse_event(payload)?;
    let mut total = Summary::default();
    let mut failures: Vec<String> = Vec::new();
    for (id, reason) in &ev.unreadable {
        tracing::error!(message_id = %id, %reason, "unreadable SQS message acknowledged");
        total.errors.push(format!("{id}: {reason}"));
    }
    for obj in &ev.objects {
        let outcome = match keys::accept(&obj.bucket, &obj.key, t.sources()) {
            Ok(src) => t.run(ctx, &obj.bucket, &src).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(s) => total.absorb(s),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, key = %obj.key, "failed; will be retried");
                total.errors.push(e.to_string());
                match (&obj.message_id, ev.from_sqs) {
                    (Some(id), true) => {
                        if !failures.contains(id) {
                            failures.push(id.clone());
                        }
                    }
                    _ => return Err(e),
                }
            }
            Err(e) => {
                // A retry would fail the same way: log it and acknowledge the record.
                tracing::error!(error = %e, key = %obj.key, "refused");
                total.errors.push(e.to_string());
            }
        }
    }
    total.ms = started.elapsed().as_millis() as u64;
    let failures: Vec<Value> = failures
        .into_iter()
        .map(|id| json!({ "itemIdentifier": id }))
        .collect();
    Ok((json!({ "batchItemFailures": failures }), total))
}

/// The invocation's summary line (CloudWatch EMF).
pub fn summary_line(f: Function, s: &Summary) -> String {
    s.to_emf(f.name(), chrono::Utc::now().timestamp_millis())
        .to_string()
}

/// Installs JSON logging (level from `RUST_LOG`, default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .without_time()
        .with_target(false)
        .try_init();
}

/// Builds the context from the environment: configuration, and S3/Glue/SQS clients (an
/// `AWS_ENDPOINT_URL` such as a local moto_server is honoured, with path-style S3 URLs).
pub async fn context_from_env() -> Result<Ctx> {
    let cfg = Config::from_env()?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let path_style =
        std::env::var("AWS_ENDPOINT_URL").is_ok() || std::env::var("AWS_ENDPOINT_URL_S3").is_ok();
    let s3_conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(path_style)
        .build();
    let queue = cfg.reconcile_queue_url.clone();
    let mut ctx = Ctx::new(
        aws_sdk_s3::Client::from_conf(s3_conf),
        aws_sdk_glue::Client::new(&sdk),
        cfg,
    );
    ctx.reconcile_queue = queue.map(|url| (aws_sdk_sqs::Client::new(&sdk), url));
    Ok(ctx)
}

/// Runs `f` as a Lambda function: cold start builds the context once, every invocation
/// reuses it.
pub async fn serve(f: Function) -> std::result::Result<(), lambda_runtime::Error> {
    init_logging();
    let ctx = context_from_env().await?;
    let ctx = &ctx;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |ev: lambda_runtime::LambdaEvent<Value>| async move {
            let (response, summary) = handle_function(ctx, f, &ev.payload)
                .await
                .map_err(|e: Error| lambda_runtime::Error::from(e.to_string()))?;
            // EMF must be the log line itself, so it bypasses the tracing formatter.
            println!("{}", summary_line(f, &summary));
            Ok::<Value, lambda_runtime::Error>(response)
        },
    ))
    .await
}
