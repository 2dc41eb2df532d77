//! What an output was computed from: the manifest of one source's outputs, kept under the
//! bookkeeping prefix outside every table location, so `reconcile` recomputes only what is
//! stale.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::reference::Ctx;
use crate::error::{Error, Result};
use crate::keys;
use crate::schema::Table;
use crate::store::{Fetched, Precondition, PutOutcome};

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

/// Where the manifest of `stem`'s outputs in `table` is kept: under the bookkeeping prefix,
/// outside the table's location.
pub fn manifest_key(table: Table, stem: &str) -> String {
    format!("{}{stem}.json", keys::lineage_prefix(table))
}

/// Reads a manifest (`None` when there is none or it is unreadable).
pub async fn read_manifest(ctx: &Ctx, bucket: &str, key: &str) -> Result<Option<Manifest>> {
    read_json(ctx, bucket, key).await
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

/// Writes a manifest.
pub async fn write_manifest(ctx: &Ctx, bucket: &str, key: &str, m: &Manifest) -> Result<()> {
    write_json(ctx, bucket, key, m).await
}

/// Creates a manifest where there is none (`If-None-Match: *`): `false` when one exists.
pub async fn create_manifest(ctx: &Ctx, bucket: &str, key: &str, m: &Manifest) -> Result<bool> {
    let created = ctx
        .store
        .put_if(bucket, key, json_body(key, m)?, &Precondition::Absent)
        .await?;
    Ok(matches!(created, PutOutcome::Written(_)))
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
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|source| Error::Json {
            context: key.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
