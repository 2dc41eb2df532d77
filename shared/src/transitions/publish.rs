//! Publishing one source's outputs in a partitioned table: the objects (one per `dt`), the
//! Glue partitions, the manifest of their lineage, and the outputs of an earlier run that
//! this one no longer produces (with their pairs in machine_learning_curated).

use std::collections::BTreeSet;

use crate::columnar::Part;

use super::compact::list_working;
use super::landing::Filtered;
use super::lineage::{
    LAYOUT, Manifest, create_manifest, manifest_key, read_manifest, write_manifest,
};
use super::reference::Ctx;
use super::{Transition, machine_learning_trusted_to_curated};
use crate::catalog;
use crate::compute::RowFilter;
use crate::error::Result;
use crate::keys::{self, SourceKey};
use crate::schema::Table;
use crate::summary::Summary;

/// The manifest of a source's previous run, as far as a publisher knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// Not read yet: [`publish_partitioned`] reads it.
    Unread,
    /// Read already by the caller (`None`: there is none).
    Read(Option<Manifest>),
}

/// Publishes a filtered landing file into `t`'s target table (see [`publish_partitioned`]);
/// `waiting`: what the file waits for (see [`Manifest::waiting`]). Returns the summary and
/// the manifest of the previous run.
pub async fn publish_filtered<F: RowFilter>(
    ctx: &Ctx,
    bucket: &str,
    src: &SourceKey,
    t: Transition,
    f: Filtered<F>,
    waiting: BTreeSet<String>,
    previous: Previous,
) -> Result<(Summary, Option<Manifest>)> {
    let Filtered {
        mut summary,
        lineage,
        filter,
        ..
    } = f;
    let parts = filter.into_sink().finish()?;
    let manifest = Manifest {
        layout: LAYOUT,
        dts: BTreeSet::new(),
        lineage,
        waiting,
    };
    let before = publish_partitioned(
        ctx,
        bucket,
        t.target(),
        &src.stem,
        parts,
        manifest,
        previous,
        &mut summary,
    )
    .await?;
    Ok((summary, before))
}

/// Writes the outputs of one source object (one per `dt`), registers their partitions, and
/// deletes outputs of earlier runs that this run no longer produces (with their pairs in
/// machine_learning_curated); then writes `manifest` with the `dts` written (created with
/// `If-None-Match` when there was none: no read of it). Returns the
/// previous run's manifest (`previous`, read here unless the caller has).
#[allow(clippy::too_many_arguments)]
pub async fn publish_partitioned(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    parts: Vec<Part>,
    mut manifest: Manifest,
    previous: Previous,
    summary: &mut Summary,
) -> Result<Option<Manifest>> {
    let mut dts = Vec::with_capacity(parts.len());
    for Part { dt, bytes, .. } in parts {
        let key = keys::output_key(table, &dt, stem);
        ctx.store.put(bucket, &key, bytes).await?;
        summary.outputs.push(key);
        dts.push(dt);
    }
    ctx.register(bucket, table, &dts).await?;
    let mkey = manifest_key(table, stem);
    manifest.dts = dts.iter().cloned().collect();
    let before = match previous {
        Previous::Read(m) => m,
        Previous::Unread => {
            // A first run (the common case) creates the manifest, with nothing earlier to
            // replace and no GET; where one exists (a rerun, a re-upload) the create
            // answers 412 and the manifest is read.
            if create_manifest(ctx, bucket, &mkey, &manifest).await? {
                return Ok(None);
            }
            read_manifest(ctx, bucket, &mkey).await?
        }
    };
    let old_dts = before.as_ref().map(|m| m.dts.clone()).unwrap_or_default();
    for dt in old_dts.iter().filter(|d| !dts.contains(d)) {
        let key = keys::output_key(table, dt, stem);
        super::compact::delete_working(ctx, bucket, &key).await?;
        summary.deleted.push(key);
        prune_partition(ctx, bucket, table, dt).await?;
        machine_learning_trusted_to_curated::forget(ctx, bucket, table, dt, stem, summary).await?;
    }
    write_manifest(ctx, bucket, &mkey, &manifest).await?;
    Ok(before)
}

/// Drops the Glue partition `dt` of `table` once no object is left in it, so no partition
/// points at nothing (a compacted one stays, pointing at its generation). A writer that adds an object concurrently registers the partition
/// again after its PUT; the re-check below narrows the window, and `reconcile` closes it.
pub async fn prune_partition(ctx: &Ctx, bucket: &str, table: Table, dt: &str) -> Result<()> {
    let prefix = keys::partition_prefix(table, dt);
    if !list_working(ctx, bucket, &prefix).await?.is_empty() {
        return Ok(());
    }
    // A compacted partition keeps its generation as its location, even empty: arrivals
    // copy into that generation, and a partition registered again would point at the
    // `dt=` folder whose objects they move away.
    if super::compact::read_pointer(ctx, bucket, table, dt)
        .await?
        .is_some_and(|(p, _)| p.generation > 0)
    {
        return Ok(());
    }
    ctx.unregistered(bucket, table, dt);
    catalog::drop_partition(&ctx.glue, &ctx.cfg.database, table, dt).await?;
    if !list_working(ctx, bucket, &prefix).await?.is_empty() {
        ctx.register(bucket, table, &[dt.to_string()]).await?;
    }
    Ok(())
}
