//! The erasure index's postings, in DynamoDB: one item per (person, landing object) saying
//! that the landing object holds the person (see [`crate::transitions::erasure`]).
//!
//! An S3 object per posting cost one PUT per person a landing file holds ($5 a million at
//! list prices): at launch, one per landing object. An item costs one write request unit
//! ($0.625 a million on demand), and a batch's postings go in one `BatchWriteItem` per 25.
//! A person's postings are read with one strongly consistent `Query` (what the erasure's
//! "register, then look" needs: a posting written before the look is always seen).
//!
//! Items: partition key `person` = `<bucket>/<keyed hash>` (one table can index several
//! lakes), sort key `landing` = the landing key. Nothing personal is stored.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};

use crate::error::{Error, Result, sdk_message, sdk_retryable};
use crate::store::{Request, record_units, refused};

/// Items per `BatchWriteItem` (the service's limit).
const BATCH: usize = 25;

/// Times unprocessed items (throttled by the service) are sent again before giving up.
const ATTEMPTS: u32 = 6;

/// The partition key attribute.
const PERSON: &str = "person";
/// The sort key attribute.
const LANDING: &str = "landing";

/// Read request units a strongly consistent read costs: one per 4 KB.
const READ_UNIT_BYTES: usize = 4096;
/// Write request units an item costs: one per 1 KB.
const WRITE_UNIT_BYTES: usize = 1024;

/// The postings table, with the client to reach it.
#[derive(Debug, Clone)]
pub struct PersonIndex {
    client: Client,
    table: String,
}

/// A posting: (the person's keyed hash, the landing key).
pub type Posting<'a> = (&'a str, &'a str);

impl PersonIndex {
    /// The index in `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        PersonIndex {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn error(
        &self,
        op: &'static str,
        message: String,
        retryable: bool,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Dynamo {
            op,
            table: self.table.clone(),
            message,
            retryable,
            source,
        }
    }

    /// `Ok` unless an enforced policy ([`crate::store::with_policy`]) refuses `action` on
    /// the table.
    fn authorize(&self, op: &'static str, action: &str) -> Result<()> {
        let arn = || {
            [format!(
                "arn:aws:dynamodb:region:account:table/{}",
                self.table
            )]
        };
        match refused(action, arn) {
            Some((function, resource)) => Err(self.error(
                op,
                format!(
                    "AccessDeniedException: the policy of {function} does not allow {action} on {resource}"
                ),
                false,
                None,
            )),
            None => Ok(()),
        }
    }

    fn sdk_error<E>(&self, op: &'static str, e: SdkError<E, HttpResponse>) -> Error
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        let retryable = sdk_retryable(&e, |code| {
            matches!(
                code,
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "LimitExceededException"
            )
        });
        self.error(op, sdk_message(&e), retryable, Some(Box::new(e)))
    }

    /// Records `postings` (idempotent: a posting written twice is one item).
    pub async fn post<'a>(
        &self,
        bucket: &str,
        postings: impl IntoIterator<Item = Posting<'a>>,
    ) -> Result<()> {
        // One request may not name an item twice.
        let requests = BTreeSet::from_iter(postings)
            .into_iter()
            .map(|(h, landing)| {
                let put = PutRequest::builder()
                    .set_item(Some(self.item(bucket, h, landing)))
                    .build()
                    .map_err(|e| {
                        self.error("BatchWriteItem", e.to_string(), false, Some(Box::new(e)))
                    })?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<Vec<_>>>()?;
        self.write(requests).await
    }

    /// Removes `postings` (those absent are no error).
    pub async fn remove<'a>(
        &self,
        bucket: &str,
        postings: impl IntoIterator<Item = Posting<'a>>,
    ) -> Result<()> {
        let requests = BTreeSet::from_iter(postings)
            .into_iter()
            .map(|(h, landing)| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(self.item(bucket, h, landing)))
                    .build()
                    .map_err(|e| {
                        self.error("BatchWriteItem", e.to_string(), false, Some(Box::new(e)))
                    })?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<Vec<_>>>()?;
        self.write(requests).await
    }

    /// The landing keys person `h` has postings for, in key order.
    pub async fn landing_keys(&self, bucket: &str, h: &str) -> Result<Vec<String>> {
        self.authorize("Query", "dynamodb:Query")?;
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#p = :p")
                .expression_attribute_names("#p", PERSON)
                .expression_attribute_values(":p", AttributeValue::S(person(bucket, h)))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.sdk_error("Query", e))?;
            let mut bytes = 0;
            for item in page.items() {
                bytes += item_bytes(item);
                if let Some(AttributeValue::S(k)) = item.get(LANDING) {
                    out.push(k.clone());
                }
            }
            record_units(
                Request::DynamoRead,
                bytes.div_ceil(READ_UNIT_BYTES).max(1) as u64,
            );
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The key attributes of one posting.
    fn item(&self, bucket: &str, h: &str, landing: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PERSON.to_string(), AttributeValue::S(person(bucket, h))),
            (LANDING.to_string(), AttributeValue::S(landing.to_string())),
        ])
    }

    /// Sends `requests` 25 at a time, sending again what the service left unprocessed
    /// (with a growing pause) up to [`ATTEMPTS`] times.
    async fn write(&self, requests: Vec<WriteRequest>) -> Result<()> {
        if requests.is_empty() {
            return Ok(());
        }
        self.authorize("BatchWriteItem", "dynamodb:BatchWriteItem")?;
        for chunk in requests.chunks(BATCH) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt == ATTEMPTS {
                    return Err(self.error(
                        "BatchWriteItem",
                        format!(
                            "{} items still unprocessed after {ATTEMPTS} attempts",
                            pending.len()
                        ),
                        true,
                        None,
                    ));
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                }
                attempt += 1;
                let units: usize = pending.iter().map(write_units).sum();
                record_units(Request::DynamoWrite, units as u64);
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending.clone())
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("BatchWriteItem", e))?;
                pending = out
                    .unprocessed_items()
                    .and_then(|m| m.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
            }
        }
        Ok(())
    }
}

/// The partition key of person `h` in `bucket`'s lake.
fn person(bucket: &str, h: &str) -> String {
    format!("{bucket}/{h}")
}

/// An item's size as DynamoDB counts it: attribute names and string values.
fn item_bytes(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(k, v)| k.len() + v.as_s().map(String::len).unwrap_or(0))
        .sum()
}

/// Write request units one request costs: one per 1 KB of its item (a delete counts as
/// the item it removes, which is its key).
fn write_units(r: &WriteRequest) -> usize {
    let item = r
        .put_request()
        .map(|p| p.item())
        .or_else(|| r.delete_request().map(|d| d.key()));
    item.map(item_bytes)
        .unwrap_or(0)
        .div_ceil(WRITE_UNIT_BYTES)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_counted_by_item_size() {
        let small = WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .set_item(Some(HashMap::from([
                        (
                            PERSON.to_string(),
                            AttributeValue::S("b/".to_string() + &"a".repeat(32)),
                        ),
                        (
                            LANDING.to_string(),
                            AttributeValue::S("accelerometer/landing/x.json".into()),
                        ),
                    ])))
                    .build()
                    .unwrap(),
            )
            .build();
        assert_eq!(write_units(&small), 1);
        let big = WriteRequest::builder()
            .delete_request(
                DeleteRequest::builder()
                    .set_key(Some(HashMap::from([
                        (PERSON.to_string(), AttributeValue::S("p".into())),
                        (LANDING.to_string(), AttributeValue::S("k".repeat(1100))),
                    ])))
                    .build()
                    .unwrap(),
            )
            .build();
        // 6 + 1 + 7 + 1100 bytes: two units.
        assert_eq!(write_units(&big), 2);
        assert_eq!(person("lake", "ab12"), "lake/ab12");
    }
}
