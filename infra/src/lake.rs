//! What the `stedi` command does to the lake: upload landing files (in the natural order of
//! the data), redeliver their events, and count every table's rows the way Athena sees
//! them (partitioned tables through their registered Glue partitions only).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_s3::primitives::ByteStream;
use serde_json::json;
use stedi::catalog;
use stedi::lambda::Function;
use stedi::reconcile;
use stedi::schema::Table;

use crate::runner::Runner;
use crate::stack::Stack;

/// The landing zones in the order the data naturally arrives (as `stedi::streams`
/// declares them).
pub fn natural_order() -> Vec<Table> {
    Table::landing().collect()
}

/// The zone named on the command line (`customer`, `accelerometer`, `step_trainer`).
pub fn zone_table(zone: &str) -> Option<Table> {
    Table::landing().find(|t| t.prefix().split('/').next() == Some(zone))
}

/// One landing file to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandingFile {
    /// Its landing table.
    pub table: Table,
    /// Local path.
    pub path: PathBuf,
    /// Key in the bucket.
    pub key: String,
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// The landing files under `path`: a data folder with `customer/`, `accelerometer/`,
/// `step_trainer/` (each file in its zone, natural order), or a folder or file of one zone
/// (named by `zone`, or by a zone folder in the path).
pub fn landing_files(path: &Path, zone: Option<&str>) -> Result<Vec<LandingFile>> {
    let key_of = |table: Table, p: &Path| -> Result<String> {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no UTF-8 file name", p.display()))?;
        Ok(format!("{}{name}", table.prefix()))
    };
    let forced = match zone {
        Some(z) => Some(zone_table(z).with_context(|| {
            format!("unknown zone {z}: use customer, accelerometer or step_trainer")
        })?),
        None => None,
    };
    let guess = |p: &Path| -> Option<Table> {
        forced.or_else(|| {
            p.components()
                .rev()
                .filter_map(|c| c.as_os_str().to_str())
                .find_map(zone_table)
        })
    };
    let mut out = Vec::new();
    if path.is_file() {
        let table = guess(path)
            .with_context(|| format!("cannot tell the zone of {}: pass --zone", path.display()))?;
        out.push(LandingFile {
            table,
            key: key_of(table, path)?,
            path: path.to_path_buf(),
        });
        return Ok(out);
    }
    if !path.is_dir() {
        bail!("{} does not exist", path.display());
    }
    let zoned: Vec<(Table, PathBuf)> = Table::landing()
        .filter_map(|t| {
            let z = t.prefix().split('/').next()?;
            [path.join(z).join("landing"), path.join(z)]
                .into_iter()
                .find(|d| d.is_dir())
                .map(|d| (t, d))
        })
        .collect();
    if forced.is_none() && !zoned.is_empty() {
        for (table, dir) in zoned {
            for p in json_files(&dir)? {
                out.push(LandingFile {
                    table,
                    key: key_of(table, &p)?,
                    path: p,
                });
            }
        }
        return Ok(out);
    }
    let table = guess(path)
        .with_context(|| format!("cannot tell the zone of {}: pass --zone", path.display()))?;
    for p in json_files(path)? {
        out.push(LandingFile {
            table,
            key: key_of(table, &p)?,
            path: p,
        });
    }
    Ok(out)
}

/// Uploads one file.
pub async fn upload(stack: &Stack, f: &LandingFile) -> Result<()> {
    let body = ByteStream::from_path(&f.path)
        .await
        .with_context(|| format!("reading {}", f.path.display()))?;
    stack
        .s3
        .put_object()
        .bucket(&stack.cfg.bucket)
        .key(&f.key)
        .body(body)
        .send()
        .await
        .with_context(|| format!("uploading s3://{}/{}", stack.cfg.bucket, f.key))?;
    Ok(())
}

/// Sends the S3 "Object Created" event of `key` again through EventBridge, as an
/// at-least-once delivery would.
pub async fn redeliver(stack: &Stack, key: &str) -> Result<()> {
    let detail = json!({
        "version": "0",
        "bucket": {"name": stack.cfg.bucket},
        "object": {"key": key},
        "reason": "PutObject",
    });
    let out = stack
        .events
        .put_events()
        .entries(
            PutEventsRequestEntry::builder()
                .source("aws.s3")
                .detail_type("Object Created")
                .detail(detail.to_string())
                .resources(format!("arn:aws:s3:::{}", stack.cfg.bucket))
                .build(),
        )
        .send()
        .await
        .context("PutEvents")?;
    if out.failed_entry_count() > 0 {
        bail!("EventBridge refused the redelivery of {key}");
    }
    Ok(())
}

/// What [`drop_files`] tells its caller as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropEvent<'a> {
    /// `file` was uploaded; `bytes` is its size.
    Uploaded {
        /// The file.
        file: &'a LandingFile,
        /// Its size in bytes.
        bytes: u64,
    },
    /// A zone's files are uploaded; the handlers run until the queues are drained.
    Draining(Table),
    /// Every upload's event is being sent again (`round` of `rounds`).
    Redelivering {
        /// 1-based.
        round: u32,
        /// All rounds.
        rounds: u32,
    },
}

/// What one function did during a drop.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionReport {
    /// The function.
    pub function: Function,
    /// Rows read (non-blank lines for a landing function).
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Rows dropped by a rule.
    pub filtered: u64,
    /// Lines quarantined.
    pub quarantined: u64,
    /// Handler invocations.
    pub invocations: u64,
    /// Wall time of those invocations, in milliseconds.
    pub handler_ms: f64,
    /// The requests those invocations made.
    pub requests: stedi::summary::Requests,
}

impl FunctionReport {
    /// Whether the function reads landing files, so that every row read is accounted
    /// for: `rows_in = rows_out + filtered + quarantined`.
    pub fn reads_landing(&self) -> bool {
        match self.function {
            Function::Transition(t) => t.sources().iter().all(|s| s.is_landing()),
            Function::Reconcile | Function::Compact | Function::Erasure => false,
        }
    }

    /// Whether a landing function's rows balance (always true for the others).
    pub fn balances(&self) -> bool {
        !self.reads_landing() || self.rows_in == self.rows_out + self.filtered + self.quarantined
    }

    /// `<function> rows in N out N filtered N quarantined N; N invocations, handlers N ms`
    /// (`name_width` pads the function name, to align several lines).
    pub fn line(&self, name_width: usize) -> String {
        let s = |n: u64| if n == 1 { "" } else { "s" };
        format!(
            "{:<name_width$} rows in {} out {} filtered {} quarantined {}; {} invocation{}, handlers {:.0} ms{}",
            self.function.name(),
            self.rows_in,
            self.rows_out,
            self.filtered,
            self.quarantined,
            self.invocations,
            s(self.invocations),
            self.handler_ms,
            if self.balances() {
                ""
            } else {
                " (does not balance)"
            },
        )
    }

    /// `<function> requests PUT N GET N LIST N DELETE N Glue N SQS N DynamoDB RRU N WRU N;
    /// read N B, wrote N B`.
    pub fn requests_line(&self, name_width: usize) -> String {
        let r = &self.requests;
        format!(
            "{:<name_width$} requests PUT {} GET {} LIST {} DELETE {} Glue {} SQS {} DynamoDB RRU {} WRU {}; read {} B, wrote {} B",
            self.function.name(),
            r.s3_put,
            r.s3_get,
            r.s3_list,
            r.s3_delete,
            r.glue_calls,
            r.sqs_calls,
            r.dynamodb_read_units,
            r.dynamodb_write_units,
            r.bytes_read,
            r.bytes_written,
        )
    }
}

/// What [`drop_files`] did: the files, and per function what its handlers did meanwhile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DropReport {
    /// Files uploaded.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Every function that ran, in the natural order of the data.
    pub functions: Vec<FunctionReport>,
}

impl DropReport {
    /// The longest function name, so the lines align.
    fn name_width(&self) -> usize {
        self.functions
            .iter()
            .map(|f| f.function.name().len())
            .max()
            .unwrap_or(0)
    }

    /// One [`FunctionReport::line`] per function, names aligned.
    pub fn lines(&self) -> Vec<String> {
        let width = self.name_width();
        self.functions.iter().map(|f| f.line(width)).collect()
    }

    /// One [`FunctionReport::requests_line`] per function, names aligned.
    pub fn requests_lines(&self) -> Vec<String> {
        let width = self.name_width();
        self.functions
            .iter()
            .map(|f| f.requests_line(width))
            .collect()
    }

    /// One function's report.
    pub fn function(&self, name: &str) -> Option<&FunctionReport> {
        self.functions.iter().find(|f| f.function.name() == name)
    }
}

/// The runner's per-function counters at one moment.
struct Tally {
    summaries: Vec<(u64, u64, u64, u64)>,
    requests: Vec<stedi::summary::Requests>,
    invocations: Vec<usize>,
}

impl Tally {
    fn of(runner: &Runner<'_>) -> Tally {
        let mut summaries = Vec::new();
        let mut requests = Vec::new();
        let mut invocations = Vec::new();
        for f in Function::all() {
            let s = runner.by_function.get(f.name());
            requests.push(s.map(|s| s.requests).unwrap_or_default());
            summaries.push(s.map_or((0, 0, 0, 0), |s| {
                (s.rows_in, s.rows_out, s.filtered, s.quarantined)
            }));
            invocations.push(
                runner
                    .handler_ms_by_function
                    .get(f.name())
                    .map_or(0, Vec::len),
            );
        }
        Tally {
            summaries,
            requests,
            invocations,
        }
    }

    /// What each function did in `runner` since `self` was taken.
    fn since(&self, runner: &Runner<'_>) -> Vec<FunctionReport> {
        let now = Tally::of(runner);
        let mut out = Vec::new();
        for (i, f) in Function::all().enumerate() {
            let (a, b) = (self.summaries[i], now.summaries[i]);
            let ms = runner
                .handler_ms_by_function
                .get(f.name())
                .map(|v| v.get(self.invocations[i]..).unwrap_or_default())
                .unwrap_or_default();
            if ms.is_empty() {
                continue;
            }
            out.push(FunctionReport {
                function: f,
                rows_in: b.0 - a.0,
                rows_out: b.1 - a.1,
                filtered: b.2 - a.2,
                quarantined: b.3 - a.3,
                invocations: (now.invocations[i] - self.invocations[i]) as u64,
                handler_ms: ms.iter().sum(),
                requests: now.requests[i] - self.requests[i],
            });
        }
        out
    }
}

/// Uploads `files` zone by zone in natural order, letting the queues drain after each
/// zone; then redelivers every upload's event `redeliver_times` times. `progress` is told
/// what happens as it goes. Returns what each function's handlers did meanwhile.
pub async fn drop_files(
    stack: &Stack,
    runner: &mut Runner<'_>,
    files: &[LandingFile],
    redeliver_times: u32,
    timeout: Duration,
    mut progress: impl FnMut(DropEvent<'_>),
) -> Result<DropReport> {
    let before = Tally::of(runner);
    let mut report = DropReport::default();
    for zone in natural_order() {
        let batch: Vec<_> = files.iter().filter(|f| f.table == zone).collect();
        if batch.is_empty() {
            continue;
        }
        for f in batch {
            let bytes = tokio::fs::metadata(&f.path)
                .await
                .with_context(|| format!("reading {}", f.path.display()))?
                .len();
            upload(stack, f).await?;
            report.files += 1;
            report.bytes += bytes;
            progress(DropEvent::Uploaded { file: f, bytes });
        }
        progress(DropEvent::Draining(zone));
        runner.drain(timeout).await?;
    }
    for round in 1..=redeliver_times {
        progress(DropEvent::Redelivering {
            round,
            rounds: redeliver_times,
        });
        for f in files {
            redeliver(stack, &f.key).await?;
        }
        runner.drain(timeout).await?;
    }
    report.functions = before.since(runner);
    Ok(report)
}

/// `stedi reconcile`: the reconcile driver with the local queue as its fan-out: the items go
/// to the reconcile queue, where the runner hands them to the `reconcile` function; then
/// it plans again, until nothing is left.
pub async fn reconcile(
    stack: &Stack,
    runner: &mut Runner<'_>,
    timeout: Duration,
    scope: reconcile::Scope,
) -> Result<reconcile::Report> {
    let ctx = stack.function_context();
    let bucket = &stack.cfg.bucket;
    let Ok(url) = stack.queue_url(Function::Reconcile).await else {
        // No local reconcile queue (e.g. against a SAM-deployed stack): run in process.
        return Ok(reconcile::run_inline(&ctx, bucket, scope).await?);
    };
    let mut local = LocalQueue {
        queue: reconcile::Queue {
            sqs: &stack.sqs,
            url: &url,
        },
        runner,
        timeout,
    };
    let mut report = reconcile::drive(&ctx, bucket, &mut local, 8, scope).await?;
    report.summary = local
        .runner
        .by_function
        .get("reconcile")
        .cloned()
        .unwrap_or_default();
    if !report.converged {
        bail!("reconcile did not converge in 8 passes");
    }
    Ok(report)
}

/// The local fan-out: the items go to the reconcile queue and the runner drains it.
struct LocalQueue<'q, 'r, 's> {
    queue: reconcile::Queue<'q>,
    runner: &'r mut Runner<'s>,
    timeout: Duration,
}

impl reconcile::FanOut for LocalQueue<'_, '_, '_> {
    type Error = anyhow::Error;
    async fn fan_out(
        &mut self,
        bucket: &str,
        items: &[reconcile::Item],
    ) -> Result<stedi::summary::Summary> {
        self.queue.fan_out(bucket, items).await?;
        let failed = |r: &Runner<'_>| r.by_function.get("reconcile").map_or(0, |s| s.errors.len());
        let before = failed(self.runner);
        self.runner.drain(self.timeout).await?;
        if let Some(s) = self.runner.by_function.get("reconcile")
            && s.errors.len() > before
        {
            bail!("reconcile items failed: {:?}", &s.errors[before..]);
        }
        Ok(stedi::summary::Summary::default())
    }
}

/// `stedi compact`: every partition of the partitioned tables, compacted when due (all with
/// anything not compacted when `force`), in this process. One line per table: partitions
/// compacted, files written, sources and rows they hold, objects deleted.
pub async fn compact(ctx: &stedi::Ctx, bucket: &str, force: bool) -> Result<Vec<String>> {
    use stedi::transitions::compact;
    let now = compact::unix_now();
    let mut per_table: std::collections::BTreeMap<&str, (u64, u64, u64, u64, u64)> =
        Default::default();
    for item in compact::plan(ctx, bucket).await? {
        let s = compact::compact_dt(ctx, bucket, item.table, &item.dt, now, force).await?;
        let e = per_table.entry(item.table.name()).or_default();
        let files = s.outputs.iter().filter(|k| k.ends_with(".parquet")).count() as u64;
        e.0 += u64::from(files > 0);
        e.1 += files;
        e.2 += s.sources.len() as u64;
        e.3 += s.rows_out;
        e.4 += s.deleted.len() as u64;
    }
    Ok(compact::tables()
        .iter()
        .map(|t| {
            let (parts, files, sources, rows, deleted) =
                per_table.get(t.name()).copied().unwrap_or_default();
            format!(
                "{:<24} partitions compacted {parts}, files written {files}, sources {sources}, rows {rows}, objects deleted {deleted}",
                t.name()
            )
        })
        .collect())
}

/// `stedi erase`: erases the person with e-mail `email` in this process, as the `erasure`
/// function does. Returns the audit record (pretty JSON) and a line with the requests the
/// erasure made.
pub async fn erase(
    ctx: &stedi::Ctx,
    bucket: &str,
    email: &str,
    request: &str,
) -> Result<Vec<String>> {
    let counts = stedi::store::RequestCounts::shared();
    let audit = stedi::store::count_invocation(
        counts.clone(),
        stedi::transitions::erasure::erase(ctx, bucket, email, request),
    )
    .await?;
    let r = counts.snapshot();
    Ok(vec![
        serde_json::to_string_pretty(&audit)?,
        format!(
            "requests: S3 GET {}, PUT {}, LIST {}, DELETE {}; Glue {}; bytes read {}, written {}",
            r.s3_get, r.s3_put, r.s3_list, r.s3_delete, r.glue_calls, r.bytes_read, r.bytes_written
        ),
    ])
}

/// The lines `stedi reconcile` prints.
pub fn describe(report: &reconcile::Report) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(n) = report.advised_shards {
        lines.push(format!(
            "advice: set CUSTOMER_SHARDS={n} (about {} consenting customers a shard) and \
             reconcile again to migrate",
            reconcile::CUSTOMERS_PER_SHARD
        ));
    }
    if !report.changed() {
        lines.insert(
            0,
            format!(
                "reconcile: nothing to change; every table equals the batch truth ({} pass)",
                report.passes
            ),
        );
        return lines;
    }
    if report.migrated > 0 {
        lines.push(format!(
            "bookkeeping: {} objects moved out of table locations to {}",
            report.migrated,
            stedi::keys::BOOKKEEPING_PREFIX
        ));
    }
    for (table, added, removed) in &report.snapshots {
        lines.push(format!(
            "{table}: rewritten, {added} added or changed, {removed} removed"
        ));
    }
    for (table, n) in &report.items {
        lines.push(format!("{table}: {n} work items"));
    }
    lines.push(format!("reconcile: {} passes", report.passes));
    lines
}

async fn list(stack: &Stack, prefix: &str) -> Result<Vec<String>> {
    stedi::store::Store::new(stack.s3.clone())
        .list(&stack.cfg.bucket, prefix)
        .await
        .map_err(Into::into)
}

/// The Parquet objects of a table as Athena would read them: every object under an
/// unpartitioned table's location (a customer table's shards), or the objects in each
/// registered partition's location.
pub async fn table_objects(stack: &Stack, table: Table) -> Result<Vec<String>> {
    if table.sharded() {
        let all = list(stack, table.prefix()).await?;
        // Direct children, as in a partition's location below.
        let prefix = table.prefix();
        return Ok(all
            .into_iter()
            .filter(|k| k.ends_with(".parquet") && !k[prefix.len()..].contains('/'))
            .collect());
    }
    let mut keys = Vec::new();
    if table.partitioned() {
        let parts = catalog::list_partitions(&stack.glue, &stack.cfg.database, table).await?;
        let root = format!("s3://{}/", stack.cfg.bucket);
        for (_, loc) in parts {
            let Some(prefix) = loc.strip_prefix(&root) else {
                continue;
            };
            keys.extend(
                list(stack, prefix)
                    .await?
                    .into_iter()
                    .filter(|k| k.ends_with(".parquet") && !k[prefix.len()..].contains('/')),
            );
        }
    } else {
        keys = list(stack, table.prefix()).await?;
    }
    Ok(keys)
}

/// Rows of every table, in [`Table::ALL`] order, counted through the query path (what
/// Athena would answer to `SELECT count(*)`).
pub async fn counts(stack: &Stack) -> Result<Vec<(Table, u64)>> {
    let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
    // One session with all eight tables: the catalog and the landing files are read once.
    let lake = crate::query::Lake::for_sql(stack, &names.join(" ")).await?;
    let mut out = Vec::new();
    for table in Table::ALL {
        let sql = format!("SELECT count(*) AS n FROM {}", table.name());
        let batches = lake.run(&sql).await?;
        let n = batches
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .map(|a| a.value(0))
            })
            .with_context(|| format!("no count for {}", table.name()))?;
        out.push((table, n as u64));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_folder_is_dropped_in_natural_order() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/stedi");
        let files = landing_files(&root, None).unwrap();
        assert_eq!(files.len(), 13);
        assert_eq!(files[0].key, "customer/landing/customer-1691348231425.json");
        assert_eq!(files[1].table, Table::AccelerometerLanding);
        assert_eq!(
            files[12].key,
            "step_trainer/landing/step_trainer-1691348232132.json"
        );
        let one = landing_files(&root.join("step_trainer/landing"), None).unwrap();
        assert_eq!(one.len(), 3);
        assert!(landing_files(&root.join("nowhere"), None).is_err());
        assert!(landing_files(&root, Some("bogus")).is_err());
    }
}
