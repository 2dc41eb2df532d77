//! The lake's lookup index in DynamoDB: small entries found by a key, where one S3 object
//! each cost a PUT to write ($5 a million at list prices) and a LIST to find. An entry is
//! an item of two strings, a partition key `pk` and a sort key `sk`; an entry costs one
//! write request unit ($0.625 a million on demand), a batch's entries go in one
//! `BatchWriteItem` per 25, and a partition's entries (or those whose sort key starts
//! with a prefix) are read with one strongly consistent `Query`: an entry written before
//! the query is always seen, what "register, then look" needs.
//!
//! Three indexes share the table (`INDEX_TABLE`), each partition key naming its lake's
//! bucket:
//! - the erasure index's postings (see [`crate::transitions::erasure`]): partition
//!   `<bucket>/persons/<keyed hash>`, one entry per landing object holding the person;
//! - the ML join index (see [`crate::transitions::machine_learning_trusted_to_curated`]):
//!   partition `<bucket>/join/dt=<dt>/<serial hash or wide>`, one entry `<s|p>.<stem>` per
//!   trusted object registered under the folder, and a `dt` roster;
//! - the lineage manifests (see [`crate::transitions::read_manifest`]): partition
//!   `<bucket>/lineage/<table>`, one entry per landing file, its stem the sort key, with
//!   attributes: the manifest (or the S3 key of one too large for an item), when it was
//!   written, and a version a conditional delete names. An entry is created with a
//!   conditional `PutItem` (a first run reads nothing), read with a strongly consistent
//!   `GetItem`.
//!
//! Nothing personal is stored: hashes, landing keys, object stems and lineage (answers by
//! the hash of the key consulted).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{BuildError, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, PutRequest, ReturnValue, WriteRequest,
};

use crate::error::{Error, Result, ServiceError, sdk_message, sdk_retryable};
use crate::store::{Request, record_units, refused};

/// Items per `BatchWriteItem` (the service's limit).
const BATCH: usize = 25;

/// Times unprocessed items (throttled by the service) are sent again before giving up.
const ATTEMPTS: u32 = 6;

/// The partition key attribute.
const PK: &str = "pk";
/// The sort key attribute.
const SK: &str = "sk";

/// Read request units a strongly consistent read costs: one per 4 KB.
const READ_UNIT_BYTES: usize = 4096;
/// Write request units an item costs: one per 1 KB.
const WRITE_UNIT_BYTES: usize = 1024;

/// The largest attribute value its writers keep in an item (an item holds at most 400 KB,
/// keys and names included); a larger value goes to an S3 object the item names.
pub const INLINE_BYTES: usize = 256 * 1024;

/// The index table, with the client to reach it.
#[derive(Debug, Clone)]
pub struct Index {
    client: Client,
    table: String,
}

/// An entry: (partition key, sort key).
pub type Entry = (String, String);

/// An item's attributes other than its key, all strings.
pub type Attrs = BTreeMap<String, String>;

impl Index {
    /// The index in `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Index {
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

    /// Conditional request `op`'s outcome: `None` where the service refused it because
    /// its condition did not hold (`refused` tells that error from the others).
    fn unless_refused<T, E>(
        &self,
        op: &'static str,
        out: std::result::Result<T, SdkError<E, HttpResponse>>,
        refused: impl FnOnce(&E) -> bool,
    ) -> Result<Option<T>>
    where
        E: ServiceError,
    {
        match out {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.as_service_error().is_some_and(refused) => Ok(None),
            Err(e) => Err(self.sdk_error(op, e)),
        }
    }

    fn sdk_error<E>(&self, op: &'static str, e: SdkError<E, HttpResponse>) -> Error
    where
        E: ServiceError,
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

    /// Writes `entries` (idempotent: an entry written twice is one item).
    pub async fn put(&self, entries: Vec<Entry>) -> Result<()> {
        let requests = self.requests(entries, |key| {
            let put = PutRequest::builder().set_item(Some(key)).build()?;
            Ok(WriteRequest::builder().put_request(put).build())
        })?;
        self.write(requests).await
    }

    /// Removes `entries` (those absent are no error).
    pub async fn remove(&self, entries: Vec<Entry>) -> Result<()> {
        let requests = self.requests(entries, |key| {
            let delete = DeleteRequest::builder().set_key(Some(key)).build()?;
            Ok(WriteRequest::builder().delete_request(delete).build())
        })?;
        self.write(requests).await
    }

    /// One write request made by `make` from the key of each distinct entry (one
    /// `BatchWriteItem` may not name an item twice).
    fn requests(
        &self,
        entries: Vec<Entry>,
        make: impl Fn(HashMap<String, AttributeValue>) -> Result<WriteRequest, BuildError>,
    ) -> Result<Vec<WriteRequest>> {
        BTreeSet::from_iter(entries)
            .into_iter()
            .map(|(pk, sk)| {
                make(item(pk, sk)).map_err(|e| {
                    self.error("BatchWriteItem", e.to_string(), false, Some(Box::new(e)))
                })
            })
            .collect()
    }

    /// The item (`pk`, `sk`)'s other attributes, read strongly consistent (`None`: no item).
    pub async fn get(&self, pk: &str, sk: &str) -> Result<Option<Attrs>> {
        self.authorize("GetItem", "dynamodb:GetItem")?;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item(pk.to_string(), sk.to_string())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.sdk_error("GetItem", e))?;
        let found = out.item();
        let bytes = found.map(item_bytes).unwrap_or(0);
        record_units(
            Request::DynamoRead,
            bytes.div_ceil(READ_UNIT_BYTES).max(1) as u64,
        );
        Ok(found.map(attrs_of))
    }

    /// Writes item (`pk`, `sk`) with `attrs`; with `only_new`, only where there is none
    /// (`false` when one exists, left as it was). Returns `true` and the attributes of the
    /// item replaced, if any.
    pub async fn put_item(
        &self,
        pk: &str,
        sk: &str,
        attrs: &Attrs,
        only_new: bool,
    ) -> Result<(bool, Option<Attrs>)> {
        self.authorize("PutItem", "dynamodb:PutItem")?;
        let mut full = item(pk.to_string(), sk.to_string());
        full.extend(
            attrs
                .iter()
                .map(|(k, v)| (k.clone(), AttributeValue::S(v.clone()))),
        );
        record_units(
            Request::DynamoWrite,
            item_bytes(&full).div_ceil(WRITE_UNIT_BYTES).max(1) as u64,
        );
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(full))
            .return_values(ReturnValue::AllOld);
        if only_new {
            put = put
                .condition_expression("attribute_not_exists(#p)")
                .expression_attribute_names("#p", PK);
        }
        let out = self.unless_refused("PutItem", put.send().await, |e| {
            e.is_conditional_check_failed_exception()
        })?;
        Ok(match out {
            Some(out) => (true, out.attributes().map(attrs_of)),
            None => (false, None),
        })
    }

    /// Deletes item (`pk`, `sk`) while its attribute `name` is `value` (`false`: it is
    /// not, or there is no item).
    pub async fn delete_item_if(
        &self,
        pk: &str,
        sk: &str,
        name: &str,
        value: &str,
    ) -> Result<bool> {
        self.authorize("DeleteItem", "dynamodb:DeleteItem")?;
        record_units(Request::DynamoWrite, 1);
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(item(pk.to_string(), sk.to_string())))
            .condition_expression("#n = :v")
            .expression_attribute_names("#n", name)
            .expression_attribute_values(":v", AttributeValue::S(value.to_string()))
            .send()
            .await;
        let out = self.unless_refused("DeleteItem", out, |e| {
            e.is_conditional_check_failed_exception()
        })?;
        Ok(out.is_some())
    }

    /// The sort keys of partition `pk` that start with `prefix` (all: `""`), in order.
    pub async fn query(&self, pk: &str, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .items(pk, prefix)
            .await?
            .into_iter()
            .map(|(sk, _)| sk)
            .collect())
    }

    /// The items of partition `pk` whose sort key starts with `prefix` (all: `""`), in
    /// order: (sort key, the other attributes).
    pub async fn items(&self, pk: &str, prefix: &str) -> Result<Vec<(String, Attrs)>> {
        let mut out = Vec::new();
        let mut pages = self.pages(pk, prefix);
        while let Some(page) = pages.next().await? {
            out.extend(page);
        }
        Ok(out)
    }

    /// The items of [`Index::items`] a page (up to 1 MB of items) at a time, for a reader
    /// that keeps less than every item.
    pub fn pages<'a>(&'a self, pk: &'a str, prefix: &'a str) -> Pages<'a> {
        Pages {
            index: self,
            pk,
            prefix,
            start: None,
            done: false,
        }
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

/// The key attributes of one entry.
fn item(pk: String, sk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_string(), AttributeValue::S(pk)),
        (SK.to_string(), AttributeValue::S(sk)),
    ])
}

/// The string attributes of `item` other than its key.
fn attrs_of(item: &HashMap<String, AttributeValue>) -> Attrs {
    item.iter()
        .filter(|(k, _)| k.as_str() != PK && k.as_str() != SK)
        .filter_map(|(k, v)| Some((k.clone(), v.as_s().ok()?.clone())))
        .collect()
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

/// A strongly consistent query of one partition, read a page at a time ([`Index::pages`]).
pub struct Pages<'a> {
    index: &'a Index,
    pk: &'a str,
    prefix: &'a str,
    start: Option<HashMap<String, AttributeValue>>,
    done: bool,
}

impl Pages<'_> {
    /// The next page's items, in order (`None`: none left).
    pub async fn next(&mut self) -> Result<Option<Vec<(String, Attrs)>>> {
        if self.done {
            return Ok(None);
        }
        let index = self.index;
        index.authorize("Query", "dynamodb:Query")?;
        let mut q = index
            .client
            .query()
            .table_name(&index.table)
            .expression_attribute_names("#p", PK)
            .expression_attribute_values(":p", AttributeValue::S(self.pk.to_string()))
            .consistent_read(true)
            .set_exclusive_start_key(self.start.clone());
        q = if self.prefix.is_empty() {
            q.key_condition_expression("#p = :p")
        } else {
            q.key_condition_expression("#p = :p AND begins_with(#s, :s)")
                .expression_attribute_names("#s", SK)
                .expression_attribute_values(":s", AttributeValue::S(self.prefix.to_string()))
        };
        // A failed page leaves the cursor where it was: `next` asks for the same page again.
        let page = q.send().await.map_err(|e| index.sdk_error("Query", e))?;
        let mut bytes = 0;
        let mut out = Vec::with_capacity(page.items().len());
        for item in page.items() {
            bytes += item_bytes(item);
            if let Some(AttributeValue::S(k)) = item.get(SK) {
                out.push((k.clone(), attrs_of(item)));
            }
        }
        record_units(
            Request::DynamoRead,
            bytes.div_ceil(READ_UNIT_BYTES).max(1) as u64,
        );
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => self.start = Some(k.clone()),
            _ => self.done = true,
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_counted_by_item_size() {
        let put = |pk: &str, sk: String| {
            WriteRequest::builder()
                .put_request(
                    PutRequest::builder()
                        .set_item(Some(item(pk.into(), sk)))
                        .build()
                        .unwrap(),
                )
                .build()
        };
        let small = put(
            &format!("b/persons/{}", "a".repeat(32)),
            "accelerometer/landing/x.json".into(),
        );
        assert_eq!(write_units(&small), 1);
        // 2 + 1 + 2 + 1100 bytes: two units, a delete as its key.
        let big = WriteRequest::builder()
            .delete_request(
                DeleteRequest::builder()
                    .set_key(Some(item("p".into(), "k".repeat(1100))))
                    .build()
                    .unwrap(),
            )
            .build();
        assert_eq!(write_units(&big), 2);
        // 1 KB exactly is one unit; a byte more, two.
        assert_eq!(write_units(&put("p", "k".repeat(1019))), 1);
        assert_eq!(write_units(&put("p", "k".repeat(1020))), 2);
    }
}
