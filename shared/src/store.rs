//! S3 access: streaming reads, conditional writes, listing and deletes, with every error
//! carrying its operation and object and whether a retry can help.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;

use crate::error::{Error, Result};

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

/// Thin wrapper over the S3 client.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
}

fn classify<E, R>(op: &'static str, bucket: &str, key: &str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let (message, retryable) = match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("unknown");
            let msg = se.err().message().unwrap_or("");
            let retryable = matches!(
                code,
                "SlowDown"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestTimeout"
                    | "InternalError"
                    | "ServiceUnavailable"
                    | "RequestTimeTooSkewed"
            ) || code.starts_with("5");
            (format!("{code}: {msg}"), retryable)
        }
        SdkError::ConstructionFailure(_) => (format!("{e:?}"), false),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => (
            format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ),
            true,
        ),
        _ => (format!("{e}"), true),
    };
    Error::S3 {
        op,
        bucket: bucket.to_string(),
        key: key.to_string(),
        message,
        retryable,
    }
}

/// The HTTP status of a failed call, when the service answered.
fn status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl Store {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        Store { client }
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens an object for streaming; returns the body and its ETag.
    pub async fn open(&self, bucket: &str, key: &str) -> Result<(ByteStream, String)> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify("GetObject", bucket, key, e))?;
        let etag = out.e_tag().unwrap_or_default().to_string();
        Ok((out.body, etag))
    }

    /// Reads a whole (small) object, unless it still has `etag`.
    pub async fn fetch(&self, bucket: &str, key: &str, etag: Option<&str>) -> Result<Fetched> {
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
        let body = out.body.collect().await.map_err(|e| Error::S3 {
            op: "GetObject",
            bucket: bucket.to_string(),
            key: key.to_string(),
            message: format!("reading body: {e}"),
            retryable: true,
        })?;
        Ok(Fetched::Body(body.into_bytes(), tag))
    }

    /// Writes an object unconditionally (outputs derived from a source key).
    pub async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::new(SdkBody::from(body)))
            .send()
            .await
            .map_err(|e| classify("PutObject", bucket, key, e))?;
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
            Ok(out) => Ok(PutOutcome::Written(
                out.e_tag().unwrap_or_default().to_string(),
            )),
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

    /// Every key under `prefix` with its ETag, in key order.
    pub async fn list_with_etags(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("ListObjectsV2", bucket, prefix, e))?;
            keys.extend(page.contents().iter().filter_map(|o| {
                let etag = o.e_tag().unwrap_or_default().to_string();
                o.key().map(|k| (k.to_string(), etag))
            }));
        }
        Ok(keys)
    }

    /// Deletes an object (deleting a missing object is not an error).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
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
