//! The function context and the reference data it keeps warm: compact consent and device
//! indexes, one per shard, revalidated by ETag (a conditional GET that answers 304 costs no
//! bytes), bounded by `REFERENCE_CACHE_BYTES` (least recently used shards go first).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_array::{Array, Int64Array, StringArray};
use bytes::Bytes;

use crate::columnar::{column, read_parquet, row_cells};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::keys;
use crate::rules::{ConsentIndex, Customers, DeviceEntry, DeviceIndex, KeyIndex};
use crate::schema::Table;
use crate::store::{Fetched, Store};

/// What a function keeps across warm invocations: clients, configuration, and reference
/// shards revalidated by ETag.
#[derive(Debug)]
pub struct Ctx {
    /// S3.
    pub store: Store,
    /// Glue.
    pub glue: aws_sdk_glue::Client,
    /// The lookup indexes: erasure postings, the ML join index (DynamoDB, `INDEX_TABLE`).
    pub index: Index,
    /// Configuration read at cold start.
    pub cfg: Config,
    consent: Mutex<ShardCache<i64>>,
    devices: Mutex<ShardCache<bool>>,
    serials: Mutex<ShardCache<SerialOf>>,
    /// Partitions this function registered, and when: a known `dt` costs no Glue call.
    partitions: Mutex<HashMap<(String, Table, String), Instant>>,
    /// The reconcile queue (client and URL), where `reconcile` fans out its items.
    pub reconcile_queue: Option<(aws_sdk_sqs::Client, String)>,
    /// The Step Trainer queue (client and URL), where `customer_trusted_to_curated` sends
    /// the Step Trainer files that waited for a device's owner.
    pub step_trainer_queue: Option<(aws_sdk_sqs::Client, String)>,
    /// The compact queue (client and URL), where `compact` fans out its partitions.
    pub compact_queue: Option<(aws_sdk_sqs::Client, String)>,
    /// The erased people as last listed, per bucket (see [`super::erasure::erased_now`]).
    pub(crate) erased: Mutex<HashMap<String, ErasedList>>,
    /// Prefixes (`<bucket>/<prefix>`) found empty of what an earlier release kept in S3
    /// (see [`Ctx::holds_legacy`]).
    emptied: Mutex<BTreeSet<String>>,
    /// Reading invocations begun (see [`Ctx::reading_invocation`]).
    invocations: AtomicU64,
}

/// The erased people's hashes as listed, with the ETag the erasure epoch had just before
/// (`None`: there was no epoch).
pub(crate) type ErasedList = (Option<String>, Arc<BTreeSet<String>>);

/// A consenting customer's device serial (e-mail → serial, from the customer_trusted
/// shards): what the machine-learning join needs of a phone reading's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialOf(pub Box<str>);

/// Decoded shards by (bucket, key), with their ETags, in least-recently-used order.
#[derive(Debug)]
pub struct ShardCache<V> {
    entries: HashMap<(String, String), Entry<V>>,
    bytes: usize,
    limit: usize,
    tick: u64,
}

#[derive(Debug)]
struct Entry<V> {
    etag: String,
    index: Arc<KeyIndex<V>>,
    bytes: usize,
    used: u64,
    /// The reading invocation that last validated it against S3 (0: none).
    checked: u64,
}

tokio::task_local! {
    /// The reading invocation the current task runs (see [`Ctx::reading_invocation`]).
    static INVOCATION: u64;
}

impl<V> ShardCache<V> {
    fn new(limit: usize) -> Self {
        ShardCache {
            entries: HashMap::new(),
            bytes: 0,
            limit,
            tick: 0,
        }
    }

    fn get(&mut self, id: &(String, String)) -> Option<(String, Arc<KeyIndex<V>>, u64)> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(id).map(|e| {
            e.used = tick;
            (e.etag.clone(), e.index.clone(), e.checked)
        })
    }

    /// Records that reading invocation `n` validated entry `id`.
    fn checked(&mut self, id: &(String, String), n: u64) {
        if let Some(e) = self.entries.get_mut(id) {
            e.checked = n;
        }
    }

    fn remove(&mut self, id: &(String, String)) {
        if let Some(e) = self.entries.remove(id) {
            self.bytes -= e.bytes;
        }
    }

    fn insert(&mut self, id: (String, String), etag: String, index: Arc<KeyIndex<V>>) {
        self.remove(&id);
        let bytes = index.heap_bytes() + id.1.len() + 64;
        while self.bytes + bytes > self.limit {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
        self.tick += 1;
        self.bytes += bytes;
        let used = self.tick;
        self.entries.insert(
            id,
            Entry {
                etag,
                index,
                bytes,
                used,
                checked: INVOCATION.try_with(|n| *n).unwrap_or(0),
            },
        );
    }
}

impl Ctx {
    /// A context over the given clients (the index in `cfg.index_table`).
    pub fn new(
        s3: aws_sdk_s3::Client,
        glue: aws_sdk_glue::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        cfg: Config,
    ) -> Ctx {
        let limit = cfg.reference_cache_bytes;
        Ctx {
            store: Store::new(s3),
            glue,
            index: Index::new(dynamodb, cfg.index_table.clone()),
            cfg,
            consent: Mutex::new(ShardCache::new(limit / 3)),
            devices: Mutex::new(ShardCache::new(limit / 3)),
            serials: Mutex::new(ShardCache::new(limit / 3)),
            partitions: Mutex::new(HashMap::new()),
            reconcile_queue: None,
            step_trainer_queue: None,
            compact_queue: None,
            erased: Mutex::new(HashMap::new()),
            emptied: Mutex::new(BTreeSet::new()),
            invocations: AtomicU64::new(0),
        }
    }

    /// Runs `work` as one invocation of a function that reads the reference shards and
    /// writes none of them (the phone, Step Trainer and ML transitions): each shard it
    /// needs is validated against S3 (a conditional GET) once in it, not once per file of
    /// its batch. The batch's files are computed with the shards as they were when it first
    /// needed each, as if computed together at that moment; a change made meanwhile reaches
    /// them as any later change does (its own event, its recheck). The functions that write
    /// shards (the customer functions, `reconcile`, the erasure), which compute reading
    /// files inline after a write, validate every read.
    pub async fn reading_invocation<F: std::future::Future>(&self, work: F) -> F::Output {
        let n = self.invocations.fetch_add(1, Ordering::Relaxed) + 1;
        INVOCATION.scope(n, work).await
    }

    /// Whether `prefix` may still hold entries an earlier release kept in S3 objects (the
    /// ML join index's markers, lineage manifests) that `reconcile` moves into the index
    /// table: one LIST of at most one key until it is found empty, which the warm function
    /// remembers (nothing writes there any more).
    pub(crate) async fn holds_legacy(&self, bucket: &str, prefix: &str) -> Result<bool> {
        let key = format!("{bucket}/{prefix}");
        if self.emptied.lock().is_ok_and(|e| e.contains(&key)) {
            return Ok(false);
        }
        if self.store.any(bucket, prefix).await? {
            return Ok(true);
        }
        if let Ok(mut e) = self.emptied.lock() {
            e.insert(key);
        }
        Ok(false)
    }

    /// Shard `shard` of a reference index (`V` says which: [`ConsentIndex`] values for the
    /// customer_trusted shards, [`DeviceIndex`] values for the device index): its object's
    /// key, the decoded index, and the object's ETag (`None` when it does not exist: the
    /// shard is empty).
    pub async fn reference<V: Reference>(
        &self,
        bucket: &str,
        shard: u32,
    ) -> Result<(String, Arc<KeyIndex<V>>, Option<String>)> {
        let key = V::key(shard);
        let (index, etag) = cached(&self.store, V::cache(self), bucket, key.clone()).await?;
        Ok((key, index, etag))
    }

    /// Registers partitions `dts` of `table` in Glue, except those this warm function
    /// registered less than `PARTITION_CACHE_SECONDS` ago (the catalog stays the truth: an
    /// entry expires, and a partition this function prunes is forgotten at once).
    pub async fn register(&self, bucket: &str, table: Table, dts: &[String]) -> Result<()> {
        let ttl = self.cfg.partition_cache_seconds;
        let id = |dt: &String| (bucket.to_string(), table, dt.clone());
        let missing: Vec<String> = match self.partitions.lock() {
            Ok(known) => dts
                .iter()
                .filter(|dt| {
                    known
                        .get(&id(dt))
                        .is_none_or(|at| at.elapsed().as_secs() >= ttl)
                })
                .cloned()
                .collect(),
            Err(_) => dts.to_vec(),
        };
        if missing.is_empty() {
            return Ok(());
        }
        crate::catalog::register_partitions(
            &self.glue,
            &self.cfg.database,
            bucket,
            table,
            &missing,
        )
        .await?;
        if let Ok(mut known) = self.partitions.lock() {
            let now = Instant::now();
            known.extend(missing.iter().map(|dt| (id(dt), now)));
        }
        Ok(())
    }

    /// Forgets that partition `dt` of `table` is registered (it is being dropped).
    pub fn unregistered(&self, bucket: &str, table: Table, dt: &str) {
        if let Ok(mut known) = self.partitions.lock() {
            known.remove(&(bucket.to_string(), table, dt.to_string()));
        }
    }

    /// The full customer rows of shard `shard` of a sharded table (not cached: only the
    /// writers and `reconcile` need whole rows).
    pub async fn customer_shard(
        &self,
        bucket: &str,
        table: Table,
        shard: u32,
    ) -> Result<Customers> {
        let key = keys::shard_key(table, shard);
        match self.store.fetch(bucket, &key, None).await? {
            Fetched::Body(bytes, _) => decode_customers(bytes, &key),
            _ => Ok(Customers::default()),
        }
    }
}

/// The value type of a reference index, which says where its shards live and how they
/// decode.
pub trait Reference: Sized + Send + Sync + 'static {
    /// The object holding shard `shard`.
    fn key(shard: u32) -> String;
    /// The warm cache of these shards.
    fn cache(ctx: &Ctx) -> &Mutex<ShardCache<Self>>;
    /// Decodes a shard object.
    fn decode(bytes: Bytes, key: &str) -> Result<KeyIndex<Self>>;
}

/// E-mail → consent date, from the customer_trusted shards.
impl Reference for i64 {
    fn key(shard: u32) -> String {
        keys::shard_key(Table::CustomerTrusted, shard)
    }
    fn cache(ctx: &Ctx) -> &Mutex<ShardCache<i64>> {
        &ctx.consent
    }
    fn decode(bytes: Bytes, key: &str) -> Result<ConsentIndex> {
        decode_consent(bytes, key)
    }
}

/// Serial → its consenting owners' curated flags, from the device index.
impl Reference for bool {
    fn key(shard: u32) -> String {
        keys::device_shard_key(shard)
    }
    fn cache(ctx: &Ctx) -> &Mutex<ShardCache<bool>> {
        &ctx.devices
    }
    fn decode(bytes: Bytes, key: &str) -> Result<DeviceIndex> {
        let entries = device_entries(&bytes, key)?;
        Ok(KeyIndex::build(
            entries.into_iter().map(|e| (e.serial, e.curated)).collect(),
        ))
    }
}

/// E-mail → device serial, from the customer_trusted shards.
impl Reference for SerialOf {
    fn key(shard: u32) -> String {
        keys::shard_key(Table::CustomerTrusted, shard)
    }
    fn cache(ctx: &Ctx) -> &Mutex<ShardCache<SerialOf>> {
        &ctx.serials
    }
    fn decode(bytes: Bytes, key: &str) -> Result<KeyIndex<SerialOf>> {
        const COLUMNS: [&str; 2] = ["email", "serialnumber"];
        let mut entries = Vec::new();
        for b in read_parquet(bytes, &COLUMNS, key)? {
            let email = column::<StringArray>(&b, COLUMNS[0], key)?;
            let serial = column::<StringArray>(&b, COLUMNS[1], key)?;
            for i in 0..b.num_rows() {
                if email.is_valid(i) && serial.is_valid(i) {
                    let serial = SerialOf(serial.value(i).into());
                    entries.push((email.value(i).to_string(), serial));
                }
            }
        }
        Ok(KeyIndex::build(entries))
    }
}

/// A shard from the cache when S3 says it has not changed, else fetched and decoded.
async fn cached<V: Reference>(
    store: &Store,
    cache: &Mutex<ShardCache<V>>,
    bucket: &str,
    key: String,
) -> Result<(Arc<KeyIndex<V>>, Option<String>)> {
    let id = (bucket.to_string(), key);
    let known = cache.lock().ok().and_then(|mut c| c.get(&id));
    let invocation = INVOCATION.try_with(|n| *n).ok();
    if let (Some(n), Some((etag, index, checked))) = (invocation, &known)
        && *checked == n
    {
        // Validated once in this reading invocation already.
        return Ok((index.clone(), Some(etag.clone())));
    }
    let etag = known.as_ref().map(|(e, _, _)| e.as_str());
    match store.fetch(bucket, &id.1, etag).await? {
        Fetched::NotModified => match known {
            Some((etag, index, _)) => {
                if let (Some(n), Ok(mut c)) = (invocation, cache.lock()) {
                    c.checked(&id, n);
                }
                Ok((index, Some(etag)))
            }
            None => Err(Error::S3 {
                op: "GetObject",
                bucket: bucket.to_string(),
                key: id.1,
                message: "304 Not Modified without a cached copy".into(),
                retryable: true,
                source: None,
            }),
        },
        Fetched::Missing => {
            if let Ok(mut c) = cache.lock() {
                c.remove(&id);
            }
            Ok((Arc::new(KeyIndex::default()), None))
        }
        Fetched::Body(bytes, etag) => {
            let index = Arc::new(V::decode(bytes, &id.1)?);
            if let Ok(mut c) = cache.lock() {
                c.insert(id, etag.clone(), index.clone());
            }
            Ok((index, Some(etag)))
        }
    }
}

/// Full customer rows of a customer table object.
pub fn decode_customers(bytes: Bytes, key: &str) -> Result<Customers> {
    let batches = read_parquet(bytes, &[], key)?;
    Ok(Customers::latest_of(batches.iter().flat_map(|b| {
        (0..b.num_rows()).map(move |i| row_cells(b, i).into())
    })))
}

/// The consent index of a customer_trusted shard: only `email` and
/// `sharewithresearchasofdate` are decoded (projection), never names, phones or birthdays.
fn decode_consent(bytes: Bytes, key: &str) -> Result<ConsentIndex> {
    const COLUMNS: [&str; 2] = ["email", "sharewithresearchasofdate"];
    let mut entries = Vec::new();
    for b in read_parquet(bytes, &COLUMNS, key)? {
        let email = column::<StringArray>(&b, COLUMNS[0], key)?;
        let date = column::<Int64Array>(&b, COLUMNS[1], key)?;
        for i in 0..b.num_rows() {
            if email.is_valid(i) && date.is_valid(i) {
                entries.push((email.value(i).to_string(), date.value(i)));
            }
        }
    }
    Ok(KeyIndex::build(entries))
}

/// A device-index line: `[serial, email, curated]`, or `[serial, email]` as the earlier
/// layout wrote it (curated owners only).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum DeviceLine {
    Flagged(String, String, bool),
    Curated(String, String),
}

/// The entries of a device-index shard.
pub fn device_entries(bytes: &[u8], key: &str) -> Result<Vec<DeviceEntry>> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let line = serde_json::from_slice(l).map_err(|source| Error::Json {
                context: key.to_string(),
                source,
            })?;
            let (serial, email, curated) = match line {
                DeviceLine::Flagged(s, e, c) => (s, e, c),
                DeviceLine::Curated(s, e) => (s, e, true),
            };
            Ok(DeviceEntry {
                serial,
                email,
                curated,
            })
        })
        .collect()
}

/// Whether every reference object in `refs` (key → ETag, empty when it was absent) still
/// has that ETag: a conditional GET that S3 answers 304 for an unchanged object.
pub async fn refs_unchanged(
    ctx: &Ctx,
    bucket: &str,
    refs: &BTreeMap<String, String>,
) -> Result<bool> {
    for (key, etag) in refs {
        let known = Some(etag.as_str()).filter(|e| !e.is_empty());
        let unchanged = match ctx.store.fetch(bucket, key, known).await? {
            Fetched::NotModified => true,
            Fetched::Missing => etag.is_empty(),
            Fetched::Body(_, now) => now == *etag,
        };
        if !unchanged {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::encode_devices;

    #[test]
    fn device_shards_round_trip_sorted() {
        let entry = |serial: &str, email: &str, curated| DeviceEntry {
            serial: serial.into(),
            email: email.into(),
            curated,
        };
        let entries = vec![entry("s2", "b@x", false), entry("s1", "a \"q\"@x", true)];
        let body = encode_devices(&entries).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "[\"s1\",\"a \\\"q\\\"@x\",true]\n[\"s2\",\"b@x\",false]\n"
        );
        let mut back = device_entries(&body, "k").unwrap();
        back.sort();
        let mut want = entries.clone();
        want.sort();
        assert_eq!(back, want);
        // The earlier layout's lines name curated owners.
        let old = device_entries(b"[\"s3\",\"c@x\"]\n", "k").unwrap();
        assert_eq!(old, [entry("s3", "c@x", true)]);
        assert!(device_entries(b"not json\n", "k").is_err());
    }

    #[test]
    fn the_cache_drops_least_recently_used_shards_past_its_limit() {
        let index = |n: usize| {
            Arc::new(KeyIndex::build(
                (0..n).map(|i| (format!("user{i:04}@x"), 1i64)).collect(),
            ))
        };
        let one = index(100).heap_bytes() + 64 + 1;
        let mut c = ShardCache::new(one * 2 + 10);
        let id = |k: &str| ("b".to_string(), k.to_string());
        c.insert(id("a"), "e1".into(), index(100));
        c.insert(id("b"), "e2".into(), index(100));
        assert!(c.get(&id("a")).is_some()); // a is now the most recent
        c.insert(id("c"), "e3".into(), index(100));
        assert!(c.get(&id("b")).is_none(), "b was least recently used");
        assert_eq!(c.get(&id("a")).map(|(e, _, _)| e), Some("e1".to_string()));
        assert!(c.get(&id("c")).is_some());
        assert!(c.bytes <= c.limit);
    }
}
