//! The Lambda entry point every function shares: parse the event, run the transition on
//! each object, report failed SQS records for redelivery, log one summary line.

use std::time::Instant;

use serde_json::{Value, json};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::parse_event;
use crate::keys;
use crate::summary::Summary;
use crate::transitions::{Ctx, Transition};

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
pub fn summary_line(t: Transition, s: &Summary) -> String {
    s.to_emf(t.name(), chrono::Utc::now().timestamp_millis())
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

/// Builds the context from the environment: configuration, and S3/Glue clients (an
/// `AWS_ENDPOINT_URL` such as a local moto_server is honoured, with path-style S3 URLs).
pub async fn context_from_env() -> Result<Ctx> {
    let cfg = Config::from_env()?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let path_style =
        std::env::var("AWS_ENDPOINT_URL").is_ok() || std::env::var("AWS_ENDPOINT_URL_S3").is_ok();
    let s3_conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(path_style)
        .build();
    Ok(Ctx::new(
        aws_sdk_s3::Client::from_conf(s3_conf),
        aws_sdk_glue::Client::new(&sdk),
        cfg,
    ))
}

/// Runs `t` as a Lambda function: cold start builds the context once, every invocation
/// reuses it.
pub async fn serve(t: Transition) -> std::result::Result<(), lambda_runtime::Error> {
    init_logging();
    let ctx = context_from_env().await?;
    let ctx = &ctx;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |ev: lambda_runtime::LambdaEvent<Value>| async move {
            let (response, summary) = handle(ctx, t, &ev.payload)
                .await
                .map_err(|e: Error| lambda_runtime::Error::from(e.to_string()))?;
            // EMF must be the log line itself, so it bypasses the tracing formatter.
            println!("{}", summary_line(t, &summary));
            Ok::<Value, lambda_runtime::Error>(response)
        },
    ))
    .await
}
