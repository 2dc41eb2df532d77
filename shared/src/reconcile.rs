//! `reconcile`: brings every trusted and curated table to exactly the batch truth over all
//! landing data, whatever order the events came in; also the backfill for data that was in
//! the bucket before deployment, and what makes a consent withdrawal take effect.
//!
//! It scales out: [`plan`] compares each output's recorded lineage (source ETag, the ETag of
//! every reference shard consulted, see [`crate::transitions::Manifest`]) with the
//! current state and returns one work [`Item`] per stale source object or (step trainer
//! object, `dt`); items are fanned out through the reconcile queue and each is one ordinary
//! transition run. The tables depend on each other in order — customer_trusted,
//! accelerometer_trusted, customer_curated, step_trainer_trusted, machine_learning_curated —
//! so a plan stops at the first stage with stale items; planning again after they ran
//! continues with the next stage, until a plan finds nothing to do. The customer shards and
//! the device index are recomputed by the planner itself, a group of shards at a time
//! ([`group_count`]: memory holds one group's latest records, plus 16 bytes per customer
//! and per reading user for the staleness checks), which also migrates a lake of an
//! earlier layout (single snapshot objects, manifests inside table locations). A
//! [`Scope::Changed`] pass takes the customer_trusted shards as they are and holds only the
//! customer files written since the last pass against them, planning those their shards do
//! not reflect as items of the customer function.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::columnar::{Strings, read_parquet_keyed};
use crate::compute::{PersonKind, RowOutcome};
use crate::error::{Error, Result};
use crate::keys;
use crate::lambda::{WorkItem, send_batch};
use crate::record::Cell;
use crate::rules::{self, Customers, DeviceEntry};
use crate::schema::Table;
use crate::store::Fetched;
use crate::streams::Rule;
use crate::summary::Summary;
use crate::transitions::{
    Answers, Ctx, IN_FLIGHT_SECONDS, LAYOUT, Manifest, Transition, all_manifests, by_shard,
    compact, decode_customers, device_entries, encode_devices, erasure,
    machine_learning_trusted_to_curated as ml, migrate_manifests, prune_partition, read_landing,
    read_manifest, rewrite_object_from, rewrite_shard_from,
};

/// One unit of reconcile work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "item")]
pub enum Item {
    /// Run a landing transition on one landing object.
    Landing {
        /// `accelerometer_landing_to_trusted` or `step_trainer_landing_to_trusted`, or
        /// `customer_landing_to_trusted` for a customer file a changed pass found its event
        /// lost for (by name on the wire).
        function: Transition,
        /// The landing object.
        key: String,
    },
    /// Compute one reading file again, with what its outputs feed, as the customer function
    /// does for the files of a customer whose consent or device changed (sent here when they
    /// are too many for its invocation).
    Recompute {
        /// The landing object.
        key: String,
    },
    /// Check the reading files of these persons again, some minutes after a consent or
    /// device change, and compute again those computed with an answer no longer current
    /// (see [`crate::transitions::recheck`]).
    Recheck {
        /// The persons: keyed hashes, as the erasure index names them (no e-mail or serial
        /// travels through the queue).
        persons: Vec<String>,
    },
    /// Remove the outputs of a landing object that no longer exists.
    Orphan {
        /// The trusted table (by name on the wire).
        table: Table,
        /// The vanished source's stem.
        stem: String,
    },
    /// Join one trusted object again (machine_learning_curated).
    Ml {
        /// The step_trainer_trusted or accelerometer_trusted object (it may be gone: its
        /// pairs are then deleted).
        key: String,
    },
    /// Take a landing file's rows out of a batch object its manifest does not name (a copy
    /// left by two invocations computing the file at once); the object goes once empty.
    Detach {
        /// The batch object (a trusted object's own key).
        key: String,
        /// The landing file's stem, as the object's footer lists it.
        stem: String,
        /// The landing file's key, when it still exists: computed again should its manifest
        /// come to name the object while the rows are taken out (a redelivery of the same
        /// batch racing the item).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        landing: Option<String>,
    },
    /// Delete an output no current source produces (or bookkeeping of an earlier layout).
    Stray {
        /// The object.
        key: String,
    },
}

/// What a planning pass found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// The stage the items belong to (the table they rebuild), or `None` when in step.
    pub stage: Option<Table>,
    /// Work to fan out.
    pub items: Vec<Item>,
    /// Snapshot tables the planner rewrote, with the customers added and removed.
    pub snapshots: Vec<(Table, usize, usize)>,
    /// Bookkeeping objects moved out of table locations (lakes of the earlier layout).
    pub migrated: usize,
    /// Device-index shards the planner rewrote.
    pub device_shards: usize,
    /// Groups of customer shards the planner took one at a time (see [`group_count`]).
    pub groups: u32,
    /// The most customers (latest records) it held at once.
    pub most_held: usize,
    /// Consenting customers (rows of customer_trusted).
    pub consenting: usize,
    /// Another `CUSTOMER_SHARDS` when the shards hold more than twice
    /// [`CUSTOMERS_PER_SHARD`] or under an eighth of it (see [`advised_shards`]).
    pub advised_shards: Option<u32>,
}

/// What a planning pass checks of the reading files: its scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every reading file's manifest is read and held against the file's ETag and the
    /// current answers of the customers and devices it consulted (one GET a file), and the
    /// batch objects' footers against the manifests. A direct invocation, `stedi
    /// reconcile` and `ReconcileFullSchedule`.
    #[default]
    Full,
    /// The customer files written since the last pass that found nothing to do are held
    /// against the customer_trusted shards (those the shards do not reflect become items
    /// of the customer function); the others are not read. While the customer shards and
    /// the device index are already in step (the pass rewrote none), a reading file is
    /// taken for current when its manifest was written
    /// at or after the file's own last write, both read off the LISTs, and, for the
    /// manifests written since the last pass that found nothing to do, when the manifest
    /// records the file's ETag and its objects are there (or on their way): one GET per
    /// file arrived since, not per file held. It finds what an event was lost for, not an
    /// answer gone stale behind a lost recheck nor a copy of a file's rows left in a
    /// second batch object: those wait for the full pass. `ReconcileSchedule`.
    Changed,
}

/// Consenting customers a shard is sized for. A one-record customer file rewrites one
/// customer_trusted shard and one device-index shard, so their size is its cost: ~250
/// consenting customers a shard is ~15 KB written (`make bench-scale`: 100k registrations
/// at 256 shards, and 1M at 2048).
pub const CUSTOMERS_PER_SHARD: usize = 250;

/// The shard count that brings `consenting` customers back to about [`CUSTOMERS_PER_SHARD`]
/// a shard (a power of two, 1 to 65536), when `shards` holds more than twice that (a
/// one-record customer file rewrites a shard), or, in a lake of at least that many
/// consenting customers, fewer than an eighth of it (a file of many users, or a batch of
/// files, reads a shard for each user's: with a customer or two a shard, a read for nearly
/// every user); `None` while they fit. An empty lake gets no advice: a launch sets its
/// count for the customers it expects.
pub fn advised_shards(consenting: usize, shards: u32) -> Option<u32> {
    let want = consenting
        .div_ceil(CUSTOMERS_PER_SHARD)
        .next_power_of_two()
        .min(65536) as u32;
    let capacity = CUSTOMERS_PER_SHARD * shards as usize;
    let too_large = consenting > 2 * capacity && want > shards;
    let too_many = consenting >= CUSTOMERS_PER_SHARD && 8 * consenting < capacity && want < shards;
    (too_large || too_many).then_some(want)
}

impl Plan {
    /// Whether the lake already equals the batch truth.
    pub fn is_done(&self) -> bool {
        self.items.is_empty()
            && self.snapshots.is_empty()
            && self.migrated == 0
            && self.device_shards == 0
    }
}

/// The customer shards the planner holds at one time: those with `shard % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    index: u32,
    count: u32,
}

impl Group {
    fn all(count: u32) -> impl Iterator<Item = Group> {
        (0..count).map(move |index| Group { index, count })
    }

    fn holds_shard(self, shard: u32) -> bool {
        shard % self.count == self.index
    }

    /// The group (of `count`) the e-mail or serial `key` falls in: its shard's.
    fn of(key: &str, shards: u32, count: u32) -> u32 {
        keys::shard_of(key, shards) % count.max(1)
    }
}

/// How many groups the planner splits the customers into: enough that each group's share
/// of the customer landing JSON (`landing_bytes` in all) is at most `group_bytes`; at least
/// one, at most one per shard. With more than one, the landing rows are spilled to local
/// files by group (one read of the landing objects, about their size on `/tmp`); memory
/// holds one group's customers.
pub fn group_count(landing_bytes: u64, group_bytes: u64, shards: u32) -> u32 {
    let n = landing_bytes
        .div_ceil(group_bytes.max(1))
        .clamp(1, u64::from(shards.max(1)));
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Latest record per e-mail of the only group, over the customer landing objects
/// `landing` (unreadable lines skipped: the landing transition quarantines them).
async fn all_customers(ctx: &Ctx, bucket: &str, landing: &[String]) -> Result<Customers> {
    let mut latest = Customers::default();
    for key in landing {
        offer_file(ctx, bucket, key, &mut latest, None).await?;
    }
    Ok(latest)
}

/// Offers the records of customer landing object `key` to `latest` (those of e-mail `only`,
/// when given; unreadable lines skipped).
async fn offer_file(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    latest: &mut Customers,
    only: Option<&str>,
) -> Result<()> {
    read_landing(ctx, bucket, key, Table::CustomerLanding, |cells| {
        if only.is_none_or(|e| cells[rules::customer::EMAIL].as_str() == Some(e)) {
            latest.offer(cells.iter().cloned().map(|c| c.into_owned()).collect());
        }
        Ok(RowOutcome::Kept)
    })
    .await?;
    Ok(())
}

/// One cell of a spilled customer row.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Spilled {
    N,
    S(String),
    L(i64),
    D(f64),
}

/// Records split by group into local files (the function's `/tmp`), one JSON line each:
/// one pass over the input serves every group, and a group is read back alone. The folder
/// is removed when dropped.
struct Spill {
    dir: std::path::PathBuf,
    files: Vec<std::io::BufWriter<std::fs::File>>,
}

impl Spill {
    fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Spill {
            path: path.display().to_string(),
            source,
        }
    }

    fn json(path: &std::path::Path) -> impl FnOnce(serde_json::Error) -> Error + '_ {
        move |source| Error::Json {
            context: path.display().to_string(),
            source,
        }
    }

    /// An empty spill of `count` groups named `name`.
    fn new(name: &str, count: u32) -> Result<Spill> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "stedi-reconcile-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(Spill::io(&dir))?;
        let mut spill = Spill {
            dir,
            files: Vec::new(),
        };
        for g in 0..count {
            let path = spill.file(g);
            let f = std::fs::File::create(&path).map_err(Spill::io(&path))?;
            spill.files.push(std::io::BufWriter::new(f));
        }
        Ok(spill)
    }

    fn file(&self, group: u32) -> std::path::PathBuf {
        self.dir.join(format!("group-{group:05}.jsonl"))
    }

    /// Appends `record` to group `group`.
    fn push(&mut self, group: u32, record: &impl Serialize) -> Result<()> {
        use std::io::Write;
        let path = self.file(group);
        let Some(out) = self.files.get_mut(group as usize) else {
            return Ok(());
        };
        serde_json::to_writer(&mut *out, record).map_err(Spill::json(&path))?;
        out.write_all(b"\n").map_err(Spill::io(&path))
    }

    /// Reads group `group` back (everything pushed so far), record by record.
    fn read<T: serde::de::DeserializeOwned>(
        &mut self,
        group: u32,
        mut each: impl FnMut(T),
    ) -> Result<()> {
        use std::io::{BufRead, Write};
        let path = self.file(group);
        if let Some(out) = self.files.get_mut(group as usize) {
            out.flush().map_err(Spill::io(&path))?;
        }
        let f = std::fs::File::open(&path).map_err(Spill::io(&path))?;
        for line in std::io::BufReader::new(f).lines() {
            let line = line.map_err(Spill::io(&path))?;
            each(serde_json::from_str(&line).map_err(Spill::json(&path))?);
        }
        Ok(())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads every customer landing object once, spilling each row to the group of its e-mail.
async fn spill_customers(ctx: &Ctx, bucket: &str, landing: &[String], count: u32) -> Result<Spill> {
    let mut spill = Spill::new("customers", count)?;
    let shards = ctx.cfg.customer_shards;
    for key in landing {
        read_landing(ctx, bucket, key, Table::CustomerLanding, |cells| {
            if let Some(email) = cells[rules::customer::EMAIL].as_str() {
                let row: Vec<Spilled> = cells
                    .iter()
                    .map(|c| match c {
                        Cell::Null => Spilled::N,
                        Cell::Str(s) => Spilled::S(s.to_string()),
                        Cell::Long(n) => Spilled::L(*n),
                        Cell::Double(d) => Spilled::D(*d),
                    })
                    .collect();
                spill.push(Group::of(email, shards, count), &row)?;
            }
            Ok(RowOutcome::Kept)
        })
        .await?;
    }
    Ok(spill)
}

/// Latest record per e-mail of one spilled group.
fn spilled_customers(spill: &mut Spill, group: u32) -> Result<Customers> {
    let mut latest = Customers::default();
    spill.read(group, |row: Vec<Spilled>| {
        latest.offer(
            row.into_iter()
                .map(|c| match c {
                    Spilled::N => Cell::Null,
                    Spilled::S(s) => Cell::Str(s.into()),
                    Spilled::L(n) => Cell::Long(n),
                    Spilled::D(d) => Cell::Double(d),
                })
                .collect(),
        )
    })?;
    Ok(latest)
}

/// The customers of `group`'s shards of a sharded customer table, as stored.
async fn shards_of(ctx: &Ctx, bucket: &str, table: Table, group: Group) -> Result<Customers> {
    let mut out = Customers::default();
    for shard in (0..ctx.cfg.customer_shards).filter(|s| group.holds_shard(*s)) {
        let key = keys::shard_key(table, shard);
        if let Fetched::Body(bytes, _) = ctx.store.fetch(bucket, &key, None).await? {
            out.rows.extend(decode_customers(bytes, &key)?.rows);
        }
    }
    Ok(out)
}

/// Distinct users of the readings that make a customer curated, held as 128-bit hashes
/// (SHA-256, truncated): 16 bytes a user however long the e-mail; two e-mails would have
/// to collide in 128 bits to be taken for each other.
#[derive(Debug, Default)]
struct Users(Vec<u128>);

impl Users {
    fn hash(user: &str) -> u128 {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(user.as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        u128::from_be_bytes(b)
    }

    fn contains(&self, user: &str) -> bool {
        self.0.binary_search(&Self::hash(user)).is_ok()
    }

    fn settle(&mut self) {
        self.0.sort_unstable();
        self.0.dedup();
    }
}

/// Distinct users of the readings that make a customer curated (the sources of the
/// [`Rule::CuratedByReadings`] transitions). Duplicates are folded as they pile up, so
/// memory follows the distinct users, not the objects read.
async fn reading_users(ctx: &Ctx, bucket: &str) -> Result<Users> {
    let mut users = Users::default();
    let mut settled = 0;
    for t in Transition::ALL {
        let Rule::CuratedByReadings { user } = t.rule() else {
            continue;
        };
        for &table in t.sources() {
            for key in trusted_objects(ctx, bucket, table).await? {
                let Fetched::Body(bytes, _) = compact::fetch_working(ctx, bucket, &key.0).await?
                else {
                    continue;
                };
                for b in read_parquet_keyed(bytes, &[user], &[user], &key.0)? {
                    users
                        .0
                        .extend(Strings::of(&b, user, &key.0)?.runs().map(Users::hash));
                }
                if users.0.len() > 2 * settled + (1 << 16) {
                    users.settle();
                    settled = users.0.len();
                }
            }
        }
    }
    users.settle();
    Ok(users)
}

/// The `dt=…/x.parquet` objects of a partitioned table (wherever kept, by their own keys),
/// with their ETags.
async fn trusted_objects(ctx: &Ctx, bucket: &str, table: Table) -> Result<Vec<(String, String)>> {
    Ok(compact::list_working(ctx, bucket, table.prefix())
        .await?
        .into_iter()
        .map(|o| (o.key, o.etag))
        .filter(|(k, _)| keys::accept(bucket, k, &[table]).is_ok())
        .collect())
}

/// Brings `group`'s shards of a sharded customer table to `want` (the group's customers):
/// each shard rewritten if it differs; with the first group, objects that are not a
/// current shard (the earlier layout's single snapshot, shards of a larger
/// `CUSTOMER_SHARDS`) are deleted. Returns (added or changed, removed) when it changed.
/// `full` is marked due before the first object is rewritten or deleted.
async fn converge_sharded(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    want: Customers,
    group: Group,
    full: &mut FullCheck,
) -> Result<Option<(usize, usize)>> {
    let shards = ctx.cfg.customer_shards;
    let mut parts = by_shard(want, shards);
    let (mut added, mut removed, mut changed) = (0, 0, false);
    let mut existing = BTreeSet::new();
    for key in ctx.store.list(bucket, table.prefix()).await? {
        match keys::shard_of_key(table, &key).filter(|k| *k < shards) {
            Some(k) => {
                existing.insert(k);
            }
            None if group.index == 0 => {
                full.mark(ctx, bucket).await?;
                ctx.store.delete(bucket, &key).await?;
                changed = true;
            }
            None => {}
        }
    }
    let mut s = Summary::default();
    for shard in (0..shards).filter(|s| group.holds_shard(*s)) {
        let want = parts.remove(&shard).unwrap_or_default();
        if want.rows.is_empty() && !existing.contains(&shard) {
            continue;
        }
        let key = keys::shard_key(table, shard);
        let seed = ctx.store.fetch(bucket, &key, None).await?;
        let current = match &seed {
            Fetched::Body(bytes, _) => decode_customers(bytes.clone(), &key)?,
            _ => Customers::default(),
        };
        if current == want {
            continue;
        }
        full.mark(ctx, bucket).await?;
        let mut diff = None;
        rewrite_shard_from(ctx, bucket, table, shard, Some(seed), &mut s, |cur| {
            if *cur == want {
                return None;
            }
            let a = want
                .rows
                .iter()
                .filter(|(e, r)| cur.rows.get(*e) != Some(*r))
                .count();
            let r = cur
                .rows
                .keys()
                .filter(|e| !want.rows.contains_key(*e))
                .count();
            diff = Some((a, r));
            Some(want.clone())
        })
        .await?;
        if let Some((a, r)) = diff {
            (added, removed, changed) = (added + a, removed + r, true);
        }
    }
    Ok(changed.then_some((added, removed)))
}

/// Adds one group's change of a snapshot table to the plan's.
fn add_snapshot(plan: &mut Plan, table: Table, change: Option<(usize, usize)>) {
    let Some((a, r)) = change else { return };
    match plan.snapshots.iter_mut().find(|(t, _, _)| *t == table) {
        Some((_, sa, sr)) => (*sa, *sr) = (*sa + a, *sr + r),
        None => plan.snapshots.push((table, a, r)),
    }
}

/// Brings `group`'s device-index shards to `entries` (the devices of the consenting
/// customers whose serial falls in the group: curated ones flagged curated, waiting ones
/// — no phone readings yet — not); with the first group, objects that are not a current
/// shard are deleted. Returns the shards rewritten or deleted, and what each serial answers
/// now (owned when one owner is curated, else waiting). `full` is marked due before the
/// first object is rewritten or deleted.
async fn converge_devices(
    ctx: &Ctx,
    bucket: &str,
    entries: Vec<DeviceEntry>,
    group: Group,
    full: &mut FullCheck,
) -> Result<(usize, Vec<(u64, u64)>)> {
    let shards = ctx.cfg.customer_shards;
    let mut answers: BTreeMap<u64, &str> = BTreeMap::new();
    for e in &entries {
        let answer = answers
            .entry(keys::fnv1a(&e.serial))
            .or_insert(crate::compute::WAITING);
        if e.curated {
            *answer = crate::compute::OWNED;
        }
    }
    let mut want = rules::devices_by_shard(entries, shards);
    let mut changed = 0;
    let mut s = Summary::default();
    for shard in (0..shards).filter(|s| group.holds_shard(*s)) {
        let mut entries = want.remove(&shard).unwrap_or_default();
        entries.sort();
        let key = keys::device_shard_key(shard);
        let current = |cur: &Option<Bytes>| -> Result<bool> {
            let mut have = match cur {
                Some(bytes) => device_entries(bytes, &key)?,
                None => Vec::new(),
            };
            have.sort();
            Ok(have == entries && (cur.is_some() || entries.is_empty()))
        };
        let seed = ctx.store.fetch(bucket, &key, None).await?;
        let body = match &seed {
            Fetched::Body(bytes, _) => Some(bytes.clone()),
            _ => None,
        };
        if current(&body)? {
            continue;
        }
        full.mark(ctx, bucket).await?;
        rewrite_object_from(ctx, bucket, &key, Some(seed), &mut s, |cur| {
            if current(&cur)? {
                return Ok(None);
            }
            changed += 1;
            encode_devices(&entries).map(Some)
        })
        .await?;
    }
    if group.index == 0 {
        for key in ctx.store.list(bucket, keys::DEVICES_PREFIX).await? {
            if keys::device_shard_of_key(&key).is_none_or(|k| k >= shards) {
                full.mark(ctx, bucket).await?;
                ctx.store.delete(bucket, &key).await?;
                changed += 1;
            }
        }
    }
    let answers = answers
        .into_iter()
        .map(|(k, a)| (k, keys::fnv1a(a)))
        .collect();
    Ok((changed, answers))
}

/// Landing objects of `t` whose outputs are missing or stale (another source ETag, a
/// reference shard consulted that has changed since, a manifest of an earlier layout),
/// and outputs whose source is gone. When all are fresh, the batch objects' footers are
/// held against the manifests both ways (see [`unlisted_and_stray`]). With `changed`
/// (a [`Scope::Changed`] over customers in step: the time before which every manifest
/// was checked), a file is stale when it has no manifest or was written after it, told
/// from the two LISTs; only the manifests written since are read ([`stale_recent`]).
async fn stale_landing(
    ctx: &Ctx,
    bucket: &str,
    t: Transition,
    refs_now: &Answers,
    changed: Option<i64>,
) -> Result<Vec<Item>> {
    let source = t.sources()[0];
    let target = t.target();
    let mut items = Vec::new();
    let mut stems = BTreeSet::new();
    let mut fresh_manifests = BTreeMap::new();
    let mut recent = Vec::new();
    // Each landing file's manifest (by stem), with when it was written; of each, only what
    // the plan needs: where its rows are and the source's ETag, and for a full pass only
    // when every reference it consulted still answers the same (the answers, one per person
    // consulted, are dropped as each is read).
    let mut written = all_manifests(ctx, bucket, target, |mut st| {
        st.manifest = st.manifest.and_then(|mut m| {
            if changed.is_none() && !(m.layout == LAYOUT && m.lineage.refs_current(refs_now)) {
                return None;
            }
            m.lineage.refs = Default::default();
            m.waiting.clear();
            Some(m)
        });
        st
    })
    .await?;
    for o in ctx.store.list_objects(bucket, source.prefix()).await? {
        let Ok(src) = keys::accept(bucket, &o.key, &[source]) else {
            continue;
        };
        stems.insert(src.stem.clone());
        if let Some(checked_before) = changed {
            match written.get_mut(&src.stem) {
                // No manifest, or the file written since (to the second).
                None => items.push(Item::Landing {
                    function: t,
                    key: o.key,
                }),
                Some(m) if o.modified > m.written => items.push(Item::Landing {
                    function: t,
                    key: o.key,
                }),
                Some(m) if m.written >= checked_before => {
                    recent.push((src.stem, o.key, o.etag, m.manifest.take()))
                }
                Some(_) => {}
            }
            continue;
        }
        // Read as current against the references (above): fresh when the source is the
        // one computed. Kept for the footer check, which needs where the rows are: held for
        // every landing file of the table, it stays a few strings a file.
        let m = written.get_mut(&src.stem).and_then(|m| m.manifest.take());
        match m.filter(|m| m.lineage.source_etag == o.etag) {
            Some(m) => {
                fresh_manifests.insert(src.stem, (o.key, m));
            }
            None => items.push(Item::Landing {
                function: t,
                key: o.key,
            }),
        }
    }
    for stem in written.into_keys().filter(|s| !stems.contains(s)) {
        items.push(Item::Orphan {
            table: target,
            stem,
        });
    }
    if changed.is_some() {
        items.extend(stale_recent(ctx, bucket, t, recent).await?);
    } else if items.is_empty() {
        items = unlisted_and_stray(ctx, bucket, t, &fresh_manifests).await?;
    }
    Ok(items)
}

/// The files of `recent` (stem, landing key, its ETag as listed, its manifest), whose
/// manifests were written since the last changed pass, that a changed pass computes
/// again: the manifest records another ETag (an older upload computed after a newer one)
/// or an earlier layout, or names an object that is not there and no longer on its way
/// (a batch dead-lettered after writing its manifests). The two LISTs of the table's
/// objects when there is any.
async fn stale_recent(
    ctx: &Ctx,
    bucket: &str,
    t: Transition,
    recent: Vec<(String, String, String, Option<Manifest>)>,
) -> Result<Vec<Item>> {
    if recent.is_empty() {
        return Ok(Vec::new());
    }
    let target = t.target();
    let objects: BTreeSet<String> = compact::list_working(ctx, bucket, target.prefix())
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let now = compact::unix_now();
    let mut items = Vec::new();
    for (stem, key, etag, m) in recent {
        let current = m.is_some_and(|m| {
            let held =
                |dt: &String| objects.contains(&keys::output_key(target, dt, m.object_of(&stem)));
            m.layout == LAYOUT
                && m.lineage.source_etag == etag
                && (m.in_flight(now) || m.dts.iter().all(held))
        });
        if !current {
            items.push(Item::Landing { function: t, key });
        }
    }
    Ok(items)
}

/// The batch objects of `t`'s target held against `manifests` (every landing file's, all
/// fresh: stem → (landing key, manifest)), both ways: a file whose manifest names a batch
/// object that does not list it (and was not written in the last 15 minutes, when the
/// object may still be on its way) is computed again; a file a batch object lists whose
/// manifest names another object (or that has no manifest) is detached from it. One GET
/// of each batch object's footer.
async fn unlisted_and_stray(
    ctx: &Ctx,
    bucket: &str,
    t: Transition,
    manifests: &BTreeMap<String, (String, Manifest)>,
) -> Result<Vec<Item>> {
    let target = t.target();
    let mut items = Vec::new();
    // (dt, object) → the stems its footer lists.
    let mut listed: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for o in compact::list_working(ctx, bucket, target.prefix()).await? {
        let Ok(out) = keys::accept(bucket, &o.key, &[target]) else {
            continue;
        };
        if !crate::transitions::is_batch_name(&out.stem) {
            continue;
        }
        let Fetched::Body(bytes, _) = compact::fetch_working(ctx, bucket, &o.key).await? else {
            continue;
        };
        let dt = out.dt.unwrap_or_default();
        let sources = match crate::columnar::holder_sources(bytes, &o.key) {
            Ok(sources) => sources,
            Err(e) => {
                // Not a batch object after all, or damaged: its rows cannot be told apart.
                // Left as it is (the files naming it are computed again below); said once
                // a pass.
                tracing::warn!(key = %o.key, error = %e, "a batch object's footer is unreadable");
                continue;
            }
        };
        for held in sources {
            let manifest = manifests.get(&held.name);
            let named = manifest
                .is_some_and(|(_, m)| m.object_of(&held.name) == out.stem && m.dts.contains(&dt));
            if !named {
                items.push(Item::Detach {
                    key: o.key.clone(),
                    stem: held.name.clone(),
                    landing: manifest.map(|(key, _)| key.clone()),
                });
            }
            listed
                .entry((dt.clone(), out.stem.clone()))
                .or_default()
                .insert(held.name);
        }
    }
    let now = compact::unix_now();
    for (stem, (key, m)) in manifests {
        let Some(object) = m.object.as_deref() else {
            continue;
        };
        if m.in_flight(now) {
            continue;
        }
        let unlisted = m.dts.iter().any(|dt| {
            !listed
                .get(&(dt.clone(), object.to_string()))
                .is_some_and(|s| s.contains(stem))
        });
        if unlisted {
            items.push(Item::Landing {
                function: t,
                key: key.clone(),
            });
        }
    }
    Ok(items)
}

/// Trusted objects whose machine-learning join is missing or stale (another ETag, a
/// customer shard consulted has changed), joins of objects that are gone, and outputs or
/// bookkeeping that no current pair accounts for (outputs of the earlier layout among them).
async fn stale_ml(ctx: &Ctx, bucket: &str, serials_now: &Answers) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let sides = ml::side_manifests(ctx, bucket).await?;
    let mut present = BTreeSet::new();
    for side in ml::Side::ALL {
        for (key, etag) in trusted_objects(ctx, bucket, side.table()).await? {
            let Ok(src) = keys::accept(bucket, &key, &[side.table()]) else {
                continue;
            };
            let dt = src.dt.clone().unwrap_or_default();
            let fresh = sides.get(&dt).is_some_and(|list| {
                list.iter().any(|(sd, stem, m)| {
                    *sd == side && *stem == src.stem && m.fresh(&etag, serials_now)
                })
            });
            if !fresh {
                items.push(Item::Ml { key: key.clone() });
            }
            present.insert((side, dt, src.stem));
        }
    }
    for (dt, list) in &sides {
        for (side, stem, _) in list {
            if !present.contains(&(*side, dt.clone(), stem.clone())) {
                let key = keys::output_key(side.table(), dt, stem);
                items.push(Item::Ml { key });
            }
        }
    }
    if !items.is_empty() {
        // Strays are judged once every side is current.
        return Ok(items);
    }
    let mut expected = BTreeSet::new();
    for (dt, list) in &sides {
        for (_, step, sm) in list.iter().filter(|e| e.0 == ml::Side::Step) {
            for (_, phone, pm) in list.iter().filter(|e| e.0 == ml::Side::Phone) {
                if sm.meets_side(pm) {
                    expected.insert(ml::pair_key(dt, step, phone));
                }
            }
        }
    }
    for (key, _) in trusted_objects(ctx, bucket, Table::MachineLearningCurated).await? {
        if !expected.contains(&key) {
            items.push(Item::Stray { key });
        }
    }
    let prefix = keys::lineage_prefix(Table::MachineLearningCurated);
    for key in ctx.store.list(bucket, &prefix).await? {
        if ml::parse_side_manifest(&key).is_none() {
            items.push(Item::Stray { key });
        }
    }
    Ok(items)
}

/// Moves lineage manifests that the earlier layout kept inside table locations
/// (`<table>/_manifests/…`) to the bookkeeping prefix, keeping a manifest already written
/// there (it is newer), so generic readers of a table location see only data files; and
/// the erasure postings a lake of layout 4 kept as S3 objects (`_stedi/persons/<h>/<landing
/// key>`) and the ML join index's S3 markers into the index table (one LIST of the
/// persons' folders a pass, the tombstones once moved, and one of `_stedi/join/`), as
/// are the landing files' manifests a lake of layout 4 kept as S3 objects (one LIST of
/// each table's folder a pass).
async fn migrate_bookkeeping(ctx: &Ctx, bucket: &str, full: &mut FullCheck) -> Result<usize> {
    let legacy: Vec<String> = ctx
        .store
        .list(bucket, erasure::PERSONS_PREFIX)
        .await?
        .into_iter()
        .filter(|key| erasure::legacy_posting(key).is_some())
        .collect();
    let postings = legacy.iter().filter_map(|key| erasure::legacy_posting(key));
    erasure::post(&ctx.index, bucket, postings).await?;
    for key in &legacy {
        ctx.store.delete(bucket, key).await?;
    }
    // The ML join index's markers as S3 objects (`_stedi/join/dt=<dt>/<folder>/<s|p>.<stem>`).
    let markers: Vec<String> = ctx.store.list(bucket, ml::JOIN_PREFIX).await?;
    let entries = markers
        .iter()
        .filter_map(|key| ml::legacy_marker(bucket, key))
        .flatten()
        .collect();
    ctx.index.put(entries).await?;
    for key in &markers {
        ctx.store.delete(bucket, key).await?;
    }
    let mut moved = legacy.len() + markers.len();
    for table in Table::ALL.into_iter().filter(|t| t.partitioned()) {
        let old_prefix = format!("{}_manifests/", table.prefix());
        for old in ctx.store.list(bucket, &old_prefix).await? {
            full.mark(ctx, bucket).await?;
            let new = format!(
                "{}{}",
                keys::lineage_prefix(table),
                &old[old_prefix.len()..]
            );
            if let (Fetched::Body(body, _), Fetched::Missing) = (
                ctx.store.fetch(bucket, &old, None).await?,
                ctx.store.fetch(bucket, &new, None).await?,
            ) {
                ctx.store.put(bucket, &new, body).await?;
            }
            ctx.store.delete(bucket, &old).await?;
            moved += 1;
        }
    }
    // The landing files' manifests as S3 objects (`_stedi/lineage/<table>/<stem>.json`).
    let landing_targets = Table::landing()
        .filter_map(Transition::of_landing)
        .map(|t| t.target())
        .filter(|t| t.partitioned());
    for table in landing_targets {
        moved += migrate_manifests(ctx, bucket, table).await?;
    }
    Ok(moved)
}

/// The customer landing objects a changed pass holds against the shards (`since`: the time
/// before which a pass that found nothing to do checked every file; see
/// [`FullCheck::changed`]), those written since, each with its latest record per e-mail.
/// `None`, and every customer is rebuilt from landing, in a full pass, a pass checking in
/// full, before any pass has found nothing to do, when the files written since hold more
/// than one group's bytes (`RECONCILE_GROUP_BYTES`), or when customer_trusted holds an
/// object that is no current shard (a `CUSTOMER_SHARDS` change the rebuild migrates).
async fn arrived_customers(
    ctx: &Ctx,
    bucket: &str,
    listed: &[crate::store::Listed],
    since: Option<i64>,
) -> Result<Option<Vec<(String, Customers)>>> {
    let Some(since) = since.filter(|t| *t > 0) else {
        return Ok(None);
    };
    let new: Vec<&crate::store::Listed> = listed.iter().filter(|o| o.modified >= since).collect();
    if new.iter().map(|o| o.size).sum::<u64>() > ctx.cfg.reconcile_group_bytes {
        return Ok(None);
    }
    let table = Table::CustomerTrusted;
    let shards = ctx.cfg.customer_shards;
    for key in ctx.store.list(bucket, table.prefix()).await? {
        if keys::shard_of_key(table, &key).is_none_or(|k| k >= shards) {
            return Ok(None);
        }
    }
    let mut files = Vec::with_capacity(new.len());
    for o in new {
        let mut latest = Customers::default();
        offer_file(ctx, bucket, &o.key, &mut latest, None).await?;
        files.push((o.key.clone(), latest));
    }
    Ok(Some(files))
}

/// The customer files written since the last pass (`files`, each with its latest record
/// per e-mail) that the shards do not reflect (`held`: what the shards hold of each file's
/// customers): folding one in would change them, as its event would have had it not been
/// lost. A consenting record of a customer the shards do not hold may also be older than
/// a withdrawal another file brought: such a customer's other customer files, from the
/// erasure index (one LIST each, a few in flight, and a GET per file), are folded in too
/// before deciding. A bulk file indexed wide is not listed there; the full pass rebuilds
/// from every file.
async fn unreflected(
    ctx: &Ctx,
    bucket: &str,
    files: &[(String, Customers)],
    held: &[Customers],
) -> Result<Vec<String>> {
    let secret = &ctx.cfg.erasure_hash_key;
    let mut out = Vec::new();
    for ((key, incoming), held) in files.iter().zip(held) {
        if rules::merge_trusted(held, incoming).0 == *held {
            continue;
        }
        let mut latest = incoming.clone();
        // The customers it would bring in, by their keyed hash: their postings listed at once.
        let entering: BTreeMap<String, &String> = incoming
            .rows
            .iter()
            .filter(|(e, r)| {
                rules::consents(r[rules::customer::RESEARCH].as_long())
                    && !held.rows.contains_key(*e)
            })
            .map(|(e, _)| (erasure::person_hash(secret, PersonKind::Email, e), e))
            .collect();
        let postings = erasure::postings(ctx, bucket, entering.keys().cloned()).await?;
        for (h, landing) in postings {
            let Some(email) = entering.get(&h) else {
                continue;
            };
            let others = landing.iter().filter(|other| {
                *other != key && other.starts_with(Table::CustomerLanding.prefix())
            });
            for other in others {
                offer_file(ctx, bucket, other, &mut latest, Some(email.as_str())).await?;
            }
        }
        if rules::merge_trusted(held, &latest).0 != *held {
            out.push(key.clone());
        }
    }
    Ok(out)
}

/// One planning pass (see the module docs). The customers are taken a group of shards at
/// a time ([`group_count`], `RECONCILE_GROUP_BYTES`; the rows spilled to local files by
/// group); what the staleness checks need of all of them is kept as [`Answers`] (16 bytes
/// a key) and the reading users as 16-byte hashes, so memory follows one group, not the
/// customer base. `scope` says how the reading files are checked ([`Scope`]).
pub async fn plan(ctx: &Ctx, bucket: &str, scope: Scope) -> Result<Plan> {
    let mut full = FullCheck::new(ctx, bucket, scope).await?;
    let mut plan = Plan {
        migrated: migrate_bookkeeping(ctx, bucket, &mut full).await?,
        ..Plan::default()
    };
    let table = Table::CustomerLanding;
    let mut landing_bytes = 0;
    let mut listed = Vec::new();
    for o in ctx.store.list_objects(bucket, table.prefix()).await? {
        if keys::accept(bucket, &o.key, &[table]).is_ok() {
            landing_bytes += o.size;
            listed.push(o);
        }
    }
    let shards = ctx.cfg.customer_shards;
    plan.groups = group_count(landing_bytes, ctx.cfg.reconcile_group_bytes, shards);
    // A changed pass takes the shards for the customer state and holds only the customer
    // files written since against them; otherwise every customer is rebuilt from landing.
    let arrived = arrived_customers(ctx, bucket, &listed, full.changed()).await?;
    let landing: Vec<String> = match arrived {
        Some(_) => Vec::new(),
        None => listed.into_iter().map(|o| o.key).collect(),
    };
    // Per file written since: what the shards hold of its customers.
    let mut held = vec![Customers::default(); arrived.as_ref().map_or(0, Vec::len)];
    // What each key answers now, as the transitions' lineage records it (see
    // `compute::Answer`): consent dates and devices of e-mails, owners of serials.
    let (mut consent, mut serials) = (Vec::new(), Vec::new());
    // With one group, its consenting customers stay for the curated stage; with more, the
    // rows are spilled by group to local files first.
    let mut kept = None;
    let mut spill = match (plan.groups, &arrived) {
        (1, _) | (_, Some(_)) => None,
        (n, None) => Some(spill_customers(ctx, bucket, &landing, n).await?),
    };
    for group in Group::all(plan.groups) {
        let trusted = match &arrived {
            Some(files) => {
                let trusted = shards_of(ctx, bucket, Table::CustomerTrusted, group).await?;
                for ((_, incoming), held) in files.iter().zip(&mut held) {
                    for e in incoming.rows.keys() {
                        if let Some(r) = trusted.rows.get(e) {
                            held.rows.insert(e.clone(), r.clone());
                        }
                    }
                }
                plan.most_held = plan.most_held.max(trusted.rows.len());
                trusted
            }
            None => {
                let everyone = match &mut spill {
                    Some(spill) => spilled_customers(spill, group.index)?,
                    None => all_customers(ctx, bucket, &landing).await?,
                };
                plan.most_held = plan.most_held.max(everyone.rows.len());
                Customers {
                    rows: everyone
                        .rows
                        .into_iter()
                        .filter(|(_, r)| rules::consents(r[rules::customer::RESEARCH].as_long()))
                        .collect(),
                }
            }
        };
        for (e, r) in &trusted.rows {
            if let Some(d) = r[rules::customer::RESEARCH].as_long() {
                consent.push((keys::fnv1a(e), keys::fnv1a(&d.to_string())));
            }
            if let Some(serial) = r[rules::customer::SERIAL].as_str() {
                serials.push((keys::fnv1a(e), keys::fnv1a(serial)));
            }
        }
        plan.consenting += trusted.rows.len();
        if plan.groups == 1 {
            kept = Some(trusted.clone());
        }
        if arrived.is_none() {
            let change = converge_sharded(
                ctx,
                bucket,
                Table::CustomerTrusted,
                trusted,
                group,
                &mut full,
            )
            .await?;
            add_snapshot(&mut plan, Table::CustomerTrusted, change);
        }
    }
    drop(spill);
    let unreflected = match &arrived {
        Some(files) => unreflected(ctx, bucket, files, &held).await?,
        None => Vec::new(),
    };
    drop(held);
    if !unreflected.is_empty() {
        // Their events were lost: each file folded in as its event would have.
        plan.items = unreflected
            .into_iter()
            .map(|key| Item::Landing {
                function: Transition::CustomerLandingToTrusted,
                key,
            })
            .collect();
        plan.stage = Some(Table::CustomerTrusted);
        return Ok(plan);
    }
    plan.advised_shards = advised_shards(plan.consenting, shards);
    if let Some(advised) = plan.advised_shards {
        tracing::warn!(
            consenting = plan.consenting,
            shards,
            advised,
            "customer shards hold {} consenting customers each: set CUSTOMER_SHARDS to {advised} \
             (the next reconcile migrates); a one-record customer file rewrites a shard, a \
             file of many users reads a shard for each",
            plan.consenting / shards.max(1) as usize
        );
    }
    let (consent_now, serials_now) = (Answers::from_hashes(consent), Answers::from_hashes(serials));
    let changed = full.changed();
    if stage(ctx, bucket, &mut plan, &consent_now, changed, |r| {
        matches!(r, Rule::Consented { .. })
    })
    .await?
    {
        return Ok(plan);
    }
    drop(consent_now);
    let users = reading_users(ctx, bucket).await?;
    // The device index is sharded by serial: the devices of each group of customers are
    // spilled to the group of their serial (kept in memory when there is one group).
    let mut device_spill = match plan.groups {
        1 => None,
        n => Some(Spill::new("devices", n)?),
    };
    let mut entries = Vec::new();
    for group in Group::all(plan.groups) {
        let trusted = match kept.take() {
            Some(all) => all,
            None => shards_of(ctx, bucket, Table::CustomerTrusted, group).await?,
        };
        let mut curated = Customers::default();
        for (email, row) in trusted.rows {
            let is_curated = users.contains(&email);
            if let Some(serial) = row[rules::customer::SERIAL].as_str() {
                let entry = (serial.to_string(), email.clone(), is_curated);
                match &mut device_spill {
                    Some(spill) => spill.push(Group::of(serial, shards, plan.groups), &entry)?,
                    None => entries.push(entry),
                }
            }
            if is_curated {
                curated.rows.insert(email, row);
            }
        }
        let change = converge_sharded(
            ctx,
            bucket,
            Table::CustomerCurated,
            curated,
            group,
            &mut full,
        )
        .await?;
        add_snapshot(&mut plan, Table::CustomerCurated, change);
    }
    let mut devices = Vec::new();
    for serial_group in Group::all(plan.groups) {
        if let Some(spill) = &mut device_spill {
            spill.read(serial_group.index, |e| entries.push(e))?;
        }
        let group_entries = std::mem::take(&mut entries)
            .into_iter()
            .map(|(serial, email, curated)| DeviceEntry {
                serial,
                email,
                curated,
            })
            .collect();
        let (changed, answers) =
            converge_devices(ctx, bucket, group_entries, serial_group, &mut full).await?;
        plan.device_shards += changed;
        devices.extend(answers);
    }
    drop(device_spill);
    let devices_now = Answers::from_hashes(devices);
    let changed = full.changed();
    if stage(ctx, bucket, &mut plan, &devices_now, changed, |r| {
        matches!(r, Rule::OwnedDevice { .. })
    })
    .await?
    {
        return Ok(plan);
    }
    plan.items = stale_ml(ctx, bucket, &serials_now).await?;
    if !plan.items.is_empty() {
        plan.stage = Some(Table::MachineLearningCurated);
    }
    full.settle(ctx, bucket, &plan).await?;
    Ok(plan)
}

/// [`keys::RECONCILE_CHECKED`]: every manifest written before `checked_before` (Unix
/// seconds) was checked by a pass that found nothing to do.
#[derive(Debug, Serialize, Deserialize)]
struct Checked {
    checked_before: i64,
}

/// Whether a pass checks every reading file's manifest: a full pass always; a changed pass
/// when it rewrites customer or device shards itself (an answer it changes leaves files
/// stale behind manifests newer than them), or an earlier pass did and no pass has checked
/// everything since: the mark [`keys::FULL_CHECK_DUE`], read once a pass, written before
/// the planner's first rewrite, so that a pass stopped after it or items lost on their way
/// are found again by the next pass, whatever its scope; deleted by a pass that checked
/// everything and found nothing to do, only while it is the mark that pass read (passes
/// run at once: one rewriting writes its own).
struct FullCheck {
    scope: Scope,
    /// When this pass started (Unix seconds).
    started: u64,
    /// Every manifest written before this time was checked by a pass that found nothing
    /// to do ([`keys::RECONCILE_CHECKED`]; 0 when none did).
    checked_before: i64,
    /// The mark's ETag as this pass read it at its start, when it was there.
    read: Option<String>,
    /// This pass wrote the mark (before its first rewrite).
    written: bool,
    /// Every stage of this pass was checked in full.
    throughout: bool,
}

impl FullCheck {
    async fn new(ctx: &Ctx, bucket: &str, scope: Scope) -> Result<FullCheck> {
        let read = match ctx.store.fetch(bucket, keys::FULL_CHECK_DUE, None).await? {
            Fetched::Body(_, etag) => Some(etag),
            _ => None,
        };
        let checked_before = match ctx
            .store
            .fetch(bucket, keys::RECONCILE_CHECKED, None)
            .await?
        {
            Fetched::Body(body, _) => serde_json::from_slice::<Checked>(&body)
                .map(|c| c.checked_before)
                .unwrap_or(0),
            _ => 0,
        };
        Ok(FullCheck {
            scope,
            started: compact::unix_now(),
            checked_before,
            read,
            written: false,
            throughout: true,
        })
    }

    /// Marks the full check due: the planner is about to rewrite something. Written by
    /// every pass that rewrites (once), even over a mark already there, with a body of its
    /// own: a pass that read the earlier mark and then found nothing deletes only that one.
    async fn mark(&mut self, ctx: &Ctx, bucket: &str) -> Result<()> {
        if !self.written {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let body = serde_json::json!({
                "since": compact::unix_now(),
                "pass": format!("{}-{nanos}", std::process::id()),
            });
            ctx.store
                .put(bucket, keys::FULL_CHECK_DUE, body.to_string().into())
                .await?;
            self.written = true;
        }
        Ok(())
    }

    /// How the next stage is checked: in full (`None`), or as a changed pass reading the
    /// manifests written since the time given.
    fn changed(&mut self) -> Option<i64> {
        let full = self.scope == Scope::Full || self.read.is_some() || self.written;
        self.throughout &= full;
        (!full).then_some(self.checked_before)
    }

    /// Once a pass found nothing to do: every manifest written before it started (less
    /// [`IN_FLIGHT_SECONDS`], when a batch object may still be on its way) is checked; and
    /// the mark is cleared when the pass checked everything in full, if it is still the one
    /// the pass read (a pass rewriting meanwhile wrote its own).
    async fn settle(&self, ctx: &Ctx, bucket: &str, plan: &Plan) -> Result<()> {
        if !(plan.is_done() && plan.stage.is_none()) {
            return Ok(());
        }
        let checked_before =
            i64::try_from(self.started.saturating_sub(IN_FLIGHT_SECONDS)).unwrap_or(i64::MAX);
        if checked_before > self.checked_before {
            let body = serde_json::to_string(&Checked { checked_before }).map_err(|source| {
                Error::Json {
                    context: keys::RECONCILE_CHECKED.to_string(),
                    source,
                }
            })?;
            ctx.store
                .put(bucket, keys::RECONCILE_CHECKED, body.into())
                .await?;
        }
        if let Some(etag) = &self.read
            && !self.written
            && self.throughout
        {
            ctx.store
                .delete_if(bucket, keys::FULL_CHECK_DUE, etag)
                .await?;
        }
        Ok(())
    }
}

/// The stale landing objects of the first transition admitting rows by a rule that
/// `of_rule` picks (in the order `streams` declares them) whose objects are stale against
/// `now` (`changed`: see [`stale_landing`]): sets them as the plan's items and stage;
/// whether there were any.
async fn stage(
    ctx: &Ctx,
    bucket: &str,
    plan: &mut Plan,
    now: &Answers,
    changed: Option<i64>,
    of_rule: impl Fn(Rule) -> bool,
) -> Result<bool> {
    for t in Transition::ALL.into_iter().filter(|t| of_rule(t.rule())) {
        plan.items = stale_landing(ctx, bucket, t, now, changed).await?;
        if !plan.items.is_empty() {
            plan.stage = Some(t.target());
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs one work item.
pub async fn execute(ctx: &Ctx, bucket: &str, item: &Item) -> Result<Summary> {
    match item {
        Item::Landing { function, key } => {
            let src = keys::accept(bucket, key, function.sources())?;
            function.run(ctx, bucket, &src).await
        }
        Item::Recompute { key } => {
            let landing = BTreeSet::from([key.clone()]);
            let (done, _) =
                crate::transitions::erasure::recompute(ctx, bucket, &landing, true).await?;
            Ok(done)
        }
        Item::Recheck { persons } => {
            let persons: BTreeSet<String> = persons.iter().cloned().collect();
            crate::transitions::recheck::run(ctx, bucket, &persons).await
        }
        Item::Orphan { table, stem } => {
            let table = Some(*table).filter(|t| t.partitioned()).ok_or_else(|| {
                crate::Error::BadEvent(format!("{} is not partitioned", table.name()))
            })?;
            let mut s = Summary::default();
            crate::transitions::forget(ctx, bucket, table, stem, &mut s).await?;
            compact::follow(ctx, bucket, &mut s).await?;
            Ok(s)
        }
        Item::Ml { key } => {
            let t = Transition::MachineLearningTrustedToCurated;
            let src = keys::accept(bucket, key, t.sources())?;
            ml::with_fresh_devices(t.run(ctx, bucket, &src)).await
        }
        Item::Detach { key, stem, landing } => {
            let trusted = [Table::AccelerometerTrusted, Table::StepTrainerTrusted];
            let out = keys::accept(bucket, key, &trusted)?;
            let dt = out.dt.unwrap_or_default();
            // The manifest decides: written since the plan to name this object, it holds.
            let names = |m: Option<Manifest>| {
                m.is_some_and(|m| m.object_of(stem) == out.stem && m.dts.contains(&dt))
            };
            if names(read_manifest(ctx, bucket, out.table, stem).await?) {
                return Ok(Summary::default());
            }
            let mut s = Summary::default();
            crate::transitions::detach(ctx, bucket, out.table, &dt, &out.stem, stem, &mut s)
                .await?;
            // Named meanwhile (the same batch redelivered and written again): the rows just
            // taken out were the file's only ones, so the file is computed again, alone.
            if let Some(landing) = landing
                && names(read_manifest(ctx, bucket, out.table, stem).await?)
            {
                let landing_tables: Vec<Table> = Table::landing().collect();
                let src = keys::accept(bucket, landing, &landing_tables)?;
                if let Some(t) = Transition::of_landing(src.table) {
                    s.absorb(t.compute(ctx, bucket, &src).await?);
                }
            }
            compact::follow(ctx, bucket, &mut s).await?;
            Ok(s)
        }
        Item::Stray { key } => {
            compact::delete_working(ctx, bucket, key).await?;
            let mut s = Summary {
                deleted: vec![key.clone()],
                ..Summary::default()
            };
            let table = Table::MachineLearningCurated;
            if let Ok(src) = keys::accept(bucket, key, &[table]) {
                let dt = src.dt.unwrap_or_default();
                prune_partition(ctx, bucket, table, &dt).await?;
                s.sources.push(key.clone());
            }
            compact::follow(ctx, bucket, &mut s).await?;
            Ok(s)
        }
    }
}

/// Counts of a whole reconcile (several plans and their items).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Planning passes.
    pub passes: u32,
    /// Items executed per stage (table name).
    pub items: BTreeMap<&'static str, u64>,
    /// Snapshot rewrites: (table, added or changed, removed).
    pub snapshots: Vec<(&'static str, usize, usize)>,
    /// Bookkeeping objects moved out of table locations.
    pub migrated: usize,
    /// Device-index shards rewritten.
    pub device_shards: usize,
    /// What the items did.
    pub summary: Summary,
    /// Whether the last plan found nothing to do.
    pub converged: bool,
    /// Groups of customer shards a plan took one at a time (the most of any plan).
    pub groups: u32,
    /// The most customers a plan held at once.
    pub most_held: usize,
    /// The `CUSTOMER_SHARDS` the last plan that counted the customers advised (see
    /// [`advised_shards`]).
    pub advised_shards: Option<u32>,
}

impl Report {
    /// Whether the run changed anything.
    pub fn changed(&self) -> bool {
        !self.snapshots.is_empty()
            || self.migrated > 0
            || self.device_shards > 0
            || !self.summary.deleted.is_empty()
            || self.items.values().any(|n| *n > 0)
    }

    /// Folds a plan in.
    pub fn add_plan(&mut self, plan: &Plan) {
        self.passes += 1;
        self.groups = self.groups.max(plan.groups);
        self.most_held = self.most_held.max(plan.most_held);
        self.advised_shards = plan.advised_shards.or(self.advised_shards);
        self.migrated += plan.migrated;
        self.device_shards += plan.device_shards;
        for (t, a, r) in &plan.snapshots {
            self.snapshots.push((t.name(), *a, *r));
        }
        if let Some(stage) = plan.stage {
            *self.items.entry(stage.name()).or_default() += plan.items.len() as u64;
        }
    }
}

/// Where a plan's items run: the one reconcile driver ([`drive`]) has two fan-outs, in this
/// process ([`Inline`]) and through the reconcile queue ([`Queue`], and the local stack's
/// queue-and-runner in `stedi reconcile`).
pub trait FanOut {
    /// What a failed fan-out reports (the library's [`Error`] converts into it).
    type Error: From<Error>;
    /// Runs (or hands out) the items of one plan; returns what ran here.
    fn fan_out(
        &mut self,
        bucket: &str,
        items: &[Item],
    ) -> impl std::future::Future<Output = std::result::Result<Summary, Self::Error>>;
}

/// Runs every item in this process, one after the other.
pub struct Inline<'a>(pub &'a Ctx);

impl FanOut for Inline<'_> {
    type Error = Error;
    async fn fan_out(&mut self, bucket: &str, items: &[Item]) -> Result<Summary> {
        let mut s = Summary::default();
        for item in items {
            s.absorb(execute(self.0, bucket, item).await?);
        }
        Ok(s)
    }
}

/// Sends every item to the reconcile queue, ten messages per request; the `reconcile`
/// function executes them.
pub struct Queue<'a> {
    /// The SQS client.
    pub sqs: &'a aws_sdk_sqs::Client,
    /// The reconcile queue.
    pub url: &'a str,
}

impl Queue<'_> {
    /// Sends `items`, ten messages per request, each delayed `delay` seconds (at most 900).
    pub async fn send(&self, bucket: &str, items: &[Item], delay: i32) -> Result<()> {
        let bodies = items
            .iter()
            .map(|item| {
                let message = WorkItem {
                    item: item.clone(),
                    bucket: Some(bucket.to_string()),
                };
                serde_json::to_string(&message).map_err(|source| Error::Json {
                    context: "reconcile work item".into(),
                    source,
                })
            })
            .collect::<Result<Vec<String>>>()?;
        for chunk in bodies.chunks(10) {
            send_batch(self.sqs, self.url, chunk, delay).await?;
        }
        Ok(())
    }
}

impl FanOut for Queue<'_> {
    type Error = Error;
    async fn fan_out(&mut self, bucket: &str, items: &[Item]) -> Result<Summary> {
        self.send(bucket, items, 0).await?;
        Ok(Summary::default())
    }
}

/// The reconcile driver: plans, fans the plan's items out, and plans again, at most
/// `passes` times or until a plan finds nothing to do ([`Report::converged`]). Five stages
/// at most, each needing one pass to find its items: 8 passes converge from any state; the
/// `reconcile` function makes one pass per message and queues the next (of the same
/// `scope`).
pub async fn drive<F: FanOut>(
    ctx: &Ctx,
    bucket: &str,
    fan_out: &mut F,
    passes: usize,
    scope: Scope,
) -> std::result::Result<Report, F::Error> {
    let mut report = Report::default();
    for _ in 0..passes {
        let plan = plan(ctx, bucket, scope).await?;
        report.add_plan(&plan);
        if plan.is_done() && plan.stage.is_none() {
            report.converged = true;
            break;
        }
        report
            .summary
            .absorb(fan_out.fan_out(bucket, &plan.items).await?);
    }
    Ok(report)
}

/// Plans and executes in this process until a plan finds nothing to do.
pub async fn run_inline(ctx: &Ctx, bucket: &str, scope: Scope) -> Result<Report> {
    drive(ctx, bucket, &mut Inline(ctx), 8, scope).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_shards_are_advised_past_twice_their_size() {
        assert_eq!(advised_shards(0, 256), None);
        // 256 shards fit 128,000 consenting customers (twice 250 a shard).
        assert_eq!(advised_shards(128_000, 256), None);
        assert_eq!(advised_shards(128_001, 256), Some(1024));
        // 1M registrations, half consenting: 2,000 shards of 250, rounded up.
        assert_eq!(advised_shards(500_000, 256), Some(2048));
        assert_eq!(advised_shards(500_000, 2048), None);
        assert_eq!(advised_shards(5_000_000, 256), Some(32768));
        assert_eq!(advised_shards(100_000_000, 256), Some(65536));
        assert_eq!(advised_shards(100_000_000, 65536), None);
        assert_eq!(advised_shards(1_000, 1), Some(4));
    }

    #[test]
    fn fewer_shards_are_advised_below_an_eighth_of_their_size() {
        // The sample: 482 consenting customers in the default 256 shards.
        assert_eq!(advised_shards(482, 256), Some(2));
        assert_eq!(advised_shards(482, 2), None);
        assert_eq!(advised_shards(482, 4), None);
        assert_eq!(advised_shards(482, 8), None);
        assert_eq!(advised_shards(482, 16), Some(2));
        // An empty or nearly empty lake keeps the count it was given.
        assert_eq!(advised_shards(0, 256), None);
        assert_eq!(advised_shards(249, 65536), None);
        assert_eq!(advised_shards(250, 65536), Some(1));
        // The boundary: an eighth of 250 a shard.
        assert_eq!(advised_shards(8_000, 256), None);
        assert_eq!(advised_shards(7_999, 256), Some(32));
        assert_eq!(advised_shards(100_000, 256), None);
    }

    #[test]
    fn the_planner_takes_enough_groups_for_its_byte_budget() {
        // The sample's one customer file (293,777 bytes) in 100,000-byte groups.
        assert_eq!(group_count(293_777, 100_000, 256), 3);
        assert_eq!(group_count(293_777, 16 << 20, 256), 1);
        assert_eq!(group_count(0, 16 << 20, 256), 1);
        // Never more groups than shards, nor a group without one.
        assert_eq!(group_count(1 << 40, 1, 256), 256);
        assert_eq!(group_count(1 << 40, 1, 0), 1);
        // Every shard in exactly one group.
        for count in [1, 3, 7] {
            for shard in 0..256 {
                let n = Group::all(count).filter(|g| g.holds_shard(shard)).count();
                assert_eq!(n, 1, "shard {shard} of {count} groups");
            }
        }
        for key in ["a@x", "b@x", "S-1"] {
            let g = Group::of(key, 256, 3);
            assert_eq!(g, keys::shard_of(key, 256) % 3);
            let group = Group { index: g, count: 3 };
            assert!(group.holds_shard(keys::shard_of(key, 256)));
        }
    }

    #[test]
    fn a_spill_gives_back_each_group_in_order_and_leaves_nothing() {
        let mut spill = Spill::new("test", 3).unwrap();
        let dir = spill.dir.clone();
        for (g, serial) in [(2, "S-2"), (0, "S-0"), (2, "S-2b")] {
            spill
                .push(g, &(serial.to_string(), "e@x".to_string(), g == 2))
                .unwrap();
        }
        let row = |email: &str, updated: i64| {
            vec![
                Spilled::N,
                Spilled::S(email.into()),
                Spilled::D(0.5),
                Spilled::L(updated),
            ]
        };
        spill.push(1, &row("a@x", 1)).unwrap();
        spill.push(1, &row("a@x", 2)).unwrap();
        let mut got: Vec<(String, String, bool)> = Vec::new();
        spill.read(2, |e| got.push(e)).unwrap();
        assert_eq!(
            got,
            [
                ("S-2".into(), "e@x".into(), true),
                ("S-2b".into(), "e@x".into(), true)
            ]
        );
        let mut rows = 0;
        spill.read(1, |r: Vec<Spilled>| rows += r.len()).unwrap();
        assert_eq!(rows, 8);
        let mut none = 0;
        spill
            .read(0, |_: (String, String, bool)| none += 1)
            .unwrap();
        assert_eq!(none, 1);
        drop(spill);
        assert!(!dir.exists());
    }

    #[test]
    fn spilled_customer_rows_keep_the_latest_record_per_email() {
        let mut spill = Spill::new("test-rows", 1).unwrap();
        for (email, updated, research) in
            [("a@x", 1, Some(5)), ("a@x", 3, None), ("b@x", 2, Some(7))]
        {
            let mut row = vec![Spilled::N; 10];
            row[rules::customer::EMAIL] = Spilled::S(email.into());
            row[rules::customer::LAST_UPDATE] = Spilled::L(updated);
            if let Some(r) = research {
                row[rules::customer::RESEARCH] = Spilled::L(r);
            }
            spill.push(0, &row).unwrap();
        }
        let c = spilled_customers(&mut spill, 0).unwrap();
        assert_eq!(c.rows.len(), 2);
        assert_eq!(c.rows["a@x"][rules::customer::LAST_UPDATE], Cell::Long(3));
        assert_eq!(c.rows["a@x"][rules::customer::RESEARCH], Cell::Null);
        assert_eq!(c.rows["b@x"][rules::customer::RESEARCH], Cell::Long(7));
    }

    #[test]
    fn users_are_found_by_their_wide_hash_once_settled() {
        let mut u = Users::default();
        for e in ["b@x", "a@x", "b@x", "c@x", "a@x"] {
            u.0.push(Users::hash(e));
        }
        u.settle();
        assert_eq!(u.0.len(), 3);
        assert!(u.contains("a@x") && u.contains("b@x") && u.contains("c@x"));
        assert!(!u.contains("d@x") && !u.contains("A@x"));
    }

    #[test]
    fn items_travel_as_json() {
        let items = [
            Item::Landing {
                function: Transition::AccelerometerLandingToTrusted,
                key: "accelerometer/landing/a b.json".into(),
            },
            Item::Orphan {
                table: Table::StepTrainerTrusted,
                stem: "x".into(),
            },
            Item::Ml {
                key: "step_trainer/trusted/dt=2022-06-18/x.parquet".into(),
            },
            Item::Detach {
                key: "accelerometer/trusted/dt=2022-06-18/a.b00000000000000ff.parquet".into(),
                stem: "b".into(),
                landing: Some("accelerometer/landing/b.json".into()),
            },
            Item::Stray {
                key: "step_trainer/curated/dt=2022-06-18/x.parquet".into(),
            },
        ];
        for item in items {
            let text = serde_json::to_string(&item).unwrap();
            assert_eq!(serde_json::from_str::<Item>(&text).unwrap(), item);
        }
        assert_eq!(
            serde_json::to_string(&Item::Ml { key: "k".into() }).unwrap(),
            r#"{"item":"ml","key":"k"}"#
        );
        assert_eq!(
            serde_json::to_string(&Item::Stray { key: "k".into() }).unwrap(),
            r#"{"item":"stray","key":"k"}"#
        );
        let detach = Item::Detach {
            key: "k".into(),
            stem: "s".into(),
            landing: None,
        };
        assert_eq!(
            serde_json::to_string(&detach).unwrap(),
            r#"{"item":"detach","key":"k","stem":"s"}"#
        );
        // Functions and tables travel by name; an unknown name is refused when read.
        assert_eq!(
            serde_json::to_string(&items_landing()).unwrap(),
            r#"{"item":"landing","function":"step_trainer_landing_to_trusted","key":"k"}"#
        );
        let unknown = r#"{"item":"orphan","table":"no_such_table","stem":"x"}"#;
        let e = serde_json::from_str::<Item>(unknown).unwrap_err();
        assert!(
            e.to_string().contains("unknown table \"no_such_table\""),
            "{e}"
        );
    }

    fn items_landing() -> Item {
        Item::Landing {
            function: Transition::StepTrainerLandingToTrusted,
            key: "k".into(),
        }
    }
}
