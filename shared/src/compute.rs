//! The compute path of the transitions, free of any I/O: a landing file's bytes go in as
//! chunks, typed rows are filtered, and Parquet objects and a quarantine come out. The
//! functions feed it from S3; the benchmark feeds it from local files. Nothing here holds
//! more than one line, one row group per output partition, and the encoded outputs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};

use bytes::Bytes;

use crate::columnar::{ParquetSink, Part, PartitionedSink, Strings, column};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys;
use crate::lines::{Line, LineSplitter};
use crate::record::{Cell, LineReader, same};
use crate::rules::{
    self, Customers, DeviceEntry, DeviceReadings, FastMap, KeyIndex, MlJoin, SerialIndex,
};
use crate::schema::{Column, Table};
use crate::streams::{Rule, Transition};
use crate::summary::Summary;

/// What a landing row turned into.
pub enum RowOutcome {
    /// Written to the target.
    Kept,
    /// Dropped by a rule.
    Filtered,
    /// Not usable: quarantined with this reason.
    Bad(String),
    /// Waits for reference data not loaded yet; the filter decides it later
    /// ([`RowFilter::resolve`]) and the caller counts it then.
    Deferred,
}

/// Bad lines of one landing file, as JSON lines (source, line number, reason, the raw line
/// cut at `QUARANTINE_LINE_BYTES`).
#[derive(Debug, Default)]
pub struct Quarantine {
    source: String,
    keep: usize,
    /// The JSON-lines body.
    pub body: Vec<u8>,
    /// Lines quarantined.
    pub count: u64,
}

impl Quarantine {
    fn add(&mut self, line: u64, reason: &str, raw: &[u8]) {
        let cut = &raw[..raw.len().min(self.keep)];
        let entry = serde_json::json!({
            "source": self.source,
            "line": line,
            "reason": reason,
            "raw": String::from_utf8_lossy(cut),
            "raw_bytes": raw.len(),
            "truncated": cut.len() < raw.len(),
        });
        self.body.extend_from_slice(entry.to_string().as_bytes());
        self.body.push(b'\n');
        self.count += 1;
    }
}

struct ScanState {
    columns: &'static [Column],
    /// The person column and the time column of the table (see [`person_columns`]).
    person: Option<(usize, usize)>,
    /// The cells buffer, kept empty between lines so its allocation is reused.
    cells: Vec<Cell<'static>>,
    /// The line reader, which remembers the field layout of the last line.
    reader: LineReader,
    max_line_bytes: usize,
    /// The person of the last line and the earliest time of their lines since: lines come
    /// grouped by person, so `persons` is touched once per run of lines, not per line.
    last_person: Option<(String, i64)>,
    /// The people of the lines so far and the earliest time of each, hashed (a run of one
    /// person's lines is a few lines long: a sorted map paid a dozen comparisons and an
    /// allocation a run); `summary.persons` when the file ends.
    persons: FastMap<String, i64>,
    summary: Summary,
    quarantine: Quarantine,
}

impl ScanState {
    /// Notes that `who` has a line at `at`.
    fn person(&mut self, who: &str, at: i64) {
        if let Some((p, earliest)) = &mut self.last_person
            && same(p.as_bytes(), who.as_bytes())
        {
            *earliest = (*earliest).min(at);
            return;
        }
        self.flush_person();
        remember(&mut self.last_person, who, at);
    }

    /// Folds the last person into `persons` (the memo stays: its string is reused).
    fn flush_person(&mut self) {
        if let Some((who, at)) = &self.last_person {
            match self.persons.get_mut(who.as_str()) {
                Some(e) => *e = (*e).min(*at),
                None => {
                    self.persons.insert(who.clone(), *at);
                }
            }
        }
    }

    fn line(
        &mut self,
        line: Line<'_>,
        on_row: &mut impl FnMut(&[Cell<'_>]) -> Result<RowOutcome>,
    ) -> Result<()> {
        match line {
            Line::Text { bytes, .. } if bytes.iter().all(u8::is_ascii_whitespace) => {}
            Line::Text {
                number,
                bytes,
                text,
            } => {
                self.summary.rows_in += 1;
                // The buffer of null cells, borrowed for this line's lifetime.
                let mut cells: Vec<Cell<'_>> = std::mem::take(&mut self.cells);
                let parsed = match text {
                    Some(text) => self.reader.text(text, self.columns, &mut cells),
                    None => self.reader.line(bytes, self.columns, &mut cells),
                };
                let outcome = match parsed {
                    Err(reason) => RowOutcome::Bad(reason),
                    Ok(()) => {
                        if let Some((k, t)) = self.person
                            && let Some(who) = cells.get(k).and_then(Cell::as_str)
                        {
                            let at = cells.get(t).and_then(Cell::as_long).unwrap_or(i64::MIN);
                            self.person(who, at);
                        }
                        on_row(&cells)?
                    }
                };
                // Collected into a same-layout type in place: the buffer keeps its
                // allocation and its length (one null cell a column) from line to line.
                self.cells = cells.into_iter().map(|_| Cell::Null).collect();
                match outcome {
                    RowOutcome::Kept => self.summary.rows_out += 1,
                    RowOutcome::Filtered => self.summary.filtered += 1,
                    RowOutcome::Bad(reason) => self.quarantine.add(number, &reason, bytes),
                    RowOutcome::Deferred => {}
                }
            }
            Line::TooLong { number, len, head } => {
                self.summary.rows_in += 1;
                let reason = format!(
                    "line of {len} bytes exceeds MAX_LINE_BYTES={}",
                    self.max_line_bytes
                );
                self.quarantine.add(number, &reason, head);
            }
        }
        Ok(())
    }
}

/// Sets `slot` to `(key, value)`, reusing the string it holds: the memo of the last
/// person or device seen changes once per run of lines, and a run's key is short.
fn remember<T>(slot: &mut Option<(String, T)>, key: &str, value: T) {
    match slot {
        Some((k, v)) => {
            k.clear();
            k.push_str(key);
            *v = value;
        }
        None => *slot = Some((key.to_string(), value)),
    }
}

/// Whose data a landing line is: an e-mail or a device serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PersonKind {
    /// A customer's e-mail (customer and phone lines).
    Email,
    /// A Step Trainer's serial (Step Trainer lines).
    Serial,
}

/// The column naming the person a landing table's line belongs to, and the column with the
/// line's time: `(kind, person column, time column)`, from the rule of the transition the
/// table feeds; `None` for the Parquet tables.
pub fn person_columns(table: Table) -> Option<(PersonKind, usize, usize)> {
    let t = Transition::of_landing(table)?;
    let (kind, person, time) = match t.rule() {
        Rule::LatestConsenting { email, time } => (PersonKind::Email, email, time),
        Rule::Consented { user, time } => (PersonKind::Email, user, time),
        Rule::OwnedDevice { serial, time } => (PersonKind::Serial, serial, time),
        Rule::CuratedByReadings { .. } | Rule::JoinReadings => return None,
    };
    Some((kind, table.column_index(person)?, table.column_index(time)?))
}

/// Position of the column `name` in the rows of `t`'s source.
fn column_of(t: Transition, name: &str) -> Result<usize> {
    let src = t.sources()[0];
    src.column_index(name).ok_or_else(|| {
        Error::Declaration(format!("{}: {} has no column {name}", t.name(), src.name()))
    })
}

/// Streams a landing file: push its chunks, then finish. Every non-blank line is counted
/// once, as kept, filtered or quarantined (a deferred row is counted by whoever resolves
/// it). Each push hands the parsed rows to `on_row`, so the caller keeps its row handler
/// between chunks (to load reference data a deferred row waits for).
pub struct LandingScan {
    splitter: LineSplitter,
    state: ScanState,
}

impl LandingScan {
    /// A scan of `source` (a key of `table`).
    pub fn new(table: Table, source: &str, cfg: &Config) -> Self {
        LandingScan {
            splitter: LineSplitter::new(cfg.max_line_bytes, cfg.quarantine_line_bytes),
            state: ScanState {
                columns: table.columns(),
                person: person_columns(table).map(|(_, k, t)| (k, t)),
                cells: Vec::with_capacity(table.columns().len()),
                reader: LineReader::default(),
                max_line_bytes: cfg.max_line_bytes,
                last_person: None,
                persons: FastMap::default(),
                summary: Summary::default(),
                quarantine: Quarantine {
                    source: source.to_string(),
                    keep: cfg.quarantine_line_bytes,
                    ..Quarantine::default()
                },
            },
        }
    }

    /// Feeds the next chunk of the file.
    pub fn push(
        &mut self,
        chunk: &[u8],
        on_row: &mut impl FnMut(&[Cell<'_>]) -> Result<RowOutcome>,
    ) -> Result<()> {
        let state = &mut self.state;
        self.splitter.push(chunk, &mut |l| state.line(l, on_row))
    }

    /// Ends the file: the counts (with `quarantined` set) and the quarantine.
    pub fn finish(
        mut self,
        on_row: &mut impl FnMut(&[Cell<'_>]) -> Result<RowOutcome>,
    ) -> Result<(Summary, Quarantine)> {
        let state = &mut self.state;
        self.splitter.finish(&mut |l| state.line(l, on_row))?;
        self.state.flush_person();
        let mut s = self.state.summary;
        s.persons = self.state.persons;
        s.quarantined = self.state.quarantine.count;
        Ok((s, self.state.quarantine))
    }
}

/// The partition (`dt`) of an epoch-millisecond timestamp, remembering the last day so
/// consecutive readings of one day format their date once.
#[derive(Default)]
pub struct DayCache {
    day: Option<i64>,
    dt: String,
}

impl DayCache {
    /// `dt` of `ms`, or `None` when out of range.
    pub fn dt(&mut self, ms: i64) -> Option<&str> {
        let day = ms.div_euclid(86_400_000);
        if self.day != Some(day) {
            self.dt = keys::dt_of_millis(ms)?;
            self.day = Some(day);
        }
        Some(&self.dt)
    }
}

/// What a filter's decision depends on of a key's reference values: the lineage records
/// it per key, so an output goes stale only when the answer for one of its own keys
/// changes, not when anything else in the same shard does.
pub trait Answer: Sized {
    /// The answer for a key with these values (`""` when it has none).
    fn answer(values: &[Self]) -> String;
}

/// A consent date: the date itself (it decides `CONSENT_AS_OF`).
impl Answer for i64 {
    fn answer(values: &[i64]) -> String {
        values.first().map(i64::to_string).unwrap_or_default()
    }
}

/// The answer of a serial with a curated owner.
pub const OWNED: &str = "owned";
/// The answer of a serial whose consenting owners are none of them curated yet.
pub const WAITING: &str = "waiting";

/// A device's owners (their curated flags): whether one is curated, else whether one
/// consents (the Step Trainer filter asks no more).
impl Answer for bool {
    fn answer(values: &[bool]) -> String {
        match (values.contains(&true), values.is_empty()) {
            (true, _) => OWNED,
            (false, false) => WAITING,
            (false, true) => "",
        }
        .to_string()
    }
}

/// Reference data of a filter, loaded shard by shard: a key (e-mail, serial) is answered
/// once its shard is loaded; until then the rows that need it wait.
#[derive(Debug)]
pub struct ShardedLookup<V> {
    shards: u32,
    loaded: HashMap<u32, Arc<KeyIndex<V>>>,
    /// Rows waiting for a shard, and the shards they wait for.
    waiting: Vec<Vec<Cell<'static>>>,
    wanted: BTreeSet<u32>,
    /// The answer given for each key asked, by the key's FNV-1a hash: the lineage. A key
    /// answers the same for as long as its shard is loaded (a shard is supplied once), so
    /// the answer is made once per key, not per lookup.
    consulted: HashMap<u64, String>,
}

impl<V: Answer> ShardedLookup<V> {
    /// Nothing loaded yet, over `shards` shards.
    pub fn new(shards: u32) -> Self {
        ShardedLookup {
            shards: shards.max(1),
            loaded: HashMap::new(),
            waiting: Vec::new(),
            wanted: BTreeSet::new(),
            consulted: HashMap::new(),
        }
    }

    /// Every shard, built from all entries at once (the benchmark and tests).
    pub fn complete(shards: u32, entries: impl IntoIterator<Item = (String, V)>) -> Self {
        let mut parts: HashMap<u32, Vec<(String, V)>> = HashMap::new();
        for (k, v) in entries {
            parts
                .entry(keys::shard_of(&k, shards))
                .or_default()
                .push((k, v));
        }
        let mut lookup = ShardedLookup::new(shards);
        for shard in 0..lookup.shards {
            let part = parts.remove(&shard).unwrap_or_default();
            lookup.supply(shard, Arc::new(KeyIndex::build(part)));
        }
        lookup
    }

    /// The same loaded shards (shared, not copied), with nothing asked or waiting yet: one
    /// file's lookup over a warm function's shards.
    pub fn share(&self) -> Self {
        ShardedLookup {
            shards: self.shards,
            loaded: self.loaded.clone(),
            waiting: Vec::new(),
            wanted: BTreeSet::new(),
            consulted: HashMap::new(),
        }
    }

    /// Adds a loaded shard.
    pub fn supply(&mut self, shard: u32, index: Arc<KeyIndex<V>>) {
        self.loaded.insert(shard, index);
    }

    /// The values of `key` (the answer recorded), or the shard to load first.
    pub fn find(&mut self, key: &str) -> std::result::Result<&[V], u32> {
        let hash = keys::fnv1a(key);
        let shard = keys::shard_of_hash(hash, self.shards);
        match self.loaded.get(&shard) {
            Some(index) => {
                let values = index.get(key);
                self.consulted
                    .entry(hash)
                    .or_insert_with(|| V::answer(values));
                Ok(values)
            }
            None => Err(shard),
        }
    }

    /// Keeps a row until `shard` is supplied.
    fn defer(&mut self, shard: u32, cells: &[Cell<'_>]) -> RowOutcome {
        self.wanted.insert(shard);
        self.waiting
            .push(cells.iter().cloned().map(Cell::into_owned).collect());
        RowOutcome::Deferred
    }
}

/// A landing transition's row rule: decides each row and collects the kept ones into
/// per-`dt` outputs. A row whose reference shard is not loaded yet is deferred; the caller
/// loads the [`wanted`](RowFilter::wanted) shards, [`supply`](RowFilter::supply)s them
/// and [`resolve`](RowFilter::resolve)s the waiting rows (after every chunk, so at most
/// one chunk of rows waits).
pub trait RowFilter: Sized {
    /// The reference values of the filter's index.
    type Value: Answer;
    /// Decides one row.
    fn row(&mut self, cells: &[Cell<'_>]) -> Result<RowOutcome>;
    /// The filter's reference lookup (with its waiting rows).
    fn lookup(&mut self) -> &mut ShardedLookup<Self::Value>;
    /// The outputs collected.
    fn into_sink(self) -> PartitionedSink;

    /// Shards deferred rows wait for (taken: each is asked for once).
    fn wanted(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.lookup().wanted)
            .into_iter()
            .collect()
    }

    /// Adds a loaded shard.
    fn supply(&mut self, shard: u32, index: Arc<KeyIndex<Self::Value>>) {
        self.lookup().supply(shard, index);
    }

    /// The answer given for every key asked, by the key's hash (taken).
    fn consulted(&mut self) -> BTreeMap<String, String> {
        std::mem::take(&mut self.lookup().consulted)
            .into_iter()
            .map(|(hash, answer)| (keys::hex_of(hash), answer))
            .collect()
    }

    /// Decides the waiting rows: `(kept, filtered)`.
    fn resolve(&mut self) -> Result<(u64, u64)> {
        let (mut kept, mut filtered) = (0, 0);
        for row in std::mem::take(&mut self.lookup().waiting) {
            match self.row(&row)? {
                RowOutcome::Kept => kept += 1,
                // Every shard was supplied before resolving: nothing is deferred twice, and
                // the range check that quarantines comes before any lookup.
                _ => filtered += 1,
            }
        }
        Ok((kept, filtered))
    }
}

impl RowFilter for ConsentFilter {
    type Value = i64;
    fn row(&mut self, cells: &[Cell<'_>]) -> Result<RowOutcome> {
        ConsentFilter::row(self, cells)
    }
    fn lookup(&mut self) -> &mut ShardedLookup<i64> {
        &mut self.consent
    }
    fn into_sink(self) -> PartitionedSink {
        self.sink
    }
}

impl RowFilter for StepTrainerFilter {
    type Value = bool;
    fn row(&mut self, cells: &[Cell<'_>]) -> Result<RowOutcome> {
        StepTrainerFilter::row(self, cells)
    }
    fn lookup(&mut self) -> &mut ShardedLookup<bool> {
        &mut self.devices
    }
    fn into_sink(self) -> PartitionedSink {
        self.sink
    }
}

/// A reading stream filtered by consent ([`Rule::Consented`]), row by row.
pub struct ConsentFilter {
    consent: ShardedLookup<i64>,
    /// Positions of the e-mail and the reading time in a row.
    user: usize,
    time: usize,
    /// The last user looked up and their consent date: readings come grouped by user.
    last: Option<(String, Option<i64>)>,
    as_of: bool,
    days: DayCache,
    /// The outputs, one per `dt`.
    pub sink: PartitionedSink,
}

impl ConsentFilter {
    /// Every consent shard of `customers`, built at once (the benchmark and tests): give
    /// each file its own lookup over them with [`ShardedLookup::share`].
    pub fn shards(customers: &Customers, cfg: &Config) -> ShardedLookup<i64> {
        ShardedLookup::complete(cfg.customer_shards, customers.consent_dates())
    }

    /// A filter of `t`'s rows whose consent shards are supplied as rows need them.
    pub fn sharded(t: Transition, cfg: &Config) -> Result<Self> {
        Self::new(t, ShardedLookup::new(cfg.customer_shards), cfg)
    }

    /// A filter of `t`'s rows over `consent`, the shards loaded so far.
    pub fn new(t: Transition, consent: ShardedLookup<i64>, cfg: &Config) -> Result<Self> {
        let Rule::Consented { user, time } = t.rule() else {
            return Err(Error::Declaration(format!(
                "{} is not a consent filter",
                t.name()
            )));
        };
        Ok(ConsentFilter {
            consent,
            user: column_of(t, user)?,
            time: column_of(t, time)?,
            last: None,
            as_of: cfg.consent_as_of,
            days: DayCache::default(),
            sink: PartitionedSink::new(t.target(), cfg.row_group_rows),
        })
    }

    /// Decides one reading.
    pub fn row(&mut self, cells: &[Cell<'_>]) -> Result<RowOutcome> {
        let user = cells[self.user].as_str().unwrap_or_default();
        let ts = cells[self.time].as_long().unwrap_or_default();
        let Some(dt) = self.days.dt(ts) else {
            return Ok(RowOutcome::Bad(format!("timestamp {ts} is out of range")));
        };
        let consent = match &self.last {
            Some((u, c)) if same(u.as_bytes(), user.as_bytes()) => *c,
            _ => match self.consent.find(user) {
                Ok(found) => {
                    let c = found.first().copied();
                    remember(&mut self.last, user, c);
                    c
                }
                Err(shard) => return Ok(self.consent.defer(shard, cells)),
            },
        };
        if !rules::reading_allowed(consent, ts, self.as_of) {
            return Ok(RowOutcome::Filtered);
        }
        self.sink.append(dt, cells)?;
        Ok(RowOutcome::Kept)
    }
}

/// A device stream filtered by its owner's curation ([`Rule::OwnedDevice`]), row by row.
pub struct StepTrainerFilter {
    devices: ShardedLookup<bool>,
    /// Positions of the serial and the reading time in a row.
    serial: usize,
    time: usize,
    /// The last serial looked up and whether it is curated: readings come grouped.
    last: Option<(String, bool)>,
    days: DayCache,
    /// The outputs, one per `dt`.
    pub sink: PartitionedSink,
    /// Serials whose readings were filtered because their consenting owners are not
    /// curated yet (they have no phone readings): the file waits for them.
    pub waiting: BTreeSet<String>,
}

impl StepTrainerFilter {
    /// Every device-index shard of the `curated` customers, built at once (the benchmark
    /// and tests): give each file its own lookup over them with [`ShardedLookup::share`].
    pub fn shards(curated: &Customers, cfg: &Config) -> ShardedLookup<bool> {
        let entries = curated
            .device_entries(true)
            .into_iter()
            .map(|e| (e.serial, e.curated));
        ShardedLookup::complete(cfg.customer_shards, entries)
    }

    /// A filter of `t`'s rows whose device-index shards are supplied as rows need them.
    pub fn sharded(t: Transition, cfg: &Config) -> Result<Self> {
        Self::new(t, ShardedLookup::new(cfg.customer_shards), cfg)
    }

    /// A filter of `t`'s rows over `devices`, the shards loaded so far.
    pub fn new(t: Transition, devices: ShardedLookup<bool>, cfg: &Config) -> Result<Self> {
        let Rule::OwnedDevice { serial, time } = t.rule() else {
            return Err(Error::Declaration(format!(
                "{} is not a device filter",
                t.name()
            )));
        };
        Ok(StepTrainerFilter {
            devices,
            serial: column_of(t, serial)?,
            time: column_of(t, time)?,
            last: None,
            days: DayCache::default(),
            sink: PartitionedSink::new(t.target(), cfg.row_group_rows),
            waiting: BTreeSet::new(),
        })
    }

    /// Decides one reading.
    pub fn row(&mut self, cells: &[Cell<'_>]) -> Result<RowOutcome> {
        let serial = cells[self.serial].as_str().unwrap_or_default();
        let ts = cells[self.time].as_long().unwrap_or_default();
        let Some(dt) = self.days.dt(ts) else {
            return Ok(RowOutcome::Bad(format!(
                "sensorreadingtime {ts} is out of range"
            )));
        };
        let curated = match &self.last {
            Some((s, c)) if same(s.as_bytes(), serial.as_bytes()) => *c,
            _ => match self.devices.find(serial) {
                Ok(owners) => {
                    let c = owners.contains(&true);
                    if !c && !owners.is_empty() {
                        self.waiting.insert(serial.to_string());
                    }
                    remember(&mut self.last, serial, c);
                    c
                }
                Err(shard) => return Ok(self.devices.defer(shard, cells)),
            },
        };
        if !curated {
            return Ok(RowOutcome::Filtered);
        }
        self.sink.append(dt, cells)?;
        Ok(RowOutcome::Kept)
    }
}

/// A customer snapshot as a Parquet object (rows in e-mail order).
pub fn encode_customers(table: Table, c: &Customers, row_group_rows: usize) -> Result<Bytes> {
    let mut sink = ParquetSink::new(table, row_group_rows)?;
    for row in c.rows.values() {
        sink.append(row)?;
    }
    sink.finish()
}

/// A device-index shard as JSON lines, one `["serial","email",curated]` array per line,
/// sorted.
pub fn encode_devices(entries: &[DeviceEntry]) -> Result<Bytes> {
    let mut sorted: Vec<&DeviceEntry> = entries.iter().collect();
    sorted.sort();
    let mut out = Vec::new();
    for e in sorted {
        serde_json::to_writer(&mut out, &(&e.serial, &e.email, e.curated)).map_err(|source| {
            Error::Json {
                context: "device index".into(),
                source,
            }
        })?;
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

/// The step trainer readings of a step_trainer_trusted object, grouped by device (serials
/// in the order they first appear; one `String` a device).
pub fn step_readings(batches: &[RecordBatch], context: &str) -> Result<DeviceReadings> {
    let mut devices: DeviceReadings = Vec::new();
    let mut index: FastMap<&str, usize> = FastMap::default();
    for b in batches {
        let t = column::<Int64Array>(b, "sensorreadingtime", context)?;
        let serials = Strings::of(b, "serialnumber", context)?.map_rows(Some);
        let d = column::<Int32Array>(b, "distancefromobject", context)?;
        // Readings come grouped by device: the last device is compared first (read as a
        // dictionary, one device's rows share one value).
        let mut last: Option<(&str, usize)> = None;
        for (i, serial) in serials.into_iter().enumerate() {
            let Some(serial) = serial else {
                continue;
            };
            let k = match last {
                Some((s, k)) if std::ptr::eq(s, serial) || s == serial => k,
                _ => *index.entry(serial).or_insert_with(|| {
                    devices.push((serial.to_string(), Vec::new()));
                    devices.len() - 1
                }),
            };
            last = Some((serial, k));
            devices[k].1.push((t.value(i), d.value(i)));
        }
    }
    Ok(devices)
}

/// The machine_learning_curated rows of one pair of trusted objects of `dt`: the step
/// trainer `readings` whose serial is the device of one of the phone object's users
/// (`serial_of`: user → serial), joined with that user's readings in `phone` at the same
/// millisecond. `None` when nothing joins. Either side of the pair computes the same bytes.
pub fn ml_pair(
    readings: &MlJoin,
    phone: &[RecordBatch],
    serial_of: &HashMap<String, String>,
    dt: &str,
    row_group_rows: usize,
    context: &str,
) -> Result<Option<Part>> {
    let mut owners = SerialIndex::new();
    for (user, serial) in serial_of {
        owners.entry(serial.clone()).or_default().push(user.clone());
    }
    let join = readings.with_index(&owners);
    if join.is_empty() {
        return Ok(None);
    }
    let mut sink = PartitionedSink::new(Table::MachineLearningCurated, row_group_rows);
    for b in phone {
        ml_join_batch(&join, b, dt, &mut sink, context)?;
    }
    Ok(sink.finish()?.into_iter().next())
}

/// Joins one batch of accelerometer_trusted rows into machine_learning_curated rows of `dt`.
/// The user column may be read as a dictionary
/// ([`read_parquet_keyed`](crate::columnar::read_parquet_keyed)): each distinct user
/// is looked up once. The matches are gathered as row positions and the output columns
/// taken from them in one pass each, not built a row at a time.
pub fn ml_join_batch(
    join: &MlJoin,
    b: &RecordBatch,
    dt: &str,
    sink: &mut PartitionedSink,
    context: &str,
) -> Result<()> {
    let devices = Strings::of(b, "user", context)?.map_rows(|u| join.device_of(u));
    let ts = column::<Int64Array>(b, "timestamp", context)?;
    // A phone reading of a curated user usually meets one Step Trainer reading: room for
    // one each, so the three grow as rarely as the rows they gather.
    let mut rows: Vec<u32> = Vec::with_capacity(b.num_rows());
    let mut serials: Vec<&str> = Vec::with_capacity(b.num_rows());
    let mut distances: Vec<i32> = Vec::with_capacity(b.num_rows());
    for (i, device) in devices.into_iter().enumerate() {
        let Some((serial, found)) = device.and_then(|d| join.at(d, ts.value(i))) else {
            continue;
        };
        for d in found {
            rows.push(i as u32);
            serials.push(serial);
            distances.push(*d);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let take = |name: &str| -> Result<ArrayRef> {
        let c = column::<Float64Array>(b, name, context)?;
        let v = c.values();
        Ok(Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|&i| v[i as usize]),
        )))
    };
    let t = ts.values();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|&i| t[i as usize]),
        )),
        Arc::new(StringArray::from_iter_values(serials)),
        Arc::new(Int32Array::from(distances)),
        take("x")?,
        take("y")?,
        take("z")?,
    ];
    let table = Table::MachineLearningCurated;
    let batch =
        RecordBatch::try_new(table.arrow_schema(), columns).map_err(|source| Error::Arrow {
            context: context.to_string(),
            source,
        })?;
    sink.part(dt)?.write_batch(&batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_columns_come_from_the_rules() {
        let cols: Vec<_> = Table::ALL.into_iter().map(person_columns).collect();
        assert_eq!(
            cols,
            [
                Some((PersonKind::Email, 1, 6)),  // email, lastupdatedate
                Some((PersonKind::Email, 0, 1)),  // user, timestamp
                Some((PersonKind::Serial, 1, 0)), // serialnumber, sensorreadingtime
                None,
                None,
                None,
                None,
                None,
            ]
        );
        let accel = Transition::AccelerometerLandingToTrusted;
        let step = Transition::StepTrainerLandingToTrusted;
        assert!(ConsentFilter::sharded(accel, &Config::default()).is_ok());
        assert!(matches!(
            ConsentFilter::sharded(step, &Config::default()),
            Err(Error::Declaration(_))
        ));
        assert!(StepTrainerFilter::sharded(step, &Config::default()).is_ok());
        assert!(matches!(
            StepTrainerFilter::sharded(accel, &Config::default()),
            Err(Error::Declaration(_))
        ));
    }

    #[test]
    fn a_scan_accounts_for_every_line_whatever_the_chunking() {
        let file = b"{\"user\":\"a\",\"timestamp\":1,\"x\":1,\"y\":1,\"z\":1}\r\n\n{bad\n\
{\"user\":\"b\",\"timestamp\":2,\"x\":1,\"y\":1,\"z\":1}";
        for size in [1, 7, file.len()] {
            let mut kept = Vec::new();
            let mut on_row = |c: &[Cell<'_>]| {
                let user = c[0].as_str().unwrap_or_default().to_string();
                let keep = user == "a";
                kept.push(user);
                Ok(if keep {
                    RowOutcome::Kept
                } else {
                    RowOutcome::Filtered
                })
            };
            let mut scan = LandingScan::new(Table::AccelerometerLanding, "k", &Config::default());
            for chunk in file.chunks(size) {
                scan.push(chunk, &mut on_row).unwrap();
            }
            let (s, q) = scan.finish(&mut on_row).unwrap();
            assert_eq!(
                (s.rows_in, s.rows_out, s.filtered, s.quarantined),
                (3, 1, 1, 1)
            );
            assert!(s.balances());
            let entry: serde_json::Value =
                serde_json::from_slice(q.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
            assert_eq!(entry["line"], 3);
            assert_eq!(entry["raw"], "{bad");
            drop(scan_users(kept));
        }
    }

    #[test]
    fn the_ml_join_gives_the_same_rows_from_a_keyed_or_a_plain_user_column() {
        use crate::columnar::{read_parquet, read_parquet_keyed};
        let step = MlJoin::of_devices([
            ("S1".to_string(), vec![(2, 20), (1, 10), (2, 21)]),
            ("S2".to_string(), vec![(1, 30)]),
        ]);
        let mut phone = ParquetSink::new(Table::AccelerometerTrusted, 100).unwrap();
        for (u, t) in [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("a", 1)] {
            let x = t as f64;
            let cells = [
                Cell::Str(u.into()),
                Cell::Long(t),
                Cell::Double(x),
                Cell::Double(-x),
                Cell::Double(0.5),
            ];
            phone.append(&cells).unwrap();
        }
        let phone = phone.finish().unwrap();
        let serial_of = HashMap::from([
            ("a".to_string(), "S1".to_string()),
            ("b".to_string(), "S2".to_string()),
        ]);
        let pair = |batches: &[RecordBatch]| {
            ml_pair(&step, batches, &serial_of, "2022-06-18", 100, "t")
                .unwrap()
                .unwrap()
        };
        let plain = pair(&read_parquet(phone.clone(), &[], "t").unwrap());
        let keyed = pair(&read_parquet_keyed(phone, &[], &["user"], "t").unwrap());
        assert_eq!(plain, keyed);
        assert_eq!((keyed.dt.as_str(), keyed.rows), ("2022-06-18", 5));
        let out = read_parquet(keyed.bytes, &[], "t").unwrap();
        let rows: Vec<(i64, String, i32, f64)> = (0..out[0].num_rows())
            .map(|i| {
                let b = &out[0];
                (
                    column::<Int64Array>(b, "sensorreadingtime", "t")
                        .unwrap()
                        .value(i),
                    column::<StringArray>(b, "serialnumber", "t")
                        .unwrap()
                        .value(i)
                        .to_string(),
                    column::<Int32Array>(b, "distancefromobject", "t")
                        .unwrap()
                        .value(i),
                    column::<Float64Array>(b, "y", "t").unwrap().value(i),
                )
            })
            .collect();
        // Phone rows in order, each with every reading of its owner's device that
        // millisecond; "c" owns nothing, a's reading at 3 has no Step Trainer reading.
        assert_eq!(
            rows,
            [
                (1, "S1".to_string(), 10, -1.0),
                (2, "S1".to_string(), 20, -2.0),
                (2, "S1".to_string(), 21, -2.0),
                (1, "S2".to_string(), 30, -1.0),
                (1, "S1".to_string(), 10, -1.0),
            ]
        );
    }

    #[test]
    fn step_readings_are_grouped_by_device_across_batches() {
        use crate::columnar::RowsBuilder;
        // Three batches: the readings of "s1" span all of them.
        let parts: [&[(i64, &str, i64)]; 3] = [
            &[(1, "s1", 10), (2, "s2", 20)],
            &[(3, "s1", 11)],
            &[(4, "s1", 12), (5, "s2", 21)],
        ];
        let batches: Vec<RecordBatch> = parts
            .iter()
            .map(|rows| {
                let mut b = RowsBuilder::new(Table::StepTrainerTrusted);
                for &(t, s, d) in *rows {
                    b.append(&[Cell::Long(t), Cell::Str(s.into()), Cell::Long(d)]);
                }
                b.finish().unwrap()
            })
            .collect();
        let want = vec![
            ("s1".to_string(), vec![(1, 10), (3, 11), (4, 12)]),
            ("s2".to_string(), vec![(2, 20), (5, 21)]),
        ];
        assert_eq!(step_readings(&batches, "t").unwrap(), want);
        // The same object read back with its serials as a dictionary.
        let mut sink = ParquetSink::new(Table::StepTrainerTrusted, 2).unwrap();
        for b in &batches {
            sink.write_batch(b).unwrap();
        }
        let keyed = crate::columnar::read_parquet_keyed(
            sink.finish().unwrap(),
            &[],
            &["serialnumber"],
            "t",
        )
        .unwrap();
        assert!(matches!(
            Strings::of(&keyed[0], "serialnumber", "t").unwrap(),
            Strings::Keyed(..)
        ));
        assert_eq!(step_readings(&keyed, "t").unwrap(), want);
    }

    #[test]
    fn a_scan_records_each_person_with_their_earliest_line() {
        // Runs of one person, a person coming back, a bad line between, no final newline.
        let file = b"{\"user\":\"b\",\"timestamp\":30,\"x\":1,\"y\":2,\"z\":3}\n\
{\"user\":\"b\",\"timestamp\":20,\"x\":1,\"y\":2,\"z\":3}\n\
{\"user\":\"a\",\"timestamp\":50,\"x\":1,\"y\":2,\"z\":3}\n{bad\n\
{\"user\":\"b\",\"timestamp\":10,\"x\":1,\"y\":2,\"z\":3}\n\
{\"user\":\"c\",\"timestamp\":40,\"x\":1,\"y\":2,\"z\":3}";
        let mut on_row = |_: &[Cell<'_>]| Ok(RowOutcome::Kept);
        let mut scan = LandingScan::new(Table::AccelerometerLanding, "k", &Config::default());
        scan.push(file, &mut on_row).unwrap();
        let (s, _) = scan.finish(&mut on_row).unwrap();
        let want: BTreeMap<String, i64> = [("a", 50), ("b", 10), ("c", 40)]
            .into_iter()
            .map(|(p, t)| (p.to_string(), t))
            .collect();
        assert_eq!(s.persons.into_iter().collect::<BTreeMap<_, _>>(), want);
        assert_eq!((s.rows_in, s.rows_out, s.quarantined), (6, 5, 1));
    }

    fn reading(user: &str, ts: i64) -> Vec<Cell<'static>> {
        vec![
            Cell::Str(user.to_string().into()),
            Cell::Long(ts),
            Cell::Double(1.0),
            Cell::Double(2.0),
            Cell::Double(3.0),
        ]
    }

    #[test]
    fn rows_wait_for_their_consent_shard_and_are_decided_once_it_is_supplied() {
        let cfg = Config {
            customer_shards: 4,
            ..Config::default()
        };
        let consenting = [("a@x", 5), ("b@x", 5), ("c@x", 5)];
        let all = ShardedLookup::complete(4, consenting.map(|(e, d)| (e.to_string(), d)));
        let mut f =
            ConsentFilter::sharded(Transition::AccelerometerLandingToTrusted, &cfg).unwrap();
        let users = ["a@x", "nobody@x", "b@x", "a@x", "c@x"];
        for u in users {
            assert!(matches!(
                f.row(&reading(u, 100)).unwrap(),
                RowOutcome::Deferred
            ));
        }
        // Out of range: quarantined at once, whatever the consent.
        assert!(matches!(
            f.row(&reading("zzz", i64::MAX)).unwrap(),
            RowOutcome::Bad(_)
        ));
        let mut wanted = f.wanted();
        let mut expect: Vec<u32> = users.iter().map(|u| keys::shard_of(u, 4)).collect();
        expect.sort();
        expect.dedup();
        assert_eq!(wanted, expect);
        assert!(f.wanted().is_empty(), "each shard is asked for once");
        for shard in wanted.drain(..) {
            let index = all.loaded.get(&shard).unwrap().clone();
            f.supply(shard, index);
        }
        assert_eq!(f.resolve().unwrap(), (4, 1));
        assert_eq!(f.resolve().unwrap(), (0, 0));
        // Loaded shards answer at once.
        assert!(matches!(
            f.row(&reading("c@x", 7)).unwrap(),
            RowOutcome::Kept
        ));
        // The lineage: every key asked, once, with its answer ("" for no consent).
        let answer = |u: &str, a: &str| (keys::hash_hex(u), a.to_string());
        assert_eq!(
            f.consulted(),
            BTreeMap::from([
                answer("a@x", "5"),
                answer("b@x", "5"),
                answer("c@x", "5"),
                answer("nobody@x", "")
            ])
        );
        assert!(f.consulted().is_empty(), "taken");
        let parts = f.into_sink().finish().unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].rows, 5);
    }

    #[test]
    fn a_shared_lookup_has_every_shard_and_nothing_asked_yet() {
        let cfg = Config {
            customer_shards: 4,
            ..Config::default()
        };
        let consenting = [("a@x", 5), ("b@x", 6)];
        let mut all = ShardedLookup::complete(4, consenting.map(|(e, d)| (e.to_string(), d)));
        assert_eq!(all.find("a@x"), Ok(&[5][..]));
        assert_eq!(all.consulted.len(), 1);
        let t = Transition::AccelerometerLandingToTrusted;
        let mut first = ConsentFilter::new(t, all.share(), &cfg).unwrap();
        assert!(matches!(
            first.row(&reading("a@x", 100)).unwrap(),
            RowOutcome::Kept
        ));
        assert!(matches!(
            first.row(&reading("nobody@x", 100)).unwrap(),
            RowOutcome::Filtered
        ));
        // Another file over the same shards: nothing asked (not even what the lookup it
        // shares was asked), nothing waiting, and the shards are the same objects.
        let second_lookup = all.share();
        assert!(second_lookup.consulted.is_empty() && second_lookup.waiting.is_empty());
        for (shard, index) in &all.loaded {
            assert!(Arc::ptr_eq(index, &second_lookup.loaded[shard]));
        }
        assert_eq!(second_lookup.loaded.len(), all.loaded.len());
        let mut second = ConsentFilter::new(t, second_lookup, &cfg).unwrap();
        assert!(matches!(
            second.row(&reading("b@x", 7)).unwrap(),
            RowOutcome::Kept
        ));
        assert!(second.wanted().is_empty());
        assert_eq!(
            second.consulted(),
            BTreeMap::from([(keys::hash_hex("b@x"), "6".to_string())])
        );
        assert_eq!(first.consulted().len(), 2);
    }

    fn scan_users(v: Vec<String>) -> Vec<String> {
        assert_eq!(v, ["a", "b"]);
        v
    }
}
