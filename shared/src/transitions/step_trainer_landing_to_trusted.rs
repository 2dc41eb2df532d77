//! step_trainer_landing → step_trainer_trusted: readings of devices whose owner is in
//! customer_curated, one Parquet object per (source file or SQS batch, `dt`). The row rule is
//! [`StepTrainerFilter`]; it reads only the device-index shards of the file's serials.
//!
//! Either side first: a device's readings may land before its owner's first phone
//! reading makes the owner curated. The file then leaves a marker
//! `_stedi/waiting/<hash of the serial>/<stem>` (holding its landing key) for each serial
//! whose consenting owners are not curated yet (the device index lists them), and `customer_trusted_to_curated`, when it gives a serial its first owner,
//! sends those files back through this function. Marker first, then a check that the
//! device shards consulted did not change meanwhile (else the file is filtered again): of
//! the two, at least one sees the other.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::compute::StepTrainerFilter;
use crate::error::{Error, Result};
use crate::keys::{self, SourceKey};
use crate::summary::Summary;

use super::{Batch, Ctx, Previous, Transition, filter_landing, publish_filtered, refs_unchanged};

/// Passes over a file whose device shards keep changing under it before SQS retries it.
const PASSES: u32 = 3;

/// The marker of landing file `stem` waiting for the owner of the serial hashed `hash`.
pub fn waiting_key(hash: &str, stem: &str) -> String {
    format!("{}{stem}", keys::waiting_prefix(hash))
}

/// Filters one landing file into the trusted zone by `t` (a [`crate::streams::Rule::OwnedDevice`]
/// transition).
pub async fn run(
    ctx: &Ctx,
    bucket: &str,
    src: &SourceKey,
    t: Transition,
    batch: Option<&Batch>,
) -> Result<Summary> {
    // Markers placed by this run; those of the previous run are in its manifest, which
    // publishing returns (a first run, the common case, creates its manifest without
    // reading one).
    let mut placed = BTreeSet::new();
    for _ in 0..PASSES {
        let f = filter_landing(ctx, bucket, src, StepTrainerFilter::sharded(t, &ctx.cfg)?).await?;
        let waiting: BTreeSet<String> =
            f.filter.waiting.iter().map(|s| keys::hash_hex(s)).collect();
        for hash in waiting.difference(&placed) {
            let body = Bytes::from(src.key.clone());
            ctx.store
                .put(bucket, &waiting_key(hash, &src.stem), body)
                .await?;
        }
        placed.extend(waiting.iter().cloned());
        if !waiting.is_empty() && !refs_unchanged(ctx, bucket, &f.shards).await? {
            continue;
        }
        let (s, before) = publish_filtered(
            ctx,
            bucket,
            src,
            t,
            f,
            waiting.clone(),
            Previous::Unread,
            batch,
        )
        .await?;
        placed.extend(before.into_iter().flat_map(|m| m.waiting));
        for hash in placed.difference(&waiting) {
            ctx.store
                .delete(bucket, &waiting_key(hash, &src.stem))
                .await?;
        }
        return Ok(s);
    }
    Err(Error::Contention {
        bucket: bucket.to_string(),
        key: src.key.clone(),
        attempts: PASSES,
    })
}
