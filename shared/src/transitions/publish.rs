//! Publishing one source's outputs in a partitioned table: the objects (one per `dt`, the
//! source's own or its SQS batch's, see [`Batch`]), the Glue partitions, the manifest of
//! their lineage, and the outputs of an earlier run that this one no longer produces (with
//! their pairs in machine_learning_curated).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use bytes::Bytes;

use crate::columnar::{
    HolderWriter, Part, evict, holder_sources, read_holder, read_parquet, row_range,
};

use super::compact::list_working;
use super::landing::Filtered;
use super::lineage::{
    LAYOUT, Manifest, create_manifest, delete_manifest, read_manifest, stored_manifest,
    write_manifest,
};
use super::reference::Ctx;
use super::snapshot::rewrite_object;
use super::step_trainer_landing_to_trusted::waiting_key;
use super::{Transition, machine_learning_trusted_to_curated};
use crate::catalog;
use crate::compute::RowFilter;
use crate::error::{Error, Result};
use crate::keys::{self, SourceKey};
use crate::schema::Table;
use crate::store::Fetched;
use crate::summary::Summary;

/// The manifest of a source's previous run, as far as a publisher knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// Not read yet: [`publish_partitioned`] reads it.
    Unread,
    /// Read already by the caller (`None`: there is none).
    Read(Option<Manifest>),
}

/// The outputs of the landing files of one SQS batch: one object per (table, `dt`) for the
/// whole batch instead of one per file, each source's rows listed by name in its footer
/// (as a compacted file's, [`HolderWriter`]), so one source's rows can be replaced or
/// removed without touching the others' ([`evict`]). A source's manifest names the batch
/// object ([`Manifest::object`]). The objects are named after the batch's first source and
/// a hash of all its keys: a redelivery of the same batch writes the same objects. Outputs
/// of a source larger than `BATCH_OBJECT_BYTES`, or that would take what the batch holds
/// past `BATCH_HELD_BYTES`, are written as the source's own objects.
#[derive(Debug)]
pub struct Batch {
    stem: String,
    max_bytes: usize,
    max_held: usize,
    /// (table, `dt`) → source stem → its encoded rows.
    parts: Mutex<BTreeMap<(Table, String), BTreeMap<String, Bytes>>>,
    /// Sources whose manifest names the batch's objects already: their rows stay in them.
    committed: Mutex<BTreeSet<(Table, String)>>,
    /// The stems of the batch's files.
    members: BTreeSet<String>,
    /// Sources computed by this run (taken into the batch or given their own objects, and
    /// not failed since): the batch's objects hold what this run gave them, nothing older.
    computed: Mutex<BTreeSet<(Table, String)>>,
}

impl Batch {
    /// The batch of the landing files `sources` of one bucket (`None` for fewer than two:
    /// a lone file keeps its own objects): it holds a file's encoded outputs of up to
    /// `max_bytes`, and up to `max_held` bytes in all.
    pub fn new(sources: &[SourceKey], max_bytes: usize, max_held: usize) -> Option<Batch> {
        if sources.len() < 2 {
            return None;
        }
        let mut names: Vec<&SourceKey> = sources.iter().collect();
        names.sort_by(|a, b| a.key.cmp(&b.key));
        let all: Vec<&str> = names.iter().map(|s| s.key.as_str()).collect();
        Some(Batch {
            stem: format!("{}.b{}", names[0].stem, keys::hash_hex(&all.join("\n"))),
            max_bytes,
            max_held,
            parts: Mutex::default(),
            committed: Mutex::default(),
            members: sources.iter().map(|s| s.stem.clone()).collect(),
            computed: Mutex::default(),
        })
    }

    /// The name of the batch's objects.
    pub fn stem(&self) -> &str {
        &self.stem
    }

    /// Takes source `stem`'s outputs in `table` into the batch (replacing what it gave
    /// before); `false` (and nothing of it kept) when they are too large to hold in memory
    /// with the rest, or there are none.
    fn take(&self, table: Table, stem: &str, parts: &[Part]) -> bool {
        self.remove(table, stem);
        let mut computed = self.computed.lock().unwrap_or_else(|e| e.into_inner());
        computed.insert((table, stem.to_string()));
        drop(computed);
        let size: usize = parts.iter().map(|p| p.bytes.len()).sum();
        let mut held = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let holding: usize = held.values().flat_map(|s| s.values()).map(Bytes::len).sum();
        if parts.is_empty() || size > self.max_bytes || holding + size > self.max_held {
            return false;
        }
        for p in parts {
            held.entry((table, p.dt.clone()))
                .or_default()
                .insert(stem.to_string(), p.bytes.clone());
        }
        true
    }

    /// Drops what source `stem` gave in `table` (its computation failed: it is redelivered
    /// or refused, and its rows are in none of the batch's objects), unless its manifest
    /// names them already (a step after it failed): then its rows go in.
    pub fn discard(&self, table: Table, stem: &str) {
        let committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        if !committed.contains(&(table, stem.to_string())) {
            self.remove(table, stem);
            let mut computed = self.computed.lock().unwrap_or_else(|e| e.into_inner());
            computed.remove(&(table, stem.to_string()));
        }
    }

    fn remove(&self, table: Table, stem: &str) {
        let mut held = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        for ((t, _), sources) in held.iter_mut() {
            if *t == table {
                sources.remove(stem);
            }
        }
    }

    /// Records that source `stem`'s manifest names the batch's objects.
    fn commit(&self, table: Table, stem: &str) {
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        committed.insert((table, stem.to_string()));
    }

    /// Writes the batch's objects, one per (table, `dt`), and registers their partitions
    /// (again, if a file's earlier object was the last in one and it was dropped meanwhile;
    /// a known one costs no Glue call); returns their keys.
    ///
    /// When some of the batch's files were not computed by this run (not started before
    /// the invocation's cutoff, or failed), an object this batch wrote before (the same
    /// batch delivered again) keeps those files' rows: their manifests may name it. That
    /// costs one GET of the object, and only then.
    pub async fn write(&self, ctx: &Ctx, bucket: &str) -> Result<Vec<String>> {
        let objects = std::mem::take(&mut *self.parts.lock().unwrap_or_else(|e| e.into_inner()));
        let computed = self
            .computed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut written = Vec::new();
        for ((table, dt), sources) in objects {
            if sources.is_empty() {
                continue;
            }
            let key = keys::output_key(table, &dt, &self.stem);
            let mut w = HolderWriter::new(table, ctx.cfg.row_group_rows)?;
            let done = |stem: &str| computed.contains(&(table, stem.to_string()));
            if !self.members.iter().all(|m| done(m))
                && let Fetched::Body(bytes, _) = ctx.store.fetch(bucket, &key, None).await?
            {
                let (held, batches) = read_holder(bytes, &key)?;
                let mut start = 0;
                for h in held {
                    if !done(&h.name) && !sources.contains_key(&h.name) {
                        w.add(&h.name, &row_range(&batches, start, h.rows as usize))?;
                    }
                    start += h.rows as usize;
                }
            }
            for (stem, bytes) in sources {
                let context = format!("{key} (source {stem})");
                w.add(&stem, &read_parquet(bytes, &[], &context)?)?;
            }
            let (body, _) = w.finish()?;
            ctx.store.put(bucket, &key, body).await?;
            ctx.register(bucket, table, std::slice::from_ref(&dt))
                .await?;
            written.push(key);
        }
        Ok(written)
    }
}

/// Publishes a filtered landing file into `t`'s target table (see [`publish_partitioned`]);
/// `waiting`: what the file waits for (see [`Manifest::waiting`]). Returns the summary and
/// the manifest of the previous run.
#[allow(clippy::too_many_arguments)]
pub async fn publish_filtered<F: RowFilter>(
    ctx: &Ctx,
    bucket: &str,
    src: &SourceKey,
    t: Transition,
    f: Filtered<F>,
    waiting: BTreeSet<String>,
    previous: Previous,
    batch: Option<&Batch>,
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
        object: None,
        written_at: 0,
    };
    let before = publish_partitioned(
        ctx,
        bucket,
        t.target(),
        &src.stem,
        parts,
        manifest,
        previous,
        batch,
        &mut summary,
    )
    .await?;
    Ok((summary, before))
}

/// Writes the outputs of one source object (one per `dt`; into `batch` when given and they
/// fit), registers their partitions, and removes the source's rows of earlier runs from
/// the objects that held them and this run no longer writes (deleting its own objects,
/// with their pairs in machine_learning_curated; rewriting a batch's without them); then
/// writes `manifest` with the `dts` and the object written (created with `If-None-Match`
/// when there was none: no read of it). Returns the previous run's manifest (`previous`,
/// read here unless the caller has).
#[allow(clippy::too_many_arguments)]
pub async fn publish_partitioned(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    parts: Vec<Part>,
    mut manifest: Manifest,
    previous: Previous,
    batch: Option<&Batch>,
    summary: &mut Summary,
) -> Result<Option<Manifest>> {
    let written = summary.outputs.len();
    manifest.object = batch
        .filter(|b| b.take(table, stem, &parts))
        .map(|b| b.stem().to_string());
    if manifest.object.is_some() {
        manifest.written_at = super::compact::unix_now();
    }
    let name = manifest.object_of(stem).to_string();
    let mut dts = Vec::with_capacity(parts.len());
    for Part { dt, bytes, .. } in parts {
        let key = keys::output_key(table, &dt, &name);
        if manifest.object.is_none() {
            ctx.store.put(bucket, &key, bytes).await?;
        }
        summary.outputs.push(key);
        dts.push(dt);
    }
    ctx.register(bucket, table, &dts).await?;
    manifest.dts = dts.iter().cloned().collect();
    let before = match previous {
        Previous::Read(m) => m,
        Previous::Unread => {
            // A first run (the common case) creates the manifest, with nothing earlier to
            // replace and no GET; where one exists (a rerun, a re-upload) the create
            // answers 412 and the manifest is read.
            if create_manifest(ctx, bucket, table, stem, &manifest).await? {
                if let Some(b) = batch.filter(|_| manifest.object.is_some()) {
                    b.commit(table, stem);
                }
                return Ok(None);
            }
            read_manifest(ctx, bucket, table, stem).await?
        }
    };
    if let (Some(b), Some(old)) = (batch.filter(|_| manifest.object.is_some()), &before) {
        match Box::pin(held_where(ctx, bucket, table, stem, old, &manifest, b)).await? {
            Held::InPlace => {
                b.remove(table, stem);
                summary.outputs.truncate(written);
                return Ok(before);
            }
            Held::InFlight(key) => {
                b.remove(table, stem);
                return Err(Error::Contention {
                    bucket: bucket.to_string(),
                    key,
                    attempts: 1,
                });
            }
            Held::Elsewhere => {}
        }
    }
    if let Some(old) = &before {
        take_out(ctx, bucket, table, stem, old, (&name, &dts), summary).await?;
    }
    write_manifest(ctx, bucket, table, stem, &manifest).await?;
    if let Some(b) = batch.filter(|_| manifest.object.is_some()) {
        b.commit(table, stem);
    }
    Ok(before)
}

/// Takes source `stem`'s rows of an earlier run (its manifest `old`) out of the objects that
/// held them, except those this run writes again under the same name (`again`: the object's
/// name and its `dt`s). A file's own object goes; a batch object loses the file's rows (and
/// goes once empty).
async fn take_out(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    old: &Manifest,
    again: (&str, &[String]),
    summary: &mut Summary,
) -> Result<()> {
    let old_name = old.object_of(stem);
    for dt in old.dts.iter() {
        if old_name == again.0 && again.1.contains(dt) {
            continue;
        }
        // Boxed: a rare path kept out of the common one's future.
        if old.object.is_none() {
            Box::pin(remove_object(ctx, bucket, table, dt, old_name, summary)).await?;
        } else {
            Box::pin(detach(ctx, bucket, table, dt, old_name, stem, summary)).await?;
        }
    }
    Ok(())
}

/// Takes landing source `stem`, which no longer exists, out of `table`: its rows leave the
/// objects holding them (its own objects go, with their pairs in machine_learning_curated;
/// a batch object is rewritten without them), then its Step Trainer waiting markers and
/// its manifest go. `reconcile` does it for an orphan it finds; a transition for a file
/// deleted since its event, or whose event was its deletion.
///
/// Nothing to do without a manifest (a redelivered deletion). A manifest naming a batch
/// object that another invocation has not written yet (a re-upload of the key being
/// computed) is [`Error::Contention`]: SQS delivers the deletion again later. The manifest
/// is deleted only while it is the one read, so one a concurrent run wrote meanwhile stays.
pub async fn forget(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    summary: &mut Summary,
) -> Result<()> {
    let Some(read) = stored_manifest(ctx, bucket, table, stem).await? else {
        return Ok(());
    };
    // Unreadable: nothing to take out by it; `reconcile` recomputes what it names.
    let old = read.manifest.clone().unwrap_or_default();
    if old.in_flight(super::compact::unix_now()) {
        for dt in &old.dts {
            let key = keys::output_key(table, dt, old.object_of(stem));
            let kept = list_working(ctx, bucket, &key).await?;
            if !kept.iter().any(|o| o.key == key) {
                return Err(Error::Contention {
                    bucket: bucket.to_string(),
                    key,
                    attempts: 1,
                });
            }
        }
    }
    take_out(ctx, bucket, table, stem, &old, ("", &[]), summary).await?;
    for hash in &old.waiting {
        ctx.store.delete(bucket, &waiting_key(hash, stem)).await?;
    }
    delete_manifest(ctx, bucket, table, stem, &read).await?;
    Ok(())
}

/// Whether `name` is a batch object's (`<first stem>.b<16 hex digits>`, see [`Batch`]).
pub fn is_batch_name(name: &str) -> bool {
    name.rsplit_once(".b")
        .is_some_and(|(_, h)| h.len() == 16 && h.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// Takes source `stem`'s rows out of batch object `object` of partition `dt` of `table`,
/// and the object with them when no source is left in it: a file computed again elsewhere,
/// or (`reconcile`) a copy of a file's rows that its manifest does not name.
pub async fn detach(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    dt: &str,
    object: &str,
    stem: &str,
    summary: &mut Summary,
) -> Result<()> {
    if evict_source(ctx, bucket, table, dt, object, stem, summary).await? {
        remove_object(ctx, bucket, table, dt, object, summary).await?;
    }
    Ok(())
}

/// Where a source's rows are, as its manifest `old` says, for a run writing them into
/// `batch`.
enum Held {
    /// In another object that holds them, computed as this run would (the same version of
    /// the source, the same answers): the file stays there. S3 repeats an event now and
    /// then, SQS redelivers records in another batch, and a file an erasure scrubbed and
    /// computed again sends its event afterwards.
    InPlace,
    /// In a batch object another invocation has not written yet: this run would put the
    /// rows in two objects, so it waits (fails, for SQS to redeliver it). The object's key.
    InFlight(String),
    /// Anywhere else: this run replaces them.
    Elsewhere,
}

/// Where source `stem`'s rows are (see [`Held`]); one GET per `dt` of the object `old`
/// names (a redelivery or rerun only: a first run creates its manifest).
async fn held_where(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    old: &Manifest,
    new: &Manifest,
    batch: &Batch,
) -> Result<Held> {
    let object = old.object_of(stem);
    if object == batch.stem() {
        // Written again, whole, by this batch.
        return Ok(Held::Elsewhere);
    }
    let same = old.layout == new.layout
        && old.lineage == new.lineage
        && old.waiting == new.waiting
        && old.dts == new.dts;
    for dt in &old.dts {
        let key = keys::output_key(table, dt, object);
        match super::compact::fetch_working(ctx, bucket, &key).await? {
            Fetched::Body(bytes, _) => {
                let listed = old.object.is_none()
                    || holder_sources(bytes, &key)?.iter().any(|h| h.name == stem);
                if !listed {
                    return Ok(Held::Elsewhere);
                }
            }
            _ if old.in_flight(super::compact::unix_now()) => return Ok(Held::InFlight(key)),
            _ => return Ok(Held::Elsewhere),
        }
    }
    Ok(if same { Held::InPlace } else { Held::Elsewhere })
}

/// Deletes the object `name` of partition `dt` of `table` (wherever kept), with its pairs
/// in machine_learning_curated, and drops the partition if it is left empty.
async fn remove_object(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    dt: &str,
    name: &str,
    summary: &mut Summary,
) -> Result<()> {
    let key = keys::output_key(table, dt, name);
    super::compact::delete_working(ctx, bucket, &key).await?;
    summary.deleted.push(key);
    prune_partition(ctx, bucket, table, dt).await?;
    machine_learning_trusted_to_curated::forget(ctx, bucket, table, dt, name, summary).await
}

/// Removes source `stem`'s rows from batch object `object` of partition `dt` (a
/// conditional rewrite where it is kept, under its key or held); `true` when no source is
/// left in it (the caller deletes it).
async fn evict_source(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    dt: &str,
    object: &str,
    stem: &str,
    summary: &mut Summary,
) -> Result<bool> {
    let key = keys::output_key(table, dt, object);
    let drop = BTreeSet::from([stem.to_string()]);
    let rows = ctx.cfg.row_group_rows;
    for kept in [key.clone(), keys::held_key(&key)] {
        let (mut found, mut emptied) = (false, false);
        let written = summary.outputs.len();
        rewrite_object(ctx, bucket, &kept, summary, |current| {
            let Some(bytes) = current else {
                return Ok(None);
            };
            found = true;
            let Some(left) = evict(table, bytes, &drop, rows, &kept)? else {
                return Ok(None);
            };
            emptied = left.bytes.is_none();
            Ok(left.bytes)
        })
        .await?;
        if found {
            if summary.outputs.len() > written && kept != key {
                // Rewritten where it is held: the compacted generations follow it by its
                // own key.
                summary.outputs.push(key);
            }
            return Ok(emptied);
        }
    }
    Ok(false)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_objects_are_told_by_name() {
        let sources = [
            crate::keys::accept(
                "b",
                "accelerometer/landing/a.json",
                &[Table::AccelerometerLanding],
            )
            .unwrap(),
            crate::keys::accept(
                "b",
                "accelerometer/landing/b.json",
                &[Table::AccelerometerLanding],
            )
            .unwrap(),
        ];
        let batch = Batch::new(&sources, 1 << 20, 1 << 20).unwrap();
        assert!(is_batch_name(batch.stem()));
        assert!(is_batch_name("session-0.b00000000000000ff"));
        for own in [
            "a",
            "a.b",
            "a.bcd",
            "a.b00000000000000fg",
            "a.b00000000000000ff0",
            "x.bar",
        ] {
            assert!(!is_batch_name(own), "{own}");
        }
    }

    fn sources(keys: &[&str]) -> Vec<SourceKey> {
        keys.iter()
            .map(|k| keys::accept("b", k, &[Table::AccelerometerLanding]).unwrap())
            .collect()
    }

    fn part(dt: &str, bytes: &'static [u8]) -> Part {
        Part {
            dt: dt.to_string(),
            rows: 1,
            bytes: Bytes::from_static(bytes),
        }
    }

    #[test]
    fn a_batch_is_named_after_its_first_file_and_all_its_keys() {
        let a = "accelerometer/landing/a.json";
        let b = "accelerometer/landing/b.json";
        let c = "accelerometer/landing/c.json";
        let one = Batch::new(&sources(&[b, a]), 10, 10).unwrap();
        let same = Batch::new(&sources(&[a, b]), 10, 10).unwrap();
        let other = Batch::new(&sources(&[a, b, c]), 10, 10).unwrap();
        assert_eq!(one.stem(), same.stem());
        assert_eq!(
            one.stem(),
            format!("a.b{}", keys::hash_hex(&format!("{a}\n{b}")))
        );
        assert_ne!(one.stem(), other.stem());
        assert!(other.stem().starts_with("a.b"));
        // A lone file keeps its own objects.
        assert!(Batch::new(&sources(&[a]), 10, 10).is_none());
    }

    #[test]
    fn a_batch_holds_what_fits_and_forgets_what_failed() {
        let batch = Batch::new(
            &sources(&[
                "accelerometer/landing/a.json",
                "accelerometer/landing/b.json",
                "accelerometer/landing/c.json",
            ]),
            4,
            7,
        )
        .unwrap();
        let t = Table::AccelerometerTrusted;
        // What the batch holds, a `dt` a line: "<dt>: <source> <source> …".
        let held = |b: &Batch| -> Vec<String> {
            let parts = b.parts.lock().unwrap();
            parts
                .iter()
                .map(|((_, dt), s)| {
                    let names: String = s.keys().map(|k| format!(" {k}")).collect();
                    format!("{dt}:{names}")
                })
                .collect()
        };
        assert!(batch.take(
            t,
            "a",
            &[part("2022-06-18", b"ab"), part("2022-06-19", b"c")]
        ));
        assert!(batch.take(t, "b", &[part("2022-06-18", b"abcd")]));
        assert_eq!(held(&batch), ["2022-06-18: a b", "2022-06-19: a"]);
        // Computed again: what it gave before is replaced, not added to.
        assert!(batch.take(t, "a", &[part("2022-06-19", b"cd")]));
        // Too large (5 bytes > 4), or nothing: its own objects, nothing left in the batch.
        assert!(!batch.take(t, "b", &[part("2022-06-18", b"abcde")]));
        assert!(!batch.take(t, "a", &[]));
        assert_eq!(held(&batch), ["2022-06-18:", "2022-06-19:"]);
        assert!(batch.take(t, "b", &[part("2022-06-18", b"x")]));
        batch.discard(t, "b");
        assert_eq!(held(&batch), ["2022-06-18:", "2022-06-19:"]);
        // Once a file's manifest names the batch, a later failure keeps its rows in it.
        assert!(batch.take(t, "a", &[part("2022-06-18", b"x")]));
        batch.commit(t, "a");
        batch.discard(t, "a");
        assert_eq!(held(&batch), ["2022-06-18: a", "2022-06-19:"]);
        // What fits alone but not with what the batch holds (1 + 4 + 3 > 7) gets its own
        // objects; the rest still fits.
        assert!(batch.take(t, "b", &[part("2022-06-19", b"abcd")]));
        assert!(!batch.take(t, "c", &[part("2022-06-18", b"abc")]));
        assert!(batch.take(t, "c", &[part("2022-06-18", b"ab")]));
        assert_eq!(held(&batch), ["2022-06-18: a c", "2022-06-19: b"]);
    }
}
