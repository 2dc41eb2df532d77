//! Plays Lambda's SQS event source mapping locally: receive a batch from a function's
//! queue, invoke the handler with it as an SQS event (its S3, Glue and SQS requests held
//! to the function's policy in `template.yaml`, as IAM holds them in AWS), delete the messages
//! whose records succeeded; the failed ones become visible again after the visibility
//! timeout and are parked in the dead-letter queue after `maxReceiveCount` deliveries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use serde_json::{Value, json};
use stedi::event::encode_key;
use stedi::summary::Summary;

use crate::stack::{QueueInfo, Stack};
use crate::template::IamPolicy;
use stedi::store::Authorizer;

/// A function's policy as the runner enforces it: what it denies is also written down, so
/// that [`Runner::drain`] reports it even when the function got over the failure.
struct Recorded {
    policy: Arc<IamPolicy>,
    denied: Arc<Mutex<BTreeSet<String>>>,
}

impl Authorizer for Recorded {
    fn allows(&self, action: &str, resource: &str) -> bool {
        let allowed = self.policy.allows(action, resource);
        if !allowed && let Ok(mut denied) = self.denied.lock() {
            denied.insert(format!("{} {action} {resource}", self.policy.function));
        }
        allowed
    }

    fn name(&self) -> &str {
        self.policy.name()
    }
}

/// A poller over every queue of a stack.
pub struct Runner<'s> {
    stack: &'s Stack,
    ctx: stedi::Ctx,
    queues: Vec<QueueInfo>,
    /// What the handlers did so far.
    pub summary: Summary,
    /// The same, per function.
    pub by_function: BTreeMap<&'static str, Summary>,
    /// Handler invocations so far.
    pub invocations: u64,
    /// Print each invocation's summary line to stderr.
    pub verbose: bool,
    /// Wall time of every handler invocation, in milliseconds.
    pub handler_ms: Vec<f64>,
    /// The same, per function (its length is the function's invocations).
    pub handler_ms_by_function: BTreeMap<&'static str, Vec<f64>>,
    /// Requests the functions' policies denied: `function action resource`.
    denied: Arc<Mutex<BTreeSet<String>>>,
}

/// moto_server puts the raw key into EventBridge S3 events, while S3 URL-encodes it; the
/// runner re-encodes it so the handlers see what they get in AWS.
fn as_aws_sends(body: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(body) else {
        return body.to_string();
    };
    if v["source"] == "aws.s3"
        && let Some(key) = v["detail"]["object"]["key"].as_str()
    {
        let encoded = encode_key(key);
        v["detail"]["object"]["key"] = Value::String(encoded);
        return v.to_string();
    }
    body.to_string()
}

impl<'s> Runner<'s> {
    /// A runner over the bootstrapped `stack`.
    pub async fn new(stack: &'s Stack) -> Result<Runner<'s>> {
        Self::with_context(stack, stack.function_context()).await
    }

    /// A runner whose handlers use `ctx` (e.g. clients behind a faulty network). Each
    /// invocation gets the queues its function's environment names in the template
    /// (`STEP_TRAINER_QUEUE_URL`, `RECONCILE_QUEUE_URL`), and no other, as deployed.
    pub async fn with_context(stack: &'s Stack, ctx: stedi::Ctx) -> Result<Runner<'s>> {
        let queues = stack.queues().await?;
        Ok(Runner {
            ctx,
            queues,
            stack,
            summary: Summary::default(),
            by_function: BTreeMap::new(),
            invocations: 0,
            verbose: false,
            handler_ms: Vec::new(),
            handler_ms_by_function: BTreeMap::new(),
            denied: Arc::default(),
        })
    }

    /// One receive + invoke + delete round over every queue; returns messages received.
    /// A queue's batch is what it holds, up to its `BatchSize` (as Lambda's poller
    /// gathers within the batching window), received 10 at a time.
    pub async fn pump_once(&mut self) -> Result<usize> {
        let mut received = 0;
        for q in self.queues.clone() {
            let mut messages = Vec::new();
            while messages.len() < q.batch_size {
                let want = (q.batch_size - messages.len()).min(10) as i32;
                let out = self
                    .stack
                    .sqs
                    .receive_message()
                    .queue_url(&q.url)
                    .max_number_of_messages(want)
                    .message_system_attribute_names(
                        MessageSystemAttributeName::ApproximateReceiveCount,
                    )
                    .send()
                    .await
                    .with_context(|| format!("receiving from {}", q.url))?;
                let got = out.messages.unwrap_or_default();
                if got.is_empty() {
                    break;
                }
                messages.extend(got);
            }
            if messages.is_empty() {
                continue;
            }
            received += messages.len();
            let records: Vec<Value> = messages
                .iter()
                .map(|m| {
                    // As Lambda passes them: how many times SQS has delivered the message.
                    let received = m
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                        .cloned()
                        .unwrap_or_else(|| "1".into());
                    json!({
                        "eventSource": "aws:sqs",
                        "messageId": m.message_id().unwrap_or_default(),
                        "receiptHandle": m.receipt_handle().unwrap_or_default(),
                        "body": as_aws_sends(m.body().unwrap_or_default()),
                        "attributes": {"ApproximateReceiveCount": received},
                    })
                })
                .collect();
            let payload = json!({ "Records": records });
            self.invocations += 1;
            let started = std::time::Instant::now();
            // As in AWS, the function may make only the requests its role allows.
            let policy = Arc::new(Recorded {
                policy: q.policy.clone(),
                denied: self.denied.clone(),
            });
            let queue = |var: &str| {
                q.sends_to
                    .get(var)
                    .map(|url| (self.stack.sqs.clone(), url.clone()))
            };
            self.ctx.step_trainer_queue = queue("STEP_TRAINER_QUEUE_URL");
            self.ctx.reconcile_queue = queue("RECONCILE_QUEUE_URL");
            let outcome = stedi::store::with_policy(
                policy,
                stedi::lambda::invoke(&self.ctx, q.function, &payload),
            )
            .await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            self.handler_ms.push(ms);
            self.handler_ms_by_function
                .entry(q.function.name())
                .or_default()
                .push(ms);
            let failed: Vec<String> = match outcome {
                Ok((resp, summary)) => {
                    if self.verbose {
                        eprintln!("{}", stedi::lambda::summary_line(q.function, &summary));
                    }
                    self.by_function
                        .entry(q.function.name())
                        .or_default()
                        .absorb(summary.clone());
                    self.summary.absorb(summary);
                    resp.batch_item_failures
                        .into_iter()
                        .map(|f| f.item_identifier)
                        .collect()
                }
                // The whole invocation failed: every record is retried.
                Err(_) => messages
                    .iter()
                    .filter_map(|m| m.message_id().map(str::to_string))
                    .collect(),
            };
            let entries: Vec<DeleteMessageBatchRequestEntry> = messages
                .iter()
                .filter(|m| !failed.iter().any(|f| Some(f.as_str()) == m.message_id()))
                .enumerate()
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .receipt_handle(m.receipt_handle()?)
                        .build()
                        .ok()
                })
                .collect();
            // DeleteMessageBatch takes 10 entries at most.
            for chunk in entries.chunks(10) {
                self.stack
                    .sqs
                    .delete_message_batch()
                    .queue_url(&q.url)
                    .set_entries(Some(chunk.to_vec()))
                    .send()
                    .await
                    .with_context(|| format!("deleting from {}", q.url))?;
            }
        }
        Ok(received)
    }

    /// The sum of SQS approximate-count `attributes` over `urls`.
    async fn approximate(&self, urls: &[&str], attributes: &[QueueAttributeName]) -> Result<u64> {
        let mut total = 0;
        for url in urls {
            let out = self
                .stack
                .sqs
                .get_queue_attributes()
                .queue_url(*url)
                .set_attribute_names(Some(attributes.to_vec()))
                .send()
                .await
                .with_context(|| format!("reading {url}"))?;
            for v in out.attributes().map(|a| a.values()).into_iter().flatten() {
                total += v.parse::<u64>().unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Messages waiting or in flight over all queues.
    pub async fn backlog(&self) -> Result<u64> {
        let urls: Vec<&str> = self.queues.iter().map(|q| q.url.as_str()).collect();
        let attrs = [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ];
        self.approximate(&urls, &attrs).await
    }

    /// Pumps until every queue is empty with nothing in flight (or `timeout` passes).
    /// A request a function's policy denied fails the drain once the queues are quiet
    /// (the template must grant what the code does), whether or not the function got over
    /// it.
    pub async fn drain(&mut self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.pump_once().await? == 0 {
                if self.backlog().await? == 0 {
                    return self.no_denials();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("queues not drained after {timeout:?}");
            }
        }
    }

    /// `Err` listing the requests the functions' policies denied so far, if any.
    pub fn no_denials(&self) -> Result<()> {
        let denied = self.denied.lock().map(|d| d.clone()).unwrap_or_default();
        if denied.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = denied.into_iter().collect();
        anyhow::bail!(
            "template.yaml denies requests the functions made (AccessDenied): {}",
            list.join("; ")
        )
    }

    /// Messages parked in the dead-letter queues.
    pub async fn dead_letters(&self) -> Result<u64> {
        let urls: Vec<&str> = self.queues.iter().map(|q| q.dlq_url.as_str()).collect();
        self.approximate(&urls, &[QueueAttributeName::ApproximateNumberOfMessages])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventbridge_keys_are_encoded_as_s3_sends_them() {
        let body = json!({"source": "aws.s3", "detail": {"object": {"key": "a/b c+d.json"}}});
        let v: Value = serde_json::from_str(&as_aws_sends(&body.to_string())).unwrap();
        assert_eq!(v["detail"]["object"]["key"], "a/b+c%2Bd.json");
        assert_eq!(as_aws_sends("not json"), "not json");
    }
}
