//! What an output was computed from: the manifest of one source's outputs, kept under the
//! bookkeeping prefix outside every table location, so `reconcile` recomputes only what is
//! stale.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::compact::unix_now;
use super::reference::Ctx;
use crate::error::{Error, Result};
use crate::index::Attrs;
use crate::keys;
use crate::schema::Table;
use crate::store::Fetched;

/// The layout version manifests are written with; a manifest of an earlier layout is
/// stale, so `reconcile` recomputes its outputs once after an upgrade. 3: lineage records
/// the answer for each key consulted, not the ETag of each shard. 4: landing files are in
/// the erasure index (`transitions::erasure`), written when a source is computed.
pub const LAYOUT: u32 = 4;

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
    /// Whether every key this lineage consulted still gives its recorded answer.
    pub fn refs_current(&self, current: &Answers) -> bool {
        current.all_current(&self.refs)
    }
}

/// What every key (an e-mail or a serial) answers now, held compactly for a planner that
/// covers millions of keys: 16 bytes a key, its 64-bit FNV-1a hash (what lineage records
/// as [`keys::hash_hex`]) and the 64-bit FNV-1a hash of its answer. A key absent answers
/// `""`. Two different answers of one key would have to collide in 64 bits to be taken for
/// each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers(Vec<(u64, u64)>);

impl Answers {
    /// From (key, answer) pairs, each key once.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Answers {
        Answers::from_hashes(
            pairs
                .into_iter()
                .map(|(k, a)| (keys::fnv1a(k), keys::fnv1a(a))),
        )
    }

    /// From (key hash, answer hash) pairs, each key once.
    pub fn from_hashes(pairs: impl IntoIterator<Item = (u64, u64)>) -> Answers {
        let mut v: Vec<(u64, u64)> = pairs.into_iter().collect();
        v.sort_unstable();
        v.shrink_to_fit();
        Answers(v)
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every key of `refs` (key hash in hex → recorded answer) still gives its
    /// recorded answer.
    pub fn all_current(&self, refs: &BTreeMap<String, String>) -> bool {
        refs.iter().all(|(k, recorded)| {
            let now = u64::from_str_radix(k, 16).ok().and_then(|h| {
                self.0
                    .binary_search_by_key(&h, |p| p.0)
                    .ok()
                    .map(|i| self.0[i].1)
            });
            now.unwrap_or(keys::fnv1a("")) == keys::fnv1a(recorded)
        })
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
    /// The name of the objects holding the outputs when it is not the source's own stem:
    /// a batch object (see [`super::publish::Batch`]) holding several sources' rows, each
    /// source's listed in its footer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// When the manifest naming a batch object was written (Unix seconds), before the
    /// object itself: a batch object still missing soon after is being written by another
    /// invocation ([`super::publish::publish_partitioned`] waits for it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub written_at: u64,
}

/// A batch object not written yet this long after the manifest naming it (seconds) was
/// abandoned (a Lambda runs at most 15 minutes).
pub const IN_FLIGHT_SECONDS: u64 = 900;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Manifest {
    /// Whether the manifest names a batch object that may still be on its way at `now`
    /// (Unix seconds): written less than [`IN_FLIGHT_SECONDS`] before.
    pub fn in_flight(&self, now: u64) -> bool {
        self.object.is_some() && now < self.written_at + IN_FLIGHT_SECONDS
    }

    /// The name of the objects holding source `stem`'s outputs (one per `dt` of
    /// [`Manifest::dts`]).
    pub fn object_of<'a>(&'a self, stem: &'a str) -> &'a str {
        self.object.as_deref().unwrap_or(stem)
    }
}

/// Where an earlier release kept the manifest of `stem`'s outputs in `table`, as an S3
/// object under the bookkeeping prefix: `reconcile` moves it into the index table.
pub fn legacy_manifest_key(table: Table, stem: &str) -> String {
    format!("{}{stem}.json", keys::lineage_prefix(table))
}

/// The index partition holding `table`'s manifests, one entry per landing source, its
/// stem the sort key: `<bucket>/lineage/<table>`.
fn manifests_partition(bucket: &str, table: Table) -> String {
    format!("{bucket}/lineage/{}", table.name())
}

/// Entry attributes: the manifest's JSON, or the key of the S3 object holding it.
const JSON: &str = "m";
const BODY: &str = "body";
/// When the entry was written (Unix seconds).
const AT: &str = "at";
/// The version written, unique to one write: a delete removes only the version read.
const VERSION: &str = "v";
/// The version of a manifest still in its S3 object of an earlier release.
const LEGACY: &str = "s3";

/// A manifest as kept: `None` when unreadable (its outputs are computed again).
#[derive(Debug, Clone)]
pub struct Stored {
    /// The manifest.
    pub manifest: Option<Manifest>,
    /// When it was written (Unix seconds; an S3 object's time for one of an earlier
    /// release).
    pub written: i64,
    version: String,
    /// The S3 object holding its JSON (a manifest too large for its entry).
    body: Option<String>,
}

/// A version no other write has: the clock's nanoseconds (which tell processes apart) and
/// a counter of this process.
fn new_version() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}.{n:x}")
}

/// The entry of `table`'s manifest of `stem` as kept: its JSON read from the entry, or
/// from the S3 object it names.
async fn stored_of(ctx: &Ctx, bucket: &str, attrs: Attrs) -> Result<Stored> {
    let manifest = match (attrs.get(JSON), attrs.get(BODY)) {
        (Some(json), _) => serde_json::from_str(json).ok(),
        (None, Some(body)) => read_json(ctx, bucket, body).await?,
        (None, None) => None,
    };
    Ok(Stored {
        manifest,
        written: attrs.get(AT).and_then(|a| a.parse().ok()).unwrap_or(0),
        version: attrs.get(VERSION).cloned().unwrap_or_default(),
        body: attrs.get(BODY).cloned(),
    })
}

/// The manifest of `stem`'s outputs in `table` as kept (`None`: there is none): its
/// entry in the index table (one strongly consistent read), else, while the lake still
/// holds manifests of an earlier release as S3 objects, that object.
pub async fn stored_manifest(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
) -> Result<Option<Stored>> {
    if let Some(attrs) = ctx
        .index
        .get(&manifests_partition(bucket, table), stem)
        .await?
    {
        return Ok(Some(stored_of(ctx, bucket, attrs).await?));
    }
    if !ctx
        .holds_legacy(bucket, &keys::lineage_prefix(table))
        .await?
    {
        return Ok(None);
    }
    Ok(
        match ctx
            .store
            .fetch(bucket, &legacy_manifest_key(table, stem), None)
            .await?
        {
            Fetched::Body(b, _) => Some(Stored {
                manifest: serde_json::from_slice(&b).ok(),
                written: 0,
                version: LEGACY.to_string(),
                body: None,
            }),
            _ => None,
        },
    )
}

/// Reads the manifest of `stem`'s outputs in `table` (`None` when there is none or it is
/// unreadable).
pub async fn read_manifest(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
) -> Result<Option<Manifest>> {
    Ok(stored_manifest(ctx, bucket, table, stem)
        .await?
        .and_then(|s| s.manifest))
}

/// Every manifest of `table` (stem → what `keep` makes of it as kept), one strongly
/// consistent query of its partition (and a GET for each manifest too large for its
/// entry). Read a page at a time, each manifest handed to `keep` before the next is read:
/// the caller holds what it keeps of each (a planner: a few strings, not every person's
/// answer), never every manifest at once.
pub async fn all_manifests<T>(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    mut keep: impl FnMut(Stored) -> T,
) -> Result<BTreeMap<String, T>> {
    let mut out = BTreeMap::new();
    let pk = manifests_partition(bucket, table);
    let mut pages = ctx.index.pages(&pk, "");
    while let Some(page) = pages.next().await? {
        for (stem, attrs) in page {
            out.insert(stem, keep(stored_of(ctx, bucket, attrs).await?));
        }
    }
    Ok(out)
}

/// Writes the manifest of `stem`'s outputs in `table`; with `only_new`, only where there
/// is none (`false`: one exists, left as it was). One write to the index table; the S3
/// object of an earlier release goes after it.
async fn put_manifest(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    m: &Manifest,
    only_new: bool,
) -> Result<bool> {
    let legacy = ctx
        .holds_legacy(bucket, &keys::lineage_prefix(table))
        .await?;
    let legacy_key = legacy_manifest_key(table, stem);
    if only_new
        && legacy
        && matches!(
            ctx.store.fetch(bucket, &legacy_key, None).await?,
            Fetched::Body(..)
        )
    {
        return Ok(false);
    }
    let json = json_text(&format!("manifest of {stem} in {}", table.name()), m)?;
    let written = put_entry(ctx, bucket, table, stem, json, unix_now() as i64, only_new).await?;
    if written && legacy {
        ctx.store.delete(bucket, &legacy_key).await?;
    }
    Ok(written)
}

/// Writes the entry of manifest `json` of `stem`'s outputs in `table`, written at `at`
/// (see [`put_manifest`]): the JSON in the entry, or too large for it, in an S3 object
/// the entry names (written first, and named by the entry's version, so a body is never
/// overwritten); the body of the entry replaced goes after.
async fn put_entry(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    json: String,
    at: i64,
    only_new: bool,
) -> Result<bool> {
    let version = new_version();
    let mut attrs = Attrs::from([
        (AT.to_string(), at.to_string()),
        (VERSION.to_string(), version.clone()),
    ]);
    let body = (json.len() > crate::index::INLINE_BYTES).then(|| body_key(table, stem, &version));
    match &body {
        Some(key) => {
            ctx.store.put(bucket, key, Bytes::from(json)).await?;
            attrs.insert(BODY.to_string(), key.clone());
        }
        None => {
            attrs.insert(JSON.to_string(), json);
        }
    }
    let pk = manifests_partition(bucket, table);
    let (written, replaced) = ctx.index.put_item(&pk, stem, &attrs, only_new).await?;
    if !written && let Some(key) = &body {
        ctx.store.delete(bucket, key).await?;
    }
    if let Some(old) = replaced.as_ref().and_then(|r| r.get(BODY)) {
        ctx.store.delete(bucket, old).await?;
    }
    Ok(written)
}

/// Where the JSON of version `version` of a manifest too large for its entry is kept.
fn body_key(table: Table, stem: &str, version: &str) -> String {
    format!("{}{stem}/{version}.json", keys::manifest_body_prefix(table))
}

/// Writes the manifest of `stem`'s outputs in `table`.
pub async fn write_manifest(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    m: &Manifest,
) -> Result<()> {
    put_manifest(ctx, bucket, table, stem, m, false).await?;
    Ok(())
}

/// Creates the manifest of `stem`'s outputs in `table` where there is none (a conditional
/// write, no read): `false` when one exists.
pub async fn create_manifest(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    m: &Manifest,
) -> Result<bool> {
    put_manifest(ctx, bucket, table, stem, m, true).await
}

/// Deletes the manifest of `stem`'s outputs in `table` while it is the one `read` (one a
/// concurrent run wrote meanwhile stays): `false` when it is not.
pub async fn delete_manifest(
    ctx: &Ctx,
    bucket: &str,
    table: Table,
    stem: &str,
    read: &Stored,
) -> Result<bool> {
    if read.version == LEGACY {
        ctx.store
            .delete(bucket, &legacy_manifest_key(table, stem))
            .await?;
        return Ok(true);
    }
    let pk = manifests_partition(bucket, table);
    let deleted = ctx
        .index
        .delete_item_if(&pk, stem, VERSION, &read.version)
        .await?;
    if deleted && let Some(body) = &read.body {
        ctx.store.delete(bucket, body).await?;
    }
    Ok(deleted)
}

/// Moves the manifests an earlier release kept as S3 objects under `table`'s lineage
/// prefix into the index table, written at the object's time (an entry a function has
/// written since is newer and stays), then deletes the objects: one LIST, and a GET of
/// each. Returns how many moved.
pub async fn migrate_manifests(ctx: &Ctx, bucket: &str, table: Table) -> Result<usize> {
    let prefix = keys::lineage_prefix(table);
    let mut moved = 0;
    for o in ctx.store.list_objects(bucket, &prefix).await? {
        let Some(stem) = o.key[prefix.len()..].strip_suffix(".json") else {
            continue;
        };
        if stem.contains('/') {
            continue;
        }
        if let Fetched::Body(b, _) = ctx.store.fetch(bucket, &o.key, None).await?
            && let Ok(json) = String::from_utf8(b.to_vec())
        {
            put_entry(ctx, bucket, table, stem, json, o.modified, true).await?;
        }
        ctx.store.delete(bucket, &o.key).await?;
        moved += 1;
    }
    Ok(moved)
}

/// Reads a bookkeeping object written by [`write_json`] (`None` when there is none or it is
/// unreadable: the caller recomputes it).
pub async fn read_json<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
) -> Result<Option<T>> {
    Ok(match ctx.store.fetch(bucket, key, None).await? {
        Fetched::Body(b, _) => serde_json::from_slice(&b).ok(),
        _ => None,
    })
}

/// Writes a bookkeeping object as JSON.
pub async fn write_json<T: serde::Serialize>(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    value: &T,
) -> Result<()> {
    ctx.store.put(bucket, key, json_body(key, value)?).await
}

/// The JSON body of bookkeeping object `key`.
fn json_body<T: serde::Serialize>(key: &str, value: &T) -> Result<Bytes> {
    json_text(key, value).map(Bytes::from)
}

/// The JSON text of `value`, the record named by `what`.
fn json_text<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Json {
        context: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_write_has_its_own_version_and_body_key() {
        let versions: BTreeSet<String> = (0..1000).map(|_| new_version()).collect();
        assert_eq!(versions.len(), 1000);
        let v = versions.first().unwrap();
        assert_eq!(
            body_key(Table::AccelerometerTrusted, "s-1", v),
            format!("_stedi/manifests/accelerometer_trusted/s-1/{v}.json")
        );
    }

    #[test]
    fn answers_compare_each_recorded_answer_with_the_current_one() {
        let now = Answers::new([("a@x", "1655"), ("S-1", "owned"), ("b@x", "")]);
        assert_eq!(now.len(), 3);
        let refs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, a)| (keys::hash_hex(k), a.to_string()))
                .collect()
        };
        assert!(now.all_current(&refs(&[("a@x", "1655"), ("S-1", "owned")])));
        assert!(!now.all_current(&refs(&[("a@x", "1656")])));
        assert!(!now.all_current(&refs(&[("S-1", "waiting")])));
        // A key held nowhere answers "" (a customer who left, a serial without owner).
        assert!(now.all_current(&refs(&[("gone@x", ""), ("b@x", "")])));
        assert!(!now.all_current(&refs(&[("gone@x", "1655")])));
        // A recorded key that is no hash at all is stale unless it recorded "".
        let odd = BTreeMap::from([("not-hex".to_string(), "1655".to_string())]);
        assert!(!now.all_current(&odd));
        assert!(Answers::default().is_empty());
    }
}
