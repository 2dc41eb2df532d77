//! Compaction: the many small per-source objects of a `dt` into as few files as
//! `COMPACT_TARGET_BYTES` allows, switched in for readers in one catalog update.
//!
//! **Layout.** The transitions write one object per source (`<table>/dt=<dt>/<name>.parquet`):
//! the pipeline's working set (the ML join, `reconcile` and the lineage read them by that
//! key). A compacted *generation* of a partition is a sibling folder under the table
//! location, `<table>/g<N>/dt=<dt>/`: files `c-<k>-of-<K>.parquet` (a source's rows go to
//! file `k` = hash of its name mod `K`; each file's footer lists its sources and their row
//! counts, see [`crate::columnar::HolderWriter`]) and copies `s-<name>.parquet` of sources
//! written after the generation was built. The Glue partition points at the `dt=` folder
//! (never compacted) or at the current generation; one `UpdatePartition` switches it, so a
//! reader that plans through the catalog reads the old files or the new, never both.
//!
//! **Retiring.** A replaced generation is deleted once `COMPACT_GRACE_SECONDS` have passed
//! (queries planned on it may still read it); the replaced `dt=` folder's per-source
//! objects are then *held*: moved to `_stedi/held/<their key>`, outside the table location,
//! so readers that list the table location see each row once again. Pipeline reads and
//! deletes go through [`fetch_working`], [`delete_working`] and [`list_working`], which
//! find an object under its key or held.
//!
//! **The pointer** `_stedi/compaction/<table>/pointer/dt=<dt>.json` names the current generation,
//! the one being built (if any), the replaced ones with the time they were replaced, and
//! whether the working folder is held.
//!
//! **Arrivals** ([`follow`]): after a transition has written or deleted per-source objects
//! of a `dt`, it reads the pointer; for the current generation and the one being built,
//! it copies each changed object in (server-side) or deletes its copy, and removes the
//! source's earlier rows from the compacted file that holds them (a conditional rewrite);
//! once the working folder is held, it moves its new objects there too.
//! **Compaction** ([`compact_dt`]) announces the new generation in the pointer *before* it
//! lists the working set, and removes from its files every source that changed or was
//! copied in meanwhile *after* writing them. Each side writes before it looks, so of an
//! arrival and a compaction at least one sees the other: a source is in exactly one place
//! of a generation (its copy, or one compacted file), whatever the interleaving.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::reference::Ctx;
use crate::catalog;
use crate::columnar::{HolderWriter, evict, read_parquet};
use crate::error::{Error, Result};
use crate::keys::{self, BOOKKEEPING_PREFIX};
use crate::schema::Table;
use crate::store::{Fetched, Listed, Precondition, PutOutcome};
use crate::summary::Summary;

/// The tables compaction serves: the partitioned ones.
pub fn tables() -> Vec<Table> {
    Table::ALL.into_iter().filter(|t| t.partitioned()).collect()
}

/// A compaction whose announcement is older than this (seconds) has died (a Lambda runs at
/// most 15 minutes): the next one takes over.
const ABANDONED_AFTER: u64 = 1800;

/// A compacted `dt` is compacted again once the sources copied in since reach this
/// fraction of those its files hold (1/10), so a `dt` that keeps receiving files is
/// rewritten a bounded number of times (each rewrite at least 10% larger).
const REGROW_DIVISOR: u64 = 10;

/// Rewrites of one compacted file lost to concurrent ones before the arrival fails (and
/// SQS retries it).
const EVICT_ATTEMPTS: u32 = 8;

/// The compaction state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// The generation the catalog reads (0: none; the working folder).
    pub generation: u32,
    /// Its number of compacted files.
    pub files: u32,
    /// Sources its compacted files held when it was built.
    pub held: u64,
    /// A generation being built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Building>,
    /// Replaced generations, deleted once the grace period has passed (generation 0: the
    /// `dt=` folder, whose per-source objects are then held).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Retired>,
    /// Whether the partition's per-source objects are held outside the table location.
    #[serde(default)]
    pub moved: bool,
}

/// A generation being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Building {
    /// Its number.
    pub generation: u32,
    /// Its number of compacted files.
    pub files: u32,
    /// When the compaction started (unix seconds).
    pub started: u64,
}

/// A replaced generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// Its number.
    pub generation: u32,
    /// When it was replaced (unix seconds).
    pub at: u64,
}

impl Pointer {
    /// The generations an arrival must keep in step: the current one and the one being
    /// built, as `(generation, files)`.
    fn live(&self) -> Vec<(u32, u32)> {
        let current = (self.generation > 0).then_some((self.generation, self.files));
        current
            .into_iter()
            .chain(self.next.map(|n| (n.generation, n.files)))
            .collect()
    }

    /// The highest generation number ever used for the partition.
    fn highest(&self) -> u32 {
        let retired = self.retired.iter().map(|r| r.generation);
        let next = self.next.map(|n| n.generation);
        retired.chain(next).fold(self.generation, u32::max)
    }
}

/// The pointer of partition `dt` of `table`.
pub fn pointer_key(table: Table, dt: &str) -> String {
    format!(
        "{BOOKKEEPING_PREFIX}compaction/{}/pointer/dt={dt}.json",
        table.name()
    )
}

/// The folder of the indexes of a generation's compacted files.
fn index_prefix(table: Table, generation: u32, dt: &str) -> String {
    format!(
        "{BOOKKEEPING_PREFIX}compaction/{}/g{generation:06}/dt={dt}/",
        table.name()
    )
}

/// The index of compacted file `k` of `files`: a superset of the sources it holds (written
/// before the file, rewritten after it shrinks), so an arrival learns whether its source
/// is in the file without reading the file.
fn index_key(table: Table, generation: u32, dt: &str, k: u32, files: u32) -> String {
    format!(
        "{}c-{k:05}-of-{files:05}.json",
        index_prefix(table, generation, dt)
    )
}

/// The sources a compacted file may hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Index {
    names: BTreeSet<String>,
}

fn json_error(context: &str, source: serde_json::Error) -> Error {
    Error::Json {
        context: context.to_string(),
        source,
    }
}

/// Reads a partition's pointer and its ETag (`None`: never compacted).
pub async fn read_pointer(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    dt: &str,
) -> Result<Option<(Pointer, String)>> {
    let key = pointer_key(table, dt);
    match ctx.store.fetch(bucket, &key, None).await? {
        // An unreadable pointer is an error, not "never compacted": arrivals would stop
        // keeping the generation the catalog reads in step.
        Fetched::Body(b, etag) => Ok(Some((
            serde_json::from_slice(&b).map_err(|e| json_error(&key, e))?,
            etag,
        ))),
        _ => Ok(None),
    }
}

/// Writes the pointer if it is still the one read (`etag`; `None`: there was none).
/// `None` when another compaction changed it first.
async fn write_pointer(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    dt: &str,
    p: &Pointer,
    etag: Option<&str>,
) -> Result<Option<String>> {
    let key = pointer_key(table, dt);
    let body = serde_json::to_vec(p).map_err(|e| json_error(&key, e))?;
    let pre = match etag {
        Some(e) => Precondition::Matches(e.to_string()),
        None => Precondition::Absent,
    };
    Ok(
        match ctx
            .store
            .put_if(bucket, &key, Bytes::from(body), &pre)
            .await?
        {
            PutOutcome::Written(etag) => Some(etag),
            PutOutcome::PreconditionFailed => None,
        },
    )
}

/// The per-source objects written or deleted by an invocation, by partition.
fn changed(bucket: &str, s: &Summary) -> BTreeMap<(Table, String), BTreeSet<String>> {
    let mut out: BTreeMap<(Table, String), BTreeSet<String>> = BTreeMap::new();
    for key in s.outputs.iter().chain(&s.deleted) {
        if let Ok(src) = keys::accept(bucket, key, &tables())
            && let Some(dt) = src.dt
        {
            out.entry((src.table, dt)).or_default().insert(src.stem);
        }
    }
    out
}

/// Whether `key` is a per-source object of a compacted table.
fn is_working(bucket: &str, key: &str) -> bool {
    keys::accept(bucket, key, &tables()).is_ok()
}

/// Reads a per-source object by its key, wherever it is kept (under its key, or held).
pub async fn fetch_working(ctx: &Ctx, bucket: &str, key: &str) -> Result<Fetched> {
    match ctx.store.fetch(bucket, key, None).await? {
        Fetched::Missing if is_working(bucket, key) => {
            ctx.store.fetch(bucket, &keys::held_key(key), None).await
        }
        other => Ok(other),
    }
}

/// Deletes a per-source object wherever it is kept.
pub async fn delete_working(ctx: &Ctx, bucket: &str, key: &str) -> Result<()> {
    ctx.store.delete(bucket, key).await?;
    if is_working(bucket, key) {
        ctx.store.delete(bucket, &keys::held_key(key)).await?;
    }
    Ok(())
}

/// The per-source objects under `prefix` (a table's or a partition's location), wherever
/// kept, by their own keys (one kept under its key wins over a held one).
pub async fn list_working(ctx: &Ctx, bucket: &str, prefix: &str) -> Result<Vec<Listed>> {
    let mut all: BTreeMap<String, Listed> = BTreeMap::new();
    let held = keys::held_key("").len();
    let listed = [
        ctx.store
            .list_objects(bucket, &keys::held_key(prefix))
            .await?,
        ctx.store.list_objects(bucket, prefix).await?,
    ];
    for (i, objects) in listed.into_iter().enumerate() {
        for mut o in objects {
            if i == 0 {
                o.key = o.key[held..].to_string();
            }
            if is_working(bucket, &o.key) {
                all.insert(o.key.clone(), o);
            }
        }
    }
    Ok(all.into_values().collect())
}

/// Moves per-source objects out of the table location to their held keys: each copied,
/// then deleted only if unchanged since (a conditional delete), so an object rewritten
/// meanwhile stays, and its writer moves it (see [`follow`]).
async fn hold(ctx: &Ctx, bucket: &str, objects: Vec<String>) -> Result<()> {
    for key in objects {
        if let Some(etag) = ctx.store.copy(bucket, &key, &keys::held_key(&key)).await? {
            ctx.store.delete_if(bucket, &key, &etag).await?;
        }
    }
    Ok(())
}

/// Copies per-source object `from` (wherever kept) to `to`; `false` when it is gone.
async fn copy_working(ctx: &Ctx, bucket: &str, from: &str, to: &str) -> Result<bool> {
    if ctx.store.copy(bucket, from, to).await?.is_some() {
        return Ok(true);
    }
    Ok(ctx
        .store
        .copy(bucket, &keys::held_key(from), to)
        .await?
        .is_some())
}

/// Keeps the compacted generations of the partitions an invocation changed in step with
/// their working sets (see the module): for each per-source object it wrote or deleted, a
/// copy in (or out of) the current generation and the one being built, and the source's
/// earlier rows out of the compacted file holding them. Never-compacted partitions cost
/// one GET each (the missing pointer).
pub async fn follow(ctx: &Ctx, bucket: &str, s: &mut Summary) -> Result<()> {
    for ((table, dt), names) in changed(bucket, s) {
        let Some((p, _)) = read_pointer(ctx, bucket, table, &dt).await? else {
            continue;
        };
        for (generation, files) in p.live() {
            for name in &names {
                let copy = keys::copy_key(table, generation, &dt, name);
                if refresh_copy(ctx, bucket, table, &dt, name, &copy).await? {
                    s.outputs.push(copy);
                } else {
                    s.deleted.push(copy);
                }
            }
            evict_names(ctx, bucket, table, generation, &dt, files, names.clone(), s).await?;
        }
        if p.moved {
            let objects: Vec<String> = names
                .iter()
                .map(|n| keys::output_key(table, &dt, n))
                .collect();
            hold(ctx, bucket, objects).await?;
        }
    }
    Ok(())
}

/// Makes `copy` what the working object `name` is now: a server-side copy, or no copy when
/// it is gone. Returns whether a copy is left.
async fn refresh_copy(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    dt: &str,
    name: &str,
    copy: &str,
) -> Result<bool> {
    let from = keys::output_key(table, dt, name);
    if copy_working(ctx, bucket, &from, copy).await? {
        return Ok(true);
    }
    ctx.store.delete(bucket, copy).await?;
    // Written again between the failed copy and the delete: copy it after all (the
    // writer's own copy may have come before the delete).
    copy_working(ctx, bucket, &from, copy).await
}

/// Removes the rows of sources `names` from the compacted files of a generation that hold
/// them (each file rewritten conditionally, retried when a concurrent rewrite wins).
#[allow(clippy::too_many_arguments)]
async fn evict_names(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    generation: u32,
    dt: &str,
    files: u32,
    names: BTreeSet<String>,
    s: &mut Summary,
) -> Result<()> {
    let mut by_file: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for name in names {
        by_file
            .entry(keys::shard_of(&name, files))
            .or_default()
            .insert(name);
    }
    for (k, names) in by_file {
        let ikey = index_key(table, generation, dt, k, files);
        let Fetched::Body(b, _) = ctx.store.fetch(bucket, &ikey, None).await? else {
            continue; // not written yet: the compaction's own check removes them
        };
        let index: Index = serde_json::from_slice(&b).map_err(|e| json_error(&ikey, e))?;
        let drop: BTreeSet<String> = names.intersection(&index.names).cloned().collect();
        if drop.is_empty() {
            continue;
        }
        let hkey = keys::holder_key(table, generation, dt, k, files);
        let mut left = None;
        for attempt in 0.. {
            if attempt == EVICT_ATTEMPTS {
                return Err(Error::Contention {
                    bucket: bucket.to_string(),
                    key: hkey,
                    attempts: EVICT_ATTEMPTS,
                });
            }
            let Fetched::Body(bytes, etag) = ctx.store.fetch(bucket, &hkey, None).await? else {
                left = Some(BTreeSet::new());
                break;
            };
            let rg = ctx.cfg.row_group_rows;
            let Some(e) = evict(table, bytes, &drop, rg, &hkey)? else {
                break; // already gone from the file
            };
            let Some(new) = e.bytes else {
                ctx.store.delete(bucket, &hkey).await?;
                s.deleted.push(hkey.clone());
                left = Some(BTreeSet::new());
                break;
            };
            match ctx
                .store
                .put_if(bucket, &hkey, new, &Precondition::Matches(etag))
                .await?
            {
                PutOutcome::Written(_) => {
                    s.outputs.push(hkey.clone());
                    left = Some(e.held.into_iter().map(|h| h.name).collect());
                    break;
                }
                PutOutcome::PreconditionFailed => s.conflicts += 1,
            }
        }
        if let Some(names) = left {
            write_index(ctx, bucket, &ikey, &Index { names }).await?;
        }
    }
    Ok(())
}

async fn write_index(ctx: &Ctx, bucket: &str, key: &str, index: &Index) -> Result<()> {
    let body = serde_json::to_vec(index).map_err(|e| json_error(key, e))?;
    ctx.store.put(bucket, key, Bytes::from(body)).await
}

/// The per-source objects of partition `dt` of `table`: name → (ETag, size).
async fn working_set(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    dt: &str,
) -> Result<BTreeMap<String, (String, u64)>> {
    let prefix = keys::partition_prefix(table, dt);
    Ok(list_working(ctx, bucket, &prefix)
        .await?
        .into_iter()
        .filter_map(|o| {
            let name = o.key[prefix.len()..].strip_suffix(".parquet")?;
            Some((name.to_string(), (o.etag, o.size)))
        })
        .collect())
}

/// Names of the sources copied into a generation.
async fn copies(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    generation: u32,
    dt: &str,
) -> Result<BTreeSet<String>> {
    let prefix = keys::generation_prefix(table, generation, dt);
    Ok(ctx
        .store
        .list(bucket, &prefix)
        .await?
        .iter()
        .filter_map(|k| keys::copy_name(&k[prefix.len()..]).map(str::to_string))
        .collect())
}

/// Retires what the grace period has passed for: replaced generations are deleted (their
/// files, copies and indexes), and a replaced `dt=` folder's per-source objects are held
/// (the pointer says so *before* they move, so an arrival from then on moves its own). A
/// held partition's stragglers (written by an arrival that read the pointer before) are
/// moved on every run. Returns `false` when another compaction changed the pointer.
#[allow(clippy::too_many_arguments)]
async fn retire(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    dt: &str,
    p: &mut Pointer,
    etag: &mut Option<String>,
    now: u64,
    s: &mut Summary,
) -> Result<bool> {
    let grace = ctx.cfg.compact_grace_seconds;
    let (due, kept): (Vec<Retired>, Vec<Retired>) = p
        .retired
        .iter()
        .partition(|r| r.at.saturating_add(grace) <= now);
    if !due.is_empty() {
        for r in due.iter().filter(|r| r.generation > 0) {
            for prefix in [
                keys::generation_prefix(table, r.generation, dt),
                index_prefix(table, r.generation, dt),
            ] {
                for key in ctx.store.list(bucket, &prefix).await? {
                    ctx.store.delete(bucket, &key).await?;
                    s.deleted.push(key);
                }
            }
        }
        p.retired = kept;
        p.moved |= due.iter().any(|r| r.generation == 0);
        match write_pointer(ctx, bucket, table, dt, p, etag.as_deref()).await? {
            Some(e) => *etag = Some(e),
            None => return Ok(false),
        }
    }
    if p.moved {
        let prefix = keys::partition_prefix(table, dt);
        let mut stragglers = ctx.store.list(bucket, &prefix).await?;
        stragglers.retain(|k| is_working(bucket, k));
        hold(ctx, bucket, stragglers).await?;
    }
    Ok(true)
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// When a partition is compacted: `pending` per-source objects are not in its compacted
/// files (all of them, before the first compaction), of which there must be at least
/// `COMPACT_MIN_OBJECTS` and at least a tenth of the sources the files hold.
pub fn due(pending: usize, held: u64, min_objects: usize) -> bool {
    pending > 0 && pending >= min_objects.max((held / REGROW_DIVISOR) as usize)
}

/// Compacts partition `dt` of `table` when it is due (always when `force`, if anything is
/// not compacted yet), then deletes the generations whose grace period has passed. The
/// summary lists the files written (`outputs`), the objects deleted, and the sources
/// compacted (`rows_in` rows read, `rows_out` written).
pub async fn compact_dt(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    dt: &str,
    now: u64,
    force: bool,
) -> Result<Summary> {
    let mut s = Summary::default();
    let (mut p, mut etag) = match read_pointer(ctx, bucket, table, dt).await? {
        Some((p, e)) => (p, Some(e)),
        None => (Pointer::default(), None),
    };
    if !retire(ctx, bucket, table, dt, &mut p, &mut etag, now, &mut s).await? {
        return Ok(s); // another compaction of this partition is at work
    }
    let busy = p
        .next
        .is_some_and(|n| now < n.started.saturating_add(ABANDONED_AFTER));
    let working = working_set(ctx, bucket, table, dt).await?;
    let pending = if p.generation == 0 {
        working.len()
    } else {
        copies(ctx, bucket, table, p.generation, dt).await?.len()
    };
    let due = if force {
        pending > 0
    } else {
        due(pending, p.held, ctx.cfg.compact_min_objects)
    };
    if busy || working.is_empty() || !due {
        return Ok(s);
    }
    // Announce, then look: an arrival from now on also copies into the new generation.
    if let Some(dead) = p.next.take() {
        p.retired.push(Retired {
            generation: dead.generation,
            at: now,
        });
    }
    let bytes: u64 = working.values().map(|(_, size)| size).sum();
    let target = ctx.cfg.compact_target_bytes.max(1);
    let files = u32::try_from(bytes.div_ceil(target).max(1)).unwrap_or(u32::MAX);
    let next = Building {
        generation: p.highest() + 1,
        files,
        started: now,
    };
    p.next = Some(next);
    let Some(announced) = write_pointer(ctx, bucket, table, dt, &p, etag.as_deref()).await? else {
        return Ok(s); // another compaction of this partition got there first
    };
    etag = Some(announced);
    let g = next.generation;

    // Build: each compacted file from the working objects whose names hash to it.
    let working = working_set(ctx, bucket, table, dt).await?;
    let mut by_file: BTreeMap<u32, Vec<&String>> = BTreeMap::new();
    for name in working.keys() {
        by_file
            .entry(keys::shard_of(name, files))
            .or_default()
            .push(name);
    }
    let mut read: BTreeMap<String, String> = BTreeMap::new();
    let mut held = 0u64;
    for (k, names) in by_file {
        let index = Index {
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        write_index(ctx, bucket, &index_key(table, g, dt, k, files), &index).await?;
        let mut w = HolderWriter::new(table, ctx.cfg.row_group_rows)?;
        for name in names {
            let key = keys::output_key(table, dt, name);
            let Fetched::Body(b, etag) = fetch_working(ctx, bucket, &key).await? else {
                continue; // deleted meanwhile
            };
            let batches = read_parquet(b, &[], &key)?;
            s.rows_in += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            w.add(name, &batches)?;
            s.sources.push(key);
            read.insert(name.clone(), etag);
        }
        if w.held().is_empty() {
            continue;
        }
        held += w.held().len() as u64;
        let (body, _) = w.finish()?;
        let hkey = keys::holder_key(table, g, dt, k, files);
        ctx.store.put(bucket, &hkey, body).await?;
        s.outputs.push(hkey);
    }
    // Then look again: sources changed or copied in since they were read leave the files.
    let now_working = working_set(ctx, bucket, table, dt).await?;
    let mut stale: BTreeSet<String> = read
        .iter()
        .filter(|(name, etag)| now_working.get(*name).is_none_or(|(e, _)| e != *etag))
        .map(|(name, _)| name.clone())
        .collect();
    stale.extend(copies(ctx, bucket, table, g, dt).await?);
    evict_names(ctx, bucket, table, g, dt, files, stale, &mut s).await?;

    // Switch the catalog, then the pointer.
    p.next = None;
    let location = format!("s3://{bucket}/{}", keys::generation_prefix(table, g, dt));
    let db = &ctx.cfg.database;
    if catalog::partition_location_now(&ctx.glue, db, table, dt)
        .await?
        .is_none()
    {
        // Not registered (being pruned): nothing to switch; the generation goes.
        p.retired.push(Retired {
            generation: g,
            at: now,
        });
    } else {
        catalog::set_partition_location(&ctx.glue, db, table, dt, location).await?;
        // The generation replaced (0: the `dt=` folder) stays for the grace period.
        p.retired.push(Retired {
            generation: p.generation,
            at: now,
        });
        p.generation = g;
        p.files = files;
        p.held = held;
        s.rows_out = s.rows_in;
    }
    let Some(committed) = write_pointer(ctx, bucket, table, dt, &p, etag.as_deref()).await? else {
        return Err(Error::Contention {
            bucket: bucket.to_string(),
            key: pointer_key(table, dt),
            attempts: 1,
        });
    };
    etag = Some(committed);
    retire(ctx, bucket, table, dt, &mut p, &mut etag, now, &mut s).await?;
    Ok(s)
}

/// One partition to compact.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Item {
    /// The table.
    pub table: Table,
    /// The partition.
    pub dt: String,
}

/// Every partition of the compacted tables: those with a `dt=` folder (one delimiter LIST
/// per table) and those with a pointer (compacted, their objects perhaps held). [`compact_dt`]
/// decides for each whether it is due.
pub async fn plan(ctx: &Ctx, bucket: &str) -> Result<Vec<Item>> {
    let mut items = BTreeSet::new();
    for table in tables() {
        for folder in ctx.store.list_folders(bucket, table.prefix()).await? {
            let name = folder[table.prefix().len()..].trim_end_matches('/');
            if let Some(dt) = name.strip_prefix("dt=").filter(|d| keys::is_date(d)) {
                items.insert(Item {
                    table,
                    dt: dt.to_string(),
                });
            }
        }
        let pointers = pointer_key(table, "");
        let folder = &pointers[..pointers.len() - "dt=.json".len()];
        for key in ctx.store.list(bucket, folder).await? {
            let dt = key[folder.len()..]
                .strip_prefix("dt=")
                .and_then(|r| r.strip_suffix(".json"))
                .filter(|d| keys::is_date(d));
            if let Some(dt) = dt {
                items.insert(Item {
                    table,
                    dt: dt.to_string(),
                });
            }
        }
    }
    Ok(items.into_iter().collect())
}

/// Plans and compacts every due partition in this process (`stedi compact`, and the
/// function without a queue).
pub async fn run_inline(ctx: &Ctx, bucket: &str, force: bool) -> Result<Summary> {
    let mut total = Summary::default();
    let now = unix_now();
    for item in plan(ctx, bucket).await? {
        total.absorb(compact_dt(ctx, bucket, item.table, &item.dt, now, force).await?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_due_by_count_then_by_growth() {
        assert!(!due(0, 0, 1));
        assert!(!due(15, 0, 16));
        assert!(due(16, 0, 16));
        // 1,000 sources held: 100 new ones are due, 99 are not.
        assert!(!due(99, 1000, 16));
        assert!(due(100, 1000, 16));
    }

    #[test]
    fn the_pointer_lists_the_live_generations() {
        let mut p = Pointer::default();
        assert!(p.live().is_empty());
        p.next = Some(Building {
            generation: 1,
            files: 2,
            started: 0,
        });
        assert_eq!(p.live(), [(1, 2)]);
        p.generation = 3;
        p.files = 1;
        p.retired.push(Retired {
            generation: 7,
            at: 0,
        });
        assert_eq!(p.live(), [(3, 1), (1, 2)]);
        assert_eq!(p.highest(), 7);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Pointer>(&json).unwrap(), p);
    }

    #[test]
    fn arrivals_follow_only_per_source_objects_of_partitioned_tables() {
        let s = Summary {
            outputs: vec![
                "accelerometer/trusted/dt=2022-06-18/a.parquet".into(),
                "accelerometer/quarantine/a.jsonl".into(),
                "customer/trusted/part-00001.parquet".into(),
                "step_trainer/curated/dt=2022-06-18/s.0123.parquet".into(),
                "accelerometer/trusted/g000001/dt=2022-06-18/s-a.parquet".into(),
            ],
            deleted: vec!["accelerometer/trusted/dt=2022-06-19/a.parquet".into()],
            ..Summary::default()
        };
        let c = changed("b", &s);
        let got: Vec<_> = c
            .iter()
            .map(|((t, dt), n)| (t.name(), dt.as_str(), n.iter().cloned().collect::<Vec<_>>()))
            .collect();
        assert_eq!(
            got,
            [
                ("accelerometer_trusted", "2022-06-18", vec!["a".to_string()]),
                ("accelerometer_trusted", "2022-06-19", vec!["a".to_string()]),
                (
                    "machine_learning_curated",
                    "2022-06-18",
                    vec!["s.0123".to_string()]
                ),
            ]
        );
    }
}
