//! The five zone transitions, one module each, and what they share: the context (clients,
//! configuration, cached reference data), streaming a landing file through the line
//! splitter and parser with quarantine, publishing partitioned outputs, and the
//! conditional-write loop of the snapshot tables.

pub mod accelerometer_landing_to_trusted;
pub mod customer_landing_to_trusted;
pub mod customer_trusted_to_curated;
pub mod machine_learning_trusted_to_curated;
pub mod step_trainer_landing_to_trusted;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use crate::catalog;
use crate::columnar::{read_parquet, row_cells};
pub use crate::compute::RowOutcome;
pub use crate::compute::encode_customers;
use crate::compute::{LandingScan, Quarantine, RowFilter};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::{self, SourceKey};
use crate::record::Cell;
use crate::rules::Customers;
use crate::schema::Table;
use crate::store::{Fetched, Precondition, PutOutcome, Store};
use crate::summary::Summary;

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

/// What a function keeps across warm invocations: clients, configuration, and reference
/// snapshots revalidated by ETag.
#[derive(Debug)]
pub struct Ctx {
    /// S3.
    pub store: Store,
    /// Glue.
    pub glue: aws_sdk_glue::Client,
    /// Configuration read at cold start.
    pub cfg: Config,
    cache: Mutex<HashMap<(String, Table), Cached>>,
    /// The reconcile queue (client and URL), where `reconcile` fans out its items.
    pub reconcile_queue: Option<(aws_sdk_sqs::Client, String)>,
}

/// A snapshot as last read: its ETag and content.
type Cached = (String, Arc<Customers>);

impl Ctx {
    /// A context over the given clients.
    pub fn new(s3: aws_sdk_s3::Client, glue: aws_sdk_glue::Client, cfg: Config) -> Ctx {
        Ctx {
            store: Store::new(s3),
            glue,
            cfg,
            cache: Mutex::new(HashMap::new()),
            reconcile_queue: None,
        }
    }

    /// A snapshot table's current content and ETag (`None` when it does not exist yet),
    /// served from the warm cache when S3 says it has not changed.
    pub async fn customers(
        &self,
        bucket: &str,
        table: Table,
    ) -> Result<(Arc<Customers>, Option<String>)> {
        let key = snapshot_key(table)?;
        let cache_key = (bucket.to_string(), table);
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&cache_key).cloned());
        let etag = cached.as_ref().map(|(e, _)| e.as_str());
        match self.store.fetch(bucket, &key, etag).await? {
            Fetched::NotModified => match cached {
                Some((etag, snap)) => Ok((snap, Some(etag))),
                None => Err(Error::S3 {
                    op: "GetObject",
                    bucket: bucket.to_string(),
                    key,
                    message: "304 Not Modified without a cached copy".into(),
                    retryable: true,
                }),
            },
            Fetched::Missing => Ok((Arc::new(Customers::default()), None)),
            Fetched::Body(bytes, etag) => {
                let snap = Arc::new(decode_customers(bytes, &key)?);
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(cache_key, (etag.clone(), snap.clone()));
                }
                Ok((snap, Some(etag)))
            }
        }
    }
}

fn snapshot_key(table: Table) -> Result<String> {
    table.snapshot_key().ok_or_else(|| Error::Config {
        name: "table",
        value: table.name().to_string(),
        reason: "not a snapshot table".into(),
    })
}

fn decode_customers(bytes: Bytes, key: &str) -> Result<Customers> {
    let batches = read_parquet(bytes, &[], key)?;
    Ok(Customers::latest_of(batches.iter().flat_map(|b| {
        (0..b.num_rows()).map(move |i| row_cells(b, i))
    })))
}

/// The quarantine object of a landing source.
pub fn quarantine_key(src: &SourceKey) -> String {
    format!("{}{}.jsonl", src.table.quarantine_prefix(), src.stem)
}

/// Streams the landing object `key` (of `table`) through a [`LandingScan`] into
/// `on_row`: the accounting, the quarantined lines, and the object's ETag.
pub async fn read_landing(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    table: Table,
    on_row: impl FnMut(&[Cell<'_>]) -> Result<RowOutcome>,
) -> Result<(Summary, Quarantine, String)> {
    let (mut body, etag) = ctx.store.open(bucket, key).await?;
    let mut scan = LandingScan::new(table, key, &ctx.cfg, on_row);
    while let Some(chunk) = body.try_next().await.map_err(|e| Error::S3 {
        op: "GetObject",
        bucket: bucket.to_string(),
        key: key.to_string(),
        message: format!("reading body: {e}"),
        retryable: true,
    })? {
        scan.push(&chunk)?;
    }
    let (s, q) = scan.finish()?;
    Ok((s, q, etag))
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
    let qkey = quarantine_key(src);
    if q.count > 0 {
        ctx.store.put(bucket, &qkey, Bytes::from(q.body)).await?;
        s.outputs.push(qkey);
    } else {
        // A reprocessed file that is now clean leaves no old quarantine behind.
        ctx.store.delete(bucket, &qkey).await?;
    }
    Ok((s, etag))
}

/// A landing transition that filters readings against a reference snapshot: the filter is
/// built from the snapshot, the file streamed through it, and its outputs published with
/// their lineage (source ETag, snapshot ETag).
pub async fn filter_landing<F: RowFilter>(
    ctx: &Ctx,
    bucket: &str,
    src: &SourceKey,
    t: Transition,
    reference: Table,
    make: impl FnOnce(&Customers, &Config) -> F,
) -> Result<Summary> {
    let (snapshot, ref_etag) = ctx.customers(bucket, reference).await?;
    let mut filter = make(&snapshot, &ctx.cfg);
    let (mut s, source_etag) = scan_landing(ctx, bucket, src, |cells| filter.row(cells)).await?;
    let lineage = (source_etag, ref_etag.unwrap_or_default());
    let parts = filter.into_sink().finish()?;
    publish_partitioned(ctx, bucket, t.target(), &src.stem, parts, lineage, &mut s).await?;
    Ok(s)
}

/// The manifest of one source's outputs in a partitioned table: which `dt`s it wrote, and
/// the inputs they were computed from (the source's ETag, and the ETag or digest of the
/// reference data), so `reconcile` recomputes only what is stale.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Partitions the source has an output in.
    pub dts: BTreeSet<String>,
    /// ETag of the source object when it was processed.
    pub source_etag: String,
    /// ETag (or digest of ETags) of the reference data it was filtered or joined with.
    pub inputs: String,
}

/// Where the manifest of `stem`'s outputs in `table` is kept (Athena and the rules ignore
/// `_`-prefixed folders).
pub fn manifest_key(table: Table, stem: &str) -> String {
    format!("{}_manifests/{stem}.json", table.prefix())
}

/// Reads a manifest (`None` when there is none or it is unreadable).
pub async fn read_manifest(ctx: &Ctx, bucket: &str, key: &str) -> Result<Option<Manifest>> {
    Ok(match ctx.store.fetch(bucket, key, None).await? {
        Fetched::Body(b, _) => serde_json::from_slice(&b).ok(),
        _ => None,
    })
}

/// A stable digest of several ETags (FNV-1a, 64 bits, hex).
pub fn digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Writes the outputs of one source object (one per `dt`), registers their partitions, and
/// deletes outputs of earlier runs that this run no longer produces.
pub async fn publish_partitioned(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    parts: Vec<(String, u64, Bytes)>,
    lineage: (String, String),
    summary: &mut Summary,
) -> Result<()> {
    let mut dts = Vec::with_capacity(parts.len());
    for (dt, _, bytes) in parts {
        let key = keys::output_key(table, &dt, stem);
        ctx.store.put(bucket, &key, bytes).await?;
        summary.outputs.push(key);
        dts.push(dt);
    }
    catalog::register_partitions(&ctx.glue, &ctx.cfg.database, bucket, table, &dts).await?;
    let mkey = manifest_key(table, stem);
    let before = read_manifest(ctx, bucket, &mkey)
        .await?
        .map(|m| m.dts)
        .unwrap_or_default();
    for dt in before.iter().filter(|d| !dts.contains(d)) {
        let key = keys::output_key(table, dt, stem);
        ctx.store.delete(bucket, &key).await?;
        summary.deleted.push(key);
        prune_partition(ctx, bucket, table, dt).await?;
        // machine_learning_curated objects are derived one-to-one from step trainer ones.
        if table == Table::StepTrainerTrusted {
            let ml = keys::output_key(Table::MachineLearningCurated, dt, stem);
            ctx.store.delete(bucket, &ml).await?;
            let ml_manifest = machine_learning_trusted_to_curated::manifest_key(dt, stem);
            ctx.store.delete(bucket, &ml_manifest).await?;
            prune_partition(ctx, bucket, Table::MachineLearningCurated, dt).await?;
        }
    }
    let (source_etag, inputs) = lineage;
    let manifest = Manifest {
        dts: dts.into_iter().collect(),
        source_etag,
        inputs,
    };
    let body = serde_json::to_vec(&manifest).unwrap_or_default();
    ctx.store.put(bucket, &mkey, Bytes::from(body)).await?;
    Ok(())
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
    catalog::drop_partition(&ctx.glue, &ctx.cfg.database, table, dt).await?;
    if has_data(ctx.store.list(bucket, &prefix).await?) {
        let dts = [dt.to_string()];
        catalog::register_partitions(&ctx.glue, &ctx.cfg.database, bucket, table, &dts).await?;
    }
    Ok(())
}

/// Rewrites a snapshot table with a conditional write: `update` maps the current content
/// to the new one (`None`: nothing to change). On a lost race the snapshot is re-read and
/// `update` applied again, with jittered exponential backoff, up to the configured
/// attempts; then the record fails so SQS redelivers it.
pub async fn rewrite_snapshot(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    summary: &mut Summary,
    mut update: impl FnMut(&Customers) -> Option<Customers>,
) -> Result<()> {
    let key = snapshot_key(table)?;
    let attempts = ctx.cfg.snapshot_max_attempts;
    for attempt in 0..attempts {
        let (current, etag) = ctx.customers(bucket, table).await?;
        let Some(next) = update(&current) else {
            return Ok(());
        };
        let body = encode_customers(table, &next, ctx.cfg.row_group_rows)?;
        let pre = etag.map_or(Precondition::Absent, Precondition::Matches);
        match ctx.store.put_if(bucket, &key, body, &pre).await? {
            PutOutcome::Written(_) => {
                summary.outputs.push(key);
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
        key,
        attempts,
    })
}
