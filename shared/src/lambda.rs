//! The Lambda entry point every function shares: parse the event, run the transition on
//! each object, report failed SQS records for redelivery (a typed [`SqsBatchResponse`]),
//! log one summary line with the requests the invocation made.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, Result, sdk_retryable, service_message};
use crate::event::{self, SqsBatchResponse, parse_event};
use crate::keys;
use crate::reconcile;
use crate::store::{Request, RequestCounts, count_invocation, record};
use crate::summary::Summary;
use crate::transitions::{Batch, Ctx, Transition, compact};

/// Every function of the product: the five transitions, `reconcile` and `compact`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// A zone transition.
    Transition(Transition),
    /// The reconcile planner / worker.
    Reconcile,
    /// The compaction planner / worker.
    Compact,
    /// The erasure of a person, one request object at a time.
    Erasure,
}

impl Function {
    /// Every function: the transitions of [`crate::streams`], then the others.
    pub fn all() -> impl Iterator<Item = Function> {
        Transition::ALL
            .into_iter()
            .map(Function::Transition)
            .chain([Function::Reconcile, Function::Compact, Function::Erasure])
    }

    /// Looks a function up by its binary name.
    pub fn from_name(name: &str) -> Option<Function> {
        match name {
            "reconcile" => Some(Function::Reconcile),
            "compact" => Some(Function::Compact),
            "erasure" => Some(Function::Erasure),
            _ => Transition::from_name(name).map(Function::Transition),
        }
    }

    /// The binary name.
    pub fn name(self) -> &'static str {
        match self {
            Function::Transition(t) => t.name(),
            Function::Reconcile => "reconcile",
            Function::Compact => "compact",
            Function::Erasure => "erasure",
        }
    }
}

/// What an invocation answers (its response, serialised for Lambda as
/// `{"batchItemFailures": [{"itemIdentifier": …}]}`) and what it did.
pub type Invocation = (SqsBatchResponse, Summary);

/// Handles one invocation payload of any function: the typed response and the summary,
/// whose [`Summary::requests`] are the requests this invocation made (counted in counters
/// of its own, so concurrent invocations on one context do not mix).
pub async fn invoke(ctx: &Ctx, f: Function, payload: &Value) -> Result<Invocation> {
    invoke_until(ctx, f, payload, None).await
}

tokio::task_local! {
    /// When the invocation the current task runs stops starting files (see
    /// [`invoke_until`]).
    static CUTOFF: Option<Instant>;
}

/// [`invoke`] with Lambda's `deadline`: an SQS batch stops starting files once two thirds
/// of the time it had are spent, so that the files in flight and the batch's shared steps
/// (its objects, manifests, postings, compaction pointer) finish before the timeout. The
/// files not started are redelivered (`batchItemFailures`); one file is always started, so
/// every invocation makes progress.
pub async fn invoke_until(
    ctx: &Ctx,
    f: Function,
    payload: &Value,
    deadline: Option<Instant>,
) -> Result<Invocation> {
    let now = Instant::now();
    let cutoff = deadline.map(|d| now + d.saturating_duration_since(now) * 2 / 3);
    CUTOFF.scope(cutoff, invoke_counted(ctx, f, payload)).await
}

async fn invoke_counted(ctx: &Ctx, f: Function, payload: &Value) -> Result<Invocation> {
    let counts = RequestCounts::shared();
    // Boxed so the Lambda main's future stays shallow.
    let work = async {
        match f {
            Function::Transition(t) if t.reads_references_only() => {
                Box::pin(ctx.reading_invocation(invoke_transition(ctx, t, payload))).await
            }
            Function::Transition(t) => Box::pin(invoke_transition(ctx, t, payload)).await,
            Function::Reconcile => Box::pin(invoke_reconcile(ctx, payload)).await,
            Function::Compact => Box::pin(invoke_compact(ctx, payload)).await,
            Function::Erasure => Box::pin(invoke_objects(ctx, payload, erasure_request)).await,
        }
    };
    let (response, mut summary) = count_invocation(counts.clone(), work).await?;
    summary.requests = counts.snapshot();
    Ok((response, summary))
}

/// [`invoke`] of a transition, with the response as the JSON Lambda gets.
pub async fn handle(ctx: &Ctx, t: Transition, payload: &Value) -> Result<(Value, Summary)> {
    let (response, summary) = invoke(ctx, Function::Transition(t), payload).await?;
    let response = serde_json::to_value(&response).map_err(|source| Error::Json {
        context: "batch response".into(),
        source,
    })?;
    Ok((response, summary))
}

/// Logs and acknowledges an SQS message the function cannot read: a retry would not make
/// it readable.
fn acknowledge_unreadable(total: &mut Summary, id: &str, reason: &dyn std::fmt::Display) {
    tracing::error!(message_id = %id, %reason, "unreadable SQS message acknowledged");
    total.errors.push(format!("{id}: {reason}"));
}

/// A message on the reconcile queue that carries one work item (`{"item": …, "bucket": …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    /// The item.
    #[serde(flatten)]
    pub item: reconcile::Item,
    /// The lake bucket (else `LAKE_BUCKET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

/// Any other message to `reconcile` (the schedules' `{"reconcile": "plan", "scope":
/// "changed" | "full", "bucket": …}`, a direct invocation, the follow-up message): plan, and
/// fan the items out. Fields other than `bucket` and `scope` are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRequest {
    /// The lake bucket (else `LAKE_BUCKET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// What the passes check of the reading files (else the full check).
    #[serde(default)]
    pub scope: reconcile::Scope,
}

impl PlanRequest {
    /// Reads a payload that is not an SQS batch: an object is a plan request (`bucket`
    /// optional); anything else (`null`, an empty invocation) plans with `LAKE_BUCKET`.
    pub fn from_payload(payload: &Value) -> Result<PlanRequest> {
        if !payload.is_object() {
            return Ok(PlanRequest::default());
        }
        PlanRequest::deserialize(payload).map_err(|source| Error::MalformedEvent {
            context: "reconcile plan request".into(),
            source,
        })
    }
}

/// `reconcile`: an SQS batch of work items is executed (failed records reported for
/// redelivery); anything else (the schedule, a direct invocation, a plan request) plans
/// and fans the items out through the reconcile queue, with a follow-up plan request so
/// the next stage starts once these are done. Without a queue the items run inline. A
/// message whose body is not JSON is logged and acknowledged.
async fn invoke_reconcile(ctx: &Ctx, payload: &Value) -> Result<Invocation> {
    let started = Instant::now();
    let Some(batch) = event::sqs_batch(payload)? else {
        let mut total = plan_and_fan_out(ctx, &PlanRequest::from_payload(payload)?).await?;
        total.ms = started.elapsed().as_millis() as u64;
        return Ok((SqsBatchResponse::default(), total));
    };
    let (response, mut total) = each_message(&batch, "reconcile", |body| async move {
        handle_message(ctx, &body).await
    })
    .await;
    total.ms = started.elapsed().as_millis() as u64;
    Ok((response, total))
}

/// Runs `handle` on the body of every message of an SQS batch: a retryable failure is
/// reported for redelivery, any other is logged and the message acknowledged (as is a body
/// that is not JSON).
async fn each_message<F, Fut>(
    batch: &aws_lambda_events::event::sqs::SqsEvent,
    function: &str,
    mut handle: F,
) -> Invocation
where
    F: FnMut(Value) -> Fut,
    Fut: std::future::Future<Output = Result<Summary>>,
{
    let mut total = Summary::default();
    let mut response = SqsBatchResponse::default();
    for m in &batch.records {
        let id = m.message_id.clone().unwrap_or_default();
        let body = match event::sqs_body(m) {
            Ok(body) => body,
            Err(e) => {
                acknowledge_unreadable(&mut total, &id, &e);
                continue;
            }
        };
        match handle(body).await {
            Ok(s) => total.absorb(s),
            Err(e) if e.is_retryable() => {
                total.errors.push(e.to_string());
                response.add_failure(id);
            }
            Err(e) => {
                tracing::error!(error = %e, function, "record dropped");
                total.errors.push(e.to_string());
            }
        }
    }
    (response, total)
}

/// A message on the compact queue: one partition (`{"table", "dt", "bucket"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactItem {
    /// The partition.
    #[serde(flatten)]
    pub item: compact::Item,
    /// The lake bucket (else `LAKE_BUCKET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

/// `compact`: an SQS batch of partitions is compacted (each when due, see
/// [`compact::compact_dt`]); anything else (the schedule's `{"compact": "plan", "bucket": …}`,
/// a direct invocation) plans and fans one message per partition out through the compact
/// queue, or compacts inline without one.
async fn invoke_compact(ctx: &Ctx, payload: &Value) -> Result<Invocation> {
    let started = Instant::now();
    let Some(batch) = event::sqs_batch(payload)? else {
        let bucket = resolve_bucket(PlanRequest::from_payload(payload)?.bucket.as_deref())?;
        let mut total = match &ctx.compact_queue {
            None => compact::run_inline(ctx, &bucket, false).await?,
            Some((sqs, url)) => {
                let items = compact::plan(ctx, &bucket).await?;
                let bodies = items
                    .iter()
                    .map(|item| {
                        let m = CompactItem {
                            item: item.clone(),
                            bucket: Some(bucket.clone()),
                        };
                        serde_json::to_string(&m).map_err(|source| Error::Json {
                            context: "compact item".into(),
                            source,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                for chunk in bodies.chunks(10) {
                    send_batch(sqs, url, chunk, 0).await?;
                }
                Summary {
                    rows_out: items.len() as u64,
                    ..Summary::default()
                }
            }
        };
        total.ms = started.elapsed().as_millis() as u64;
        return Ok((SqsBatchResponse::default(), total));
    };
    let now = compact::unix_now();
    let (response, mut total) = each_message(&batch, "compact", |body| async move {
        let m = CompactItem::deserialize(&body).map_err(|source| Error::MalformedEvent {
            context: "compact item".into(),
            source,
        })?;
        let bucket = resolve_bucket(m.bucket.as_deref())?;
        compact::compact_dt(ctx, &bucket, m.item.table, &m.item.dt, now, false).await
    })
    .await;
    total.ms = started.elapsed().as_millis() as u64;
    Ok((response, total))
}

/// One message of the reconcile queue: a work item is executed, anything else plans.
async fn handle_message(ctx: &Ctx, body: &Value) -> Result<Summary> {
    if body.get("item").is_none() {
        return plan_and_fan_out(ctx, &PlanRequest::from_payload(body)?).await;
    }
    let w = WorkItem::deserialize(body).map_err(|source| Error::MalformedEvent {
        context: "reconcile item".into(),
        source,
    })?;
    let bucket = resolve_bucket(w.bucket.as_deref())?;
    reconcile::execute(ctx, &bucket, &w.item).await
}

/// The lake bucket a reconcile message names, else `LAKE_BUCKET`.
fn resolve_bucket(named: Option<&str>) -> Result<String> {
    named
        .map(str::to_string)
        .or_else(|| std::env::var("LAKE_BUCKET").ok())
        .ok_or_else(|| Error::Config {
            name: "LAKE_BUCKET",
            value: String::new(),
            reason: "reconcile needs the lake bucket".into(),
        })
}

/// One pass of the reconcile driver through the queue, then a follow-up plan request so the
/// next stage starts once these items have had time to run; without a queue, every pass
/// in this invocation.
async fn plan_and_fan_out(ctx: &Ctx, request: &PlanRequest) -> Result<Summary> {
    let bucket = resolve_bucket(request.bucket.as_deref())?;
    let scope = request.scope;
    let Some((sqs, url)) = &ctx.reconcile_queue else {
        let report = reconcile::run_inline(ctx, &bucket, scope).await?;
        return Ok(report.summary);
    };
    let queue = &mut reconcile::Queue { sqs, url };
    let report = reconcile::drive(ctx, &bucket, queue, 1, scope).await?;
    let mut s = Summary::default();
    for (t, added, removed) in &report.snapshots {
        s.outputs.push(format!("{t} (+{added} -{removed})"));
    }
    if report.converged {
        return Ok(s);
    }
    let next = PlanRequest {
        bucket: Some(bucket),
        scope,
    };
    let next = serde_json::to_string(&next).map_err(|source| Error::Json {
        context: "reconcile plan request".into(),
        source,
    })?;
    send_batch(sqs, url, &[next], 60).await?;
    s.rows_out = report.items.values().sum();
    Ok(s)
}

pub(crate) async fn send_batch(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    bodies: &[String],
    delay: i32,
) -> Result<()> {
    let sqs_error =
        |message: String, retryable, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
            Error::Sqs {
                op: "SendMessageBatch",
                queue: url.to_string(),
                message,
                retryable,
                source,
            }
        };
    let entries = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(b)
                .delay_seconds(delay)
                .build()
                .map_err(|e| sqs_error(e.to_string(), false, Some(Box::new(e))))
        })
        .collect::<Result<Vec<_>>>()?;
    record(Request::Sqs);
    if let Some(denied) = crate::store::sqs_denial(url) {
        return Err(sqs_error(denied, false, None));
    }
    let out = sqs
        .send_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| {
            // Throttling and the service's own trouble are worth retrying.
            let retryable = sdk_retryable(&e, |code| {
                matches!(
                    code,
                    "RequestThrottled"
                        | "ThrottlingException"
                        | "KmsThrottled"
                        | "ServiceUnavailable"
                        | "InternalError"
                        | "InternalFailure"
                        | "AWS.SimpleQueueService.InternalError"
                )
            }) || e
                .raw_response()
                .is_some_and(|r| r.status().is_server_error());
            // The SDK's error and its causes are the source, not repeated in the message.
            let message = match e.as_service_error() {
                Some(se) => service_message(se),
                None => e.to_string(),
            };
            sqs_error(message, retryable, Some(Box::new(e)))
        })?;
    if let Some(first) = out.failed().first() {
        let message = format!(
            "{} of {} entries refused, e.g. {}: {}",
            out.failed().len(),
            bodies.len(),
            first.code(),
            first.message().unwrap_or_default()
        );
        // Refused for the request's own fault, a retry would be refused again.
        let retryable = out.failed().iter().all(|f| !f.sender_fault());
        return Err(sqs_error(message, retryable, None));
    }
    Ok(())
}

/// A transition. For SQS batches the response lists the records to redeliver
/// (`batchItemFailures`); for a direct invocation a retryable failure is the invocation's
/// error. The reading filters write one object per (table, `dt`) for all the files of a
/// batch ([`Batch`]), then index each file for erasure ([`Transition::settle`]); a failure
/// to write the batch's objects fails the invocation, so SQS redelivers every record (each
/// is idempotent). The compacted generations of the partitions the batch changed are
/// followed once, after every object's writes (one pointer read per partition, not per
/// object).
async fn invoke_transition(ctx: &Ctx, t: Transition, payload: &Value) -> Result<Invocation> {
    let started = Instant::now();
    let batch = batch_of(ctx, t, payload)?;
    let (mut response, mut total, mut done) = each_object(ctx, payload, |ctx, bucket, key| {
        let batch = batch.clone();
        Box::pin(async move {
            let src = keys::accept(bucket, key, t.sources())?;
            match batch.filter(|(b, _)| b == bucket) {
                Some((_, batch)) => {
                    let computed = t.compute_into(ctx, bucket, &src, &batch).await;
                    if computed.is_err() {
                        // Redelivered or refused: none of its rows in the batch's objects.
                        batch.discard(t.target(), &src.stem);
                    }
                    computed
                }
                None => t.compute(ctx, bucket, &src).await,
            }
        })
    })
    .await?;
    if let Some((bucket, batch)) = &batch {
        Box::pin(batch.write(ctx, bucket)).await?;
        let mut files = Vec::with_capacity(done.len());
        for d in &mut done {
            let src = keys::accept(&d.bucket, &d.key, t.sources())?;
            files.push((d.bucket.clone(), src, std::mem::take(&mut d.summary)));
        }
        let answers = Box::pin(t.settle_batch(ctx, files)).await;
        let mut settled = Vec::with_capacity(done.len());
        for (d, answer) in done.into_iter().zip(answers) {
            match answer {
                Ok(summary) => settled.push(Done { summary, ..d }),
                Err(e) => fail(
                    &mut response,
                    &mut total,
                    &d.key,
                    d.message_id.as_deref(),
                    e,
                )?,
            }
        }
        done = settled;
    }
    let mut buckets: Vec<&str> = done.iter().map(|d| d.bucket.as_str()).collect();
    buckets.sort_unstable();
    buckets.dedup();
    for bucket in buckets {
        let here = || done.iter().filter(move |d| d.bucket == bucket);
        let mut batch = Summary::default();
        for d in here() {
            batch.outputs.extend(d.summary.outputs.iter().cloned());
            batch.deleted.extend(d.summary.deleted.iter().cloned());
        }
        // Files of one batch name the same objects.
        batch.outputs.sort_unstable();
        batch.outputs.dedup();
        let (outputs, deleted) = (batch.outputs.len(), batch.deleted.len());
        match compact::follow(ctx, bucket, &mut batch).await {
            Ok(()) => {
                total.outputs.extend(batch.outputs.drain(outputs..));
                total.deleted.extend(batch.deleted.drain(deleted..));
                total.conflicts += batch.conflicts;
            }
            Err(e) if e.is_retryable() => {
                // Computing again is idempotent: redeliver the batch's objects, whose next
                // run follows again.
                tracing::warn!(error = %e, bucket, "compaction follow failed; will be retried");
                total.errors.push(e.to_string());
                for d in here() {
                    match &d.message_id {
                        Some(id) => redeliver(&mut response, id),
                        None => return Err(e),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, bucket, "compaction follow refused");
                total.errors.push(e.to_string());
            }
        }
    }
    for d in done {
        total.absorb(d.summary);
    }
    total.ms = started.elapsed().as_millis() as u64;
    Ok((response, total))
}

/// An erasure request object.
fn erasure_request<'a>(ctx: &'a Ctx, bucket: &'a str, key: &'a str) -> Work<'a> {
    Box::pin(crate::transitions::erasure::handle_request(
        ctx, bucket, key,
    ))
}

/// The work on one object of an event (a transition, an erasure request).
type Work<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Summary>> + Send + 'a>>;

/// Lists SQS message `id` for redelivery (once: a message may carry several objects).
fn redeliver(response: &mut SqsBatchResponse, id: &str) {
    if !response
        .batch_item_failures
        .iter()
        .any(|f| f.item_identifier == id)
    {
        response.add_failure(id.to_string());
    }
}

/// An object an invocation processed: its bucket, its SQS message, what was done.
struct Done {
    bucket: String,
    key: String,
    message_id: Option<String>,
    summary: Summary,
}

/// Runs `work` on each object of an S3 event (direct, EventBridge or through SQS): the
/// response (records to redeliver), the summary of what failed, and the objects done.
async fn each_object<W>(
    ctx: &Ctx,
    payload: &Value,
    work: W,
) -> Result<(SqsBatchResponse, Summary, Vec<Done>)>
where
    W: for<'a> Fn(&'a Ctx, &'a str, &'a str) -> Work<'a>,
{
    let ev = parse_event(payload)?;
    let mut total = Summary::default();
    let mut response = SqsBatchResponse::default();
    let mut done = Vec::with_capacity(ev.objects.len());
    for (id, reason) in &ev.unreadable {
        acknowledge_unreadable(&mut total, id, reason);
    }
    let cutoff = CUTOFF.try_with(|c| *c).ok().flatten();
    for (i, obj) in ev.objects.iter().enumerate() {
        let id = obj.message_id.as_deref().filter(|_| ev.from_sqs);
        if let (Some(id), Some(cutoff)) = (id, cutoff)
            && i > 0
            && Instant::now() >= cutoff
        {
            // Out of time for more: this file comes back in a later batch.
            tracing::warn!(key = %obj.key, "not started before the invocation's cutoff; redelivered");
            redeliver(&mut response, id);
            continue;
        }
        let outcome = event::delivery(obj.redelivered, work(ctx, &obj.bucket, &obj.key)).await;
        match outcome {
            Ok(summary) => done.push(Done {
                bucket: obj.bucket.clone(),
                key: obj.key.clone(),
                message_id: id.map(str::to_string),
                summary,
            }),
            Err(e) => fail(&mut response, &mut total, &obj.key, id, e)?,
        }
    }
    Ok((response, total, done))
}

/// Records the failure of object `key` (of SQS message `id`, if from SQS): a retryable one
/// is redelivered (or, outside SQS, is the invocation's error); any other is logged and
/// acknowledged, as a retry would fail the same way.
fn fail(
    response: &mut SqsBatchResponse,
    total: &mut Summary,
    key: &str,
    id: Option<&str>,
    e: Error,
) -> Result<()> {
    total.errors.push(e.to_string());
    if !e.is_retryable() {
        tracing::error!(error = %e, key = %key, "refused");
        return Ok(());
    }
    tracing::warn!(error = %e, key = %key, "failed; will be retried");
    match id {
        Some(id) => {
            redeliver(response, id);
            Ok(())
        }
        None => Err(e),
    }
}

/// The batch the files of an event share objects in, with its bucket: for a reading
/// filter ([`Transition::batches`]), two or more accepted files of one bucket.
fn batch_of(ctx: &Ctx, t: Transition, payload: &Value) -> Result<Option<(String, Arc<Batch>)>> {
    if !t.batches() {
        return Ok(None);
    }
    let ev = parse_event(payload)?;
    let Some(bucket) = ev.objects.first().map(|o| o.bucket.clone()) else {
        return Ok(None);
    };
    if ev.objects.iter().any(|o| o.bucket != bucket) {
        return Ok(None);
    }
    let sources: Vec<keys::SourceKey> = ev
        .objects
        .iter()
        .filter_map(|o| keys::accept(&o.bucket, &o.key, t.sources()).ok())
        .collect();
    Ok(Batch::new(
        &sources,
        ctx.cfg.batch_object_bytes,
        ctx.cfg.batch_held_bytes,
    )
    .map(|b| (bucket, Arc::new(b))))
}

/// Runs `work` on each object of an S3 event (see [`each_object`]).
async fn invoke_objects<W>(ctx: &Ctx, payload: &Value, work: W) -> Result<Invocation>
where
    W: for<'a> Fn(&'a Ctx, &'a str, &'a str) -> Work<'a>,
{
    let started = Instant::now();
    let (response, mut total, done) = each_object(ctx, payload, work).await?;
    for d in done {
        total.absorb(d.summary);
    }
    total.ms = started.elapsed().as_millis() as u64;
    Ok((response, total))
}

/// The invocation's summary line (CloudWatch EMF).
pub fn summary_line(f: Function, s: &Summary) -> String {
    s.to_emf(f.name(), chrono::Utc::now().timestamp_millis())
        .to_string()
}

/// Installs JSON logging, filtered by `RUST_LOG` (see [`log_filter`]).
pub fn init_logging() {
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .without_time()
        .with_target(false)
        .with_filter(log_filter(std::env::var("RUST_LOG").ok().as_deref()));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The log filter of a `RUST_LOG` value: a level (`debug`), `target=level` pairs, or both
/// (`info,stedi::store=debug`); `info` when unset or unreadable. Targets, not regular
/// expressions: the binaries carry no regex engine.
pub fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::filter::Targets {
    let info = || tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO);
    let Some(value) = rust_log else {
        return info();
    };
    // Each directive a level, or a target and a level (a bare word would parse as a target
    // enabled at every level, and silence the rest).
    let level = |l: &str| l.parse::<tracing::level_filters::LevelFilter>().is_ok();
    let readable = value.split(',').all(|d| match d.split_once('=') {
        Some((target, l)) => !target.is_empty() && level(l),
        None => level(d),
    });
    match value.parse::<tracing_subscriber::filter::Targets>() {
        Ok(t) if readable => t,
        _ => {
            eprintln!("RUST_LOG={value:?} is not a level or target=level list; logging at info");
            info()
        }
    }
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
    let step_queue = cfg.step_trainer_queue_url.clone();
    let compact_queue = cfg.compact_queue_url.clone();
    let mut ctx = Ctx::new(
        aws_sdk_s3::Client::from_conf(s3_conf),
        aws_sdk_glue::Client::new(&sdk),
        aws_sdk_dynamodb::Client::new(&sdk),
        cfg,
    );
    ctx.reconcile_queue = queue.map(|url| (aws_sdk_sqs::Client::new(&sdk), url));
    ctx.step_trainer_queue = step_queue.map(|url| (aws_sdk_sqs::Client::new(&sdk), url));
    ctx.compact_queue = compact_queue.map(|url| (aws_sdk_sqs::Client::new(&sdk), url));
    Ok(ctx)
}

/// Runs the function named `name` (a binary of `functions/`, see [`Function::from_name`]).
pub async fn serve_named(name: &str) -> std::result::Result<(), lambda_runtime::Error> {
    let f = Function::from_name(name).ok_or_else(|| {
        lambda_runtime::Error::from(format!(
            "no function is named {name:?}: a transition of stedi::streams, reconcile, compact \
             or erasure"
        ))
    })?;
    serve(f).await
}

/// Runs `f` as a Lambda function: cold start builds the context once, every invocation
/// reuses it.
pub async fn serve(f: Function) -> std::result::Result<(), lambda_runtime::Error> {
    init_logging();
    let ctx = context_from_env().await?;
    let ctx = &ctx;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |ev: lambda_runtime::LambdaEvent<Value>| async move {
            // Lambda's deadline is wall-clock milliseconds; as an instant on this clock.
            let left = ev.context.deadline as i64 - chrono::Utc::now().timestamp_millis();
            let deadline = Instant::now() + std::time::Duration::from_millis(left.max(0) as u64);
            let (response, summary) = invoke_until(ctx, f, &ev.payload, Some(deadline))
                .await
                .map_err(|e: Error| lambda_runtime::Error::from(e.to_string()))?;
            // EMF must be the log line itself, so it bypasses the tracing formatter.
            println!("{}", summary_line(f, &summary));
            Ok::<SqsBatchResponse, lambda_runtime::Error>(response)
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{offline_dynamodb, offline_glue, offline_s3};
    use serde_json::json;

    #[test]
    fn rust_log_is_a_level_or_target_level_pairs_and_info_otherwise() {
        use tracing::Level;
        let on = |v: Option<&str>, target: &str, level: Level| {
            log_filter(v).would_enable(target, &level)
        };
        for unset_or_bad in [None, Some("no such level"), Some("a=b=c")] {
            assert!(on(unset_or_bad, "stedi::store", Level::INFO));
            assert!(!on(unset_or_bad, "stedi::store", Level::DEBUG));
        }
        assert!(on(Some("debug"), "stedi::store", Level::DEBUG));
        assert!(!on(Some("warn"), "stedi::store", Level::INFO));
        let mixed = Some("info,stedi::store=debug");
        assert!(on(mixed, "stedi::store", Level::DEBUG));
        assert!(!on(mixed, "stedi::catalog", Level::DEBUG));
        assert!(on(mixed, "stedi::catalog", Level::INFO));
    }

    fn offline_ctx() -> Ctx {
        // Every request fails fast with a retryable error.
        Ctx::new(
            offline_s3(),
            offline_glue(),
            offline_dynamodb(),
            Config::default(),
        )
    }

    fn sqs(bodies: &[(&str, String)]) -> Value {
        let records: Vec<Value> = bodies
            .iter()
            .map(|(id, body)| json!({"eventSource": "aws:sqs", "messageId": id, "body": body}))
            .collect();
        json!({ "Records": records })
    }

    fn eventbridge(bucket: &str, key: &str) -> String {
        json!({"source": "aws.s3", "detail-type": "Object Created",
               "detail": {"bucket": {"name": bucket}, "object": {"key": key}}})
        .to_string()
    }

    #[test]
    fn the_response_is_serialised_as_lambda_expects() {
        let mut r = SqsBatchResponse::default();
        r.add_failure("a");
        r.add_failure("b");
        let want = json!({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]});
        assert_eq!(serde_json::to_value(&r).unwrap(), want);
        let none = SqsBatchResponse::default();
        assert_eq!(
            serde_json::to_value(&none).unwrap(),
            json!({"batchItemFailures": []})
        );
    }

    #[test]
    fn reconcile_messages_keep_their_shape() {
        let item = WorkItem {
            item: reconcile::Item::Ml {
                key: "step_trainer/trusted/dt=2022-06-18/a.parquet".into(),
            },
            bucket: Some("lake".into()),
        };
        let v = serde_json::to_value(&item).unwrap();
        assert_eq!(
            v,
            json!({"item": "ml", "key": "step_trainer/trusted/dt=2022-06-18/a.parquet",
                   "bucket": "lake"})
        );
        assert_eq!(WorkItem::deserialize(&v).unwrap(), item);
        let landing = json!({"item": "landing", "function": "accelerometer_landing_to_trusted",
                             "key": "accelerometer/landing/a.json"});
        let w = WorkItem::deserialize(&landing).unwrap();
        assert_eq!(w.bucket, None);
        assert!(matches!(w.item, reconcile::Item::Landing { .. }));

        let plan = PlanRequest {
            bucket: Some("lake".into()),
            scope: reconcile::Scope::Changed,
        };
        let v = serde_json::to_value(&plan).unwrap();
        assert_eq!(v, json!({"bucket": "lake", "scope": "changed"}));
        assert_eq!(PlanRequest::from_payload(&v).unwrap(), plan);
        // The schedule's message says what it is, which is not read; without a scope, the
        // full check.
        let scheduled = json!({"reconcile": "plan", "scope": "changed", "bucket": "lake"});
        assert_eq!(PlanRequest::from_payload(&scheduled).unwrap(), plan);
        let full = json!({"reconcile": "plan", "bucket": "lake"});
        assert_eq!(
            PlanRequest::from_payload(&full).unwrap().scope,
            reconcile::Scope::Full
        );
        assert!(PlanRequest::from_payload(&json!({"scope": "some"})).is_err());
        // An EventBridge scheduled event, or nothing at all: plan with LAKE_BUCKET.
        let scheduled = json!({"source": "aws.events", "detail-type": "Scheduled Event",
                               "detail": {}});
        assert_eq!(
            PlanRequest::from_payload(&scheduled).unwrap(),
            PlanRequest::default()
        );
        assert_eq!(
            PlanRequest::from_payload(&Value::Null).unwrap(),
            PlanRequest::default()
        );
        assert!(PlanRequest::from_payload(&json!({"bucket": 5})).is_err());

        // The sample events of `reconcile`.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
        let read = |name: &str| -> Value {
            serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
        };
        let schedule = PlanRequest::from_payload(&read("reconcile.schedule.json")).unwrap();
        assert_eq!(schedule.bucket.as_deref(), Some("stedi-lake"));
        assert_eq!(schedule.scope, reconcile::Scope::Changed);
        let batch = event::sqs_batch(&read("reconcile.sqs.json"))
            .unwrap()
            .unwrap();
        let body = event::sqs_body(&batch.records[0]).unwrap();
        let w = WorkItem::deserialize(&body).unwrap();
        assert_eq!(w.bucket.as_deref(), Some("stedi-lake"));
        assert!(matches!(w.item, reconcile::Item::Ml { .. }));
    }

    #[tokio::test]
    async fn compact_reads_its_sample_events_and_fails_unreachable_partitions_for_retry() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
        let read = |name: &str| -> Value {
            serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
        };
        let schedule = PlanRequest::from_payload(&read("compact.schedule.json")).unwrap();
        assert_eq!(schedule.bucket.as_deref(), Some("stedi-lake"));
        let payload = read("compact.sqs.json");
        let batch = event::sqs_batch(&payload).unwrap().unwrap();
        let m = CompactItem::deserialize(&event::sqs_body(&batch.records[0]).unwrap()).unwrap();
        assert_eq!(m.item.table, crate::schema::Table::AccelerometerTrusted);
        assert_eq!(m.item.dt, "2022-06-18");
        assert_eq!(m.bucket.as_deref(), Some("stedi-lake"));

        // S3 unreachable: the partition is failed for redelivery; a malformed message is
        // acknowledged with its reason.
        let ctx = offline_ctx();
        let mut records = payload["Records"].as_array().unwrap().clone();
        let mut bad = records[0].clone();
        bad["messageId"] = json!("bad");
        bad["body"] = json!(r#"{"table": "nope", "dt": "2022-06-18"}"#);
        records.push(bad);
        let payload = json!({ "Records": records });
        let (response, summary) = invoke(&ctx, Function::Compact, &payload).await.unwrap();
        let id = batch.records[0].message_id.clone().unwrap();
        let want = json!({"batchItemFailures": [{"itemIdentifier": id}]});
        assert_eq!(serde_json::to_value(&response).unwrap(), want);
        assert_eq!(summary.errors.len(), 2, "{:?}", summary.errors);
        assert!(
            summary.errors[1].contains("compact item"),
            "{:?}",
            summary.errors
        );
        assert!(summary.requests.s3_get >= 1, "{:?}", summary.requests);
    }

    #[tokio::test]
    async fn erasure_reads_its_sample_event_and_retries_an_unreachable_request() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
        let payload: Value =
            serde_json::from_slice(&std::fs::read(dir.join("erasure.sqs.json")).unwrap()).unwrap();
        let batch = event::sqs_batch(&payload).unwrap().unwrap();
        let id = batch.records[0].message_id.clone().unwrap();
        // S3 unreachable: the request is failed for redelivery (a legal deadline: never
        // acknowledged unread); a key outside the requests prefix is refused with its reason.
        let ctx = offline_ctx();
        let mut records = payload["Records"].as_array().unwrap().clone();
        let mut outside = records[0].clone();
        outside["messageId"] = json!("outside");
        outside["body"] = json!(eventbridge("stedi-lake", "_stedi/erasure/audit/x.json"));
        records.push(outside);
        let payload = json!({ "Records": records });
        let (response, summary) = invoke(&ctx, Function::Erasure, &payload).await.unwrap();
        let want = json!({"batchItemFailures": [{"itemIdentifier": id}]});
        assert_eq!(serde_json::to_value(&response).unwrap(), want);
        assert_eq!(summary.errors.len(), 2, "{:?}", summary.errors);
        assert!(
            summary.errors[1].contains("not an erasure request"),
            "{:?}",
            summary.errors
        );
        assert_eq!(summary.requests.s3_get, 1, "{:?}", summary.requests);
        assert_eq!(Function::from_name("erasure"), Some(Function::Erasure));
    }

    #[tokio::test]
    async fn files_not_started_before_the_cutoff_are_redelivered() {
        let ctx = offline_ctx();
        let key = |i: usize| format!("_stedi/erasure/requests/r{i}.json");
        let bodies: Vec<(String, String)> = (0..3)
            .map(|i| (format!("m{i}"), eventbridge("stedi-lake", &key(i))))
            .collect();
        let bodies: Vec<(&str, String)> = bodies
            .iter()
            .map(|(id, b)| (id.as_str(), b.clone()))
            .collect();
        let payload = sqs(&bodies);
        let all = json!({"batchItemFailures": [
            {"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]});
        // Time to spare: each request is tried (and fails: S3 is unreachable).
        let later = Instant::now() + std::time::Duration::from_secs(600);
        let (response, summary) = invoke_until(&ctx, Function::Erasure, &payload, Some(later))
            .await
            .unwrap();
        assert_eq!(serde_json::to_value(&response).unwrap(), all);
        assert_eq!(summary.requests.s3_get, 3, "{:?}", summary.requests);
        // Out of time: the first is still tried, the other two are not started.
        let (response, summary) =
            invoke_until(&ctx, Function::Erasure, &payload, Some(Instant::now()))
                .await
                .unwrap();
        assert_eq!(serde_json::to_value(&response).unwrap(), all);
        assert_eq!(summary.requests.s3_get, 1, "{:?}", summary.requests);
        assert_eq!(summary.errors.len(), 1, "{:?}", summary.errors);
    }

    #[tokio::test]
    async fn a_batch_isolates_bad_messages_and_counts_its_requests() {
        let ctx = offline_ctx();
        let t = Transition::AccelerometerLandingToTrusted;
        let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent"}).to_string();
        let payload = sqs(&[
            ("garbage", "{not json".to_string()),
            ("test", test_event),
            ("refused", eventbridge("lake", "customer/landing/a.json")),
        ]);
        let f = Function::Transition(t);
        let (response, summary) = invoke(&ctx, f, &payload).await.unwrap();
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(summary.errors.len(), 2, "{:?}", summary.errors);
        assert!(summary.errors[0].starts_with("garbage: unrecognised event"));
        assert!(summary.errors[1].starts_with("refused key"));
        assert_eq!(summary.requests, crate::summary::Requests::default());

        // S3 unreachable: the record is failed for redelivery, and its requests counted.
        let payload = sqs(&[
            ("ok", eventbridge("lake", "accelerometer/landing/a.json")),
            ("garbage", "[]".to_string()),
        ]);
        let (response, summary) = invoke(&ctx, f, &payload).await.unwrap();
        let want = json!({"batchItemFailures": [{"itemIdentifier": "ok"}]});
        assert_eq!(serde_json::to_value(&response).unwrap(), want);
        assert!(summary.requests.s3_get >= 1, "{:?}", summary.requests);
        assert_eq!(summary.requests.bytes_read, 0);
        // The same as JSON, with the same requests: each invocation counts its own.
        let (json_response, again) = handle(&ctx, t, &payload).await.unwrap();
        assert_eq!(json_response, want);
        assert_eq!(again.requests, summary.requests);

        // Invoked directly (not through SQS), a retryable failure fails the invocation.
        let direct: Value =
            serde_json::from_str(&eventbridge("lake", "accelerometer/landing/a.json")).unwrap();
        assert!(invoke(&ctx, f, &direct).await.unwrap_err().is_retryable());
    }

    #[tokio::test]
    async fn reconcile_batches_acknowledge_what_a_retry_cannot_fix() {
        let ctx = offline_ctx();
        let item = json!({"item": "ml", "key": "step_trainer/trusted/dt=2022-06-18/a.parquet",
                          "bucket": "lake"});
        let payload = sqs(&[
            ("garbage", "{not json".to_string()),
            (
                "bad-item",
                json!({"item": "nonsense", "bucket": "lake"}).to_string(),
            ),
            ("item", item.to_string()),
        ]);
        let (response, summary) = invoke(&ctx, Function::Reconcile, &payload).await.unwrap();
        // Only the item that failed on the (unreachable) network is redelivered.
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"batchItemFailures": [{"itemIdentifier": "item"}]})
        );
        assert_eq!(summary.errors.len(), 3, "{:?}", summary.errors);
        assert!(
            summary.errors[1].contains("reconcile item"),
            "{:?}",
            summary.errors
        );
        let r = summary.requests;
        let s3 = r.s3_put + r.s3_get + r.s3_list + r.s3_head + r.s3_delete;
        assert!(s3 >= 1, "{r:?}");
    }
}
