//! The benchmark's Rust side (the `stedi-bench` binary is its command line).
//!
//! - `gen --scale N --sample DIR --out DIR [--only STEM]`: a landing dataset N times the
//!   sample. Replica k of every customer gets its own e-mail (`local.rK@domain`) and serial
//!   (`serial-rK`), and every epoch-millisecond field of its records and readings moves k
//!   days later, so the join structure is the sample's N times over, spread over N dates:
//!   every table has exactly N times the sample's rows. Each output file holds the N
//!   replicas of the sample file of the same name. With `--only STEM` one reading file is
//!   generated N-fold with its readings' owners kept (dates still move) and the sample's
//!   customers, for the one-big-file memory test.
//! - `compute --what customer|accelerometer|step_trainer|machine_learning|pipeline --data DIR`:
//!   the functions' compute path in this process (parse, filter or join, Parquet encode;
//!   `--what machine_learning_pairs` is the ML join one output per pair of objects, as the
//!   function writes it when a Step Trainer object arrives),
//!   files read in 8 MiB chunks as the functions read S3 bodies; prints one JSON line with
//!   bytes, rows, seconds, the table counts and the peak RSS of this process. `pipeline`
//!   runs the five on `BENCH_THREADS` threads: the customers, the phone files, the curated
//!   customers, then the Step Trainer files and the ML joins from one queue (each Step
//!   Trainer object joined as soon as it is written, as the ML function fires on it). The
//!   customer stages encode what the functions write into a fresh lake: customer_trusted and
//!   customer_curated as `CUSTOMER_SHARDS` objects, and the device index's shards.
//! - `init --bin PATH`: cold start of a function binary: time from exec to its first call
//!   to the Lambda runtime API (played by a listener here).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow_array::RecordBatch;
use bytes::Bytes;
use serde_json::{Value, json};
use stedi::Transition;
use stedi::columnar::{Part, Strings, read_parquet_keyed};
use stedi::compute::{
    ConsentFilter, LandingScan, RowFilter, RowOutcome, StepTrainerFilter, encode_customers,
    encode_devices, ml_join_batch, ml_pair, step_readings,
};
use stedi::config::Config;
use stedi::rules::{self, Customers, DeviceEntry, MlJoin, SerialIndex, by_shard, devices_by_shard};
use stedi::schema::Table;

const DAY: i64 = 86_400_000;
const CHUNK: usize = 8 << 20;

/// Peak resident set of this process (VmHWM), in MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn landing_files(data: &Path, zone: &str) -> Result<Vec<PathBuf>> {
    let dir = data.join(zone).join("landing");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

// ---------------------------------------------------------------- generator

fn shift_replica(v: &mut Value, k: i64, rename: bool) {
    let Value::Object(m) = v else { return };
    for (key, val) in m.iter_mut() {
        let lower = key.to_ascii_lowercase();
        if let Some(n) = val.as_i64()
            && (lower.ends_with("date") || lower == "timestamp" || lower == "sensorreadingtime")
            && n > 0
        {
            *val = json!(n + k * DAY);
        }
        if rename
            && k > 0
            && (lower == "email" || lower == "user")
            && let Some((local, domain)) = val.as_str().and_then(|s| s.split_once('@'))
        {
            *val = json!(format!("{local}.r{k}@{domain}"));
        }
        if rename
            && k > 0
            && lower == "serialnumber"
            && let Some(s) = val.as_str()
        {
            *val = json!(format!("{s}-r{k}"));
        }
    }
}

pub fn generate(sample: &Path, out: &Path, scale: i64, only: Option<&str>) -> Result<()> {
    for zone in ["customer", "accelerometer", "step_trainer"] {
        let to = out.join(zone).join("landing");
        std::fs::create_dir_all(&to)?;
        for file in landing_files(sample, zone)? {
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if zone != "customer" && only.is_some_and(|o| o != stem) {
                continue;
            }
            let lines: Vec<Value> = std::fs::read_to_string(&file)?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect::<std::result::Result<_, _>>()?;
            let name = file.file_name().context("file name")?;
            let mut w = BufWriter::new(std::fs::File::create(to.join(name))?);
            // With --only (one big file) the customers stay the sample's, and the
            // readings keep their owners: only their dates move.
            let (replicas, rename) = match only {
                Some(_) if zone == "customer" => (1, false),
                Some(_) => (scale, false),
                None => (scale, true),
            };
            for k in 0..replicas {
                for l in &lines {
                    let mut v = l.clone();
                    shift_replica(&mut v, k, rename);
                    serde_json::to_writer(&mut w, &v)?;
                    w.write_all(b"\n")?;
                }
            }
            w.flush()?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- compute

#[derive(Default)]
struct Stats {
    bytes: u64,
    /// Parquet bytes the outputs came to.
    bytes_out: u64,
    rows_in: u64,
    rows_out: u64,
    secs: f64,
}

fn stream_file(path: &Path, mut push: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
    let mut f = std::io::BufReader::with_capacity(CHUNK, std::fs::File::open(path)?);
    let mut total = 0;
    loop {
        let buf = f.fill_buf()?;
        if buf.is_empty() {
            return Ok(total);
        }
        let n = buf.len();
        push(buf)?;
        total += n as u64;
        f.consume(n);
    }
}

fn scan(
    table: Table,
    path: &Path,
    cfg: &Config,
    mut on_row: impl FnMut(&[stedi::record::Cell<'_>]) -> stedi::Result<RowOutcome>,
    stats: &mut Stats,
) -> Result<()> {
    let key = path.display().to_string();
    let mut s = LandingScan::new(table, &key, cfg);
    stats.bytes += stream_file(path, |c| Ok(s.push(c, &mut on_row)?))?;
    let (summary, _) = s.finish(&mut on_row)?;
    stats.rows_in += summary.rows_in;
    stats.rows_out += summary.rows_out;
    Ok(())
}

fn customers_trusted(data: &Path, cfg: &Config, stats: &mut Stats) -> Result<Customers> {
    let mut all = Customers::default();
    for f in landing_files(data, "customer")? {
        let mut incoming = Customers::default();
        scan(
            Table::CustomerLanding,
            &f,
            cfg,
            |c| {
                incoming.offer(c.iter().cloned().map(|c| c.into_owned()).collect());
                Ok(RowOutcome::Kept)
            },
            stats,
        )?;
        let (next, _) = rules::merge_trusted(&all, &incoming);
        all = next;
    }
    Ok(all)
}

type Outputs = Vec<Part>;

/// Objects a customer function writes into a fresh lake for `customers`: one Parquet
/// object per shard of `table` that holds a customer (`CUSTOMER_SHARDS` shards, by the
/// e-mail's hash), and one device-index object per shard that holds an entry of `devices`
/// (by the serial's hash); each shard encoded whole by one of `threads` threads, as the
/// function rewrites its shards concurrently. Returns (customer objects, device objects).
fn write_shards(
    table: Table,
    customers: &Customers,
    devices: Vec<DeviceEntry>,
    cfg: &Config,
    threads: usize,
) -> Result<(u64, u64)> {
    let shards = cfg.customer_shards;
    let tables: Vec<Customers> = by_shard(customers.clone(), shards).into_values().collect();
    let devices: Vec<Vec<DeviceEntry>> = devices_by_shard(devices, shards).into_values().collect();
    let threads = threads.max(1);
    on_threads(threads, |t| {
        for part in tables.iter().skip(t).step_by(threads) {
            encode_customers(table, part, cfg.row_group_rows)?;
        }
        for entries in devices.iter().skip(t).step_by(threads) {
            encode_devices(entries)?;
        }
        Ok(())
    })?;
    Ok((tables.len() as u64, devices.len() as u64))
}

/// The device index once customer_trusted and customer_curated are written: every trusted
/// customer's device, flagged when its owner is curated.
fn device_index(trusted: &Customers, curated: &Customers) -> Vec<DeviceEntry> {
    let mut entries = trusted.device_entries(false);
    for e in &mut entries {
        e.curated = curated.rows.contains_key(&e.email);
    }
    entries
}

/// Runs `f(t)` for `t` in `0..threads` on scoped threads and collects the results.
fn on_threads<T: Send>(threads: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|t| {
                let f = &f;
                scope.spawn(move || f(t))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
            })
            .collect()
    })
}

/// Runs `one` over `files` on `threads` threads (files round-robin), merging the outputs
/// (kept only when `keep`, as a function drops them once written) and the stats.
fn over_files(
    files: Vec<PathBuf>,
    threads: usize,
    keep: bool,
    stats: &mut Stats,
    one: impl Fn(&Path, &mut Stats) -> Result<Outputs> + Sync,
) -> Result<Outputs> {
    let threads = threads.max(1);
    let results = on_threads(threads, |t| {
        let mut st = Stats::default();
        let mut out = Vec::new();
        for f in files.iter().skip(t).step_by(threads) {
            let o = one(f, &mut st)?;
            st.bytes_out += o.iter().map(|p| p.bytes.len() as u64).sum::<u64>();
            if keep {
                out.extend(o);
            }
        }
        Ok((st, out))
    })?;
    let mut out = Vec::new();
    for (st, o) in results {
        stats.bytes += st.bytes;
        stats.bytes_out += st.bytes_out;
        stats.rows_in += st.rows_in;
        stats.rows_out += st.rows_out;
        out.extend(o);
    }
    Ok(out)
}

/// A reading stage: every landing file of `t`'s source through its own filter from `make`,
/// on `threads` threads.
fn filtered<F: RowFilter>(
    data: &Path,
    t: Transition,
    cfg: &Config,
    stats: &mut Stats,
    threads: usize,
    keep: bool,
    make: impl Fn(Transition) -> stedi::Result<F> + Sync,
) -> Result<Outputs> {
    let source = t.sources()[0];
    let zone = source.prefix().split('/').next().unwrap_or_default();
    over_files(landing_files(data, zone)?, threads, keep, stats, |f, st| {
        let mut filter = make(t)?;
        scan(source, f, cfg, |c| filter.row(c), st)?;
        Ok(filter.into_sink().finish()?)
    })
}

fn accelerometer(
    data: &Path,
    trusted: &Customers,
    cfg: &Config,
    stats: &mut Stats,
    threads: usize,
    keep: bool,
) -> Result<Outputs> {
    // The shards a warm function holds, built once; each file gets its own lookup over them.
    let consent = ConsentFilter::shards(trusted, cfg);
    let t = Transition::AccelerometerLandingToTrusted;
    filtered(data, t, cfg, stats, threads, keep, |t| {
        ConsentFilter::new(t, consent.share(), cfg)
    })
}

/// customer_curated from the accelerometer outputs' `user` column (as the function reads
/// each new object), the objects spread over `threads`.
fn curated_from_outputs(accel: &Outputs, trusted: &Customers, threads: usize) -> Result<Customers> {
    let threads = threads.max(1);
    let sets = on_threads(threads, |t| {
        let mut users = BTreeSet::new();
        for Part { bytes, .. } in accel.iter().skip(t).step_by(threads) {
            let context = "accelerometer_trusted";
            for b in read_parquet_keyed(bytes.clone(), &["user"], &["user"], context)? {
                for u in Strings::of(&b, "user", context)?.runs() {
                    if !users.contains(u) {
                        users.insert(u.to_string());
                    }
                }
            }
        }
        Ok(users)
    })?;
    let users: BTreeSet<String> = sets.into_iter().flatten().collect();
    Ok(rules::merge_curated(&Customers::default(), trusted, users))
}

fn step_trainer(
    data: &Path,
    curated: &Customers,
    cfg: &Config,
    stats: &mut Stats,
    threads: usize,
    keep: bool,
) -> Result<Outputs> {
    let devices = StepTrainerFilter::shards(curated, cfg);
    let t = Transition::StepTrainerLandingToTrusted;
    filtered(data, t, cfg, stats, threads, keep, |t| {
        StepTrainerFilter::new(t, devices.share(), cfg)
    })
}

/// Runs `one(dt, phone objects, Step Trainer objects)` for every `dt` of the Step Trainer
/// outputs, the `dt`s spread over `threads`; counts the Step Trainer rows in and the rows
/// `one` returns out.
fn per_dt(
    steps: &Outputs,
    accel: &Outputs,
    stats: &mut Stats,
    threads: usize,
    one: impl Fn(&str, &[&Bytes], &[&Bytes]) -> Result<u64> + Sync,
) -> Result<u64> {
    let mut accel_by_dt: HashMap<&str, Vec<&Bytes>> = HashMap::new();
    for Part { dt, bytes: b, .. } in accel {
        accel_by_dt.entry(dt.as_str()).or_default().push(b);
    }
    let mut steps_by_dt: BTreeMap<&str, Vec<&Bytes>> = BTreeMap::new();
    for Part { dt, rows: n, bytes } in steps {
        stats.rows_in += n;
        stats.bytes += bytes.len() as u64;
        steps_by_dt.entry(dt.as_str()).or_default().push(bytes);
    }
    let dts: Vec<&str> = steps_by_dt.keys().copied().collect();
    let threads = threads.max(1);
    let per_thread = on_threads(threads, |t| {
        let mut rows = 0;
        for dt in dts.iter().skip(t).step_by(threads) {
            let phones = accel_by_dt.get(dt).map_or(&[][..], Vec::as_slice);
            rows += one(dt, phones, &steps_by_dt[dt])?;
        }
        Ok(rows)
    })?;
    let rows: u64 = per_thread.into_iter().sum();
    stats.rows_out += rows;
    Ok(rows)
}

/// machine_learning_curated: per `dt`, the accelerometer objects are decoded once and every
/// step trainer object of that `dt` is joined with them (one output each); `dt`s are spread
/// over `threads`.
fn machine_learning(
    steps: &Outputs,
    accel: &Outputs,
    trusted: &Customers,
    cfg: &Config,
    stats: &mut Stats,
    threads: usize,
) -> Result<u64> {
    let index = trusted.serial_index();
    per_dt(steps, accel, stats, threads, |dt, phones, steps| {
        let phones = decode_phones(phones)?;
        let mut rows = 0;
        for bytes in steps {
            rows += join_step_object(bytes, dt, &phones, &index, cfg)?;
        }
        Ok(rows)
    })
}

/// The phone objects of one `dt`, decoded.
fn decode_phones(objects: &[&Bytes]) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for a in objects {
        batches.extend(read_parquet_keyed((*a).clone(), &[], &["user"], "accel")?);
    }
    Ok(batches)
}

/// One Step Trainer object of `dt` joined with that `dt`'s decoded phone readings into one
/// machine_learning_curated output; its rows.
fn join_step_object(
    step: &Bytes,
    dt: &str,
    phones: &[RecordBatch],
    index: &SerialIndex,
    cfg: &Config,
) -> Result<u64> {
    let step = read_parquet_keyed(step.clone(), &[], &["serialnumber"], "step")?;
    let join = MlJoin::of_devices(step_readings(&step, "step")?).with_index(index);
    let table = Table::MachineLearningCurated;
    let mut sink = stedi::columnar::PartitionedSink::new(table, cfg.row_group_rows);
    for b in phones {
        ml_join_batch(&join, b, dt, &mut sink, "accel")?;
    }
    Ok(sink.finish()?.iter().map(|p| p.rows).sum())
}

/// What a thread of [`step_trainer_then_ml`] does next.
enum Task {
    /// Filter a Step Trainer landing file.
    File(PathBuf),
    /// Join a Step Trainer output of this `dt` with the `dt`'s decoded phone readings.
    Join(String, Bytes, Arc<Decoded>),
}

/// A `dt`'s phone objects decoded, by the first join that needs them (the error as text:
/// every join of the `dt` reports it).
type Decoded = OnceLock<Result<Vec<RecordBatch>, String>>;

/// The work [`step_trainer_then_ml`] has left.
#[derive(Default)]
struct Queue {
    files: VecDeque<PathBuf>,
    /// Step Trainer outputs to join, by `dt`: a `dt`'s joins are taken one after another.
    joins: BTreeMap<String, Vec<Bytes>>,
    /// Files being filtered: their outputs are joins still to come.
    filtering: usize,
    /// The `dt`s with joins queued or running, their decoded phone readings, and how many.
    open: HashMap<String, (Arc<Decoded>, usize)>,
}

/// step_trainer_trusted, then machine_learning_curated, as the lake runs them: the ML
/// function fires on each new step_trainer_trusted object, so each object is joined as soon
/// as it is written, by whichever thread is free. Landing files are taken first, joins when
/// none is left: a thread done with its files joins the others' outputs instead of waiting
/// for the slowest file. Joins are taken by `dt`; a `dt`'s phone objects are decoded by its
/// first join and dropped when none of its joins is left (decoded again if a file filtered
/// later brings another), so the decoded readings held are a `dt` or two a thread, as when
/// the stages ran one after the other. Returns the Step Trainer rows kept and the ML rows;
/// `stats` counts the Step Trainer landing files as [`step_trainer`] does.
fn step_trainer_then_ml(
    data: &Path,
    curated: &Customers,
    accel: &Outputs,
    trusted: &Customers,
    cfg: &Config,
    stats: &mut Stats,
    threads: usize,
) -> Result<(u64, u64)> {
    let devices = StepTrainerFilter::shards(curated, cfg);
    let index = trusted.serial_index();
    let t = Transition::StepTrainerLandingToTrusted;
    let mut phones: HashMap<&str, Vec<&Bytes>> = HashMap::new();
    for Part { dt, bytes, .. } in accel {
        phones.entry(dt.as_str()).or_default().push(bytes);
    }
    let queue = Mutex::new(Queue {
        files: landing_files(data, "step_trainer")?.into(),
        ..Queue::default()
    });
    let changed = Condvar::new();
    let poisoned = |_| anyhow::anyhow!("a worker panicked");
    let per_thread = on_threads(threads, |_| {
        let (mut st, mut steps, mut rows) = (Stats::default(), 0, 0);
        loop {
            let task = {
                let mut q = queue.lock().map_err(poisoned)?;
                loop {
                    if let Some(f) = q.files.pop_front() {
                        q.filtering += 1;
                        break Some(Task::File(f));
                    }
                    if let Some((dt, mut rest)) = q.joins.pop_first()
                        && let Some(bytes) = rest.pop()
                    {
                        if !rest.is_empty() {
                            q.joins.insert(dt.clone(), rest);
                        }
                        let decoded = q.open.get(&dt).map(|(d, _)| d.clone());
                        let decoded = decoded.ok_or_else(|| anyhow::anyhow!("{dt}: not open"))?;
                        break Some(Task::Join(dt, bytes, decoded));
                    }
                    if q.filtering == 0 {
                        break None;
                    }
                    q = changed.wait(q).map_err(poisoned)?;
                }
            };
            match task {
                None => return Ok((st, steps, rows)),
                Some(Task::File(f)) => {
                    let filtered = (|| -> Result<Outputs> {
                        let mut filter = StepTrainerFilter::new(t, devices.share(), cfg)?;
                        scan(t.sources()[0], &f, cfg, |c| filter.row(c), &mut st)?;
                        Ok(filter.into_sink().finish()?)
                    })();
                    let mut q = queue.lock().map_err(poisoned)?;
                    q.filtering -= 1;
                    changed.notify_all();
                    match filtered {
                        Ok(out) => {
                            for Part { dt, rows: n, bytes } in out {
                                st.bytes_out += bytes.len() as u64;
                                steps += n;
                                q.open.entry(dt.clone()).or_default().1 += 1;
                                q.joins.entry(dt).or_default().push(bytes);
                            }
                        }
                        Err(e) => {
                            // Nothing more is started; the others finish what they hold.
                            q.files.clear();
                            q.joins.clear();
                            return Err(e);
                        }
                    }
                }
                Some(Task::Join(dt, bytes, decoded)) => {
                    let objects = phones.get(dt.as_str()).map_or(&[][..], Vec::as_slice);
                    let batches = decoded
                        .get_or_init(|| decode_phones(objects).map_err(|e| format!("{e:#}")))
                        .as_ref()
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    rows += join_step_object(&bytes, &dt, batches, &index, cfg)?;
                    drop(decoded);
                    let mut q = queue.lock().map_err(poisoned)?;
                    if let Some((_, n)) = q.open.get_mut(&dt) {
                        *n -= 1;
                        if *n == 0 {
                            q.open.remove(&dt);
                        }
                    }
                }
            }
        }
    })?;
    let (mut steps, mut rows) = (0, 0);
    for (st, s, r) in per_thread {
        stats.bytes += st.bytes;
        stats.bytes_out += st.bytes_out;
        stats.rows_in += st.rows_in;
        stats.rows_out += st.rows_out;
        (steps, rows) = (steps + s, rows + r);
    }
    Ok((steps, rows))
}

/// machine_learning_curated the way the function makes it when a Step Trainer object
/// arrives: the object is read once and paired with every phone object of its `dt`, one
/// output a pair, each phone object's users mapped to their devices (as its side manifest
/// records them); `dt`s are spread over `threads`. The rows are the same as
/// [`machine_learning`]'s, split by pair.
fn machine_learning_pairs(
    steps: &Outputs,
    accel: &Outputs,
    trusted: &Customers,
    cfg: &Config,
    stats: &mut Stats,
    threads: usize,
) -> Result<u64> {
    per_dt(steps, accel, stats, threads, |dt, phones, steps| {
        let mut decoded = Vec::new();
        for a in phones {
            let batches = read_parquet_keyed((*a).clone(), &[], &["user"], "accel")?;
            let mut serial_of = HashMap::new();
            for b in &batches {
                for user in Strings::of(b, "user", "accel")?.runs() {
                    let serial = trusted
                        .rows
                        .get(user)
                        .and_then(|r| r[rules::customer::SERIAL].as_str().map(str::to_string));
                    if let Some(serial) = serial {
                        serial_of.insert(user.to_string(), serial);
                    }
                }
            }
            decoded.push((batches, serial_of));
        }
        let mut rows = 0;
        for bytes in steps {
            let step = read_parquet_keyed((*bytes).clone(), &[], &["serialnumber"], "step")?;
            let step = step_readings(&step, "step")?;
            let step = MlJoin::of_devices(step);
            for (batches, serial_of) in &decoded {
                let part = ml_pair(&step, batches, serial_of, dt, cfg.row_group_rows, "pair")?;
                rows += part.map_or(0, |p| p.rows);
            }
        }
        Ok(rows)
    })
}

/// Trusted customers who have readings, computed by streaming the accelerometer landing
/// files without keeping their outputs (the step trainer benchmark's reference data).
fn curated_by_streaming(data: &Path, trusted: &Customers, cfg: &Config) -> Result<Customers> {
    let consent = trusted.consent_dates();
    let mut users = BTreeSet::new();
    let mut stats = Stats::default();
    for f in landing_files(data, "accelerometer")? {
        scan(
            Table::AccelerometerLanding,
            &f,
            cfg,
            |c| {
                let user = c[0].as_str().unwrap_or_default();
                let ts = c[1].as_long().unwrap_or_default();
                if rules::reading_allowed(consent.get(user).copied(), ts, cfg.consent_as_of) {
                    users.insert(user.to_string());
                }
                Ok(RowOutcome::Kept)
            },
            &mut stats,
        )?;
    }
    Ok(rules::merge_curated(&Customers::default(), trusted, users))
}

pub fn compute(what: &str, data: &Path) -> Result<Value> {
    let cfg = Config::from_env()?;
    let mut stats = Stats::default();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut stages: Vec<(&'static str, f64)> = Vec::new();
    let started;
    match what {
        "customer" => {
            started = Instant::now();
            let trusted = customers_trusted(data, &cfg, &mut stats)?;
            let devices = trusted.device_entries(false);
            let (objects, device_objects) =
                write_shards(Table::CustomerTrusted, &trusted, devices, &cfg, 1)?;
            counts.insert("customer_trusted", trusted.rows.len() as u64);
            counts.insert("customer_trusted_objects", objects);
            counts.insert("device_index_objects", device_objects);
        }
        "accelerometer" => {
            let trusted = customers_trusted(data, &cfg, &mut Stats::default())?;
            started = Instant::now();
            accelerometer(data, &trusted, &cfg, &mut stats, 1, false)?;
            counts.insert("accelerometer_trusted", stats.rows_out);
        }
        "step_trainer" => {
            let trusted = customers_trusted(data, &cfg, &mut Stats::default())?;
            let curated = curated_by_streaming(data, &trusted, &cfg)?;
            started = Instant::now();
            step_trainer(data, &curated, &cfg, &mut stats, 1, false)?;
            counts.insert("step_trainer_trusted", stats.rows_out);
        }
        "machine_learning" | "machine_learning_pairs" => {
            let trusted = customers_trusted(data, &cfg, &mut Stats::default())?;
            let accel = accelerometer(data, &trusted, &cfg, &mut Stats::default(), 2, true)?;
            let curated = curated_from_outputs(&accel, &trusted, 2)?;
            let steps = step_trainer(data, &curated, &cfg, &mut Stats::default(), 2, true)?;
            let join = match what {
                "machine_learning" => machine_learning,
                _ => machine_learning_pairs,
            };
            started = Instant::now();
            let rows = join(&steps, &accel, &trusted, &cfg, &mut stats, 1)?;
            counts.insert("machine_learning_curated", rows);
        }
        "pipeline" => {
            started = Instant::now();
            let lap = |stages: &mut Vec<(&'static str, f64)>, name, t: Instant| {
                stages.push((name, t.elapsed().as_secs_f64()));
                Instant::now()
            };
            let t = Instant::now();
            let threads = pipeline_threads();
            let trusted = customers_trusted(data, &cfg, &mut stats)?;
            let devices = trusted.device_entries(false);
            let (trusted_objects, _) =
                write_shards(Table::CustomerTrusted, &trusted, devices, &cfg, threads)?;
            let t = lap(&mut stages, "customer_landing_to_trusted", t);
            let accel = accelerometer(data, &trusted, &cfg, &mut stats, threads, true)?;
            let t = lap(&mut stages, "accelerometer_landing_to_trusted", t);
            let curated = curated_from_outputs(&accel, &trusted, threads)?;
            let devices = device_index(&trusted, &curated);
            let (curated_objects, device_objects) =
                write_shards(Table::CustomerCurated, &curated, devices, &cfg, threads)?;
            let t = lap(&mut stages, "customer_trusted_to_curated", t);
            let (steps, rows) =
                step_trainer_then_ml(data, &curated, &accel, &trusted, &cfg, &mut stats, threads)?;
            lap(&mut stages, "step_trainer_then_machine_learning", t);
            counts.insert("customer_trusted", trusted.rows.len() as u64);
            counts.insert("accelerometer_trusted", accel.iter().map(|o| o.rows).sum());
            counts.insert("customer_curated", curated.rows.len() as u64);
            counts.insert("customer_trusted_objects", trusted_objects);
            counts.insert("customer_curated_objects", curated_objects);
            counts.insert("device_index_objects", device_objects);
            counts.insert("step_trainer_trusted", steps);
            counts.insert("machine_learning_curated", rows);
        }
        other => bail!("unknown --what {other}"),
    }
    stats.secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "what": what,
        "bytes": stats.bytes,
        "bytes_out": stats.bytes_out,
        "rows_in": stats.rows_in,
        "rows_out": stats.rows_out,
        "secs": stats.secs,
        "mb_per_s": stats.bytes as f64 / 1e6 / stats.secs.max(1e-9),
        "rows_per_s": stats.rows_in as f64 / stats.secs.max(1e-9),
        "counts": counts,
        "stages_secs": stages.into_iter().collect::<BTreeMap<_, _>>(),
    }))
}

/// Threads of the whole-pipeline run: `BENCH_THREADS`, else the machine's cores (the
/// DuckDB peer gets the same number).
pub fn pipeline_threads() -> usize {
    std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

// ---------------------------------------------------------------- cold start

pub fn init_ms(bin: &str) -> Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let mut child = std::process::Command::new(bin)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    let (mut conn, _) = listener.accept()?;
    let mut first = [0u8; 64];
    let n = conn.read(&mut first)?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let _ = child.kill();
    let _ = child.wait();
    if !first[..n].starts_with(b"GET /2018-06-01/runtime/invocation/next") {
        bail!(
            "{bin} did not poll the runtime API: {:?}",
            String::from_utf8_lossy(&first[..n])
        );
    }
    Ok(ms)
}

// ---------------------------------------------------------------- parser candidates

/// The landing JSON parsers measured against each other on the same files (issue: a faster
/// landing reader): every line of every `zone` landing file split as the functions split
/// it, then parsed by `parser`:
/// - `none`: the line splitter alone (the floor);
/// - `serde_json`: the coercions ([`stedi::record::parse_with`]) over serde_json;
/// - `sonic_rs`: the same coercions over sonic-rs's SIMD deserializer;
/// - `stedi`: [`stedi::record::LineReader`], the reader the functions run (one reader per
///   file: a line of the last line's layout read in one pass, any other by sonic-rs, with
///   serde_json reading again a line sonic-rs refuses, for its message);
/// - `arrow_json`: arrow-json's `Decoder` into Arrow columns, for reference only — it does
///   not keep the landing semantics (field names case-sensitive, no numbers in strings,
///   one bad line fails the batch), so it cannot replace the reader.
///
/// Returns bytes, rows, rows rejected and seconds.
pub fn parse_candidate(parser: &str, zone: &str, data: &Path) -> Result<Value> {
    use stedi::lines::{Line, LineSplitter};
    use stedi::record::{Cell, LineReader, parse_with};
    let table = match zone {
        "accelerometer" => Table::AccelerometerLanding,
        "step_trainer" => Table::StepTrainerLanding,
        "customer" => Table::CustomerLanding,
        other => bail!("unknown zone {other}"),
    };
    let columns = table.columns();
    let (mut rows, mut rejected, mut bytes) = (0u64, 0u64, 0u64);
    let files = landing_files(data, zone)?;
    let started = Instant::now();
    if parser == "arrow_json" {
        for f in &files {
            let (r, b) = arrow_json_decode(f, table)?;
            rows += r;
            bytes += b;
        }
    } else {
        let mut buffer: Vec<Cell<'static>> = Vec::with_capacity(columns.len());
        for f in &files {
            let mut splitter = LineSplitter::new(1 << 20, 4096);
            let mut reader = LineReader::default();
            let mut on_line = |l: Line<'_>| -> Result<()> {
                let Line::Text { bytes: line, .. } = l else {
                    rejected += 1;
                    return Ok(());
                };
                let n = columns.len();
                let ok = match parser {
                    "none" => !line.is_empty(),
                    "serde_json" => reuse(&mut buffer, n, |out| {
                        let mut de = serde_json::Deserializer::from_slice(line);
                        parse_with(&mut de, columns, out)
                            .and_then(|()| de.end())
                            .is_ok()
                    }),
                    "sonic_rs" => reuse(&mut buffer, n, |out| {
                        let mut de = sonic_rs::Deserializer::from_slice(line);
                        parse_with(&mut de, columns, out)
                            .and_then(|()| de.end())
                            .is_ok()
                    }),
                    "stedi" => reuse(&mut buffer, 0, |out| {
                        reader.line(line, columns, out).is_ok()
                    }),
                    other => bail!("unknown parser {other}"),
                };
                if ok {
                    rows += 1;
                } else {
                    rejected += 1;
                }
                Ok(())
            };
            bytes += stream_file(f, |c| splitter.push(c, &mut on_line))?;
            splitter.finish(&mut on_line)?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "parser": parser, "zone": zone, "bytes": bytes, "rows": rows, "rejected": rejected,
        "secs": secs, "mb_per_s": bytes as f64 / 1e6 / secs.max(1e-9),
    }))
}

/// Runs `f` on `n` null cells borrowing from the current line, reusing `buffer`'s allocation
/// (as the functions' scan does: no allocation per line).
fn reuse<'a, R>(
    buffer: &mut Vec<stedi::record::Cell<'static>>,
    n: usize,
    f: impl FnOnce(&mut Vec<stedi::record::Cell<'a>>) -> R,
) -> R {
    use stedi::record::Cell;
    let mut cells: Vec<Cell<'a>> = std::mem::take(buffer)
        .into_iter()
        .map(|_| Cell::Null)
        .collect();
    cells.resize(n, Cell::Null);
    let r = f(&mut cells);
    cells.clear();
    *buffer = cells.into_iter().map(|_| Cell::Null).collect();
    r
}

/// arrow-json's streaming `Decoder` over one file with the table's schema (lower-case
/// names as Glue has them, so only keys spelled so decode; the others become nulls).
fn arrow_json_decode(path: &Path, table: Table) -> Result<(u64, u64)> {
    // Every field nullable: a key spelled otherwise (camelCase) decodes as null, not an error.
    let fields: Vec<_> = table
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(fields));
    let mut decoder = arrow_json::ReaderBuilder::new(schema)
        .with_batch_size(8192)
        .build_decoder()?;
    let mut rows = 0u64;
    let bytes = stream_file(path, |mut chunk| {
        while !chunk.is_empty() {
            let used = decoder.decode(chunk)?;
            chunk = &chunk[used..];
            if (used == 0 || decoder.len() >= 8192)
                && let Some(b) = decoder.flush()?
            {
                rows += b.num_rows() as u64;
            }
        }
        Ok(())
    })?;
    if let Some(b) = decoder.flush()? {
        rows += b.num_rows() as u64;
    }
    Ok((rows, bytes))
}
