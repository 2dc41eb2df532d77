//! S3 access: streaming reads, conditional writes, listing and deletes, with every error
//! carrying its operation and object and whether a retry can help.
//!
//! Requests are the bill: every request the [`Store`] sends (and every Glue and SQS call,
//! through [`record`]) is counted in the counters of the invocation in progress
//! ([`count_invocation`]); the Lambda entry point puts those into the invocation's summary
//! line. What is counted is the request the code makes: retries the SDK makes inside one
//! call are not seen here. Outside an invocation nothing is counted.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;

use crate::error::{Error, Result, sdk_message, sdk_retryable};
use crate::summary::Requests;

/// A kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// S3 PutObject.
    S3Put,
    /// S3 GetObject.
    S3Get,
    /// S3 ListObjectsV2 (one page).
    S3List,
    /// S3 DeleteObject.
    S3Delete,
    /// Any Glue API call (one page of a paginated one).
    Glue,
    /// Any SQS API call.
    Sqs,
    /// DynamoDB read request units (the erasure index's queries).
    DynamoRead,
    /// DynamoDB write request units (the erasure index's postings written or removed).
    DynamoWrite,
}

/// The request counters of one invocation (`Arc<RequestCounts>`, see
/// [`count_invocation`]). Counting is lock-free; [`RequestCounts::snapshot`] reads them.
#[derive(Debug, Default)]
pub struct RequestCounts {
    s3_put: AtomicU64,
    s3_get: AtomicU64,
    s3_list: AtomicU64,
    s3_delete: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    glue_calls: AtomicU64,
    sqs_calls: AtomicU64,
    dynamodb_read_units: AtomicU64,
    dynamodb_write_units: AtomicU64,
}

impl RequestCounts {
    /// New counters at zero, ready to share.
    pub fn shared() -> Arc<RequestCounts> {
        Arc::new(RequestCounts::default())
    }

    fn counter(&self, r: Request) -> &AtomicU64 {
        match r {
            Request::S3Put => &self.s3_put,
            Request::S3Get => &self.s3_get,
            Request::S3List => &self.s3_list,
            Request::S3Delete => &self.s3_delete,
            Request::Glue => &self.glue_calls,
            Request::Sqs => &self.sqs_calls,
            Request::DynamoRead => &self.dynamodb_read_units,
            Request::DynamoWrite => &self.dynamodb_write_units,
        }
    }

    /// The counts so far (no HEAD requests are made: `s3_head` stays 0).
    pub fn snapshot(&self) -> Requests {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Requests {
            s3_put: get(&self.s3_put),
            s3_get: get(&self.s3_get),
            s3_list: get(&self.s3_list),
            s3_head: 0,
            s3_delete: get(&self.s3_delete),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            glue_calls: get(&self.glue_calls),
            sqs_calls: get(&self.sqs_calls),
            dynamodb_read_units: get(&self.dynamodb_read_units),
            dynamodb_write_units: get(&self.dynamodb_write_units),
        }
    }
}

tokio::task_local! {
    /// The counters of the invocation the current task is running, if any.
    static INVOCATION: Arc<RequestCounts>;
}

/// Runs `f` with `counts` as the invocation's counters: every request counted while `f`
/// runs on this task (by a [`Store`], the catalog's functions or [`record`]) is added to
/// `counts`, so concurrent invocations sharing a context each get their own numbers.
/// (Tasks spawned inside `f` are not covered.)
pub async fn count_invocation<F: Future>(counts: Arc<RequestCounts>, f: F) -> F::Output {
    INVOCATION.scope(counts, f).await
}

/// Adds to the running invocation's counter `c`, if there is an invocation.
fn tally(c: impl Fn(&RequestCounts) -> &AtomicU64, n: u64) {
    let _ = INVOCATION.try_with(|inv| c(inv).fetch_add(n, Ordering::Relaxed));
}

/// Counts one request in the running invocation's counters.
pub fn record(r: Request) {
    record_units(r, 1);
}

/// Counts `n` of `r` (DynamoDB bills capacity units, not calls) in the running
/// invocation's counters.
pub(crate) fn record_units(r: Request, n: u64) {
    tally(|c| c.counter(r), n);
}

fn record_bytes_read(n: u64) {
    tally(|c| &c.bytes_read, n);
}

fn record_bytes_written(n: u64) {
    tally(|c| &c.bytes_written, n);
}

/// What an identity policy allows, asked before each request made while [`with_policy`]
/// runs. The local stack enforces `template.yaml`'s policy of the function it invokes, as
/// IAM does in AWS (moto does not), so a request the template forgot to allow fails in the
/// tests instead of in the deployed stack. Outside it nothing is asked.
pub trait Authorizer: Send + Sync {
    /// Whether `action` (such as `s3:GetObject`) on `resource` (an ARN) is allowed.
    fn allows(&self, action: &str, resource: &str) -> bool;

    /// Whose policy it is (the function), for the error message.
    fn name(&self) -> &str;
}

tokio::task_local! {
    /// The policy of the function the current task is running, where one is enforced.
    static POLICY: Arc<dyn Authorizer>;
}

/// Runs `f` under `policy`: every [`Store`] request made on this task while `f` runs is
/// first checked against it and fails as S3 answers a denied one (403 AccessDenied).
pub async fn with_policy<F: Future>(policy: Arc<dyn Authorizer>, f: F) -> F::Output {
    POLICY.scope(policy, f).await
}

/// `Ok` unless a policy is enforced ([`with_policy`]) and it does not allow `action` on
/// `key` of `bucket` (the bucket itself with no key); the error is S3's AccessDenied.
fn authorize(op: &'static str, action: &str, bucket: &str, key: Option<&str>) -> Result<()> {
    let resource = || match key {
        Some(key) => format!("arn:aws:s3:::{bucket}/{key}"),
        None => format!("arn:aws:s3:::{bucket}"),
    };
    match refused(action, || [resource()]) {
        Some((function, resource)) => Err(Error::S3 {
            op,
            bucket: bucket.to_string(),
            key: key.unwrap_or_default().to_string(),
            message: format!(
                "AccessDenied: the policy of {function} does not allow {action} on {resource}"
            ),
            retryable: false,
            source: None,
        }),
        None => Ok(()),
    }
}

/// When a policy is enforced ([`with_policy`]): its function and the first of the
/// `resources` it does not allow `action` on, if any. The resources are built only then.
pub(crate) fn refused<R: IntoIterator<Item = String>>(
    action: &str,
    resources: impl FnOnce() -> R,
) -> Option<(String, String)> {
    POLICY
        .try_with(|p| {
            resources()
                .into_iter()
                .find(|r| !p.allows(action, r))
                .map(|r| (p.name().to_string(), r))
        })
        .ok()
        .flatten()
}

/// The Glue catalog ARNs a call on `table` of `database` is authorized against (IAM asks
/// for the catalog, the database and the table), in the enforced policy's terms: region
/// and account are left to the policy (written `*` there by the local stack).
fn glue_resources(database: &str, table: &str) -> [String; 3] {
    let arn = "arn:aws:glue:region:account";
    [
        format!("{arn}:catalog"),
        format!("{arn}:database/{database}"),
        format!("{arn}:table/{database}/{table}"),
    ]
}

/// [`authorize`] for a Glue call `action` (`glue:GetPartition`) on `table` of `database`:
/// the error is Glue's AccessDeniedException.
pub(crate) fn authorize_glue(
    op: &'static str,
    action: &str,
    database: &str,
    table: &str,
) -> Result<()> {
    match refused(action, || glue_resources(database, table)) {
        Some((function, resource)) => Err(Error::Glue {
            op,
            table: format!("{database}.{table}"),
            message: format!(
                "AccessDeniedException: the policy of {function} does not allow {action} on {resource}"
            ),
            retryable: false,
            source: None,
        }),
        None => Ok(()),
    }
}

/// Why the running invocation's policy refuses `sqs:SendMessage` (which SendMessageBatch
/// asks for) on the queue at `queue_url`, when a policy is enforced and refuses it. The
/// queue's ARN is named by the URL's last segment, region and account left to the policy.
pub(crate) fn sqs_denial(queue_url: &str) -> Option<String> {
    let name = queue_url.rsplit('/').next().unwrap_or(queue_url);
    let (function, resource) = refused("sqs:SendMessage", || {
        [format!("arn:aws:sqs:region:account:{name}")]
    })?;
    Some(format!(
        "AccessDenied: the policy of {function} does not allow sqs:SendMessage on {resource}"
    ))
}

/// A write precondition for snapshot objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Write only if the object does not exist (`If-None-Match: *`).
    Absent,
    /// Write only if the object still has this ETag (`If-Match`).
    Matches(String),
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written; the new ETag.
    Written(String),
    /// Someone else wrote first (HTTP 412).
    PreconditionFailed,
}

/// A conditional read.
#[derive(Debug)]
pub enum Fetched {
    /// The object's bytes and ETag.
    Body(Bytes, String),
    /// The object still has the ETag asked about (HTTP 304).
    NotModified,
    /// There is no such object.
    Missing,
}

/// Thin wrapper over the S3 client that counts its requests.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    /// Buckets seen with versioning on (enabled or suspended); versioning cannot be turned
    /// off again, so a yes is kept for the life of the client and a no is asked again.
    versioned: Arc<std::sync::Mutex<HashSet<String>>>,
}

fn classify<E>(op: &'static str, bucket: &str, key: &str, e: SdkError<E, HttpResponse>) -> Error
where
    E: crate::error::ServiceError,
{
    let retryable = sdk_retryable(&e, |code| {
        matches!(
            code,
            "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "RequestTimeout"
                | "InternalError"
                | "ServiceUnavailable"
                | "RequestTimeTooSkewed"
        ) || code.starts_with('5')
    });
    Error::S3 {
        op,
        bucket: bucket.to_string(),
        key: key.to_string(),
        message: sdk_message(&e),
        retryable,
        source: Some(Box::new(e)),
    }
}

/// A GetObject body that broke off while being read: worth a retry; the stream's error is
/// the source.
pub(crate) fn body_error(
    bucket: &str,
    key: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::S3 {
        op: "GetObject",
        bucket: bucket.to_string(),
        key: key.to_string(),
        message: format!("reading body: {e}"),
        retryable: true,
        source: Some(Box::new(e)),
    }
}

/// The HTTP status of a failed call, when the service answered.
fn status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key.
    pub key: String,
    /// Its ETag.
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, in whole seconds since the epoch (S3 lists times to the
    /// second); 0 when the listing gives none.
    pub modified: i64,
}

/// What `CopySource` leaves unencoded in a key: unreserved characters and `/`.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl Store {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        Store {
            client,
            versioned: Arc::default(),
        }
    }

    /// Opens an object for streaming; returns the body and its ETag. The body's length
    /// (`Content-Length`) is counted as read. A key that does not exist is
    /// [`Error::NoSuchObject`].
    pub async fn open(&self, bucket: &str, key: &str) -> Result<(ByteStream, String)> {
        record(Request::S3Get);
        authorize("GetObject", "s3:GetObject", bucket, Some(key))?;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(
                |e| match e.as_service_error().is_some_and(|e| e.is_no_such_key()) {
                    true => Error::NoSuchObject {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                    },
                    false => classify("GetObject", bucket, key, e),
                },
            )?;
        let etag = out.e_tag().unwrap_or_default().to_string();
        let len = out.content_length().and_then(|n| u64::try_from(n).ok());
        record_bytes_read(len.unwrap_or_default());
        Ok((out.body, etag))
    }

    /// Reads a whole (small) object, unless it still has `etag`.
    pub async fn fetch(&self, bucket: &str, key: &str, etag: Option<&str>) -> Result<Fetched> {
        record(Request::S3Get);
        authorize("GetObject", "s3:GetObject", bucket, Some(key))?;
        let result = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_if_none_match(etag.map(str::to_string))
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                return match status(&e) {
                    Some(304) => Ok(Fetched::NotModified),
                    Some(404) => Ok(Fetched::Missing),
                    _ => Err(classify("GetObject", bucket, key, e)),
                };
            }
        };
        let tag = out.e_tag().unwrap_or_default().to_string();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| body_error(bucket, key, e))?;
        let body = body.into_bytes();
        record_bytes_read(body.len() as u64);
        Ok(Fetched::Body(body, tag))
    }

    /// Writes an object unconditionally (outputs derived from a source key).
    pub async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<()> {
        record(Request::S3Put);
        authorize("PutObject", "s3:PutObject", bucket, Some(key))?;
        let len = body.len() as u64;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::new(SdkBody::from(body)))
            .send()
            .await
            .map_err(|e| classify("PutObject", bucket, key, e))?;
        record_bytes_written(len);
        Ok(())
    }

    /// Writes an object only if `pre` holds.
    pub async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        pre: &Precondition,
    ) -> Result<PutOutcome> {
        record(Request::S3Put);
        authorize("PutObject", "s3:PutObject", bucket, Some(key))?;
        let len = body.len() as u64;
        let mut req = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::new(SdkBody::from(body)));
        req = match pre {
            Precondition::Absent => req.if_none_match("*"),
            Precondition::Matches(etag) => req.if_match(etag),
        };
        match req.send().await {
            Ok(out) => {
                record_bytes_written(len);
                Ok(PutOutcome::Written(
                    out.e_tag().unwrap_or_default().to_string(),
                ))
            }
            // 409 ConditionalRequestConflict: a concurrent conditional write is in flight.
            Err(e) if matches!(status(&e), Some(412) | Some(409)) => {
                Ok(PutOutcome::PreconditionFailed)
            }
            Err(e) => Err(classify("PutObject", bucket, key, e)),
        }
    }

    /// Every key under `prefix`.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .list_with_etags(bucket, prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Every key under `prefix` with its ETag, in key order (one LIST request per page of
    /// up to 1,000 keys).
    pub async fn list_with_etags(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>> {
        Ok(self
            .list_objects(bucket, prefix)
            .await?
            .into_iter()
            .map(|o| (o.key, o.etag))
            .collect())
    }

    /// Whether any object is under `prefix` (one LIST request of at most one key).
    pub async fn any(&self, bucket: &str, prefix: &str) -> Result<bool> {
        authorize("ListObjectsV2", "s3:ListBucket", bucket, None)?;
        record(Request::S3List);
        let page = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| classify("ListObjectsV2", bucket, prefix, e))?;
        Ok(!page.contents().is_empty())
    }

    /// Every object under `prefix` (key, ETag, size), in key order (one LIST request per
    /// page of up to 1,000 keys).
    pub async fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<Listed>> {
        authorize("ListObjectsV2", "s3:ListBucket", bucket, None)?;
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            record(Request::S3List);
            let page = page.map_err(|e| classify("ListObjectsV2", bucket, prefix, e))?;
            keys.extend(page.contents().iter().filter_map(|o| {
                Some(Listed {
                    key: o.key()?.to_string(),
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    size: o.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                    modified: o.last_modified().map(|t| t.secs()).unwrap_or(0),
                })
            }));
        }
        Ok(keys)
    }

    /// The folders directly under `prefix` (`prefix/…/`), with one LIST request per page.
    pub async fn list_folders(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        authorize("ListObjectsV2", "s3:ListBucket", bucket, None)?;
        let mut folders = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            record(Request::S3List);
            let page = page.map_err(|e| classify("ListObjectsV2", bucket, prefix, e))?;
            folders.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_string)),
            );
        }
        Ok(folders)
    }

    /// Copies object `from` to `to` inside the bucket (server-side: no bytes pass through
    /// the function; billed and counted as a PUT). Returns the copy's ETag (that of the
    /// object copied), `None` when `from` does not exist.
    pub async fn copy(&self, bucket: &str, from: &str, to: &str) -> Result<Option<String>> {
        record(Request::S3Put);
        authorize("CopyObject", "s3:GetObject", bucket, Some(from))?;
        authorize("CopyObject", "s3:PutObject", bucket, Some(to))?;
        let source = format!(
            "{bucket}/{}",
            percent_encoding::utf8_percent_encode(from, COPY_SOURCE)
        );
        match self
            .client
            .copy_object()
            .bucket(bucket)
            .key(to)
            .copy_source(source)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.copy_object_result()
                    .and_then(|r| r.e_tag())
                    .unwrap_or_default()
                    .to_string(),
            )),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify("CopyObject", bucket, to, e)),
        }
    }

    /// Deletes an object only while it still has `etag` (`false`: it changed or is gone).
    pub async fn delete_if(&self, bucket: &str, key: &str, etag: &str) -> Result<bool> {
        record(Request::S3Delete);
        authorize("DeleteObject", "s3:DeleteObject", bucket, Some(key))?;
        match self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .if_match(etag)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if matches!(status(&e), Some(412) | Some(409) | Some(404)) => Ok(false),
            Err(e) => Err(classify("DeleteObject", bucket, key, e)),
        }
    }

    /// Whether the bucket has (or once had) versioning on: only then can an object have
    /// noncurrent versions. One GetBucketVersioning (counted as a GET) until the answer is
    /// yes; a yes is remembered.
    pub async fn versioned(&self, bucket: &str) -> Result<bool> {
        if self.known_versioned(bucket) {
            return Ok(true);
        }
        record(Request::S3Get);
        authorize(
            "GetBucketVersioning",
            "s3:GetBucketVersioning",
            bucket,
            None,
        )?;
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| classify("GetBucketVersioning", bucket, "", e))?;
        // Never enabled: no status at all. Suspended still leaves the versions it kept.
        let on = out.status().is_some();
        if on && let Ok(mut set) = self.versioned.lock() {
            set.insert(bucket.to_string());
        }
        Ok(on)
    }

    fn known_versioned(&self, bucket: &str) -> bool {
        self.versioned
            .lock()
            .map(|set| set.contains(bucket))
            .unwrap_or(false)
    }

    /// Deletes every version of each object in `keys` but the current one (and, when the
    /// current one is a delete marker, every version and the marker): with bucket
    /// versioning on, what a rewrite or a delete left behind. Asks [`Store::versioned`]
    /// once: in a bucket that never had versioning there is nothing to list. Then one LIST
    /// (ListObjectVersions page) per page of each key, one DELETE per version. Returns the
    /// versions deleted.
    pub async fn delete_noncurrent<'a>(
        &self,
        bucket: &str,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<u64> {
        // Collected before the first await: the future holds no iterator.
        let keys: Vec<&str> = keys.into_iter().collect();
        if keys.is_empty() || !self.versioned(bucket).await? {
            return Ok(0);
        }
        let mut n = 0;
        for key in keys {
            n += self.delete_versions_of(bucket, key).await?;
        }
        Ok(n)
    }

    async fn delete_versions_of(&self, bucket: &str, key: &str) -> Result<u64> {
        let mut old: Vec<String> = Vec::new();
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            record(Request::S3List);
            authorize("ListObjectVersions", "s3:ListBucketVersions", bucket, None)?;
            let page = self
                .client
                .list_object_versions()
                .bucket(bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| classify("ListObjectVersions", bucket, key, e))?;
            for v in page.versions() {
                if v.key() == Some(key) && v.is_latest() != Some(true) {
                    old.extend(v.version_id().map(str::to_string));
                }
            }
            // A delete marker hides the versions before it; with it gone too, a deleted
            // object leaves nothing behind.
            old.extend(
                page.delete_markers()
                    .iter()
                    .filter(|m| m.key() == Some(key))
                    .filter_map(|m| m.version_id().map(str::to_string)),
            );
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        let mut n = 0;
        for version in old {
            record(Request::S3Delete);
            authorize("DeleteObject", "s3:DeleteObjectVersion", bucket, Some(key))?;
            self.client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .version_id(&version)
                .send()
                .await
                .map_err(|e| classify("DeleteObject", bucket, key, e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes an object (deleting a missing object is not an error).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        record(Request::S3Delete);
        authorize("DeleteObject", "s3:DeleteObject", bucket, Some(key))?;
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify("DeleteObject", bucket, key, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::offline_s3;

    #[tokio::test]
    async fn requests_count_in_the_invocations_counters() {
        let inv = RequestCounts::shared();
        count_invocation(inv.clone(), async {
            record(Request::S3Put);
            record_bytes_written(7);
            record(Request::Glue);
        })
        .await;
        let i = inv.snapshot();
        assert_eq!(
            (i.s3_get, i.s3_put, i.bytes_written, i.glue_calls),
            (0, 1, 7, 1)
        );

        // Outside any invocation nothing is counted.
        record(Request::S3Get);
        record_bytes_read(10);
        assert_eq!(inv.snapshot(), i);

        // The same counters in a second scope keep adding, each request once.
        count_invocation(inv.clone(), async {
            record(Request::S3Delete);
            record(Request::S3List);
            record(Request::S3List);
            record(Request::Sqs);
        })
        .await;
        assert_eq!(
            inv.snapshot(),
            Requests {
                s3_put: 1,
                bytes_written: 7,
                glue_calls: 1,
                s3_delete: 1,
                s3_list: 2,
                sqs_calls: 1,
                ..Requests::default()
            }
        );
    }

    #[tokio::test]
    async fn concurrent_invocations_keep_their_own_counts() {
        let run = |n: u64| async move {
            let inv = RequestCounts::shared();
            count_invocation(inv.clone(), async {
                for _ in 0..n {
                    record(Request::S3Get);
                    tokio::task::yield_now().await;
                }
            })
            .await;
            inv.snapshot().s3_get
        };
        let (a, b) = tokio::join!(run(3), run(5));
        assert_eq!((a, b), (3, 5));
    }

    /// A test policy: its function's name, and what it allows (action, resource).
    struct Allows(&'static str, fn(&str, &str) -> bool);

    impl Authorizer for Allows {
        fn allows(&self, action: &str, resource: &str) -> bool {
            (self.1)(action, resource)
        }

        fn name(&self) -> &str {
            self.0
        }
    }

    /// Allows `s3:GetObject` under `in/` and nothing else.
    fn read_in() -> Arc<dyn Authorizer> {
        Arc::new(Allows("reader", |action, resource| {
            action == "s3:GetObject" && resource.starts_with("arn:aws:s3:::b/in/")
        }))
    }

    fn denied(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(Error::S3 {
                message,
                retryable: false,
                ..
            }) => message,
            other => panic!("expected AccessDenied, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_request_the_policy_does_not_allow_fails_as_access_denied_before_it_is_sent() {
        // Offline: a request that were sent would fail with a connection error instead.
        let store = Store::new(offline_s3());
        with_policy(read_in(), async {
            assert_eq!(
                denied(store.put("b", "out/x", Bytes::new()).await),
                "AccessDenied: the policy of reader does not allow s3:PutObject on \
                 arn:aws:s3:::b/out/x"
            );
            assert_eq!(
                denied(store.list("b", "in/").await),
                "AccessDenied: the policy of reader does not allow s3:ListBucket on arn:aws:s3:::b"
            );
            assert_eq!(
                denied(store.copy("b", "in/x", "out/x").await),
                "AccessDenied: the policy of reader does not allow s3:PutObject on \
                 arn:aws:s3:::b/out/x"
            );
            assert_eq!(
                denied(store.delete("b", "in/x").await),
                "AccessDenied: the policy of reader does not allow s3:DeleteObject on \
                 arn:aws:s3:::b/in/x"
            );
            // Allowed: sent, and failing only for want of a network.
            match store.fetch("b", "in/x", None).await {
                Err(Error::S3 { message, .. }) => assert!(!message.contains("AccessDenied")),
                other => panic!("expected a network error, got {other:?}"),
            }
        })
        .await;
        // Outside the policy nothing is asked.
        match store.put("b", "out/x", Bytes::new()).await {
            Err(Error::S3 { message, .. }) => assert!(!message.contains("AccessDenied")),
            other => panic!("expected a network error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_glue_call_needs_the_catalog_the_database_and_the_table() {
        let table_only = Allows("f", |action, resource| {
            action == "glue:GetPartition" && resource.ends_with(":table/db/t")
        });
        let denied = with_policy(Arc::new(table_only), async {
            authorize_glue("GetPartition", "glue:GetPartition", "db", "t")
        })
        .await;
        match denied {
            Err(Error::Glue { message, .. }) => assert_eq!(
                message,
                "AccessDeniedException: the policy of f does not allow glue:GetPartition on \
                 arn:aws:glue:region:account:catalog"
            ),
            other => panic!("expected AccessDeniedException, got {other:?}"),
        }
        // Outside a policy nothing is asked.
        assert!(authorize_glue("GetPartition", "glue:GetPartition", "db", "t").is_ok());
    }

    #[tokio::test]
    async fn a_send_needs_send_message_on_the_queue_the_url_names() {
        let one_queue = Allows("f", |action, resource| {
            action == "sqs:SendMessage" && resource == "arn:aws:sqs:region:account:q-Step"
        });
        let (allowed, denied) = with_policy(Arc::new(one_queue), async {
            (
                sqs_denial("http://127.0.0.1:5000/123456789012/q-Step"),
                sqs_denial("http://127.0.0.1:5000/123456789012/q-Other"),
            )
        })
        .await;
        assert_eq!(allowed, None);
        assert_eq!(
            denied.as_deref(),
            Some(
                "AccessDenied: the policy of f does not allow sqs:SendMessage on \
                 arn:aws:sqs:region:account:q-Other"
            )
        );
        assert_eq!(sqs_denial("http://x/1/q-Other"), None);
    }

    #[tokio::test]
    async fn every_store_call_is_counted_even_when_it_fails() {
        let store = Store::new(offline_s3());
        let inv = RequestCounts::shared();
        count_invocation(inv.clone(), async {
            assert!(store.open("b", "k").await.is_err());
            assert!(store.fetch("b", "k", None).await.is_err());
            assert!(
                store
                    .put("b", "k", Bytes::from_static(b"abc"))
                    .await
                    .is_err()
            );
            let pre = Precondition::Absent;
            assert!(store.put_if("b", "k", Bytes::new(), &pre).await.is_err());
            assert!(store.list("b", "p/").await.is_err());
            assert!(store.delete("b", "k").await.is_err());
        })
        .await;
        // Failed requests moved no bytes.
        assert_eq!(
            inv.snapshot(),
            Requests {
                s3_get: 2,
                s3_put: 2,
                s3_list: 1,
                s3_delete: 1,
                ..Requests::default()
            }
        );
    }
}
