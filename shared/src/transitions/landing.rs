//! Streaming a landing object: the line splitter and parser with quarantine, and the
//! reading filters that wait for reference shards while the object streams.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::lineage::Lineage;
use super::reference::{Ctx, Reference};
use crate::compute::{LandingScan, Quarantine, RowFilter, RowOutcome};
use crate::error::Result;
use crate::keys::SourceKey;
use crate::record::Cell;
use crate::schema::Table;
use crate::summary::Summary;

/// The quarantine object of a landing source.
pub fn quarantine_key(src: &SourceKey) -> String {
    format!("{}{}.jsonl", src.table.quarantine_prefix(), src.stem)
}

/// The next chunk of an object body being streamed.
async fn next_chunk(body: &mut ByteStream, bucket: &str, key: &str) -> Result<Option<Bytes>> {
    body.try_next()
        .await
        .map_err(|e| crate::store::body_error(bucket, key, e))
}

/// Streams the landing object `key` (of `table`) through a [`LandingScan`] into
/// `on_row`: the accounting, the quarantined lines, and the object's ETag.
pub async fn read_landing(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    table: Table,
    mut on_row: impl FnMut(&[Cell<'_>]) -> Result<RowOutcome>,
) -> Result<(Summary, Quarantine, String)> {
    let (mut body, etag) = ctx.store.open(bucket, key).await?;
    let mut scan = LandingScan::new(table, key, &ctx.cfg);
    while let Some(chunk) = next_chunk(&mut body, bucket, key).await? {
        scan.push(&chunk, &mut on_row)?;
    }
    let (s, q) = scan.finish(&mut on_row)?;
    Ok((s, q, etag))
}

/// Replaces a landing source's quarantine object, or removes it when the file is now clean.
async fn write_quarantine(
    ctx: &Ctx,
    bucket: &str,
    src: &SourceKey,
    q: Quarantine,
    s: &mut Summary,
) -> Result<()> {
    let qkey = quarantine_key(src);
    if q.count > 0 {
        ctx.store.put(bucket, &qkey, Bytes::from(q.body)).await?;
        s.outputs.push(qkey);
    } else {
        // A reprocessed file that is now clean leaves no old quarantine behind.
        ctx.store.delete(bucket, &qkey).await?;
    }
    Ok(())
}

/// [`read_landing`] for a transition: the quarantine object is replaced, or removed when
/// the file is now clean. Returns the accounting and the source's ETag.
pub async fn scan_landing(
    ctx: &Ctx,
    bucket: &str,
    src: &SourceKey,
    on_row: impl FnMut(&[Cell<'_>]) -> Result<RowOutcome>,
) -> Result<(Summary, String)> {
    let (mut s, q, etag) = read_landing(ctx, bucket, &src.key, src.table, on_row).await?;
    write_quarantine(ctx, bucket, src, q, &mut s).await?;
    Ok((s, etag))
}

/// Loads the shards the filter's waiting rows need (recording each shard's ETag in
/// `refs`), supplies them, and decides the waiting rows: `(kept, filtered)`.
async fn resolve_waiting<F: RowFilter>(
    ctx: &Ctx,
    bucket: &str,
    filter: &mut F,
    refs: &mut BTreeMap<String, String>,
) -> Result<(u64, u64)>
where
    F::Value: Reference,
{
    for shard in filter.wanted() {
        let (key, index, etag) = ctx.reference::<F::Value>(bucket, shard).await?;
        refs.insert(key, etag.unwrap_or_default());
        filter.supply(shard, index);
    }
    filter.resolve()
}

/// A landing file streamed through a filter: the accounting, the lineage (source ETag, the
/// answer for every key consulted), the reference shards read (key → ETag) and the filter
/// with its outputs, not yet published.
pub struct Filtered<F> {
    /// Rows in, kept, filtered, quarantined.
    pub summary: Summary,
    /// What the outputs are computed from.
    pub lineage: Lineage,
    /// The reference shards read, with their ETags (empty when absent).
    pub shards: BTreeMap<String, String>,
    /// The filter, holding the outputs.
    pub filter: F,
}

/// A landing transition that filters readings against reference shards: the file is
/// streamed through the filter; after every chunk the shards its waiting rows need are
/// loaded (from the warm cache when unchanged) and those rows decided. The quarantine is
/// written; the outputs are the caller's to publish.
pub async fn filter_landing<F: RowFilter>(
    ctx: &Ctx,
    bucket: &str,
    src: &SourceKey,
    mut filter: F,
) -> Result<Filtered<F>>
where
    F::Value: Reference,
{
    let mut refs = BTreeMap::new();
    let (mut kept, mut filtered) = (0, 0);
    let (mut body, source_etag) = ctx.store.open(bucket, &src.key).await?;
    let mut scan = LandingScan::new(src.table, &src.key, &ctx.cfg);
    while let Some(chunk) = next_chunk(&mut body, bucket, &src.key).await? {
        scan.push(&chunk, &mut |cells| filter.row(cells))?;
        let (k, f) = resolve_waiting(ctx, bucket, &mut filter, &mut refs).await?;
        (kept, filtered) = (kept + k, filtered + f);
    }
    let (mut s, q) = scan.finish(&mut |cells| filter.row(cells))?;
    let (k, f) = resolve_waiting(ctx, bucket, &mut filter, &mut refs).await?;
    s.rows_out += kept + k;
    s.filtered += filtered + f;
    write_quarantine(ctx, bucket, src, q, &mut s).await?;
    Ok(Filtered {
        summary: s,
        lineage: Lineage {
            source_etag,
            refs: filter.consulted(),
        },
        shards: refs,
        filter,
    })
}
