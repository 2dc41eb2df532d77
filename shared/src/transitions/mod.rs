//! The five zone transitions, one module each, and what they share: the context (clients,
//! configuration, cached reference shards), streaming a landing file through the line
//! splitter and parser with quarantine, publishing partitioned outputs with their lineage,
//! and the conditional-write loop of the sharded customer tables.

pub mod accelerometer_landing_to_trusted;
pub mod customer_landing_to_trusted;
pub mod customer_trusted_to_curated;
pub mod machine_learning_trusted_to_curated;
pub mod step_trainer_landing_to_trusted;

mod reference;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use rand::Rng;

use crate::catalog;
pub use crate::compute::RowOutcome;
pub use crate::compute::encode_customers;
use crate::compute::{LandingScan, Quarantine, RowFilter};
use crate::error::{Error, Result};
use crate::keys::{self, SourceKey};
use crate::record::Cell;
use crate::rules::Customers;
use crate::schema::Table;
use crate::store::{Fetched, Precondition, PutOutcome};
use crate::summary::Summary;

pub use reference::{Ctx, Reference, SerialOf, decode_customers, device_entries, encode_devices};

/// The five functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// customer_landing → customer_trusted.
    CustomerLandingToTrusted,
    /// accelerometer_landing → accelerometer_trusted.
    AccelerometerLandingToTrusted,
    /// accelerometer_trusted (new object) → customer_curated.
    CustomerTrustedToCurated,
    /// step_trainer_landing → step_trainer_trusted.
    StepTrainerLandingToTrusted,
    /// step_trainer_trusted or accelerometer_trusted (new object) → machine_learning_curated.
    MachineLearningTrustedToCurated,
}

impl Transition {
    /// All five, in the natural order of the data.
    pub const ALL: [Transition; 5] = [
        Transition::CustomerLandingToTrusted,
        Transition::AccelerometerLandingToTrusted,
        Transition::CustomerTrustedToCurated,
        Transition::StepTrainerLandingToTrusted,
        Transition::MachineLearningTrustedToCurated,
    ];

    /// Function name (as in `functions/` and `template.yaml`).
    pub fn name(self) -> &'static str {
        match self {
            Transition::CustomerLandingToTrusted => "customer_landing_to_trusted",
            Transition::AccelerometerLandingToTrusted => "accelerometer_landing_to_trusted",
            Transition::CustomerTrustedToCurated => "customer_trusted_to_curated",
            Transition::StepTrainerLandingToTrusted => "step_trainer_landing_to_trusted",
            Transition::MachineLearningTrustedToCurated => "machine_learning_trusted_to_curated",
        }
    }

    /// Looks a function up by name.
    pub fn from_name(name: &str) -> Option<Transition> {
        Transition::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Tables whose new objects fire this function.
    pub fn sources(self) -> &'static [Table] {
        match self {
            Transition::CustomerLandingToTrusted => &[Table::CustomerLanding],
            Transition::AccelerometerLandingToTrusted => &[Table::AccelerometerLanding],
            Transition::CustomerTrustedToCurated => &[Table::AccelerometerTrusted],
            Transition::StepTrainerLandingToTrusted => &[Table::StepTrainerLanding],
            Transition::MachineLearningTrustedToCurated => {
                &[Table::StepTrainerTrusted, Table::AccelerometerTrusted]
            }
        }
    }

    /// The table this function writes.
    pub fn target(self) -> Table {
        match self {
            Transition::CustomerLandingToTrusted => Table::CustomerTrusted,
            Transition::AccelerometerLandingToTrusted => Table::AccelerometerTrusted,
            Transition::CustomerTrustedToCurated => Table::CustomerCurated,
            Transition::StepTrainerLandingToTrusted => Table::StepTrainerTrusted,
            Transition::MachineLearningTrustedToCurated => Table::MachineLearningCurated,
        }
    }

    /// Processes one accepted source object.
    pub async fn run(self, ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
        // Boxed: one future type for all five keeps the Lambda main's future shallow.
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Summary>> + Send + '_>> =
            match self {
                Transition::CustomerLandingToTrusted => {
                    Box::pin(customer_landing_to_trusted::run(ctx, bucket, src))
                }
                Transition::AccelerometerLandingToTrusted => {
                    Box::pin(accelerometer_landing_to_trusted::run(ctx, bucket, src))
                }
                Transition::CustomerTrustedToCurated => {
                    Box::pin(customer_trusted_to_curated::run(ctx, bucket, src))
                }
                Transition::StepTrainerLandingToTrusted => {
                    Box::pin(step_trainer_landing_to_trusted::run(ctx, bucket, src))
                }
                Transition::MachineLearningTrustedToCurated => {
                    Box::pin(machine_learning_trusted_to_curated::run(ctx, bucket, src))
                }
            };
        let mut summary = fut.await?;
        summary.sources.insert(0, src.key.clone());
        Ok(summary)
    }
}

/// The quarantine object of a landing source.
pub fn quarantine_key(src: &SourceKey) -> String {
    format!("{}{}.jsonl", src.table.quarantine_prefix(), src.stem)
}

/// The next chunk of an object body being streamed.
async fn next_chunk(body: &mut ByteStream, bucket: &str, key: &str) -> Result<Option<Bytes>> {
    body.try_next().await.map_err(|e| Error::S3 {
        op: "GetObject",
        bucket: bucket.to_string(),
        key: key.to_string(),
        message: format!("reading body: {e}"),
        retryable: true,
    })
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
        &mut summary,
    )
    .await?;
    Ok((summary, before))
}

/// Whether every reference object in `refs` (key → ETag, empty when it was absent) still
/// has that ETag: a conditional GET that S3 answers 304 for an unchanged object.
pub async fn refs_unchanged(
    ctx: &Ctx,
    bucket: &str,
    refs: &BTreeMap<String, String>,
) -> Result<bool> {
    for (key, etag) in refs {
        let known = Some(etag.as_str()).filter(|e| !e.is_empty());
        let unchanged = match ctx.store.fetch(bucket, key, known).await? {
            Fetched::NotModified => true,
            Fetched::Missing => etag.is_empty(),
            Fetched::Body(_, now) => now == *etag,
        };
        if !unchanged {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The layout version manifests are written with; a manifest of an earlier layout is
/// stale, so `reconcile` recomputes its outputs once after an upgrade. 3: lineage records
/// the answer for each key consulted, not the ETag of each shard.
pub const LAYOUT: u32 = 3;

/// What an output was computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lineage {
    /// ETag of the source object when it was processed.
    pub source_etag: String,
    /// Keys consulted (e-mails or serials, by their hash) → the answer they gave (see
    /// [`crate::compute::Answer`]).
    pub refs: BTreeMap<String, String>,
}

impl Lineage {
    /// Whether every key this lineage consulted still gives its recorded answer
    /// (`current`: key hash → answer now; a key absent from it answers `""`).
    pub fn refs_current(&self, current: &BTreeMap<String, String>) -> bool {
        self.refs
            .iter()
            .all(|(k, e)| current.get(k).map(String::as_str).unwrap_or_default() == e)
    }
}

/// The manifest of one source's outputs in a partitioned table: which `dt`s it wrote, and
/// the inputs they were computed from, so `reconcile` recomputes only what is stale.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Layout version ([`LAYOUT`]); 0 for manifests of the single-snapshot layout.
    #[serde(default)]
    pub layout: u32,
    /// Partitions the source has an output in.
    pub dts: BTreeSet<String>,
    /// What the outputs were computed from.
    #[serde(flatten)]
    pub lineage: Lineage,
    /// Hashes of the serials whose readings the source holds but no curated customer owned
    /// when it was processed (Step Trainer files): each has a marker under
    /// `_stedi/waiting/`, and the file is processed again when an owner appears.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub waiting: BTreeSet<String>,
}

/// Where the manifest of `stem`'s outputs in `table` is kept: under the bookkeeping prefix,
/// outside the table's location.
pub fn manifest_key(table: Table, stem: &str) -> String {
    format!("{}{stem}.json", keys::lineage_prefix(table))
}

/// Reads a manifest (`None` when there is none or it is unreadable).
pub async fn read_manifest(ctx: &Ctx, bucket: &str, key: &str) -> Result<Option<Manifest>> {
    Ok(match ctx.store.fetch(bucket, key, None).await? {
        Fetched::Body(b, _) => serde_json::from_slice(&b).ok(),
        _ => None,
    })
}

/// Writes a manifest.
pub async fn write_manifest(ctx: &Ctx, bucket: &str, key: &str, m: &Manifest) -> Result<()> {
    write_json(ctx, bucket, key, m).await
}

/// Writes a bookkeeping object as JSON.
pub async fn write_json<T: serde::Serialize>(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    value: &T,
) -> Result<()> {
    let body = serde_json::to_vec(value).map_err(|source| Error::Json {
        context: key.to_string(),
        source,
    })?;
    ctx.store.put(bucket, key, Bytes::from(body)).await
}

/// Writes the outputs of one source object (one per `dt`), registers their partitions, and
/// deletes outputs of earlier runs that this run no longer produces (with their pairs in
/// machine_learning_curated); then writes `manifest` with the `dts` written. Returns the
/// previous run's manifest.
pub async fn publish_partitioned(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    parts: Vec<(String, u64, Bytes)>,
    mut manifest: Manifest,
    summary: &mut Summary,
) -> Result<Option<Manifest>> {
    let mut dts = Vec::with_capacity(parts.len());
    for (dt, _, bytes) in parts {
        let key = keys::output_key(table, &dt, stem);
        ctx.store.put(bucket, &key, bytes).await?;
        summary.outputs.push(key);
        dts.push(dt);
    }
    ctx.register(bucket, table, &dts).await?;
    let mkey = manifest_key(table, stem);
    let before = read_manifest(ctx, bucket, &mkey).await?;
    let old_dts = before.as_ref().map(|m| m.dts.clone()).unwrap_or_default();
    for dt in old_dts.iter().filter(|d| !dts.contains(d)) {
        let key = keys::output_key(table, dt, stem);
        ctx.store.delete(bucket, &key).await?;
        summary.deleted.push(key);
        prune_partition(ctx, bucket, table, dt).await?;
        machine_learning_trusted_to_curated::forget(ctx, bucket, table, dt, stem, summary).await?;
    }
    manifest.dts = dts.into_iter().collect();
    write_manifest(ctx, bucket, &mkey, &manifest).await?;
    Ok(before)
}

/// Drops the Glue partition `dt` of `table` once no object is left in it, so no partition
/// points at nothing. A writer that adds an object concurrently registers the partition
/// again after its PUT; the re-check below narrows the window, and `reconcile` closes it.
pub async fn prune_partition(ctx: &Ctx, bucket: &str, table: Table, dt: &str) -> Result<()> {
    let prefix = keys::partition_prefix(table, dt);
    let has_data = |keys: Vec<String>| keys.iter().any(|k| k.ends_with(".parquet"));
    if has_data(ctx.store.list(bucket, &prefix).await?) {
        return Ok(());
    }
    ctx.unregistered(bucket, table, dt);
    catalog::drop_partition(&ctx.glue, &ctx.cfg.database, table, dt).await?;
    if has_data(ctx.store.list(bucket, &prefix).await?) {
        ctx.register(bucket, table, &[dt.to_string()]).await?;
    }
    Ok(())
}

/// Rewrites one object with a conditional write: `update` maps its current content (with
/// its ETag, `None` when absent) to the new body (`None`: nothing to change). On a lost
/// race the object is re-read and `update` applied again, with jittered exponential
/// backoff, up to the configured attempts; then the record fails so SQS redelivers it.
pub async fn rewrite_object(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    summary: &mut Summary,
    mut update: impl FnMut(Option<Bytes>) -> Result<Option<Bytes>>,
) -> Result<()> {
    let attempts = ctx.cfg.snapshot_max_attempts;
    for attempt in 0..attempts {
        let (current, etag) = match ctx.store.fetch(bucket, key, None).await? {
            Fetched::Body(b, etag) => (Some(b), Some(etag)),
            _ => (None, None),
        };
        let Some(body) = update(current)? else {
            return Ok(());
        };
        let pre = etag.map_or(Precondition::Absent, Precondition::Matches);
        match ctx.store.put_if(bucket, key, body, &pre).await? {
            PutOutcome::Written(_) => {
                summary.outputs.push(key.to_string());
                return Ok(());
            }
            PutOutcome::PreconditionFailed => {
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
    mut update: impl FnMut(&Customers) -> Option<Customers>,
) -> Result<()> {
    let key = keys::shard_key(table, shard);
    let rows = ctx.cfg.row_group_rows;
    rewrite_object(ctx, bucket, &key, summary, |current| {
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

/// Groups customers by the shard their e-mail falls in.
pub fn by_shard(customers: Customers, shards: u32) -> BTreeMap<u32, Customers> {
    let mut out: BTreeMap<u32, Customers> = BTreeMap::new();
    for (email, row) in customers.rows {
        out.entry(keys::shard_of(&email, shards))
            .or_default()
            .rows
            .insert(email, row);
    }
    out
}
