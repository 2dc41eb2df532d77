//! Right to erasure: one request removes a person from every zone, landing included.
//!
//! **The erasure index.** Every landing transition records, for each person its file holds
//! (the e-mail of a customer or phone line, the serial of a Step Trainer line), a
//! *posting*: an entry of the index table (`INDEX_TABLE`, [`crate::index`]) under
//! partition `<bucket>/persons/<h>` naming the landing key, where `<h>` is a keyed hash of
//! the person (HMAC-SHA256 under `ERASURE_HASH_KEY`; no e-mail or serial is stored). An
//! erasure queries one partition and finds exactly the landing objects that hold the
//! person; their outputs are named
//! after them (the lineage), so the trusted and curated objects follow. (Lakes of layout 4
//! kept each posting as an empty S3 object `_stedi/persons/<h>/<landing key>`; `reconcile`
//! moves them into the table.)
//! A file holding more people than `ERASURE_WIDE_PERSONS` (a bulk import) writes one
//! *wide index* instead, the sorted hashes of its people: one entry of the index table
//! under partition `<bucket>/persons-wide/<landing table>` (its landing key the sort key;
//! a write unit per KB, not thousands of postings), or for a file too large for an item
//! (more than ~15,000 people) an S3 object `_stedi/persons-wide/<landing key>`; an erasure
//! also reads every wide index (bulk files are few; per-session files hold one person).
//!
//! **The tombstone** `_stedi/persons/<h>/erased.json` holds the erasure time and the
//! request id, nothing personal; an empty `_stedi/erased/<h>` beside it lets a wide file
//! find the erased among its people with one LIST instead of one GET each. A landing
//! transition writes its postings, then reads the tombstones (register, then look; the
//! table's queries are strongly consistent): of a
//! file arriving during an erasure and the erasure, at least one sees the other. A file
//! holding lines of an erased person dated at or before the erasure is scrubbed (rewritten
//! without them, its old versions deleted) and computed again; a line dated after it is a
//! new registration or a new customer's reading.
//!
//! **An erasure** ([`erase`]): tombstone; scrub the person's customer and phone landing
//! lines (every other line byte-identical); remove their rows from the customer shards and
//! their devices from the device index; tombstone and scrub the Step Trainer lines of their
//! serials unless another customer still owns the serial; compute the scrubbed objects
//! again through the transitions (which rewrite or delete the trusted and curated outputs,
//! compacted files included); delete the postings; delete the noncurrent versions of every
//! object touched; write the audit record. What it found (the files, the devices) is
//! recorded beside the request before anything changes, so a retry after a stop half-way
//! finishes the erasure although the person's lines are already gone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::customer_trusted_to_curated::{
    DeviceChanges, IN_FLIGHT, apply_device_changes, change, serial,
};
use super::machine_learning_trusted_to_curated::{Side, side_manifest_key};
use super::{
    Ctx, Rule, Transition, compact, device_entries, quarantine_key, read_json, read_manifest,
    rewrite_object, rewrite_shard, write_json,
};
use crate::columnar::{read_holder, read_parquet};
use crate::compute::{PersonKind, person_columns};
use crate::error::{Error, Result};
use crate::index::{Entry, Index};
use crate::keys::{self, SourceKey};
use crate::rules::FastMap;
use crate::schema::Table;
use crate::store::Fetched;
use crate::summary::Summary;

/// The landing tables: what the erasure index points at.
fn landing_tables() -> Vec<Table> {
    Table::landing().collect()
}

/// Where the erasure index and the tombstones are kept: one folder per person.
pub const PERSONS_PREFIX: &str = "_stedi/persons/";

/// Where erasure requests are dropped (`<request id>.json`, `{"email": "…"}`), readable and
/// writable by the data-protection role and the erasure function only.
pub const REQUESTS_PREFIX: &str = "_stedi/erasure/requests/";

/// Where the audit record of each request is kept (`<request id>.json`; no personal data).
pub const AUDIT_PREFIX: &str = "_stedi/erasure/audit/";

/// The keyed hash naming a person: HMAC-SHA256 under `secret` of the kind and the value,
/// 32 hex digits (128 bits).
pub fn person_hash(secret: &str, kind: PersonKind, value: &str) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    let tag: &[u8] = match kind {
        PersonKind::Email => b"email\0",
        PersonKind::Serial => b"serial\0",
    };
    mac.update(tag);
    mac.update(value.as_bytes());
    mac.finalize().into_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The folder of person `h`: their postings and their tombstone.
pub fn person_prefix(h: &str) -> String {
    format!("{PERSONS_PREFIX}{h}/")
}

/// The tombstone of person `h`.
pub fn tombstone_key(h: &str) -> String {
    format!("{}erased.json", person_prefix(h))
}

/// The index partition of person `h`'s postings in `bucket`'s lake.
pub fn postings_partition(bucket: &str, h: &str) -> String {
    format!("{bucket}/persons/{h}")
}

/// The index entries of `postings` (keyed hash, landing key).
fn posting_entries<'a>(
    bucket: &str,
    postings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<Entry> {
    postings
        .into_iter()
        .map(|(h, landing)| (postings_partition(bucket, h), landing.to_string()))
        .collect()
}

/// Records `postings` (keyed hash, landing key) in the index.
pub fn post<'a, 'i>(
    index: &'i Index,
    bucket: &str,
    postings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> impl Future<Output = Result<()>> + Send + 'i {
    index.put(posting_entries(bucket, postings))
}

/// Removes `postings` (keyed hash, landing key) from the index.
pub fn unpost<'a, 'i>(
    index: &'i Index,
    bucket: &str,
    postings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> impl Future<Output = Result<()>> + Send + 'i {
    index.remove(posting_entries(bucket, postings))
}

/// The landing keys person `h` has postings for, in key order (one query).
pub async fn posted(index: &Index, bucket: &str, h: &str) -> Result<Vec<String>> {
    index.query(&postings_partition(bucket, h), "").await
}

/// Where a lake of layout 4 kept the posting saying landing object `landing_key` holds
/// person `h`, as an empty S3 object (`reconcile` moves such postings into the table).
pub fn posting_key(h: &str, landing_key: &str) -> String {
    format!("{}{landing_key}", person_prefix(h))
}

/// The posting (keyed hash, landing key) S3 object `key` is, if it is one of layout 4
/// (not a tombstone or the epoch).
pub fn legacy_posting(key: &str) -> Option<(&str, &str)> {
    let (h, landing) = key.strip_prefix(PERSONS_PREFIX)?.split_once('/')?;
    landing_table(landing).map(|_| (h, landing))
}

/// Where the wide indexes too large for an entry of the index table are kept (one per
/// landing file with very many people).
pub const WIDE_PREFIX: &str = "_stedi/persons-wide/";

/// The S3 object of the wide index of landing object `landing_key`: the sorted hashes of
/// its people, one a line.
pub fn wide_key(landing_key: &str) -> String {
    format!("{WIDE_PREFIX}{landing_key}")
}

/// The index partition of the wide indexes of landing table `table`: one entry per
/// landing file with many people, its landing key the sort key, the sorted hashes of its
/// people (one a line) an attribute. One partition a table, so that a consent's look-up
/// of reading files reads none of the bulk customer files' indexes.
pub fn wide_partition(bucket: &str, table: Table) -> String {
    format!("{bucket}/persons-wide/{}", table.name())
}

/// The attribute of a wide index entry holding the hashes.
const HASHES: &str = "h";

/// The landing table of landing key `landing`.
fn landing_table(landing: &str) -> Option<Table> {
    Table::landing().find(|t| landing.starts_with(t.prefix()))
}

/// Removes the wide index of landing object `landing_key`, wherever it is kept.
async fn remove_wide(ctx: &Ctx, bucket: &str, landing_key: &str) -> Result<()> {
    if let Some(table) = landing_table(landing_key) {
        let entry = (wide_partition(bucket, table), landing_key.to_string());
        ctx.index.remove(vec![entry]).await?;
    }
    ctx.store.delete(bucket, &wide_key(landing_key)).await
}

/// Every wide index of the landing files of `tables`: (landing key, the hashes it lists,
/// one a line). One query per table's entries, and one LIST of those kept as S3 objects, a
/// GET of each of those tables'.
async fn wide_indexes(ctx: &Ctx, bucket: &str, tables: &[Table]) -> Result<Vec<(String, Bytes)>> {
    let mut out = Vec::new();
    for table in tables {
        for (landing, attrs) in ctx.index.items(&wide_partition(bucket, *table), "").await? {
            if let Some(hashes) = attrs.get(HASHES) {
                out.push((landing, Bytes::from(hashes.clone())));
            }
        }
    }
    for key in ctx.store.list(bucket, WIDE_PREFIX).await? {
        let landing = &key[WIDE_PREFIX.len()..];
        if !landing_table(landing).is_some_and(|t| tables.contains(&t)) {
            continue;
        }
        if let Fetched::Body(body, _) = ctx.store.fetch(bucket, &key, None).await? {
            out.push((landing.to_string(), body));
        }
    }
    Ok(out)
}

/// Where every erased person has an empty marker (listed by wide files).
pub const ERASED_PREFIX: &str = "_stedi/erased/";

/// The marker of erased person `h`.
pub fn erased_key(h: &str) -> String {
    format!("{ERASED_PREFIX}{h}")
}

/// The erasure epoch: rewritten by every erasure once its tombstone and marker are written,
/// and before it looks for the person's postings. A landing function that read it
/// unchanged after registering a file knows every erased person from its cached list of
/// markers (read after that version of the epoch): one conditional GET a batch, not one
/// tombstone GET a person ([`erased_now`]). In a person's folder's namespace, but no
/// person's (`epoch.json` is no hash).
pub const EPOCH_KEY: &str = "_stedi/persons/epoch.json";

/// What the epoch holds: which erasure wrote it last (each write differs, so its ETag
/// changes).
#[derive(Serialize)]
struct Epoch<'a> {
    person: &'a str,
    request: &'a str,
    erased_at: i64,
}

/// Writes person `h`'s tombstone, then the marker wide files list, then the epoch.
async fn bury(ctx: &Ctx, bucket: &str, h: &str, stone: &Tombstone) -> Result<()> {
    write_json(ctx, bucket, &tombstone_key(h), stone).await?;
    ctx.store.put(bucket, &erased_key(h), Bytes::new()).await?;
    let epoch = Epoch {
        person: h,
        request: &stone.request,
        erased_at: stone.erased_at,
    };
    write_json(ctx, bucket, EPOCH_KEY, &epoch).await
}

/// The people erased in `bucket`, as the erasure markers say, read after the caller
/// registered its files (register, then look). One conditional GET of the epoch: unchanged
/// since this function last listed the markers, the list stands (an erasure that has not
/// rewritten the epoch yet looks for postings after it does, and finds the caller's);
/// changed, the markers are listed again. No epoch yet: markers written before epochs
/// existed are listed once, and the list stands while there is still none.
pub async fn erased_now(ctx: &Ctx, bucket: &str) -> Result<Arc<BTreeSet<String>>> {
    let cached = ctx.erased.lock().ok().and_then(|c| c.get(bucket).cloned());
    let etag = cached.as_ref().and_then(|(e, _)| e.clone());
    // `None`: the cached list stands; `Some(etag)`: list again, under that epoch.
    let relist = match ctx.store.fetch(bucket, EPOCH_KEY, etag.as_deref()).await? {
        Fetched::NotModified => None,
        Fetched::Missing if cached.as_ref().is_some_and(|(e, _)| e.is_none()) => None,
        Fetched::Missing => Some(None),
        Fetched::Body(_, etag) => Some(Some(etag)),
    };
    let Some(etag) = relist else {
        return Ok(cached.map(|(_, set)| set).unwrap_or_default());
    };
    let listed: BTreeSet<String> = ctx
        .store
        .list(bucket, ERASED_PREFIX)
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix(ERASED_PREFIX).map(str::to_string))
        .collect();
    let listed = Arc::new(listed);
    if let Ok(mut c) = ctx.erased.lock() {
        c.insert(bucket.to_string(), (etag, listed.clone()));
    }
    Ok(listed)
}

/// What an erased person leaves behind: when, and by which request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Erasure time, epoch milliseconds: lines of the person dated at or before it never
    /// enter the lake again.
    pub erased_at: i64,
    /// The request that erased them.
    pub request: String,
}

/// A JSON-lines body with some people's lines removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scrubbed {
    /// Every other line, byte-identical, in order.
    pub body: Vec<u8>,
    /// Lines removed.
    pub removed: u64,
    /// The serials the removed customer lines named.
    pub serials: BTreeSet<String>,
}

/// A field of a JSON object, matched case-insensitively (as the landing tables read).
fn field<'v>(m: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// An epoch-millisecond value as a landing line may carry it (number or numeric string).
fn millis(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Removes from `body` (a landing object of `table`) the lines of the people in `targets`
/// (e-mail or serial → remove only lines dated at or before this time; `None`: all of their
/// lines). Every other line stays byte-identical. A line that is not a JSON object is
/// removed when a target appears in it verbatim.
pub fn scrub_lines(body: &[u8], table: Table, targets: &BTreeMap<String, Option<i64>>) -> Scrubbed {
    let mut out = Scrubbed::default();
    let Some((_, k, t)) = person_columns(table) else {
        out.body = body.to_vec();
        return out;
    };
    let columns = table.columns();
    let (who, when) = (columns[k].name, columns[t].name);
    for line in body.split_inclusive(|b| *b == b'\n') {
        let text = line.trim_ascii();
        let drop = if text.is_empty() {
            false
        } else {
            match serde_json::from_slice::<serde_json::Map<String, Value>>(text) {
                Ok(m) => match field(&m, who).and_then(Value::as_str) {
                    Some(p) => match targets.get(p) {
                        None => false,
                        Some(None) => true,
                        Some(Some(before)) => field(&m, when)
                            .and_then(millis)
                            .is_none_or(|at| at <= *before),
                    },
                    None => false,
                },
                Err(_) => targets
                    .keys()
                    .any(|p| !p.is_empty() && memchr::memmem::find(text, p.as_bytes()).is_some()),
            }
        };
        if !drop {
            out.body.extend_from_slice(line);
            continue;
        }
        out.removed += 1;
        if table == Table::CustomerLanding
            && let Ok(m) = serde_json::from_slice::<serde_json::Map<String, Value>>(text)
            && let Some(s) = field(&m, "serialnumber").and_then(Value::as_str)
        {
            out.serials.insert(s.to_string());
        }
    }
    out
}

/// Rewrites landing object `key` without the `targets`' lines (conditional write, retried
/// on a concurrent rewrite). Returns what was removed (nothing when the object is gone or
/// holds none of them).
async fn scrub_object(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    table: Table,
    targets: &BTreeMap<String, Option<i64>>,
) -> Result<Scrubbed> {
    let mut done = Scrubbed::default();
    let mut scratch = Summary::default();
    rewrite_object(ctx, bucket, key, &mut scratch, |current| {
        let Some(bytes) = current else {
            return Ok(None);
        };
        let s = scrub_lines(&bytes, table, targets);
        if s.removed == 0 {
            done = Scrubbed::default();
            return Ok(None);
        }
        let Scrubbed {
            body,
            removed,
            serials,
        } = s;
        done = Scrubbed {
            body: Vec::new(),
            removed,
            serials,
        };
        Ok(Some(Bytes::from(body)))
    })
    .await?;
    Ok(done)
}

/// Reads a tombstone.
async fn tombstone(ctx: &Ctx, bucket: &str, h: &str) -> Result<Option<Tombstone>> {
    read_json(ctx, bucket, &tombstone_key(h)).await
}

/// The erasure time of person `h` if they were erased at or after `earliest` (the time of
/// their earliest line in a file): those lines are theirs, not a later registration's.
async fn erased_since(ctx: &Ctx, bucket: &str, h: &str, earliest: i64) -> Result<Option<i64>> {
    Ok(tombstone(ctx, bucket, h)
        .await?
        .map(|t| t.erased_at)
        .filter(|at| earliest <= *at))
}

/// A file's people as registered in the erasure index: (hash, value, earliest time of
/// their lines), sorted, and whether as one wide index.
pub(super) struct Registered {
    hashed: Vec<(String, String, i64)>,
    wide: bool,
}

/// Registers the file's people in the erasure index: one posting each, or one wide index
/// for a file of many. `None` for a table without people or a file without lines.
pub(super) async fn register(
    ctx: &Ctx,
    bucket: &str,
    src: &SourceKey,
    persons: FastMap<String, i64>,
) -> Result<Option<Registered>> {
    let Some((kind, _, _)) = person_columns(src.table) else {
        return Ok(None);
    };
    if persons.is_empty() {
        return Ok(None);
    }
    let wide = persons.len() > ctx.cfg.erasure_wide_persons;
    let secret = &ctx.cfg.erasure_hash_key;
    let mut hashed: Vec<(String, String, i64)> = persons
        .into_iter()
        .map(|(who, earliest)| (person_hash(secret, kind, &who), who, earliest))
        .collect();
    hashed.sort();
    if wide {
        let body: String = hashed.iter().map(|(h, _, _)| format!("{h}\n")).collect();
        let pk = wide_partition(bucket, src.table);
        if body.len() <= crate::index::INLINE_BYTES {
            let attrs = crate::index::Attrs::from([(HASHES.to_string(), body)]);
            ctx.index.put_item(&pk, &src.key, &attrs, false).await?;
        } else {
            ctx.store
                .put(bucket, &wide_key(&src.key), Bytes::from(body))
                .await?;
            ctx.index.remove(vec![(pk, src.key.clone())]).await?;
        }
    } else {
        let postings = hashed
            .iter()
            .map(|(h, _, _)| (h.as_str(), src.key.as_str()));
        post(&ctx.index, bucket, postings).await?;
    }
    Ok(Some(Registered { hashed, wide }))
}

/// The erasure side of a landing transition (see the module): records the people the file
/// holds, then scrubs the lines of those erased at or after the time of their lines.
/// Returns the lines scrubbed (0: the file is as it was).
pub(super) async fn guard(
    ctx: &Ctx,
    bucket: &str,
    src: &SourceKey,
    persons: FastMap<String, i64>,
) -> Result<u64> {
    // Register, then look: of this file and an erasure, at least one sees the other.
    let Some(registered) = register(ctx, bucket, src, persons).await? else {
        return Ok(0);
    };
    let erased = erased_now(ctx, bucket).await?;
    scrub_erased(ctx, bucket, src, registered, &erased).await
}

/// Scrubs from a registered file the lines of its people on `erased` (read after it was
/// registered, [`erased_now`]) dated at or before their erasure (each one's tombstone read).
/// Returns the lines scrubbed.
pub(super) async fn scrub_erased(
    ctx: &Ctx,
    bucket: &str,
    src: &SourceKey,
    registered: Registered,
    erased: &BTreeSet<String>,
) -> Result<u64> {
    let Registered { hashed, wide } = registered;
    let candidates = hashed.into_iter().filter(|(h, _, _)| erased.contains(h));
    let found: Vec<Option<(String, String, i64)>> = stream::iter(candidates)
        .map(|(h, who, earliest)| async move {
            let at = erased_since(ctx, bucket, &h, earliest).await?;
            Ok::<_, Error>(at.map(|at| (who, h, at)))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let erased: Vec<(String, String, i64)> = found.into_iter().flatten().collect();
    if erased.is_empty() {
        return Ok(0);
    }
    let targets: BTreeMap<String, Option<i64>> = erased
        .iter()
        .map(|(who, _, at)| (who.clone(), Some(*at)))
        .collect();
    let scrubbed = scrub_object(ctx, bucket, &src.key, src.table, &targets).await?;
    ctx.store
        .delete_noncurrent(bucket, [src.key.as_str()])
        .await?;
    if wide {
        // The caller computes the file again, which indexes what is left.
        remove_wide(ctx, bucket, &src.key).await?;
    }
    if !wide {
        // Written again by the next run if lines dated after the erasure remain.
        let postings = erased
            .iter()
            .map(|(_, h, _)| (h.as_str(), src.key.as_str()));
        unpost(&ctx.index, bucket, postings).await?;
    }
    tracing::info!(
        key = %src.key,
        lines = scrubbed.removed,
        "lines of erased people scrubbed from a landing object"
    );
    Ok(scrubbed.removed)
}

/// The audit record of one erasure request: what it changed, no personal data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// The request id.
    pub request: String,
    /// The keyed hash of the person's e-mail (as named in the erasure index).
    pub person: String,
    /// Erasure time, epoch milliseconds.
    pub erased_at: i64,
    /// Objects rewritten (landing objects scrubbed, customer and device shards, trusted
    /// and curated outputs and compacted files computed again).
    pub objects_rewritten: Vec<String>,
    /// Objects deleted (outputs left without rows).
    pub objects_deleted: Vec<String>,
    /// Noncurrent object versions deleted.
    pub versions_deleted: u64,
    /// Rows (landing: lines) removed, per table. machine_learning_curated is not counted:
    /// its rows name a serial, and its objects are in `objects_rewritten`.
    pub rows_removed: BTreeMap<String, u64>,
    /// Serials of the person kept because another customer registered the same device.
    pub serials_shared: u64,
}

/// The audit record of `request`.
pub fn audit_key(request: &str) -> String {
    format!("{AUDIT_PREFIX}{request}.json")
}

/// The rows the outputs of landing source `stem` hold in `table` now (from its manifest).
async fn source_rows(ctx: &Ctx, bucket: &str, table: Table, stem: &str) -> Result<u64> {
    let Some(m) = read_manifest(ctx, bucket, table, stem).await? else {
        return Ok(0);
    };
    let mut n = 0;
    for dt in &m.dts {
        let key = keys::output_key(table, dt, m.object_of(stem));
        let Fetched::Body(b, _) = compact::fetch_working(ctx, bucket, &key).await? else {
            continue;
        };
        n += if m.object.is_some() {
            // A batch object: the source's rows are those its footer lists under its name.
            let (held, _) = read_holder(b, &key)?;
            held.iter()
                .filter(|h| h.name == stem)
                .map(|h| h.rows)
                .sum::<u64>()
        } else {
            read_parquet(b, &[], &key)?
                .iter()
                .map(|b| b.num_rows() as u64)
                .sum::<u64>()
        };
    }
    Ok(n)
}

/// The outcome of computing landing object `key`, or `None` when it failed because the
/// object is gone, said with a warning: a posting left behind by a deleted customer file
/// (its outputs are `reconcile`'s). A reading file that is gone never fails: its
/// transition takes its rows out.
pub(crate) fn unless_gone(key: &str, result: Result<Summary>) -> Result<Option<Summary>> {
    match result {
        Ok(done) => Ok(Some(done)),
        Err(Error::NoSuchObject { key: gone, .. }) if gone == key => {
            tracing::warn!(key = %key, "a landing object the erasure index names is gone");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Computes the landing objects again, and what their trusted outputs feed. With
/// `events_follow`, an output written is left to the transitions its object-created event
/// fires (S3 sends one for every PUT), except customer_curated, which runs at once so that
/// a device's Step Trainer files computed next see its owner curated; what a deleted output
/// fed is always done here (deletions fire no event). Returns what the transitions did and
/// the machine-learning side manifests they rewrote (a phone object's names its users'
/// devices). A customer file that is gone (a posting left behind by a deleted file) is
/// skipped, with a warning: its outputs are `reconcile`'s to remove; a reading file that is
/// gone has its rows taken out by its transition.
pub(crate) async fn recompute(
    ctx: &Ctx,
    bucket: &str,
    landing: &BTreeSet<String>,
    events_follow: bool,
) -> Result<(Summary, BTreeSet<String>)> {
    let mut s = Summary::default();
    let mut sides = BTreeSet::new();
    for key in landing {
        let src = keys::accept(bucket, key, &landing_tables())?;
        let Some(t) = Transition::of_landing(src.table) else {
            continue;
        };
        let Some(done) = unless_gone(key, t.run(ctx, bucket, &src).await)? else {
            continue;
        };
        let trusted: Vec<Table> = Table::ALL.into_iter().filter(|t| t.partitioned()).collect();
        let fed: Vec<(SourceKey, bool)> = done
            .outputs
            .iter()
            .map(|k| (k, true))
            .chain(done.deleted.iter().map(|k| (k, false)))
            .filter_map(|(k, exists)| Some((keys::accept(bucket, k, &trusted).ok()?, exists)))
            .collect();
        s.absorb(done);
        for (out, exists) in fed {
            if let (Some(side), Some(dt)) = (Side::of(out.table), out.dt.as_deref()) {
                sides.insert(side_manifest_key(dt, side, &out.stem));
            }
            // What the output feeds (curated customers only from an output still there).
            for t in Transition::ALL
                .into_iter()
                .filter(|t| t.sources().contains(&out.table))
            {
                let curated = matches!(t.rule(), Rule::CuratedByReadings { .. });
                let here = match exists {
                    true => curated || !events_follow,
                    false => !curated,
                };
                if here {
                    s.absorb(t.run(ctx, bucket, &out).await?);
                }
            }
        }
    }
    Ok((s, sides))
}

/// What an erasure found and did before it could stop half-way (a timeout, throttling),
/// kept until its audit is written, so that a retry (SQS delivers the request again, or a
/// new request for the same person) finishes it although the person's lines are already
/// gone from landing: the files that held them, their devices, the outputs those files had,
/// the landing objects scrubbed and the counts so far. It names devices, so it is kept
/// where the requests are (readable by the data-protection role and the erasure function
/// only), under the person's keyed hash, and deleted, old versions too, once the audit is
/// written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// Landing objects the erasure index named for the person or their devices.
    found: BTreeSet<String>,
    /// The person's device serials (from their customer lines and records).
    serials: BTreeSet<String>,
    /// The trusted outputs the found objects had when found (their old versions go too).
    outputs: BTreeSet<String>,
    /// Landing objects scrubbed.
    scrubbed: BTreeSet<String>,
    /// Rows the trusted outputs of the found objects held when found (per table).
    before: BTreeMap<String, u64>,
    /// Rows removed so far (landing lines, customer shard rows), per table.
    rows: BTreeMap<String, u64>,
}

/// Where the progress of an erasure of person `h` is kept (beside the requests; not
/// `.json`, so it fires no erasure event).
fn progress_key(h: &str) -> String {
    format!("{REQUESTS_PREFIX}{h}.progress")
}

impl Progress {
    /// Writes the progress when it changed since `saved`.
    async fn save(&self, ctx: &Ctx, bucket: &str, h: &str, saved: &mut Progress) -> Result<()> {
        if self != saved {
            write_json(ctx, bucket, &progress_key(h), self).await?;
            *saved = self.clone();
        }
        Ok(())
    }

    /// Records `fresh` (found now, not before): their outputs and the rows those hold.
    async fn find(&mut self, ctx: &Ctx, bucket: &str, fresh: &[(String, Table)]) -> Result<()> {
        for (table, n) in derived_rows(ctx, bucket, fresh).await? {
            *self.before.entry(table).or_default() += n;
        }
        self.outputs.extend(output_keys(ctx, bucket, fresh).await?);
        self.found.extend(fresh.iter().map(|(k, _)| k.clone()));
        Ok(())
    }

    /// Scrubs the lines of `targets` out of landing object `key`, counting them.
    async fn scrub(
        &mut self,
        ctx: &Ctx,
        bucket: &str,
        key: &str,
        table: Table,
        targets: &BTreeMap<String, Option<i64>>,
    ) -> Result<()> {
        let s = scrub_object(ctx, bucket, key, table, targets).await?;
        if s.removed > 0 {
            *self.rows.entry(table.name().to_string()).or_default() += s.removed;
            self.scrubbed.insert(key.to_string());
        }
        Ok(())
    }
}

/// Deletes the progress of an erasure of person `h`, old versions too (it names devices).
async fn forget_progress(ctx: &Ctx, bucket: &str, h: &str) -> Result<u64> {
    let key = progress_key(h);
    ctx.store.delete(bucket, &key).await?;
    ctx.store.delete_noncurrent(bucket, [key.as_str()]).await
}

/// The device serials the customer lines of landing object `key` name for `email`.
async fn serials_in(ctx: &Ctx, bucket: &str, key: &str, email: &str) -> Result<BTreeSet<String>> {
    let Fetched::Body(body, _) = ctx.store.fetch(bucket, key, None).await? else {
        return Ok(BTreeSet::new());
    };
    let targets = BTreeMap::from([(email.to_string(), None)]);
    Ok(scrub_lines(&body, Table::CustomerLanding, &targets).serials)
}

/// The trusted outputs of landing objects (from their manifests), with the copies
/// compaction holds of them.
async fn output_keys(
    ctx: &Ctx,
    bucket: &str,
    landing: &[(String, Table)],
) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for (key, table) in landing {
        let Some(target) = Transition::of_landing(*table)
            .map(|t| t.target())
            .filter(|t| t.partitioned())
        else {
            continue;
        };
        let src = keys::accept(bucket, key, &[*table])?;
        let Some(m) = read_manifest(ctx, bucket, target, &src.stem).await? else {
            continue;
        };
        for dt in &m.dts {
            let output = keys::output_key(target, dt, m.object_of(&src.stem));
            out.insert(keys::held_key(&output));
            out.insert(output);
        }
    }
    Ok(out)
}

/// Erases the person with e-mail `email` (see the module); `request` names the request
/// (its audit record). A request already audited changes nothing. Before it changes
/// anything it records what it found ([`Progress`]); a retry after a stop half-way reads
/// it back, finds the person's devices although their lines are gone, and computes every
/// file found again, not only those it scrubs itself.
pub async fn erase(ctx: &Ctx, bucket: &str, email: &str, request: &str) -> Result<Audit> {
    let secret = &ctx.cfg.erasure_hash_key;
    let h = person_hash(secret, PersonKind::Email, email);
    if let Some(done) = read_json::<Audit>(ctx, bucket, &audit_key(request)).await? {
        forget_progress(ctx, bucket, &h).await?;
        return Ok(done);
    }
    let erased_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    let stone = Tombstone {
        erased_at,
        request: request.to_string(),
    };
    bury(ctx, bucket, &h, &stone).await?;
    let mut audit = Audit {
        request: request.to_string(),
        person: h.clone(),
        erased_at,
        ..Audit::default()
    };
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut postings: Vec<(String, String)> = Vec::new();
    let mut legacy: Vec<String> = Vec::new();
    let mut saved: Progress = read_json(ctx, bucket, &progress_key(&h))
        .await?
        .unwrap_or_default();
    let mut p = saved.clone();

    // What the person's files and records name, recorded before anything changes: their
    // landing objects (postings, wide indexes) with their outputs, and their devices (every
    // customer line of theirs, their current record).
    let everything = BTreeMap::from([(email.to_string(), None)]);
    let shards = ctx.cfg.customer_shards;
    let Postings {
        found,
        listed,
        legacy: in_s3,
        wide: mut wide_found,
    } = postings_of(ctx, bucket, &h).await?;
    postings.extend(listed);
    legacy.extend(in_s3);
    let fresh: Vec<(String, Table)> = found
        .into_iter()
        .filter(|(k, _)| !p.found.contains(k))
        .collect();
    p.find(ctx, bucket, &fresh).await?;
    let theirs = found_tables(bucket, &p.found);
    for (key, table) in &theirs {
        if *table == Table::CustomerLanding {
            p.serials.extend(serials_in(ctx, bucket, key, email).await?);
        }
    }
    let shard = keys::shard_of(email, shards);
    for table in [Table::CustomerTrusted, Table::CustomerCurated] {
        let rows = ctx.customer_shard(bucket, table, shard).await?;
        p.serials.extend(serial(&rows, email));
    }
    p.save(ctx, bucket, &h, &mut saved).await?;

    // Landing: the person's customer and phone lines (each file's count kept as it goes).
    for (key, table) in &theirs {
        p.scrub(ctx, bucket, key, *table, &everything).await?;
        p.save(ctx, bucket, &h, &mut saved).await?;
    }

    // Customer shards and the device index.
    let mut devices = DeviceChanges::new();
    for table in [Table::CustomerTrusted, Table::CustomerCurated] {
        let mut s = Summary::default();
        rewrite_shard(ctx, bucket, table, shard, &mut s, |current| {
            let mut next = current.clone();
            next.rows.remove(email).map(|_| next)
        })
        .await?;
        if !s.outputs.is_empty() {
            *p.rows.entry(table.name().to_string()).or_default() += 1;
            p.save(ctx, bucket, &h, &mut saved).await?;
        }
        touched.insert(keys::shard_key(table, shard));
    }
    let serials = p.serials.clone();
    for s in &serials {
        for curated in [false, true] {
            change(&mut devices, shards, s, email, curated, false);
        }
    }
    let mut ds = Summary::default();
    apply_device_changes(ctx, bucket, devices, &mut ds).await?;
    touched.extend(
        serials
            .iter()
            .map(|s| keys::device_shard_key(keys::shard_of(s, shards))),
    );

    // Step Trainer lines of the person's devices no other customer owns.
    for s in &serials {
        if owned_by_another(ctx, bucket, s).await? {
            audit.serials_shared += 1;
            continue;
        }
        let hs = person_hash(secret, PersonKind::Serial, s);
        bury(ctx, bucket, &hs, &stone).await?;
        let Postings {
            found,
            listed,
            legacy: in_s3,
            wide,
        } = postings_of(ctx, bucket, &hs).await?;
        postings.extend(listed);
        legacy.extend(in_s3);
        wide_found.extend(wide);
        let fresh: Vec<(String, Table)> = found
            .iter()
            .filter(|(k, _)| !p.found.contains(k))
            .cloned()
            .collect();
        p.find(ctx, bucket, &fresh).await?;
        p.save(ctx, bucket, &h, &mut saved).await?;
        let targets = BTreeMap::from([(s.clone(), None)]);
        for (key, table) in &found {
            p.scrub(ctx, bucket, key, *table, &targets).await?;
            p.save(ctx, bucket, &h, &mut saved).await?;
        }
    }
    let Progress {
        found: computed,
        outputs,
        scrubbed,
        before,
        mut rows,
        ..
    } = p;

    // Trusted and curated: every object found computed again, those an earlier attempt
    // scrubbed too (which indexes what is left of them: a found file's wide index goes
    // first, it may now be narrow).
    for key in computed.intersection(&wide_found) {
        remove_wide(ctx, bucket, key).await?;
    }
    let (done, sides) = recompute(ctx, bucket, &computed, false).await?;
    touched.extend(sides);
    let all: Vec<(String, Table)> = found_tables(bucket, &computed);
    let after = derived_rows(ctx, bucket, &all).await?;
    for (table, n) in before {
        let left = after.get(&table).copied().unwrap_or(0);
        if n > left {
            *rows.entry(table).or_default() += n - left;
        }
    }
    let postings_of_theirs = postings.iter().map(|(h, l)| (h.as_str(), l.as_str()));
    unpost(&ctx.index, bucket, postings_of_theirs).await?;
    for key in &legacy {
        ctx.store.delete(bucket, key).await?;
    }

    // Old versions of everything touched: every object found and its quarantine (an
    // earlier attempt may have scrubbed it), the outputs they had and have now.
    touched.extend(computed.iter().cloned());
    touched.extend(outputs);
    for key in &computed {
        if let Ok(src) = keys::accept(bucket, key, &landing_tables()) {
            touched.insert(quarantine_key(&src));
        }
    }
    for k in done.outputs.iter().chain(&done.deleted) {
        touched.insert(k.clone());
        touched.insert(keys::held_key(k));
    }
    audit.versions_deleted += ctx
        .store
        .delete_noncurrent(bucket, touched.iter().map(String::as_str))
        .await?;
    let mut rewritten: BTreeSet<String> = scrubbed.clone();
    rewritten.extend(done.outputs.iter().cloned());
    rewritten.extend(ds.outputs.iter().cloned());
    for t in [Table::CustomerTrusted, Table::CustomerCurated] {
        if rows.contains_key(t.name()) {
            rewritten.insert(keys::shard_key(t, keys::shard_of(email, shards)));
        }
    }
    let deleted: BTreeSet<String> = done.deleted.iter().cloned().collect();
    audit.objects_rewritten = rewritten.difference(&deleted).cloned().collect();
    audit.objects_deleted = deleted.into_iter().collect();
    audit.rows_removed = rows;
    write_json(ctx, bucket, &audit_key(request), &audit).await?;
    forget_progress(ctx, bucket, &h).await?;
    Ok(audit)
}

/// An erasure request as dropped under [`REQUESTS_PREFIX`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Request {
    /// The person's e-mail.
    pub email: String,
}

/// The request id of request object `key` (its name without `.json`), if it is one.
pub fn request_id(key: &str) -> Option<&str> {
    let id = key.strip_prefix(REQUESTS_PREFIX)?.strip_suffix(".json")?;
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then_some(id)
}

/// Handles request object `key`: erases the person it names, then deletes the request
/// (it holds their e-mail) with its old versions. A request object already handled is
/// gone: its redelivered event changes nothing.
pub async fn handle_request(ctx: &Ctx, bucket: &str, key: &str) -> Result<Summary> {
    let Some(id) = request_id(key) else {
        return Err(Error::RefusedKey {
            bucket: bucket.to_string(),
            key: key.to_string(),
            reason: format!(
                "not an erasure request ({REQUESTS_PREFIX}<id>.json, id of letters, digits, '-', '_', '.')"
            ),
        });
    };
    let mut s = Summary::default();
    let Fetched::Body(body, _) = ctx.store.fetch(bucket, key, None).await? else {
        return Ok(s);
    };
    let r: Request = serde_json::from_slice(&body).map_err(|source| Error::Json {
        context: key.to_string(),
        source,
    })?;
    let audit = erase(ctx, bucket, r.email.trim(), id).await?;
    ctx.store.delete(bucket, key).await?;
    ctx.store.delete_noncurrent(bucket, [key]).await?;
    tracing::info!(
        request = id,
        rewritten = audit.objects_rewritten.len(),
        deleted = audit.objects_deleted.len(),
        versions = audit.versions_deleted,
        "erasure done"
    );
    s.sources.push(key.to_string());
    s.rows_out = audit.rows_removed.values().sum();
    s.outputs = audit.objects_rewritten;
    s.deleted = audit.objects_deleted;
    s.outputs.push(audit_key(id));
    Ok(s)
}

/// The landing objects the erasure index names for person `h` (with their tables): by
/// their postings, and by the wide indexes that list `h`; with the postings found and the
/// landing objects found through a wide index.
pub(super) async fn postings_of(ctx: &Ctx, bucket: &str, h: &str) -> Result<Postings> {
    let mut p = Postings::default();
    // Whether `landing` is a landing object (then found).
    let add = |p: &mut Postings, landing: &str| match landing_table(landing) {
        Some(table) => {
            p.found.push((landing.to_string(), table));
            true
        }
        None => false,
    };
    for landing in posted(&ctx.index, bucket, h).await? {
        if add(&mut p, &landing) {
            p.listed.push((h.to_string(), landing));
        }
    }
    // Postings a lake of layout 4 kept in S3, until `reconcile` has moved them.
    let prefix = person_prefix(h);
    for key in ctx.store.list(bucket, &prefix).await? {
        let landing = &key[prefix.len()..];
        if add(&mut p, landing) {
            p.legacy.push(key);
        } // else the tombstone
    }
    for (landing, body) in wide_indexes(ctx, bucket, &landing_tables()).await? {
        if body.split(|b| *b == b'\n').any(|l| l == h.as_bytes()) {
            add(&mut p, &landing);
            p.wide.insert(landing);
        }
    }
    // Customer files first: they name the serials.
    p.found
        .sort_by_key(|(k, t)| (*t != Table::CustomerLanding, k.clone()));
    p.found.dedup();
    Ok(p)
}

/// Whether landing key `landing` is a reading file (phone or Step Trainer): what a
/// customer's consent decides the fate of.
fn is_reading_key(landing: &str) -> bool {
    landing_table(landing).is_some_and(is_reading_table)
}

/// Whether landing table `table` holds readings (the phone and Step Trainer files).
fn is_reading_table(table: Table) -> bool {
    Transition::of_landing(table).is_some_and(Transition::filters_readings)
}

/// The landing objects each of the keyed hashes `persons` has a posting for (not those
/// found through a wide index): one query per person, a few in flight.
pub(crate) async fn postings(
    ctx: &Ctx,
    bucket: &str,
    persons: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, Vec<String>>> {
    stream::iter(persons)
        .map(|h| async move {
            let listed: Vec<String> = posted(&ctx.index, bucket, &h)
                .await?
                .into_iter()
                .filter(|landing| landing_table(landing).is_some())
                .collect();
            Ok::<_, Error>((h, listed))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await
}

/// The reading landing objects (phone and Step Trainer files) the erasure index names for
/// any of the keyed hashes `persons`: their postings (`listed` already holds some persons'
/// lists; the others are listed here, one LIST each), one LIST of the wide indexes, and
/// those of reading files each read once, whatever the number of persons (per-session
/// files hold one person, so at launch there are none to read).
pub(super) async fn readings_of(
    ctx: &Ctx,
    bucket: &str,
    persons: &BTreeSet<String>,
    mut listed: BTreeMap<String, Vec<String>>,
) -> Result<BTreeSet<String>> {
    let unlisted: Vec<String> = persons
        .iter()
        .filter(|h| !listed.contains_key(*h))
        .cloned()
        .collect();
    listed.extend(postings(ctx, bucket, unlisted).await?);
    let mut found: BTreeSet<String> = listed
        .into_iter()
        .filter(|(h, _)| persons.contains(h))
        .flat_map(|(_, landing)| landing)
        .filter(|landing| is_reading_key(landing))
        .collect();
    // Every wide index of a reading file (bulk files are few).
    let reading: Vec<Table> = Table::landing().filter(|t| is_reading_table(*t)).collect();
    for (landing, body) in wide_indexes(ctx, bucket, &reading).await? {
        let holds = body
            .split(|b| *b == b'\n')
            .any(|l| std::str::from_utf8(l).is_ok_and(|h| persons.contains(h)));
        if holds {
            found.insert(landing);
        }
    }
    Ok(found)
}

/// What the erasure index names for one person.
#[derive(Debug, Default)]
pub(super) struct Postings {
    /// The landing objects (with their tables), customer files first.
    pub(super) found: Vec<(String, Table)>,
    /// The person's postings: (keyed hash, landing key).
    listed: Vec<(String, String)>,
    /// The person's postings still kept as S3 objects (layout 4).
    legacy: Vec<String>,
    /// The landing objects found through a wide index.
    wide: BTreeSet<String>,
}

/// The tables of landing keys.
fn found_tables(bucket: &str, landing: &BTreeSet<String>) -> Vec<(String, Table)> {
    landing
        .iter()
        .filter_map(|k| {
            Some((
                k.clone(),
                keys::accept(bucket, k, &landing_tables()).ok()?.table,
            ))
        })
        .collect()
}

/// The rows the trusted outputs of landing objects hold, per trusted table.
async fn derived_rows(
    ctx: &Ctx,
    bucket: &str,
    landing: &[(String, Table)],
) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (key, table) in landing {
        let Some(t) = Transition::of_landing(*table) else {
            continue;
        };
        let target = t.target();
        if !target.partitioned() {
            continue;
        }
        let src = keys::accept(bucket, key, &[*table])?;
        let n = source_rows(ctx, bucket, target, &src.stem).await?;
        *out.entry(target.name().to_string()).or_default() += n;
    }
    Ok(out)
}

/// Whether a customer other than the one being erased owns device `serial` (the device
/// index, after the erased customer's entries are gone).
async fn owned_by_another(ctx: &Ctx, bucket: &str, serial: &str) -> Result<bool> {
    let key = keys::device_shard_key(keys::shard_of(serial, ctx.cfg.customer_shards));
    Ok(match ctx.store.fetch(bucket, &key, None).await? {
        Fetched::Body(b, _) => device_entries(&b, &key)?.iter().any(|e| e.serial == serial),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyed_hash_depends_on_the_key_and_the_kind() {
        let a = person_hash("k1", PersonKind::Email, "a@x");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, person_hash("k1", PersonKind::Email, "a@x"));
        assert_ne!(a, person_hash("k2", PersonKind::Email, "a@x"));
        assert_ne!(a, person_hash("k1", PersonKind::Serial, "a@x"));
        assert_ne!(a, person_hash("k1", PersonKind::Email, "b@x"));
        assert_eq!(
            posting_key(&a, "accelerometer/landing/f.json"),
            format!("_stedi/persons/{a}/accelerometer/landing/f.json")
        );
        assert_eq!(tombstone_key(&a), format!("_stedi/persons/{a}/erased.json"));
        let legacy = posting_key(&a, "accelerometer/landing/f.json");
        assert_eq!(
            legacy_posting(&legacy),
            Some((a.as_str(), "accelerometer/landing/f.json"))
        );
        assert_eq!(legacy_posting(&tombstone_key(&a)), None);
        assert_eq!(legacy_posting(EPOCH_KEY), None);
        assert_eq!(legacy_posting("_stedi/erased/x"), None);
    }

    #[test]
    fn scrubbing_keeps_every_other_line_byte_identical() {
        let body = concat!(
            "{\"user\":\"a@x\",\"timestamp\":5,\"x\":1,\"y\":1,\"z\":1}\n",
            "{ \"User\" : \"b@x\", \"timestamp\": 6, \"x\":1.50,\"y\":1,\"z\":1}\r\n",
            "\n",
            "{\"USER\":\"a@x\",\"timestamp\":\"9\",\"x\":1,\"y\":1,\"z\":1}\n",
            "not json a@x\n",
            "not json c@x"
        );
        let all = BTreeMap::from([("a@x".to_string(), None)]);
        let s = scrub_lines(body.as_bytes(), Table::AccelerometerLanding, &all);
        assert_eq!(s.removed, 3);
        assert_eq!(
            String::from_utf8(s.body).unwrap(),
            concat!(
                "{ \"User\" : \"b@x\", \"timestamp\": 6, \"x\":1.50,\"y\":1,\"z\":1}\r\n",
                "\n",
                "not json c@x"
            )
        );
        // Only lines dated at or before the erasure.
        let before = BTreeMap::from([("a@x".to_string(), Some(5))]);
        let s = scrub_lines(body.as_bytes(), Table::AccelerometerLanding, &before);
        assert_eq!(s.removed, 2); // the line at 5 and the unparsable one
        assert!(
            String::from_utf8(s.body)
                .unwrap()
                .contains("\"timestamp\":\"9\"")
        );
        // Customer lines name the serials to erase next.
        let c = "{\"email\":\"a@x\",\"serialNumber\":\"S1\",\"lastUpdateDate\":1}\n{\"email\":\"b@x\",\"serialNumber\":\"S2\",\"lastUpdateDate\":1}\n";
        let s = scrub_lines(c.as_bytes(), Table::CustomerLanding, &all);
        assert_eq!(s.removed, 1);
        assert_eq!(s.serials, BTreeSet::from(["S1".to_string()]));
        assert_eq!(
            String::from_utf8(s.body).unwrap(),
            "{\"email\":\"b@x\",\"serialNumber\":\"S2\",\"lastUpdateDate\":1}\n"
        );
    }
}
