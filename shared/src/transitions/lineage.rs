//! What an output was computed from: the manifest of one source's outputs, kept under the
//! bookkeeping prefix outside every table location, so `reconcile` recomputes only what is
//! stale.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::reference::Ctx;
use crate::error::{Error, Result};
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
