//! The compute path of the transitions, free of any I/O: a landing file's bytes go in as
//! chunks, typed rows are filtered, and Parquet objects and a quarantine come out. The
//! functions feed it from S3; the benchmark feeds it from local files. Nothing here holds
//! more than one line, one row group per output partition, and the encoded outputs.

use std::collections::{HashMap, HashSet};

use arrow_array::{Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};

use bytes::Bytes;

use crate::columnar::{ParquetSink, PartitionedSink, column};
use crate::config::Config;
use crate::error::Result;
use crate::keys;
use crate::lines::{Line, LineSplitter};
use crate::record::{Cell, parse_line};
use crate::rules::{self, Customers, MlJoin, accelerometer, step_trainer};
use crate::schema::{Column, Table};
use crate::summary::Summary;

/// What a landing row turned into.
pub enum RowOutcome {
    /// Written to the target.
    Kept,
    /// Dropped by a rule.
    Filtered,
    /// Not usable: quarantined with this reason.
    Bad(String),
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

struct ScanState<F> {
    columns: &'static [Column],
    /// The cells buffer, kept empty between lines so its allocation is reused.
    cells: Vec<Cell<'static>>,
    max_line_bytes: usize,
    summary: Summary,
    quarantine: Quarantine,
    on_row: F,
}

impl<F: FnMut(&[Cell<'_>]) -> Result<RowOutcome>> ScanState<F> {
    fn line(&mut self, line: Line<'_>) -> Result<()> {
        match line {
            Line::Text { bytes, .. } if bytes.iter().all(u8::is_ascii_whitespace) => {}
            Line::Text { number, bytes } => {
                self.summary.rows_in += 1;
                // Collecting an empty Vec into one of a same-layout type reuses its
                // allocation: the cells buffer is not reallocated per line.
                let mut cells: Vec<Cell<'_>> = std::mem::take(&mut self.cells)
                    .into_iter()
                    .map(|_| Cell::Null)
                    .collect();
                let outcome = match parse_line(bytes, self.columns, &mut cells) {
                    Err(reason) => RowOutcome::Bad(reason),
                    Ok(()) => (self.on_row)(&cells)?,
                };
                cells.clear();
                self.cells = cells.into_iter().map(|_| Cell::Null).collect();
                match outcome {
                    RowOutcome::Kept => self.summary.rows_out += 1,
                    RowOutcome::Filtered => self.summary.filtered += 1,
                    RowOutcome::Bad(reason) => self.quarantine.add(number, &reason, bytes),
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

/// Streams a landing file: push its chunks, then finish. Every non-blank line is counted
/// once, as kept, filtered or quarantined.
pub struct LandingScan<F> {
    splitter: LineSplitter,
    state: ScanState<F>,
}

impl<F: FnMut(&[Cell<'_>]) -> Result<RowOutcome>> LandingScan<F> {
    /// A scan of `source` (a key of `table`) handing each parsed row to `on_row`.
    pub fn new(table: Table, source: &str, cfg: &Config, on_row: F) -> Self {
        LandingScan {
            splitter: LineSplitter::new(cfg.max_line_bytes, cfg.quarantine_line_bytes),
            state: ScanState {
                columns: table.columns(),
                cells: Vec::with_capacity(table.columns().len()),
                max_line_bytes: cfg.max_line_bytes,
                summary: Summary::default(),
                quarantine: Quarantine {
                    source: source.to_string(),
                    keep: cfg.quarantine_line_bytes,
                    ..Quarantine::default()
                },
                on_row,
            },
        }
    }

    /// Feeds the next chunk of the file.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        let state = &mut self.state;
        self.splitter.push(chunk, &mut |l| state.line(l))
    }

    /// Ends the file: the counts (with `quarantined` set) and the quarantine.
    pub fn finish(mut self) -> Result<(Summary, Quarantine)> {
        let state = &mut self.state;
        self.splitter.finish(&mut |l| state.line(l))?;
        let mut s = self.state.summary;
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

/// A landing transition's row rule: decides each row and collects the kept ones into
/// per-`dt` outputs.
pub trait RowFilter {
    /// Decides one row.
    fn row(&mut self, cells: &[Cell<'_>]) -> Result<RowOutcome>;
    /// The outputs collected.
    fn into_sink(self) -> PartitionedSink;
}

impl RowFilter for AccelerometerFilter {
    fn row(&mut self, cells: &[Cell<'_>]) -> Result<RowOutcome> {
        AccelerometerFilter::row(self, cells)
    }
    fn into_sink(self) -> PartitionedSink {
        self.sink
    }
}

impl RowFilter for StepTrainerFilter {
    fn row(&mut self, cells: &[Cell<'_>]) -> Result<RowOutcome> {
        StepTrainerFilter::row(self, cells)
    }
    fn into_sink(self) -> PartitionedSink {
        self.sink
    }
}

/// accelerometer_landing → accelerometer_trusted, row by row.
pub struct AccelerometerFilter {
    consent: HashMap<String, i64>,
    /// The last user looked up and their consent date: readings come grouped by user.
    last: Option<(String, Option<i64>)>,
    as_of: bool,
    days: DayCache,
    /// The outputs, one per `dt`.
    pub sink: PartitionedSink,
}

impl AccelerometerFilter {
    /// A filter against the consenting customers.
    pub fn new(customers: &Customers, cfg: &Config) -> Self {
        AccelerometerFilter {
            consent: customers.consent_dates(),
            last: None,
            as_of: cfg.consent_as_of,
            days: DayCache::default(),
            sink: PartitionedSink::new(Table::AccelerometerTrusted, cfg.row_group_rows),
        }
    }

    /// Decides one reading.
    pub fn row(&mut self, cells: &[Cell<'_>]) -> Result<RowOutcome> {
        let user = cells[accelerometer::USER].as_str().unwrap_or_default();
        let ts = cells[accelerometer::TIMESTAMP]
            .as_long()
            .unwrap_or_default();
        let consent = match &self.last {
            Some((u, c)) if u == user => *c,
            _ => {
                let c = self.consent.get(user).copied();
                self.last = Some((user.to_string(), c));
                c
            }
        };
        if !rules::reading_allowed(consent, ts, self.as_of) {
            return Ok(RowOutcome::Filtered);
        }
        let Some(dt) = self.days.dt(ts) else {
            return Ok(RowOutcome::Bad(format!("timestamp {ts} is out of range")));
        };
        self.sink.append(dt, cells)?;
        Ok(RowOutcome::Kept)
    }
}

/// step_trainer_landing → step_trainer_trusted, row by row.
pub struct StepTrainerFilter {
    serials: HashSet<String>,
    /// The last serial looked up and whether it is curated: readings come grouped.
    last: Option<(String, bool)>,
    days: DayCache,
    /// The outputs, one per `dt`.
    pub sink: PartitionedSink,
}

impl StepTrainerFilter {
    /// A filter against the curated customers' devices.
    pub fn new(curated: &Customers, cfg: &Config) -> Self {
        StepTrainerFilter {
            serials: curated.serials(),
            last: None,
            days: DayCache::default(),
            sink: PartitionedSink::new(Table::StepTrainerTrusted, cfg.row_group_rows),
        }
    }

    /// Decides one reading.
    pub fn row(&mut self, cells: &[Cell<'_>]) -> Result<RowOutcome> {
        let serial = cells[step_trainer::SERIAL].as_str().unwrap_or_default();
        let curated = match &self.last {
            Some((s, c)) if s == serial => *c,
            _ => {
                let c = self.serials.contains(serial);
                self.last = Some((serial.to_string(), c));
                c
            }
        };
        if !curated {
            return Ok(RowOutcome::Filtered);
        }
        let ts = cells[step_trainer::TIME].as_long().unwrap_or_default();
        let Some(dt) = self.days.dt(ts) else {
            return Ok(RowOutcome::Bad(format!(
                "sensorreadingtime {ts} is out of range"
            )));
        };
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

/// The step trainer readings of a step_trainer_trusted object.
pub fn step_readings(batches: &[RecordBatch], context: &str) -> Result<Vec<(i64, String, i32)>> {
    let mut readings = Vec::new();
    for b in batches {
        let t = column::<Int64Array>(b, "sensorreadingtime", context)?;
        let sn = column::<StringArray>(b, "serialnumber", context)?;
        let d = column::<Int32Array>(b, "distancefromobject", context)?;
        for i in 0..b.num_rows() {
            readings.push((t.value(i), sn.value(i).to_string(), d.value(i)));
        }
    }
    Ok(readings)
}

/// Joins one batch of accelerometer_trusted rows into machine_learning_curated rows of `dt`.
pub fn ml_join_batch(
    join: &MlJoin,
    b: &RecordBatch,
    dt: &str,
    sink: &mut PartitionedSink,
    context: &str,
) -> Result<()> {
    let user = column::<StringArray>(b, "user", context)?;
    let ts = column::<Int64Array>(b, "timestamp", context)?;
    let (x, y, z) = (
        column::<Float64Array>(b, "x", context)?,
        column::<Float64Array>(b, "y", context)?,
        column::<Float64Array>(b, "z", context)?,
    );
    // Readings arrive grouped by user: look the device up once per run of one user.
    let mut last: Option<(&str, Option<usize>)> = None;
    for i in 0..b.num_rows() {
        let u = user.value(i);
        let device = match last {
            Some((prev, device)) if prev == u => device,
            _ => {
                let device = join.device_of(u);
                last = Some((u, device));
                device
            }
        };
        let Some((serial, distances)) = device.and_then(|d| join.at(d, ts.value(i))) else {
            continue;
        };
        for d in distances {
            let row = [
                Cell::Long(ts.value(i)),
                Cell::Str(serial.into()),
                Cell::Long(i64::from(*d)),
                Cell::Double(x.value(i)),
                Cell::Double(y.value(i)),
                Cell::Double(z.value(i)),
            ];
            sink.append(dt, &row)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_accounts_for_every_line_whatever_the_chunking() {
        let file = b"{\"user\":\"a\",\"timestamp\":1,\"x\":1,\"y\":1,\"z\":1}\r\n\n{bad\n\
{\"user\":\"b\",\"timestamp\":2,\"x\":1,\"y\":1,\"z\":1}";
        for size in [1, 7, file.len()] {
            let mut kept = Vec::new();
            let mut scan =
                LandingScan::new(Table::AccelerometerLanding, "k", &Config::default(), |c| {
                    let user = c[0].as_str().unwrap_or_default().to_string();
                    let keep = user == "a";
                    kept.push(user);
                    Ok(if keep {
                        RowOutcome::Kept
                    } else {
                        RowOutcome::Filtered
                    })
                });
            for chunk in file.chunks(size) {
                scan.push(chunk).unwrap();
            }
            let (s, q) = scan.finish().unwrap();
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

    fn scan_users(v: Vec<String>) -> Vec<String> {
        assert_eq!(v, ["a", "b"]);
        v
    }
}
