//! The conditional-write loop: rewriting one object (a customer shard, a device-index shard)
//! without losing a concurrent writer's update.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use super::reference::{Ctx, decode_customers};
use crate::compute::encode_customers;
use crate::error::{Error, Result};
use crate::keys;
use crate::rules::Customers;
use crate::schema::Table;
use crate::store::{Fetched, Precondition, PutOutcome};
use crate::summary::Summary;

/// Rewrites one object with a conditional write: `update` maps its current content (with
/// its ETag, `None` when absent) to the new body (`None`: nothing to change). On a lost
/// race the object is re-read and `update` applied again, with jittered exponential
/// backoff, up to the configured attempts; then the record fails so SQS redelivers it.
pub async fn rewrite_object(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    summary: &mut Summary,
    update: impl FnMut(Option<Bytes>) -> Result<Option<Bytes>>,
) -> Result<()> {
    rewrite_object_from(ctx, bucket, key, None, summary, update).await
}

/// [`rewrite_object`] whose first attempt starts from `seed`, the object as the caller
/// read it a moment ago (one GET fewer; a lost race re-reads it as usual).
pub async fn rewrite_object_from(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    mut seed: Option<Fetched>,
    summary: &mut Summary,
    mut update: impl FnMut(Option<Bytes>) -> Result<Option<Bytes>>,
) -> Result<()> {
    let attempts = ctx.cfg.snapshot_max_attempts;
    // The body of the last write refused with 412: a write whose response was lost and
    // that the SDK retried is refused by its own success, and the object then holds it.
    let mut refused: Option<Bytes> = None;
    for attempt in 0..attempts {
        let fetched = match seed.take() {
            Some(f) => f,
            None => ctx.store.fetch(bucket, key, None).await?,
        };
        let (current, etag) = match fetched {
            Fetched::Body(b, etag) => (Some(b), Some(etag)),
            _ => (None, None),
        };
        if refused.is_some() && current == refused {
            // Our write is in place: `update` is not run again on it (it would see nothing
            // to change, and what it noted of the change, e.g. device changes, would be
            // lost). Another invocation writing the very same bytes looks the same; both
            // then keep what they noted, and acting on it twice is idempotent (counts
            // aside).
            summary.outputs.push(key.to_string());
            return Ok(());
        }
        let Some(body) = update(current)? else {
            return Ok(());
        };
        let pre = etag.map_or(Precondition::Absent, Precondition::Matches);
        match ctx.store.put_if(bucket, key, body.clone(), &pre).await? {
            PutOutcome::Written(_) => {
                summary.outputs.push(key.to_string());
                return Ok(());
            }
            PutOutcome::PreconditionFailed => {
                refused = Some(body);
                summary.conflicts += 1;
                let base = 20u64 << attempt.min(6);
                let jitter = rand::rng().random_range(0..=base);
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            }
        }
    }
    Err(Error::Contention {
        bucket: bucket.to_string(),
        key: key.to_string(),
        attempts,
    })
}

/// Rewrites shard `shard` of a sharded customer table: `update` maps the shard's current
/// customers to the new ones (`None`: nothing to change); conditional write as
/// [`rewrite_object`].
pub async fn rewrite_shard(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    shard: u32,
    summary: &mut Summary,
    update: impl FnMut(&Customers) -> Option<Customers>,
) -> Result<()> {
    rewrite_shard_from(ctx, bucket, table, shard, None, summary, update).await
}

/// [`rewrite_shard`] starting from `seed`, as [`rewrite_object_from`].
pub async fn rewrite_shard_from(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    shard: u32,
    seed: Option<Fetched>,
    summary: &mut Summary,
    mut update: impl FnMut(&Customers) -> Option<Customers>,
) -> Result<()> {
    let key = keys::shard_key(table, shard);
    let rows = ctx.cfg.row_group_rows;
    rewrite_object_from(ctx, bucket, &key, seed, summary, |current| {
        let current = match current {
            Some(bytes) => decode_customers(bytes, &key)?,
            None => Customers::default(),
        };
        match update(&current) {
            Some(next) if next != current => encode_customers(table, &next, rows).map(Some),
            _ => Ok(None),
        }
    })
    .await
}
