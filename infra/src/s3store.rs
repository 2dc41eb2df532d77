//! A read-only `object_store` over the AWS SDK client, so DataFusion reads the lake with
//! the same endpoint, credentials and region resolution as the functions (one HTTP and TLS
//! stack). It records the keys it fetched, which shows partition pruning at work.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};

/// The lake bucket as an object store.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    fetched: Arc<Mutex<Vec<String>>>,
}

impl fmt::Display for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Store(s3://{})", self.bucket)
    }
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3Store",
        source: Box::new(e),
    }
}

fn read_only(op: &str) -> object_store::Error {
    object_store::Error::NotImplemented {
        operation: op.to_string(),
        implementer: "S3Store (read-only)".to_string(),
    }
}

fn to_chrono(t: Option<&aws_sdk_s3::primitives::DateTime>) -> chrono::DateTime<chrono::Utc> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_default()
}

impl S3Store {
    /// A store over `bucket`.
    pub fn new(client: aws_sdk_s3::Client, bucket: &str) -> S3Store {
        S3Store {
            client,
            bucket: bucket.to_string(),
            fetched: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Keys read with GET so far.
    pub fn fetched(&self) -> Vec<String> {
        self.fetched.lock().map(|f| f.clone()).unwrap_or_default()
    }

    async fn list_all(
        &self,
        prefix: Option<&Path>,
        delimiter: bool,
    ) -> object_store::Result<ListResult> {
        let mut prefix = prefix.map(|p| p.as_ref().to_string()).unwrap_or_default();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix);
        if delimiter {
            req = req.delimiter("/");
        }
        let mut pages = req.into_paginator().send();
        let mut out = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
        };
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| generic(aws_sdk_s3::error::DisplayErrorContext(e).into_error()))?;
            for p in page.common_prefixes() {
                if let Some(p) = p.prefix() {
                    out.common_prefixes
                        .push(Path::from(p.trim_end_matches('/')));
                }
            }
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                out.objects.push(ObjectMeta {
                    location: Path::from(key),
                    last_modified: to_chrono(o.last_modified()),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    e_tag: o.e_tag().map(str::to_string),
                    version: None,
                });
            }
        }
        Ok(out)
    }
}

trait IntoError {
    fn into_error(self) -> std::io::Error;
}

impl<E: std::error::Error> IntoError for aws_sdk_s3::error::DisplayErrorContext<E> {
    fn into_error(self) -> std::io::Error {
        std::io::Error::other(self.to_string())
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put_opts(
        &self,
        _: &Path,
        _: PutPayload,
        _: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(read_only("put"))
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(read_only("put_multipart"))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.as_ref().to_string();
        let not_found = |e: String| object_store::Error::NotFound {
            path: key.clone(),
            source: e.into(),
        };
        if options.head {
            let h = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| not_found(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
            let size = h.content_length().unwrap_or(0).max(0) as u64;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                meta: ObjectMeta {
                    location: location.clone(),
                    last_modified: to_chrono(h.last_modified()),
                    size,
                    e_tag: h.e_tag().map(str::to_string),
                    version: None,
                },
                range: 0..0,
                attributes: Attributes::new(),
            });
        }
        let range = options.range.as_ref().map(|r| match r {
            GetRange::Bounded(r) => format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
            GetRange::Offset(o) => format!("bytes={o}-"),
            GetRange::Suffix(n) => format!("bytes=-{n}"),
        });
        if let Ok(mut f) = self.fetched.lock() {
            f.push(key.clone());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_range(range)
            .send()
            .await
            .map_err(|e| not_found(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        // "bytes start-end/total" when a range was asked for.
        let (range, size): (Range<u64>, u64) =
            match out.content_range().and_then(parse_content_range) {
                Some((start, end, total)) => (start..end + 1, total),
                None => (0..len, len),
            };
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: to_chrono(out.last_modified()),
            size,
            e_tag: out.e_tag().map(str::to_string),
            version: None,
        };
        let body = out.body;
        let chunks = stream::unfold(body, |mut body| async move {
            match body.try_next().await {
                Ok(Some(b)) => Some((Ok(b), body)),
                Ok(None) => None,
                Err(e) => Some((Err(generic(e)), body)),
            }
        });
        Ok(GetResult {
            payload: GetResultPayload::Stream(chunks.boxed()),
            meta,
            range,
            attributes: Attributes::new(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(read_only("delete"))).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let this = self.clone();
        let prefix = prefix.cloned();
        stream::once(async move { this.list_all(prefix.as_ref(), false).await })
            .flat_map(|r| match r {
                Ok(l) => stream::iter(l.objects.into_iter().map(Ok).collect::<Vec<_>>()).boxed(),
                Err(e) => stream::iter(vec![Err(e)]).boxed(),
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.list_all(prefix, true).await
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> object_store::Result<()> {
        Err(read_only("copy"))
    }
}

fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_ranges() {
        assert_eq!(
            super::parse_content_range("bytes 0-9/100"),
            Some((0, 9, 100))
        );
        assert_eq!(super::parse_content_range("bytes */100"), None);
    }
}
