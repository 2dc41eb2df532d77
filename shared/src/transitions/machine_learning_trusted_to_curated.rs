//! step_trainer_trusted / accelerometer_trusted (new object) → machine_learning_curated,
//! per arrival: the work of one new object depends on that object and the objects it
//! actually joins with, never on how many objects its `dt` already holds.
//!
//! An output holds one *pair* of trusted objects of one `dt`: a Step Trainer object and a
//! phone object one of whose users owns one of its serials, joined at the same
//! millisecond. It is named `<step stem>.<hash of the phone stem>.parquet` and computed
//! from those two objects alone (and the phone users' devices), so either side computes
//! the same bytes, and whichever side arrives second writes it.
//!
//! The other side is found through the join index, entries `<s|p>.<stem>` of the index
//! table ([`crate::index`]) under partition `<bucket>/join/dt=<dt>/<serial hash>` (a write
//! unit each, where an S3 marker cost a PUT), and one under the `dt`'s roster
//! `<bucket>/join/dt=<dt>`: an arrival registers under each serial it holds (a phone
//! object: its users' devices, from the customer_trusted shards), then queries those
//! folders for the other side. Both sides register before they
//! look, so of two concurrent arrivals at least one sees the other (the queries are
//! strongly consistent); when both do, both write the same key with the same bytes, and no
//! row is held twice. An object with more than `ML_WIDE_SERIALS` serials (a bulk file)
//! registers once under `wide` and queries the `dt`'s roster instead. A lake of an earlier
//! release kept the index as empty S3 objects `_stedi/join/dt=<dt>/<folder>/<s|p>.<stem>`:
//! while a `dt` still holds any (one LIST of at most one key tells), they are listed too,
//! until `reconcile` moves them into the table.
//!
//! Each object's side manifest, `_stedi/lineage/machine_learning_curated/dt=<dt>/<s|p>/
//! <stem>.json`, records its ETag, its serial hashes and each phone user's device as read:
//! `reconcile` recomputes only the sides whose inputs changed, and a replaced or deleted
//! object takes exactly its own pairs with it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow_array::RecordBatch;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::columnar::{Part, Strings, read_parquet_keyed};
use crate::compute::{ml_pair, step_readings};
use crate::error::{Error, Result};
use crate::keys::{self, SourceKey};
use crate::rules::MlJoin;
use crate::schema::Table;
use crate::store::Fetched;
use crate::summary::Summary;

use super::customer_trusted_to_curated::IN_FLIGHT;
use super::reference::SerialOf;
use super::{Answers, Ctx, LAYOUT, prune_partition, read_json};

/// The join-index folder of objects registered for their whole `dt`.
const WIDE: &str = "wide";

/// The two inputs of the join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// step_trainer_trusted.
    Step,
    /// accelerometer_trusted.
    Phone,
}

impl Side {
    /// Both sides.
    pub const ALL: [Side; 2] = [Side::Step, Side::Phone];

    /// The side a trusted table feeds, if any.
    pub fn of(table: Table) -> Option<Side> {
        match table {
            Table::StepTrainerTrusted => Some(Side::Step),
            Table::AccelerometerTrusted => Some(Side::Phone),
            _ => None,
        }
    }

    /// The table of this side's objects.
    pub fn table(self) -> Table {
        match self {
            Side::Step => Table::StepTrainerTrusted,
            Side::Phone => Table::AccelerometerTrusted,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Side::Step => "s",
            Side::Phone => "p",
        }
    }

    fn from_tag(tag: &str) -> Option<Side> {
        Side::ALL.into_iter().find(|s| s.tag() == tag)
    }

    fn other(self) -> Side {
        match self {
            Side::Step => Side::Phone,
            Side::Phone => Side::Step,
        }
    }
}

/// Where an earlier release kept the join index as S3 objects.
pub const JOIN_PREFIX: &str = "_stedi/join/";

/// The S3 join-index folder of `dt` an earlier release kept.
pub fn join_prefix(dt: &str) -> String {
    format!("{JOIN_PREFIX}dt={dt}/")
}

/// The index partition of join-index folder `folder` (a serial hash, or `wide`) of `dt` in
/// `bucket`'s lake: one query finds who registered there.
pub fn join_partition(bucket: &str, dt: &str, folder: &str) -> String {
    format!("{bucket}/join/dt={dt}/{folder}")
}

/// The index partition of every object registered in `dt`, whatever its folders: what a
/// wide object queries (one entry an object, not one a serial).
pub fn roster_partition(bucket: &str, dt: &str) -> String {
    format!("{bucket}/join/dt={dt}")
}

/// The sort key of object `stem` of `side` in a join-index partition.
fn entry(side: Side, stem: &str) -> String {
    format!("{}.{stem}", side.tag())
}

/// The S3 marker an earlier release kept for the registration under `folder`.
fn marker_key(dt: &str, folder: &str, side: Side, stem: &str) -> String {
    format!("{}{folder}/{}", join_prefix(dt), entry(side, stem))
}

/// The index entries S3 marker `key` of an earlier release stands for, if it is one: its
/// folder's and the `dt` roster's.
pub fn legacy_marker(bucket: &str, key: &str) -> Option<[(String, String); 2]> {
    let rest = key.strip_prefix(JOIN_PREFIX)?.strip_prefix("dt=")?;
    let (dt, rest) = rest.split_once('/')?;
    let (folder, side, stem) = parse_marker(rest)?;
    Some([
        (join_partition(bucket, dt, folder), entry(side, stem)),
        (roster_partition(bucket, dt), entry(side, stem)),
    ])
}

/// `(folder, side, stem)` of a join-index key relative to its `dt` folder.
fn parse_marker(rest: &str) -> Option<(&str, Side, &str)> {
    let (folder, name) = rest.split_once('/')?;
    let (side, stem) = parse_entry(name)?;
    Some((folder, side, stem))
}

/// `(side, stem)` of a join-index entry's sort key.
fn parse_entry(name: &str) -> Option<(Side, &str)> {
    let (tag, stem) = name.split_once('.')?;
    Some((Side::from_tag(tag)?, stem))
}

/// The side manifest of object `stem` of `side` in `dt`.
pub fn side_manifest_key(dt: &str, side: Side, stem: &str) -> String {
    format!(
        "{}dt={dt}/{}/{stem}.json",
        keys::lineage_prefix(Table::MachineLearningCurated),
        side.tag()
    )
}

/// `(dt, side, stem)` of a side manifest key, if `key` is one.
pub fn parse_side_manifest(key: &str) -> Option<(String, Side, String)> {
    let prefix = keys::lineage_prefix(Table::MachineLearningCurated);
    let rest = key.strip_prefix(&prefix)?.strip_prefix("dt=")?;
    let (dt, rest) = rest.split_once('/')?;
    let (tag, name) = rest.split_once('/')?;
    let stem = name.strip_suffix(".json")?;
    Some((dt.to_string(), Side::from_tag(tag)?, stem.to_string()))
}

/// The output holding the pair (Step Trainer object `step`, phone object `phone`) of `dt`.
pub fn pair_key(dt: &str, step: &str, phone: &str) -> String {
    let name = format!("{step}.{}", keys::hash_hex(phone));
    keys::output_key(Table::MachineLearningCurated, dt, &name)
}

/// What one trusted object contributes to the join, and what it was computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideManifest {
    /// Layout version ([`LAYOUT`]).
    pub layout: u32,
    /// ETag of the trusted object when it was joined.
    pub source_etag: String,
    /// Hashes of the serials its rows belong to (a phone object: its users' devices).
    pub groups: BTreeSet<String>,
    /// Registered once for its whole `dt` (more than `ML_WIDE_SERIALS` serials).
    pub wide: bool,
    /// Each phone user's device as read from customer_trusted (user hash → serial).
    pub refs: BTreeMap<String, String>,
}

impl SideManifest {
    /// The join-index folders the object is registered in.
    fn folders(&self) -> BTreeSet<&str> {
        if self.wide {
            BTreeSet::from([WIDE])
        } else {
            self.groups.iter().map(String::as_str).collect()
        }
    }

    /// Whether an object of the other side registered in `folder` may pair with this one.
    fn meets(&self, folder: &str) -> bool {
        self.wide || folder == WIDE || self.groups.contains(folder)
    }

    /// Whether this object and `other` (of the other side) may pair.
    pub fn meets_side(&self, other: &SideManifest) -> bool {
        self.wide || other.wide || self.groups.intersection(&other.groups).next().is_some()
    }

    /// Whether the object still has ETag `etag` and every user still has the recorded
    /// device (`current`: user hash → serial now).
    pub fn fresh(&self, etag: &str, current: &Answers) -> bool {
        self.layout == LAYOUT && self.source_etag == etag && current.all_current(&self.refs)
    }
}

/// The rows of one trusted object, read once.
enum Rows {
    /// The object's devices, indexed once for every pair it makes.
    Step(MlJoin),
    Phone {
        batches: Vec<RecordBatch>,
        /// User → device serial (consenting customers with a serial).
        serial_of: HashMap<String, String>,
    },
}

/// One trusted object, read, with the side manifest it gets.
struct Loaded {
    stem: String,
    rows: Rows,
    manifest: SideManifest,
}

impl Loaded {
    fn row_count(&self) -> u64 {
        match &self.rows {
            Rows::Step(join) => join.readings(),
            Rows::Phone { batches, .. } => batches.iter().map(|b| b.num_rows() as u64).sum(),
        }
    }
}

/// Devices of `users` from the customer_trusted shards they fall in (warm-cached by ETag),
/// and the lineage: each user's hash → their serial (`""` without one).
async fn serials_of(
    ctx: &Ctx,
    bucket: &str,
    users: BTreeSet<&str>,
) -> Result<(HashMap<String, String>, BTreeMap<String, String>)> {
    let shards = ctx.cfg.customer_shards;
    let mut by_shard: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for u in users {
        by_shard
            .entry(keys::shard_of(u, shards))
            .or_default()
            .push(u);
    }
    let (mut serial_of, mut refs) = (HashMap::new(), BTreeMap::new());
    for (shard, users) in by_shard {
        let (_, index, _) = ctx.reference::<SerialOf>(bucket, shard).await?;
        for u in users {
            let serial = index.get(u).first().map(|SerialOf(s)| s.to_string());
            refs.insert(keys::hash_hex(u), serial.clone().unwrap_or_default());
            if let Some(serial) = serial {
                serial_of.insert(u.to_string(), serial);
            }
        }
    }
    Ok((serial_of, refs))
}

tokio::task_local! {
    /// Set while `reconcile` rejoins objects: every phone object's devices are read from
    /// the customer shards, none taken from its side manifest.
    static FRESH_DEVICES: ();
}

/// Runs `f` with every phone object's devices read from the customer shards (reconcile's
/// rejoin: a side manifest being rewritten by a concurrent item must not be trusted).
pub async fn with_fresh_devices<F: std::future::Future>(f: F) -> F::Output {
    FRESH_DEVICES.scope((), f).await
}

/// Which devices a phone object is loaded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Devices {
    /// Read from the customer shards now (the arriving object itself).
    Read,
    /// As its side manifest recorded them, if that manifest is of this very object (one
    /// GET instead of one per user's shard; the object's own arrival read them moments
    /// ago, and `reconcile` rejoins it if they changed since); else read.
    Recorded,
}

/// The devices phone object `stem`'s side manifest recorded for `users`, if the manifest
/// is of the object with ETag `etag` and names every user.
async fn recorded_serials(
    ctx: &Ctx,
    bucket: &str,
    dt: &str,
    stem: &str,
    etag: &str,
    users: &BTreeSet<&str>,
) -> Result<Option<(HashMap<String, String>, BTreeMap<String, String>)>> {
    let key = side_manifest_key(dt, Side::Phone, stem);
    let Some(m) = read_json::<SideManifest>(ctx, bucket, &key).await? else {
        return Ok(None);
    };
    if m.layout != LAYOUT || m.source_etag != etag {
        return Ok(None);
    }
    let mut serial_of = HashMap::new();
    for u in users {
        match m.refs.get(&keys::hash_hex(u)) {
            Some(serial) if !serial.is_empty() => {
                serial_of.insert(u.to_string(), serial.clone());
            }
            Some(_) => {}
            None => return Ok(None),
        }
    }
    Ok(Some((serial_of, m.refs)))
}

/// Reads trusted object `stem` of `side` in `dt` (`None` when it is gone).
async fn load(
    ctx: &Ctx,
    bucket: &str,
    side: Side,
    dt: &str,
    stem: &str,
    devices: Devices,
) -> Result<Option<Loaded>> {
    let key = keys::output_key(side.table(), dt, stem);
    let Fetched::Body(bytes, etag) = super::compact::fetch_working(ctx, bucket, &key).await? else {
        return Ok(None);
    };
    let (rows, serials, refs) = match side {
        Side::Step => {
            const COLUMNS: [&str; 3] = ["sensorreadingtime", "serialnumber", "distancefromobject"];
            let batches = read_parquet_keyed(bytes, &COLUMNS, &["serialnumber"], &key)?;
            let readings = step_readings(&batches, &key)?;
            let join = MlJoin::of_devices(readings);
            let serials: BTreeSet<String> = join.serials().map(str::to_string).collect();
            (Rows::Step(join), serials, BTreeMap::new())
        }
        Side::Phone => {
            const COLUMNS: [&str; 5] = ["user", "timestamp", "x", "y", "z"];
            let batches = read_parquet_keyed(bytes, &COLUMNS, &["user"], &key)?;
            let mut users = BTreeSet::new();
            for b in &batches {
                users.extend(Strings::of(b, "user", &key)?.runs());
            }
            let fresh = devices == Devices::Read || FRESH_DEVICES.try_with(|_| ()).is_ok();
            let recorded = match fresh {
                true => None,
                false => recorded_serials(ctx, bucket, dt, stem, &etag, &users).await?,
            };
            let (serial_of, refs) = match recorded {
                Some(r) => r,
                None => serials_of(ctx, bucket, users).await?,
            };
            let serials = serial_of.values().cloned().collect();
            // Batches borrow nothing from the user set: it is dropped here.
            (Rows::Phone { batches, serial_of }, serials, refs)
        }
    };
    let manifest = SideManifest {
        layout: LAYOUT,
        source_etag: etag,
        wide: serials.len() > ctx.cfg.ml_wide_serials,
        groups: serials.iter().map(|s| keys::hash_hex(s)).collect(),
        refs,
    };
    Ok(Some(Loaded {
        stem: stem.to_string(),
        rows,
        manifest,
    }))
}

/// The pair output of two loaded objects of opposite sides: its key, and its rows and bytes
/// (`None` when nothing joins).
fn pair(ctx: &Ctx, dt: &str, a: &Loaded, b: &Loaded) -> Result<(String, Option<Part>)> {
    let (step, phone) = match (&a.rows, &b.rows) {
        (Rows::Step(_), _) => (a, b),
        _ => (b, a),
    };
    let key = pair_key(dt, &step.stem, &phone.stem);
    let (Rows::Step(readings), Rows::Phone { batches, serial_of }) = (&step.rows, &phone.rows)
    else {
        return Err(Error::BadEvent(format!(
            "{key}: a pair needs one Step Trainer and one phone object"
        )));
    };
    let rows = ml_pair(
        readings,
        batches,
        serial_of,
        dt,
        ctx.cfg.row_group_rows,
        &key,
    )?;
    Ok((key, rows))
}

/// Whether `dt` may still have join-index markers an earlier release kept in S3: none once
/// `_stedi/join/` is empty (`reconcile` has moved them into the index table, or there never
/// were any), which a warm function remembers (nothing writes them any more); else one
/// LIST of at most one key of the `dt`'s folder.
async fn legacy_markers(ctx: &Ctx, bucket: &str, dt: &str) -> Result<bool> {
    Ok(ctx.holds_legacy(bucket, JOIN_PREFIX).await?
        && ctx.store.any(bucket, &join_prefix(dt)).await?)
}

/// Stems of the other side's objects registered where `m`'s object may meet them: one
/// query per folder and `wide` (the `dt` roster for a wide object), and with `legacy` one
/// LIST each of the S3 markers too.
async fn counterparts(
    ctx: &Ctx,
    bucket: &str,
    dt: &str,
    side: Side,
    m: &SideManifest,
    legacy: bool,
) -> Result<BTreeSet<String>> {
    // (partition, S3 folder of an earlier release) of each look.
    let looks: Vec<(String, String)> = match m.wide {
        true => vec![(roster_partition(bucket, dt), String::new())],
        false => (m.folders().into_iter().chain([WIDE]))
            .map(|folder| (join_partition(bucket, dt, folder), format!("{folder}/")))
            .collect(),
    };
    let prefix = join_prefix(dt);
    let found: Vec<Vec<(Side, String)>> = stream::iter(looks)
        .map(|(partition, folder)| {
            let prefix = prefix.clone();
            async move {
                let mut found: Vec<(Side, String)> = ctx
                    .index
                    .query(&partition, "")
                    .await?
                    .iter()
                    .filter_map(|k| parse_entry(k).map(|(s, stem)| (s, stem.to_string())))
                    .collect();
                if legacy {
                    let listed = ctx.store.list(bucket, &format!("{prefix}{folder}")).await?;
                    found.extend(listed.iter().filter_map(|k| {
                        let (f, s, stem) = parse_marker(&k[prefix.len()..])?;
                        m.meets(f).then(|| (s, stem.to_string()))
                    }));
                }
                Ok::<_, Error>(found)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(found
        .into_iter()
        .flatten()
        .filter(|(s, _)| *s == side.other())
        .map(|(_, stem)| stem)
        .collect())
}

/// Joins one new (or replaced, or deleted) trusted object with the other side.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let mut s = Summary::default();
    let (Some(side), Some(dt)) = (Side::of(src.table), src.dt.as_deref()) else {
        return Ok(s);
    };
    // Plan: what this object registered before, then the object itself.
    let mkey = side_manifest_key(dt, side, &src.stem);
    let before = read_json::<SideManifest>(ctx, bucket, &mkey).await?;
    let Some(me) = load(ctx, bucket, side, dt, &src.stem, Devices::Read).await? else {
        // Deleted since the event: its pairs go with it.
        unjoin(ctx, bucket, dt, side, &src.stem, before, &mut s).await?;
        return Ok(s);
    };
    s.rows_in += me.row_count();
    // Register, then look: of two concurrent arrivals at least one sees the other.
    let now = me.manifest.folders();
    let had: BTreeSet<&str> = before.as_ref().map(|b| b.folders()).unwrap_or_default();
    // The roster entry every run (a write unit): an object first registered by an earlier
    // release's S3 markers has none until `reconcile` moves them.
    let mine = entry(side, &src.stem);
    let markers: Vec<(String, String)> = now
        .difference(&had)
        .map(|folder| (join_partition(bucket, dt, folder), mine.clone()))
        .chain([(roster_partition(bucket, dt), mine.clone())])
        .collect();
    ctx.index.put(markers).await?;
    let legacy = legacy_markers(ctx, bucket, dt).await?;
    let others = counterparts(ctx, bucket, dt, side, &me.manifest, legacy).await?;
    // Read the other side, join, write.
    let (mut written, mut deleted) = (false, false);
    for stem in &others {
        let Some(other) = load(ctx, bucket, side.other(), dt, stem, Devices::Recorded).await?
        else {
            continue; // deleted: its own event removes its pairs
        };
        match pair(ctx, dt, &me, &other)? {
            (key, Some(Part { rows, bytes, .. })) => {
                ctx.store.put(bucket, &key, bytes).await?;
                s.rows_out += rows;
                s.outputs.push(key);
                written = true;
            }
            // Only a replaced object can leave a pair that no longer joins.
            (key, None) if before.is_some() => {
                super::compact::delete_working(ctx, bucket, &key).await?;
                s.deleted.push(key);
                deleted = true;
            }
            (_, None) => {}
        }
    }
    // Whatever the previous version registered and this one does not: its markers, and its
    // pairs with objects this version no longer meets.
    if let Some(b) = before.as_ref().filter(|b| b.folders() != now) {
        let gone: Vec<&str> = had.difference(&now).copied().collect();
        unregister(ctx, bucket, dt, side, &src.stem, &gone, false, legacy).await?;
        for stem in counterparts(ctx, bucket, dt, side, b, legacy)
            .await?
            .difference(&others)
        {
            let key = pair_of(dt, side, &src.stem, stem);
            super::compact::delete_working(ctx, bucket, &key).await?;
            s.deleted.push(key);
            deleted = true;
        }
    }
    // Publish: the partition, then the lineage.
    let target = Table::MachineLearningCurated;
    if written {
        ctx.register(bucket, target, &[dt.to_string()]).await?;
    }
    if deleted {
        prune_partition(ctx, bucket, target, dt).await?;
    }
    super::write_json(ctx, bucket, &mkey, &me.manifest).await?;
    Ok(s)
}

/// Takes object `stem` of `side` out of the join index's `folders` (and out of the `dt`
/// roster with `roster`; its S3 markers too with `legacy`).
#[allow(clippy::too_many_arguments)]
async fn unregister(
    ctx: &Ctx,
    bucket: &str,
    dt: &str,
    side: Side,
    stem: &str,
    folders: &[&str],
    roster: bool,
    legacy: bool,
) -> Result<()> {
    let mine = entry(side, stem);
    let mut entries: Vec<(String, String)> = folders
        .iter()
        .map(|folder| (join_partition(bucket, dt, folder), mine.clone()))
        .collect();
    if roster {
        entries.push((roster_partition(bucket, dt), mine));
    }
    ctx.index.remove(entries).await?;
    if legacy {
        for folder in folders {
            ctx.store
                .delete(bucket, &marker_key(dt, folder, side, stem))
                .await?;
        }
    }
    Ok(())
}

/// The pair key of this side's object `stem` and the other side's `other`.
fn pair_of(dt: &str, side: Side, stem: &str, other: &str) -> String {
    match side {
        Side::Step => pair_key(dt, stem, other),
        Side::Phone => pair_key(dt, other, stem),
    }
}

/// Removes a trusted object from the join: its pair outputs, its registrations and its
/// side manifest (`before`: that manifest, if the object was ever joined).
async fn unjoin(
    ctx: &Ctx,
    bucket: &str,
    dt: &str,
    side: Side,
    stem: &str,
    before: Option<SideManifest>,
    s: &mut Summary,
) -> Result<()> {
    let Some(before) = before else {
        return Ok(());
    };
    let legacy = legacy_markers(ctx, bucket, dt).await?;
    let folders: Vec<&str> = before.folders().into_iter().collect();
    unregister(ctx, bucket, dt, side, stem, &folders, true, legacy).await?;
    for other in counterparts(ctx, bucket, dt, side, &before, legacy).await? {
        let key = pair_of(dt, side, stem, &other);
        super::compact::delete_working(ctx, bucket, &key).await?;
        s.deleted.push(key);
    }
    ctx.store
        .delete(bucket, &side_manifest_key(dt, side, stem))
        .await?;
    prune_partition(ctx, bucket, Table::MachineLearningCurated, dt).await
}

/// Removes trusted object `stem` of `table` in `dt` from the join (its landing source no
/// longer has rows in that `dt`).
pub async fn forget(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    dt: &str,
    stem: &str,
    s: &mut Summary,
) -> Result<()> {
    let Some(side) = Side::of(table) else {
        return Ok(());
    };
    let before = read_json::<SideManifest>(ctx, bucket, &side_manifest_key(dt, side, stem)).await?;
    unjoin(ctx, bucket, dt, side, stem, before, s).await
}

/// Every side manifest of the lake by `dt`: `(side, stem, manifest)`.
pub async fn side_manifests(
    ctx: &Ctx,
    bucket: &str,
) -> Result<BTreeMap<String, Vec<(Side, String, SideManifest)>>> {
    let mut out: BTreeMap<String, Vec<(Side, String, SideManifest)>> = BTreeMap::new();
    let prefix = keys::lineage_prefix(Table::MachineLearningCurated);
    for key in ctx.store.list(bucket, &prefix).await? {
        let Some((dt, side, stem)) = parse_side_manifest(&key) else {
            continue;
        };
        if let Some(m) = read_json::<SideManifest>(ctx, bucket, &key).await? {
            out.entry(dt).or_default().push((side, stem, m));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_keys_parse_back() {
        let m = side_manifest_key("2022-06-18", Side::Phone, "a.b__c");
        assert_eq!(
            m,
            "_stedi/lineage/machine_learning_curated/dt=2022-06-18/p/a.b__c.json"
        );
        assert_eq!(
            parse_side_manifest(&m),
            Some(("2022-06-18".into(), Side::Phone, "a.b__c".into()))
        );
        // A manifest of the earlier layout (one per Step Trainer object) is not a side's.
        let old = "_stedi/lineage/machine_learning_curated/dt=2022-06-18/x.json";
        assert_eq!(parse_side_manifest(old), None);
        let k = marker_key("2022-06-18", "00ff", Side::Step, "s.1");
        assert_eq!(k, "_stedi/join/dt=2022-06-18/00ff/s.s.1");
        let rest = &k[join_prefix("2022-06-18").len()..];
        assert_eq!(parse_marker(rest), Some(("00ff", Side::Step, "s.1")));
        assert_eq!(
            parse_entry(&entry(Side::Step, "s.1")),
            Some((Side::Step, "s.1"))
        );
        // An earlier release's S3 marker is the index entries of the same registration:
        // its folder's and the dt roster's.
        let e = entry(Side::Step, "s.1");
        assert_eq!(
            legacy_marker("lake", &k),
            Some([
                ("lake/join/dt=2022-06-18/00ff".to_string(), e.clone()),
                ("lake/join/dt=2022-06-18".to_string(), e)
            ])
        );
        assert_eq!(legacy_marker("lake", "_stedi/join/dt=2022-06-18/x"), None);
        assert_eq!(legacy_marker("lake", "_stedi/persons/x/y"), None);
        assert_eq!(
            pair_key("2022-06-18", "st", "ph"),
            format!(
                "step_trainer/curated/dt=2022-06-18/st.{}.parquet",
                keys::hash_hex("ph")
            )
        );
    }

    #[test]
    fn sides_meet_through_a_shared_serial_or_a_wide_registration() {
        let m = |groups: &[&str], wide| SideManifest {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            wide,
            ..SideManifest::default()
        };
        assert!(m(&["a", "b"], false).meets_side(&m(&["b"], false)));
        assert!(!m(&["a"], false).meets_side(&m(&["b"], false)));
        assert!(m(&["a"], true).meets_side(&m(&["b"], false)));
        assert!(m(&["a"], false).meets(WIDE));
        assert!(!m(&["a"], false).meets("b"));
        assert_eq!(m(&["a", "b"], true).folders(), BTreeSet::from([WIDE]));
        let current = Answers::new([("u@x", "e1")]);
        let mut fresh = m(&[], false);
        fresh.layout = LAYOUT;
        fresh.source_etag = "x".into();
        fresh.refs = BTreeMap::from([(keys::hash_hex("u@x"), "e1".to_string())]);
        assert!(fresh.fresh("x", &current));
        assert!(!fresh.fresh("y", &current));
        let changed = Answers::new([("u@x", "e2")]);
        assert!(!fresh.fresh("x", &changed));
    }
}
