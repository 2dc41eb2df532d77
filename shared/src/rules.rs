//! The consent and join rules, as pure functions over rows. Each mirrors one line of the
//! batch-truth SQL in DESIGN.md.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::record::Cell;

/// Column positions of the customer tables (checked against the schema in a test).
pub mod customer {
    /// `email`
    pub const EMAIL: usize = 1;
    /// `serialnumber`
    pub const SERIAL: usize = 4;
    /// `lastupdatedate`
    pub const LAST_UPDATE: usize = 6;
    /// `sharewithresearchasofdate`
    pub const RESEARCH: usize = 7;
}

/// One customer row, all columns in schema order, shared: a snapshot is copied for every
/// merge (a shard's rewrite, a file folded in), and a copied row is a reference count, not
/// ten cells' strings allocated again.
pub type CustomerRow = Arc<[Cell<'static>]>;

/// Consent is a non-null, positive `sharewithresearchasofdate`.
pub fn consents(research_as_of: Option<i64>) -> bool {
    research_as_of.is_some_and(|d| d > 0)
}

fn last_update(row: &[Cell<'_>]) -> i64 {
    row[customer::LAST_UPDATE].as_long().unwrap_or(i64::MIN)
}

/// Whether `candidate` supersedes `current` (the later `lastupdatedate` wins; on a tie the
/// candidate, i.e. the record seen later, wins).
pub fn supersedes(candidate: &[Cell<'_>], current: &[Cell<'_>]) -> bool {
    last_update(candidate) >= last_update(current)
}

/// Customers keyed by e-mail: the content of a customer snapshot table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Customers {
    /// Rows by e-mail (sorted, so snapshots are written deterministically).
    pub rows: BTreeMap<String, CustomerRow>,
}

impl Customers {
    /// Keeps the latest record per e-mail among `rows`.
    pub fn latest_of(rows: impl IntoIterator<Item = CustomerRow>) -> Customers {
        let mut out = Customers::default();
        for row in rows {
            out.offer(row);
        }
        out
    }

    /// Keeps `row` if it is its e-mail's latest record so far.
    pub fn offer(&mut self, row: CustomerRow) {
        let Some(email) = row[customer::EMAIL].as_str().map(str::to_string) else {
            return;
        };
        // One descent of the tree, whether the e-mail is new or known.
        match self.rows.entry(email) {
            Entry::Vacant(v) => {
                v.insert(row);
            }
            Entry::Occupied(mut o) => {
                if supersedes(&row, o.get()) {
                    o.insert(row);
                }
            }
        }
    }

    /// The research-consent date of a consenting customer.
    pub fn consent_date(&self, email: &str) -> Option<i64> {
        self.rows
            .get(email)
            .and_then(|r| r[customer::RESEARCH].as_long())
    }

    /// E-mail → `sharewithresearchasofdate` of every customer.
    pub fn consent_dates(&self) -> HashMap<String, i64> {
        self.rows
            .iter()
            .filter_map(|(e, r)| r[customer::RESEARCH].as_long().map(|d| (e.clone(), d)))
            .collect()
    }

    /// Serial numbers of all customers.
    pub fn serials(&self) -> std::collections::HashSet<String> {
        self.rows
            .values()
            .filter_map(|r| r[customer::SERIAL].as_str().map(str::to_string))
            .collect()
    }
}

/// A compact, read-only index of one reference shard: keys (e-mails or serials) in one
/// buffer, sorted, with one value each (a key may repeat). No per-entry allocation and no
/// customer row: what the reading filters keep of customer state.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyIndex<V> {
    text: String,
    ends: Vec<u32>,
    values: Vec<V>,
}

impl<V> Default for KeyIndex<V> {
    fn default() -> Self {
        KeyIndex {
            text: String::new(),
            ends: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<V> KeyIndex<V> {
    /// Indexes `entries` (any order).
    pub fn build(mut entries: Vec<(String, V)>) -> KeyIndex<V> {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut index = KeyIndex {
            text: String::with_capacity(entries.iter().map(|e| e.0.len()).sum()),
            ends: Vec::with_capacity(entries.len()),
            values: Vec::with_capacity(entries.len()),
        };
        for (k, v) in entries {
            index.text.push_str(&k);
            index.ends.push(index.text.len() as u32);
            index.values.push(v);
        }
        index
    }

    fn key(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// The values of `key` (empty when absent).
    pub fn get(&self, key: &str) -> &[V] {
        let lo = partition_point(self.ends.len(), |i| self.key(i) < key);
        let hi = lo + partition_point(self.ends.len() - lo, |i| self.key(lo + i) == key);
        &self.values[lo..hi]
    }

    /// Each distinct key with its values, in key order.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &[V])> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            let start = i;
            let key = (start < self.ends.len()).then(|| self.key(start))?;
            while i < self.ends.len() && self.key(i) == key {
                i += 1;
            }
            Some((key, &self.values[start..i]))
        })
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * 4 + self.values.capacity() * size_of::<V>()
    }
}

/// The first index in `0..n` for which `pred` is false (`pred` true on a prefix).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// E-mail → research-consent date of one customer_trusted shard.
pub type ConsentIndex = KeyIndex<i64>;

/// Serial → one flag per consenting customer owning it: whether that customer is curated
/// (one device-index shard).
pub type DeviceIndex = KeyIndex<bool>;

/// One device-index entry: a consenting customer's device, and whether the customer is
/// curated (has phone readings). Readings of a device pass once one owner is curated; a
/// device whose owners all wait for their first phone reading keeps its files waiting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceEntry {
    /// The device serial.
    pub serial: String,
    /// The owner's e-mail.
    pub email: String,
    /// Whether the owner is in customer_curated.
    pub curated: bool,
}

impl Customers {
    /// The consent index of these customers (consenting ones only).
    pub fn consent_index(&self) -> ConsentIndex {
        KeyIndex::build(self.consent_dates().into_iter().collect())
    }

    /// The device entries of these customers, each with `curated`.
    pub fn device_entries(&self, curated: bool) -> Vec<DeviceEntry> {
        self.rows
            .iter()
            .filter_map(|(e, r)| {
                r[customer::SERIAL].as_str().map(|s| DeviceEntry {
                    serial: s.to_string(),
                    email: e.clone(),
                    curated,
                })
            })
            .collect()
    }
}

/// Groups customers by the shard their e-mail falls in.
pub fn by_shard(customers: Customers, shards: u32) -> BTreeMap<u32, Customers> {
    let mut out: BTreeMap<u32, Customers> = BTreeMap::new();
    for (email, row) in customers.rows {
        out.entry(crate::keys::shard_of(&email, shards))
            .or_default()
            .rows
            .insert(email, row);
    }
    out
}

/// Groups device-index entries by the shard their serial falls in.
pub fn devices_by_shard(entries: Vec<DeviceEntry>, shards: u32) -> BTreeMap<u32, Vec<DeviceEntry>> {
    let mut out: BTreeMap<u32, Vec<DeviceEntry>> = BTreeMap::new();
    for e in entries {
        out.entry(crate::keys::shard_of(&e.serial, shards))
            .or_default()
            .push(e);
    }
    out
}

/// Result of folding a landing file's customers into the trusted snapshot.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Consenting records that are now in the snapshot.
    pub upserted: u64,
    /// Customers removed because their newer record withdraws consent.
    pub withdrawn: u64,
}

/// customer_trusted: the latest record per e-mail, kept only while it consents. Incoming
/// records older than the snapshot's are ignored; a newer non-consenting record removes
/// the customer.
pub fn merge_trusted(snapshot: &Customers, incoming: &Customers) -> (Customers, MergeStats) {
    let mut out = snapshot.clone();
    let mut stats = MergeStats::default();
    for (email, row) in &incoming.rows {
        if let Some(cur) = snapshot.rows.get(email)
            && !supersedes(row, cur)
        {
            continue;
        }
        if consents(row[customer::RESEARCH].as_long()) {
            out.rows.insert(email.clone(), row.clone());
            stats.upserted += 1;
        } else if out.rows.remove(email).is_some() {
            stats.withdrawn += 1;
        }
    }
    (out, stats)
}

/// customer_curated: add (or refresh) the trusted records of `users` who have readings.
pub fn merge_curated(
    curated: &Customers,
    trusted: &Customers,
    users: impl IntoIterator<Item = String>,
) -> Customers {
    let mut out = curated.clone();
    for user in users {
        if let Some(row) = trusted.rows.get(&user) {
            out.rows.insert(user, row.clone());
        }
    }
    out
}

/// accelerometer_trusted: a reading is kept when its user consents, and, with
/// `CONSENT_AS_OF=true`, when it was taken at or after the consent date.
pub fn reading_allowed(consent_date: Option<i64>, timestamp: i64, consent_as_of: bool) -> bool {
    match consent_date {
        Some(d) if d > 0 => !consent_as_of || timestamp >= d,
        _ => false,
    }
}

/// machine_learning_curated rows of Step Trainer readings: keyed by serial and time, joined
/// with their owners' phone readings at the same millisecond. The devices' index is built
/// once per Step Trainer object and shared by every join with an owner map
/// ([`MlJoin::with_index`]): an object paired with many phone objects is indexed once.
#[derive(Debug, Default)]
pub struct MlJoin {
    /// One entry per serial.
    devices: Arc<[Device]>,
    /// E-mail → index into `devices`.
    owner: FastMap<String, usize>,
}

/// One device's readings: its distances in time order (those of one millisecond in the
/// order they came) and, per millisecond, the range of them taken then. Two allocations a
/// device, not one a reading.
#[derive(Debug, Default)]
struct Device {
    serial: String,
    distances: Vec<i32>,
    at: FastMap<i64, (u32, u32)>,
}

/// One device's Step Trainer readings: its serial and its `(time, distance)` readings.
pub type DeviceReading = (String, Vec<(i64, i32)>);

/// Step Trainer readings grouped by device: each serial once.
pub type DeviceReadings = Vec<DeviceReading>;

/// Maps probed on the hot path (the ML join once per phone reading, the landing scan once
/// per run of one person's lines): foldhash (seeded per process) instead of SipHash.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Serial number → e-mails of the customers with that device (built once per snapshot).
pub type SerialIndex = HashMap<String, Vec<String>>;

impl Customers {
    /// The serial index of these customers.
    pub fn serial_index(&self) -> SerialIndex {
        let mut index = SerialIndex::new();
        for (email, r) in &self.rows {
            if let Some(serial) = r[customer::SERIAL].as_str() {
                index
                    .entry(serial.to_string())
                    .or_default()
                    .push(email.clone());
            }
        }
        index
    }
}

impl MlJoin {
    /// Indexes the step trainer readings `(time, serial, distance)`.
    pub fn new(readings: impl IntoIterator<Item = (i64, String, i32)>) -> MlJoin {
        let mut by_serial: FastMap<String, Vec<(i64, i32)>> = FastMap::default();
        for (t, s, d) in readings {
            by_serial.entry(s).or_default().push((t, d));
        }
        MlJoin::of_devices(by_serial)
    }

    /// Indexes readings already grouped by device (each serial once).
    pub fn of_devices(devices: impl IntoIterator<Item = DeviceReading>) -> MlJoin {
        let devices = devices
            .into_iter()
            .map(|(serial, mut readings)| {
                // Stable: the readings of one millisecond keep their order.
                readings.sort_by_key(|r| r.0);
                let mut at = FastMap::default();
                let mut start = 0;
                for run in readings.chunk_by(|a, b| a.0 == b.0) {
                    let end = start + run.len() as u32;
                    at.insert(run[0].0, (start, end));
                    start = end;
                }
                Device {
                    serial,
                    distances: readings.into_iter().map(|r| r.1).collect(),
                    at,
                }
            })
            .collect();
        MlJoin {
            devices,
            owner: FastMap::default(),
        }
    }

    /// The same devices with the customers whose device is one of the indexed serials.
    pub fn with_customers(&self, customers: &Customers) -> MlJoin {
        self.with_index(&customers.serial_index())
    }

    /// The same devices (shared, not copied) with their owners through a prebuilt serial
    /// index (cheap: looks up only this object's serials).
    pub fn with_index(&self, index: &SerialIndex) -> MlJoin {
        let owner = self
            .devices
            .iter()
            .enumerate()
            .flat_map(|(i, device)| {
                index
                    .get(&device.serial)
                    .into_iter()
                    .flatten()
                    .map(move |email| (email.clone(), i))
            })
            .collect();
        MlJoin {
            devices: Arc::clone(&self.devices),
            owner,
        }
    }

    /// The serials of the indexed devices, each once.
    pub fn serials(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().map(|d| d.serial.as_str())
    }

    /// How many Step Trainer readings are indexed.
    pub fn readings(&self) -> u64 {
        self.devices.iter().map(|d| d.distances.len() as u64).sum()
    }

    /// Whether no customer can match (nothing to probe).
    pub fn is_empty(&self) -> bool {
        self.owner.is_empty()
    }

    /// The device of a phone's user, if it is in this object.
    pub fn device_of(&self, user: &str) -> Option<usize> {
        self.owner.get(user).copied()
    }

    /// The readings of `device` at `timestamp`: `(serial, distances)`.
    pub fn at(&self, device: usize, timestamp: i64) -> Option<(&str, &[i32])> {
        let device = self.devices.get(device)?;
        let &(start, end) = device.at.get(&timestamp)?;
        let distances = device.distances.get(start as usize..end as usize)?;
        Some((device.serial.as_str(), distances))
    }

    /// The step trainer matches of one phone reading: `(serial, distances)`.
    pub fn probe(&self, user: &str, timestamp: i64) -> Option<(&str, &[i32])> {
        self.at(self.device_of(user)?, timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Table;
    use std::borrow::Cow;

    fn cust(email: &str, serial: &str, updated: i64, research: Option<i64>) -> CustomerRow {
        let mut row = vec![Cell::Null; 10];
        row[customer::EMAIL] = Cell::Str(Cow::Owned(email.into()));
        row[customer::SERIAL] = Cell::Str(Cow::Owned(serial.into()));
        row[customer::LAST_UPDATE] = Cell::Long(updated);
        row[customer::RESEARCH] = research.map_or(Cell::Null, Cell::Long);
        row.into()
    }

    #[test]
    fn column_positions_match_the_schema() {
        let c = Table::CustomerTrusted.columns();
        assert_eq!(c[customer::EMAIL].name, "email");
        assert_eq!(c[customer::SERIAL].name, "serialnumber");
        assert_eq!(c[customer::LAST_UPDATE].name, "lastupdatedate");
        assert_eq!(c[customer::RESEARCH].name, "sharewithresearchasofdate");
    }

    #[test]
    fn key_index_finds_every_value_of_a_key() {
        let idx = KeyIndex::build(vec![
            ("s2".to_string(), "b"),
            ("s1".to_string(), "a"),
            ("s2".to_string(), "c"),
            ("s10".to_string(), "d"),
        ]);
        assert_eq!(idx.len(), 4);
        assert_eq!(idx.get("s1"), ["a"]);
        let mut two = idx.get("s2").to_vec();
        two.sort();
        assert_eq!(two, ["b", "c"]);
        assert_eq!(idx.get("s10"), ["d"]);
        assert!(idx.get("s").is_empty() && idx.get("s3").is_empty() && idx.get("").is_empty());
        assert!(KeyIndex::<i64>::default().get("x").is_empty());
        let groups: Vec<(&str, Vec<&str>)> = idx
            .groups()
            .map(|(k, v)| {
                let mut v = v.to_vec();
                v.sort();
                (k, v)
            })
            .collect();
        assert_eq!(
            groups,
            [
                ("s1", vec!["a"]),
                ("s10", vec!["d"]),
                ("s2", vec!["b", "c"])
            ]
        );
        assert_eq!(KeyIndex::<i64>::default().groups().count(), 0);
        let consent = Customers::latest_of([cust("a", "s1", 1, Some(5)), cust("b", "s2", 1, None)])
            .consent_index();
        assert_eq!((consent.get("a"), consent.get("b")), (&[5][..], &[][..]));
    }

    #[test]
    fn consent_is_a_positive_date() {
        assert!(consents(Some(1655564376361)));
        assert!(!consents(Some(0)));
        assert!(!consents(None));
    }

    #[test]
    fn latest_record_per_email_wins() {
        let c = Customers::latest_of([
            cust("a", "s1", 2, Some(1)),
            cust("a", "s1", 1, None),
            cust("b", "s2", 5, None),
            // Same lastUpdateDate: the record offered later is kept.
            cust("b", "s3", 5, Some(7)),
            cust("c", "s4", 1, None),
            cust("c", "s5", 3, Some(9)),
        ]);
        assert_eq!(c.rows.len(), 3);
        assert_eq!(c.consent_date("a"), Some(1));
        assert_eq!(c.consent_date("b"), Some(7));
        assert_eq!(c.consent_date("c"), Some(9));
        assert_eq!(c.rows["c"][customer::SERIAL].as_str(), Some("s5"));
    }

    #[test]
    fn trusted_merge_upserts_withdraws_and_ignores_older() {
        let snap =
            Customers::latest_of([cust("a", "s1", 10, Some(1)), cust("b", "s2", 10, Some(1))]);
        let incoming = Customers::latest_of([
            cust("a", "s1", 11, Some(0)), // withdraws
            cust("b", "s2", 9, None),     // older: ignored
            cust("c", "s3", 1, Some(3)),  // new
            cust("d", "s4", 1, None),     // never consented
        ]);
        let (out, stats) = merge_trusted(&snap, &incoming);
        assert_eq!(out.rows.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(
            stats,
            MergeStats {
                upserted: 1,
                withdrawn: 1
            }
        );
    }

    #[test]
    fn curated_takes_only_trusted_users() {
        let trusted =
            Customers::latest_of([cust("a", "s1", 1, Some(1)), cust("b", "s2", 1, Some(1))]);
        let out = merge_curated(
            &Customers::default(),
            &trusted,
            ["a".to_string(), "x".to_string()],
        );
        assert_eq!(out.rows.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn consent_as_of_keeps_later_readings_only() {
        assert!(reading_allowed(Some(100), 50, false));
        assert!(!reading_allowed(Some(100), 50, true));
        assert!(reading_allowed(Some(100), 100, true));
        assert!(!reading_allowed(None, 100, false));
        assert!(!reading_allowed(Some(0), 100, false));
    }

    #[test]
    fn ml_join_keeps_the_order_of_readings_within_a_millisecond() {
        let customers = Customers::latest_of([cust("a", "s1", 1, Some(1))]);
        let join = MlJoin::of_devices([(
            "s1".to_string(),
            vec![(200, 1), (100, 2), (200, 3), (100, 4), (150, 5)],
        )])
        .with_customers(&customers);
        assert_eq!(join.probe("a", 100), Some(("s1", &[2, 4][..])));
        assert_eq!(join.probe("a", 150), Some(("s1", &[5][..])));
        assert_eq!(join.probe("a", 200), Some(("s1", &[1, 3][..])));
        assert_eq!(join.probe("a", 99), None);
        assert_eq!(join.probe("a", 201), None);
    }

    #[test]
    fn ml_join_pairs_only_the_same_customer() {
        let customers = Customers::latest_of([
            cust("a", "s1", 1, Some(1)),
            cust("b", "s2", 1, Some(1)),
            cust("c", "s9", 1, Some(1)),
        ]);
        let join = MlJoin::new([
            (100, "s1".to_string(), 7),
            (100, "s2".to_string(), 8),
            (100, "s1".to_string(), 9),
        ])
        .with_customers(&customers);
        // a's phone at t=100 meets a's device only, twice (two device readings).
        assert_eq!(join.probe("a", 100), Some(("s1", &[7, 9][..])));
        assert_eq!(join.probe("b", 100), Some(("s2", &[8][..])));
        assert_eq!(join.probe("a", 101), None);
        assert_eq!(join.probe("c", 100), None);
        assert_eq!(join.probe("zz", 100), None);
    }
}
