//! `stedi-scale`: the customer-scale probe behind `make bench-scale` (see bench/scale.py).
//!
//! Runs the functions' own handlers in this process against a local stack, so a fresh
//! process is a cold start and a repeated invocation a warm one:
//!
//! - `setup`: bootstrap the stack (bucket, Glue database and tables);
//! - `grow --from A --to B [--file-rows R] [--upload-only]`: register customers A..B
//!   (every other one consenting) through `customer_landing_to_trusted`, R per landing
//!   file; one JSON line per file (ms, requests); with `--upload-only` the files are only
//!   uploaded (a backfill for the next reconcile);
//! - `probe --function F --key K1 --key K2 …`: run F on each key in turn (the first cold,
//!   the others warm); one JSON line per invocation, then the process's peak resident
//!   memory (VmHWM);
//! - `fill-dt [--lines 900] [--first 30]`: SCALE.md's one-`dt` probe through the event path
//!   (EventBridge → SQS → handlers): the sample's customers, its phone lines cut into files
//!   of `lines` (the first `first` of them), its Step Trainer files, then the other phone
//!   files one at a time; one JSON line per measured arrival (rows written and handler time
//!   per function, the arrival's requests);
//! - `fill-batches [--rounds 12] [--sessions 50] [--lines 300]`: the same `dt` filling up
//!   with SQS batch objects: each round, `sessions` per-session files of consenting
//!   customers (a phone file and a Step Trainer file of one device each) uploaded together,
//!   so each side is one batch object of `sessions` devices; one JSON line per round as for
//!   `fill-dt`;
//! - `cost [--customers 2000] [--warm 20] [--sessions 50] [--lines 300]`: the launch's
//!   arrival shape behind `make bench-cost`: per-session files (one phone file of one user,
//!   one Step Trainer file of their device, every other customer consenting) into a `dt`
//!   that already holds `warm` sessions, then `sessions` sessions' files uploaded together;
//!   one JSON line with what each function did for those files (invocations, messages,
//!   handler time, requests), and the requests of a reconcile planning pass at three lake
//!   sizes (the warm lake; with 10 one-record customer files more; with the sessions).
//! - `compact --data DIR [--lines 900] [--queries 3]`: the compaction probe behind
//!   `make bench-compact`: DIR's customers, its phone lines cut into files of `lines`, its
//!   Step Trainer files, through the event path; then per partitioned table the objects at
//!   its partition locations and the time of a full-table `count(*)` through `stedi query`
//!   (median of `queries`), before and after `stedi compact --force`; one JSON line each.
//! - `plan`: one reconcile planning pass over the lake as it is (`make bench-scale` runs it
//!   at each size): time, requests, items found, peak resident memory.
//! - `erase --data DIR [--lines 900]`: the erasure probe behind `make bench-erasure`: DIR
//!   dropped as for `compact` but with the phone lines ordered by person and the Step
//!   Trainer lines by serial before the cut (per-session shaped files of a few people or
//!   devices each), compacted, then one consenting customer with phone readings
//!   erased, counted request by request; one JSON line for the drop, one for the erasure.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use stedi::Transition;
use stedi::config::Config;
use stedi::reconcile::Scope;
use stedi::schema::Table;
use stedi_infra::lake::{self, LandingFile};
use stedi_infra::runner::Runner;
use stedi_infra::stack::{Stack, StackConfig};
use stedi_infra::synthetic::{customer_line, customers_file, readings_file, step_file};

#[derive(Parser)]
struct Cli {
    /// The local endpoint (moto_server).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: String,
    /// The lake bucket.
    #[arg(long, default_value = "stedi-scale")]
    bucket: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bootstrap the stack.
    Setup,
    /// Register customers `from..to` through customer_landing_to_trusted.
    Grow {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        #[arg(long, default_value_t = 50_000)]
        file_rows: u64,
        /// Only upload the files (customers that were in the bucket before deployment: the
        /// next reconcile backfills them).
        #[arg(long)]
        upload_only: bool,
    },
    /// One reconcile planning pass over the lake as it is, in this process: its time,
    /// requests, what it found and the process's peak resident memory.
    Plan,
    /// A whole reconcile (plans and their items, until a plan finds nothing to do) in this
    /// process: with `CUSTOMER_SHARDS` changed, the migration to the new shard count.
    Reconcile,
    /// Run one function on each key in turn, in this process (the first cold, the rest warm).
    Probe {
        #[arg(long)]
        function: String,
        #[arg(long, required = true)]
        key: Vec<String>,
    },
    /// Requests per landing object on a launch-shaped arrival (see the module docs).
    Cost {
        #[arg(long, default_value_t = 2_000)]
        customers: u64,
        #[arg(long, default_value_t = 20)]
        warm: u64,
        #[arg(long, default_value_t = 50)]
        sessions: u64,
        #[arg(long, default_value_t = 300)]
        lines: i64,
    },
    /// Objects and query time before and after compaction (see the module docs).
    Compact {
        #[arg(long)]
        data: std::path::PathBuf,
        #[arg(long, default_value_t = 900)]
        lines: usize,
        #[arg(long, default_value_t = 3)]
        queries: usize,
    },
    /// What one erasure reads and writes: the data dropped as for `compact`, compacted,
    /// then the first consenting customer with phone readings erased (see the module docs).
    Erase {
        #[arg(long)]
        data: std::path::PathBuf,
        #[arg(long, default_value_t = 900)]
        lines: usize,
    },
    /// Fill one `dt` with rounds of sessions, one batch object a side each (see the module
    /// docs).
    FillBatches {
        #[arg(long, default_value_t = 12)]
        rounds: u64,
        #[arg(long, default_value_t = 50)]
        sessions: u64,
        #[arg(long, default_value_t = 300)]
        lines: i64,
    },
    /// Fill one `dt` with phone files arriving one by one (see the module docs).
    FillDt {
        #[arg(long, default_value_t = 900)]
        lines: usize,
        #[arg(long, default_value_t = 30)]
        first: usize,
        /// The files after the first arrive together, one upload of them all (the request
        /// issue's arrival pattern), instead of one by one.
        #[arg(long)]
        together: bool,
    },
}

/// The sample's phone lines (files in name order) cut into files of `lines` lines under
/// `.bench/dt-probe/`. `by_person` first orders the lines by user (stable, so each person's
/// lines keep their order): files then hold few people each, the shape of SCALE.md's
/// per-session uploads, instead of the ~100 people a 900-line cut of the sample mixes.
fn split_phone_lines(sample: &Path, lines: usize, by_person: bool) -> Result<Vec<LandingFile>> {
    let order = by_person.then_some("user");
    split_lines(sample, Table::AccelerometerLanding, "phone", lines, order)
}

/// The lines of `table`'s landing files (in name order) cut into files `<name>-NNN.json` of
/// `lines` lines under `.bench/dt-probe/`, first ordered (stably) by the field `order` when
/// given, so each file holds few people or devices.
fn split_lines(
    sample: &Path,
    table: Table,
    name: &str,
    lines: usize,
    order: Option<&str>,
) -> Result<Vec<LandingFile>> {
    let dir = stedi_infra::project_root().join(".bench/dt-probe");
    std::fs::create_dir_all(&dir)?;
    let mut all = Vec::new();
    for f in lake::landing_files(sample, None)? {
        if f.table == table {
            let text = std::fs::read_to_string(&f.path)?;
            all.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            );
        }
    }
    if let Some(field) = order {
        all.sort_by_cached_key(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v[field].as_str().map(str::to_string))
        });
    }
    let mut out = Vec::new();
    for (i, chunk) in all.chunks(lines.max(1)).enumerate() {
        let path = dir.join(format!("{name}-{i:03}.json"));
        std::fs::write(&path, chunk.join("\n") + "\n")?;
        out.push(LandingFile {
            table,
            key: format!("{}{name}-{i:03}.json", table.prefix()),
            path,
        });
    }
    Ok(out)
}

/// One session's landing files, written under `.bench/cost/`: the phone file of customer
/// `user` and the Step Trainer file of their device, `lines` readings each.
fn session_files(user: u64, ts: i64, lines: i64) -> Result<Vec<LandingFile>> {
    let dir = stedi_infra::project_root().join(".bench/cost");
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for (table, body) in [
        (Table::AccelerometerLanding, readings_file(user, ts, lines)),
        (Table::StepTrainerLanding, step_file(user, ts, lines)),
    ] {
        let name = format!("{}-session-{user:06}.json", table.name());
        let path = dir.join(&name);
        std::fs::write(&path, body)?;
        out.push(LandingFile {
            table,
            key: format!("{}session-{user:06}.json", table.prefix()),
            path,
        });
    }
    Ok(out)
}

/// Customers `0..count` (every other one consenting) in one landing file `name` under
/// `.bench/cost/`, dropped through the event path; returns that folder.
async fn drop_customers(
    stack: &Stack,
    runner: &mut Runner<'_>,
    name: &str,
    count: u64,
) -> Result<std::path::PathBuf> {
    let dir = stedi_infra::project_root().join(".bench/cost");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, customers_file(0, count))?;
    let people = LandingFile {
        table: Table::CustomerLanding,
        key: format!("{}{name}", Table::CustomerLanding.prefix()),
        path,
    };
    let timeout = Duration::from_secs(1800);
    lake::drop_files(stack, runner, &[people], 0, timeout, |_| {}).await?;
    Ok(dir)
}

async fn cost(stack: &Stack, customers: u64, warm: u64, sessions: u64, lines: i64) -> Result<()> {
    let mut runner = Runner::new(stack).await?;
    let dir = drop_customers(stack, &mut runner, "customers.json", customers).await?;
    let timeout = Duration::from_secs(1800);
    let ts = 1_655_510_400_000; // 2022-06-18
    let sessions_of = |from: u64, to: u64| -> Result<Vec<LandingFile>> {
        let mut files = Vec::new();
        for i in from..to {
            // Users spread over the customers, consenting or not (every other one consents).
            let user = (i * 7919) % customers;
            files.extend(session_files(user, ts + i as i64 * 100_000, lines)?);
        }
        Ok(files)
    };
    let warmup = sessions_of(0, warm)?;
    lake::drop_files(stack, &mut runner, &warmup, 0, timeout, |_| {}).await?;
    // What a scheduled reconcile pass costs, by what the lake holds: a pass now, one after
    // `PROFILE_FILES` one-record customer files (customers re-sending their own record:
    // nothing changes), and one after the measured sessions.
    let mut passes = vec![reconcile_pass(stack, 1, 2 * warm).await?];
    let profiles: Vec<LandingFile> = (0..PROFILE_FILES)
        .map(|i| -> Result<LandingFile> {
            let path = dir.join(format!("profile-{i}.json"));
            std::fs::write(&path, customers_file(i, i + 1))?;
            Ok(LandingFile {
                table: Table::CustomerLanding,
                key: format!("{}profile-{i}.json", Table::CustomerLanding.prefix()),
                path,
            })
        })
        .collect::<Result<_>>()?;
    lake::drop_files(stack, &mut runner, &profiles, 0, timeout, |_| {}).await?;
    passes.push(reconcile_pass(stack, 1 + PROFILE_FILES, 2 * warm).await?);
    let measured = sessions_of(warm, warm + sessions)?;
    let sources = |r: &Runner<'_>| -> BTreeMap<String, usize> {
        r.by_function
            .iter()
            .map(|(n, s)| (n.to_string(), s.sources.len()))
            .collect()
    };
    let before = sources(&runner);
    let started = Instant::now();
    let report = lake::drop_files(stack, &mut runner, &measured, 0, timeout, |_| {}).await?;
    let mut functions = Vec::new();
    let after = sources(&runner);
    for f in &report.functions {
        let r = f.requests;
        let name = f.function.name();
        let messages =
            after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
        functions.push(json!({
            "function": name, "invocations": f.invocations, "messages": messages,
            "handler_ms": f.handler_ms, "rows_in": f.rows_in, "rows_out": f.rows_out,
            "s3_put": r.s3_put, "s3_get": r.s3_get, "s3_head": r.s3_head, "s3_list": r.s3_list,
            "s3_delete": r.s3_delete, "glue_calls": r.glue_calls, "sqs_calls": r.sqs_calls,
            "dynamodb_rru": r.dynamodb_read_units, "dynamodb_wru": r.dynamodb_write_units,
            "bytes_read": r.bytes_read, "bytes_written": r.bytes_written,
        }));
    }
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    passes.push(reconcile_pass(stack, 1 + PROFILE_FILES, 2 * (warm + sessions)).await?);
    // What a consent change costs with its own event: one-record files of new consenting
    // customers (a sign-up before any session), of customers who did not consent when
    // their session landed (odd users of the measured sessions) and now do, and of
    // consenting customers with a session (even users) who withdraw.
    let record_files = |kind: &str, users: &[u64]| -> Result<Vec<LandingFile>> {
        users
            .iter()
            .map(|&u| {
                let mut rec: serde_json::Value = serde_json::from_str(&customer_line(u))?;
                rec["shareWithResearchAsOfDate"] = match kind {
                    "withdrawal" => json!(null),
                    _ => json!(1_600_000_000_000i64),
                };
                rec["lastUpdateDate"] = json!(1_700_000_000_000i64);
                let name = format!("{kind}-{u:06}.json");
                let path = dir.join(&name);
                std::fs::write(&path, format!("{rec}\n"))?;
                Ok(LandingFile {
                    table: Table::CustomerLanding,
                    key: format!("{}{name}", Table::CustomerLanding.prefix()),
                    path,
                })
            })
            .collect()
    };
    let signups: Vec<u64> = (0..CONSENT_FILES).map(|k| customers + 2 * k).collect();
    let session_users = |parity: u64| -> Vec<u64> {
        (warm..warm + sessions)
            .map(|i| (i * 7919) % customers)
            .filter(|u| u % 2 == parity)
            .take(CONSENT_FILES as usize)
            .collect()
    };
    let mut consents = Vec::new();
    for (kind, users) in [
        ("signup", signups),
        ("grant", session_users(1)),
        ("withdrawal", session_users(0)),
    ] {
        let files = record_files(kind, &users)?;
        let report = lake::drop_files(stack, &mut runner, &files, 0, timeout, |_| {}).await?;
        let fs: Vec<serde_json::Value> = report
            .functions
            .iter()
            .map(|f| {
                let r = f.requests;
                json!({"function": f.function.name(), "invocations": f.invocations,
                       "s3_put": r.s3_put, "s3_get": r.s3_get, "s3_head": r.s3_head,
                       "s3_list": r.s3_list, "s3_delete": r.s3_delete,
                       "glue_calls": r.glue_calls, "sqs_calls": r.sqs_calls,
                       "dynamodb_rru": r.dynamodb_read_units,
                       "dynamodb_wru": r.dynamodb_write_units,
                       "rows_out": f.rows_out})
            })
            .collect();
        consents.push(json!({"kind": kind, "files": files.len(), "functions": fs}));
    }
    println!(
        "{}",
        json!({"landing_objects": measured.len(), "wall_ms": wall_ms,
               "functions": functions, "reconcile_passes": passes, "consents": consents})
    );
    Ok(())
}

/// One-record files `cost` measures of each kind (sign-ups, late consents, withdrawals).
const CONSENT_FILES: u64 = 10;

/// One-record customer files `cost` adds between its first two reconcile passes.
const PROFILE_FILES: u64 = 10;

/// A reconcile planning pass of each scope over a lake in step (what the schedules run when
/// nothing is stale), with its requests and what the lake holds: `customer_objects`
/// customer landing files and `reading_objects` phone and Step Trainer files.
async fn reconcile_pass(
    stack: &Stack,
    customer_objects: u64,
    reading_objects: u64,
) -> Result<serde_json::Value> {
    let ctx = stack.function_context();
    let bucket = &stack.cfg.bucket;
    let mut passes = serde_json::Map::new();
    // The changed pass as the daily schedule finds the lake: every file and manifest
    // checked by the pass before ("changed"), and with every one written since
    // ("changed_recent": what each customer file and manifest written since adds).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for (name, scope, checked_before) in [
        ("full", Scope::Full, None),
        ("changed", Scope::Changed, Some(now + 1)),
        ("changed_recent", Scope::Changed, Some(1)),
    ] {
        if let Some(t) = checked_before {
            let body = json!({ "checked_before": t }).to_string();
            ctx.store
                .put(bucket, stedi::keys::RECONCILE_CHECKED, body.into())
                .await?;
        }
        let (plan, requests, ms) = counted(stedi::reconcile::plan(&ctx, bucket, scope)).await;
        let plan = plan?;
        passes.insert(
            name.to_string(),
            json!({"items": plan.items.len(), "ms": ms, "s3_get": requests.s3_get,
                   "s3_head": requests.s3_head, "s3_list": requests.s3_list,
                   "s3_put": requests.s3_put, "glue_calls": requests.glue_calls,
                   "dynamodb_rru": requests.dynamodb_read_units}),
        );
    }
    // Shards the passes read one GET each (customer_trusted, customer_curated, the device
    // index): a shard a new customer brings into being adds one to every pass.
    let mut shards = 0;
    for prefix in [
        Table::CustomerTrusted.prefix(),
        Table::CustomerCurated.prefix(),
        stedi::keys::DEVICES_PREFIX,
    ] {
        shards += ctx.store.list(bucket, prefix).await?.len();
    }
    Ok(
        json!({"customer_objects": customer_objects, "reading_objects": reading_objects,
              "shards": shards, "scopes": passes}),
    )
}

/// Per partitioned table: objects at its partition locations, rows, and the median time of
/// a full-table `count(*)` through `stedi query`.
async fn measure_tables(stack: &Stack, phase: &str, queries: usize) -> Result<()> {
    for table in stedi::transitions::compact::tables() {
        let objects = lake::table_objects(stack, table).await?.len();
        let sql = format!("SELECT count(*) AS n FROM {}", table.name());
        let mut ms = Vec::new();
        let mut rows = 0;
        for _ in 0..queries.max(1) {
            let started = Instant::now();
            let batches = stedi_infra::query::query(stack, &sql).await?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            rows = batches
                .first()
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::Int64Array>()
                        .map(|a| a.value(0))
                })
                .unwrap_or_default();
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "{}",
            json!({"phase": phase, "table": table.name(), "objects": objects, "rows": rows,
                   "query_ms": ms[ms.len() / 2]})
        );
    }
    Ok(())
}

async fn compact_probe(stack: &Stack, data: &Path, lines: usize, queries: usize) -> Result<()> {
    let files = lake::landing_files(data, None)?;
    let of =
        |t: Table| -> Vec<LandingFile> { files.iter().filter(|f| f.table == t).cloned().collect() };
    let phone = split_phone_lines(data, lines, false)?;
    let mut runner = Runner::new(stack).await?;
    let timeout = Duration::from_secs(7200);
    let started = Instant::now();
    for batch in [
        of(Table::CustomerLanding),
        phone,
        of(Table::StepTrainerLanding),
    ] {
        lake::drop_files(stack, &mut runner, &batch, 0, timeout, |_| {}).await?;
    }
    println!(
        "{}",
        json!({"phase": "drop", "wall_ms": started.elapsed().as_secs_f64() * 1000.0})
    );
    measure_tables(stack, "before", queries).await?;
    let ctx = stack.function_context();
    let started = Instant::now();
    let report = lake::compact(&ctx, &stack.cfg.bucket, true).await?;
    println!(
        "{}",
        json!({"phase": "compact", "wall_ms": started.elapsed().as_secs_f64() * 1000.0,
               "report": report})
    );
    measure_tables(stack, "after", queries).await?;
    Ok(())
}

async fn erase_probe(stack: &Stack, data: &Path, lines: usize) -> Result<()> {
    let files = lake::landing_files(data, None)?;
    let of =
        |t: Table| -> Vec<LandingFile> { files.iter().filter(|f| f.table == t).cloned().collect() };
    let phone = split_phone_lines(data, lines, true)?;
    // The Step Trainer lines likewise by serial: files of a few devices each.
    let step = split_lines(
        data,
        Table::StepTrainerLanding,
        "step",
        lines,
        Some("serialNumber"),
    )?;
    // The first consenting customer with phone readings.
    let mut users = std::collections::BTreeSet::new();
    for f in &phone {
        for l in std::fs::read_to_string(&f.path)?.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
                && let Some(u) = v["user"].as_str()
            {
                users.insert(u.to_string());
            }
        }
    }
    let mut email = None;
    'files: for f in of(Table::CustomerLanding) {
        for l in std::fs::read_to_string(&f.path)?.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                continue;
            };
            let consents = v["shareWithResearchAsOfDate"]
                .as_i64()
                .is_some_and(|d| d > 0);
            if let Some(e) = v["email"]
                .as_str()
                .filter(|e| consents && users.contains(*e))
            {
                email = Some(e.to_string());
                break 'files;
            }
        }
    }
    let email = email.context("no consenting customer with phone readings")?;
    let mut runner = Runner::new(stack).await?;
    let timeout = Duration::from_secs(7200);
    let started = Instant::now();
    for batch in [of(Table::CustomerLanding), phone.clone(), step.clone()] {
        lake::drop_files(stack, &mut runner, &batch, 0, timeout, |_| {}).await?;
    }
    let objects = stedi::store::Store::new(stack.s3.clone())
        .list(&stack.cfg.bucket, "")
        .await?
        .len();
    let ctx = stack.function_context();
    lake::compact(&ctx, &stack.cfg.bucket, true).await?;
    println!(
        "{}",
        json!({"phase": "drop", "wall_ms": started.elapsed().as_secs_f64() * 1000.0,
               "landing_objects": of(Table::CustomerLanding).len() + phone.len() + step.len(),
               "objects": objects})
    );
    let (audit, r, ms) = counted(stedi::transitions::erasure::erase(
        &ctx,
        &stack.cfg.bucket,
        &email,
        "probe",
    ))
    .await;
    println!(
        "{}",
        json!({"phase": "erase", "wall_ms": ms, "requests": r, "audit": audit?})
    );
    Ok(())
}

/// Runs `f` with request counters of its own: its output, the requests it made and its
/// wall time in milliseconds.
async fn counted<F: std::future::Future>(f: F) -> (F::Output, stedi::summary::Requests, f64) {
    let counts = stedi::store::RequestCounts::shared();
    let started = Instant::now();
    let out = stedi::store::count_invocation(counts.clone(), f).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    (out, counts.snapshot(), ms)
}

async fn fill_dt(stack: &Stack, lines: usize, first: usize, together: bool) -> Result<()> {
    let sample = stedi_infra::project_root().join("../shared/data/stedi");
    let files = lake::landing_files(&sample, None)?;
    let of =
        |t: Table| -> Vec<LandingFile> { files.iter().filter(|f| f.table == t).cloned().collect() };
    let phone = split_phone_lines(&sample, lines, false)?;
    let mut runner = Runner::new(stack).await?;
    let timeout = Duration::from_secs(1800);
    let first = first.min(phone.len());
    for batch in [
        of(Table::CustomerLanding),
        phone[..first].to_vec(),
        of(Table::StepTrainerLanding),
    ] {
        lake::drop_files(stack, &mut runner, &batch, 0, timeout, |_| {}).await?;
    }
    if together {
        let rest = &phone[first..];
        let line = json!({"arrival": "together", "files": rest.len()});
        println!("{}", arrival(stack, &mut runner, rest, line).await?);
        return Ok(());
    }
    for (i, f) in phone[first..].iter().enumerate() {
        let line = json!({"arrival": first + i + 1});
        let line = arrival(stack, &mut runner, std::slice::from_ref(f), line).await?;
        println!("{line}");
    }
    Ok(())
}

async fn fill_batches(stack: &Stack, rounds: u64, sessions: u64, lines: i64) -> Result<()> {
    let mut runner = Runner::new(stack).await?;
    // Even customers consent: round r's sessions are customers 2 (r sessions + j).
    let customers = 2 * rounds * sessions;
    drop_customers(stack, &mut runner, "batch-customers.json", customers).await?;
    let ts = 1_655_510_400_000; // 2022-06-18
    for round in 0..rounds {
        let mut files = Vec::new();
        for j in 0..sessions {
            let i = round * sessions + j;
            files.extend(session_files(2 * i, ts + i as i64 * 100_000, lines)?);
        }
        let line = json!({"arrival": round + 1, "sessions": sessions});
        let line = arrival(stack, &mut runner, &files, line).await?;
        println!("{line}");
    }
    Ok(())
}

/// Drops `files` together through the event path and adds to `line` what it cost: the
/// wall time (`ms`), per function the rows written, handler time and requests, and the
/// requests of all functions together.
async fn arrival(
    stack: &Stack,
    runner: &mut Runner<'_>,
    files: &[LandingFile],
    mut line: serde_json::Value,
) -> Result<serde_json::Value> {
    let before = runner.by_function.clone();
    let calls: BTreeMap<&str, usize> = runner
        .handler_ms_by_function
        .iter()
        .map(|(n, v)| (*n, v.len()))
        .collect();
    let started = Instant::now();
    lake::drop_files(stack, runner, files, 0, Duration::from_secs(1800), |_| {}).await?;
    line["ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
    let (mut get, mut put, mut list, mut glue, mut read) = (0, 0, 0, 0, 0);
    let (mut delete, mut wru, mut rru) = (0, 0, 0);
    for (name, s) in &runner.by_function {
        let was = before.get(name).cloned().unwrap_or_default();
        let skip = calls.get(name).copied().unwrap_or(0);
        let handler_ms: f64 = runner.handler_ms_by_function[name].iter().skip(skip).sum();
        let (r, w) = (s.requests, was.requests);
        get += r.s3_get - w.s3_get;
        put += r.s3_put - w.s3_put;
        list += r.s3_list - w.s3_list;
        glue += r.glue_calls - w.glue_calls;
        read += r.bytes_read - w.bytes_read;
        delete += r.s3_delete - w.s3_delete;
        wru += r.dynamodb_write_units - w.dynamodb_write_units;
        rru += r.dynamodb_read_units - w.dynamodb_read_units;
        line[*name] = json!({
            "rows_out": s.rows_out - was.rows_out, "handler_ms": handler_ms,
            "get": r.s3_get - w.s3_get, "put": r.s3_put - w.s3_put,
            "list": r.s3_list - w.s3_list, "bytes_read": r.bytes_read - w.bytes_read,
        });
    }
    line["requests"] = json!({
        "get": get, "put": put, "list": list, "glue": glue, "bytes_read": read,
        "delete": delete, "wru": wru, "rru": rru,
    });
    Ok(line)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn invoke(
    stack: &Stack,
    ctx: &stedi::Ctx,
    t: Transition,
    key: &str,
) -> Result<serde_json::Value> {
    let event = stedi::event::s3_notification(&stack.cfg.bucket, key);
    let started = Instant::now();
    let (_, s) = stedi::lambda::handle(ctx, t, &event).await?;
    if !s.errors.is_empty() {
        bail!("{} on {key}: {:?}", t.name(), s.errors);
    }
    Ok(json!({
        "function": t.name(), "key": key, "ms": started.elapsed().as_secs_f64() * 1000.0,
        "rows_in": s.rows_in, "rows_out": s.rows_out,
        "s3_get": s.requests.s3_get, "s3_put": s.requests.s3_put, "s3_list": s.requests.s3_list,
        "s3_delete": s.requests.s3_delete,
        "bytes_read": s.requests.bytes_read, "bytes_written": s.requests.bytes_written,
        "glue_calls": s.requests.glue_calls, "conflicts": s.conflicts,
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let cfg = StackConfig {
        endpoint: Some(cli.endpoint.clone()),
        bucket: cli.bucket.clone(),
        database: "stedi".into(),
        name_prefix: "scale-".into(),
        max_receive_count: 3,
        visibility_timeout: 30,
        function: Config::from_env()?,
    };
    let stack = Stack::connect(cfg, &stedi_infra::project_root().join("template.yaml")).await?;
    match cli.command {
        Command::Setup => stack.bootstrap().await?,
        Command::Grow {
            from,
            to,
            file_rows,
            upload_only,
        } => {
            let ctx = stack.function_context();
            let mut start = from;
            while start < to {
                let end = (start + file_rows).min(to);
                let body = customers_file(start, end);
                let key = format!("customer/landing/scale-{start:08}.json");
                stack
                    .s3
                    .put_object()
                    .bucket(&stack.cfg.bucket)
                    .key(&key)
                    .body(body.into_bytes().into())
                    .send()
                    .await
                    .with_context(|| format!("uploading {key}"))?;
                if !upload_only {
                    let t = Transition::CustomerLandingToTrusted;
                    println!("{}", invoke(&stack, &ctx, t, &key).await?);
                }
                start = end;
            }
            println!("{}", json!({"peak_rss_mb": peak_rss_mb()}));
        }
        Command::Compact {
            data,
            lines,
            queries,
        } => compact_probe(&stack, &data, lines, queries).await?,
        Command::Erase { data, lines } => erase_probe(&stack, &data, lines).await?,
        Command::FillDt {
            lines,
            first,
            together,
        } => fill_dt(&stack, lines, first, together).await?,
        Command::FillBatches {
            rounds,
            sessions,
            lines,
        } => fill_batches(&stack, rounds, sessions, lines).await?,
        Command::Cost {
            customers,
            warm,
            sessions,
            lines,
        } => cost(&stack, customers, warm, sessions, lines).await?,
        Command::Plan => {
            let ctx = stack.function_context();
            let (plan, requests, ms) =
                counted(stedi::reconcile::plan(&ctx, &stack.cfg.bucket, Scope::Full)).await;
            let plan = plan?;
            println!(
                "{}",
                json!({"phase": "plan", "ms": ms,
                       "requests": requests, "items": plan.items.len(),
                       "snapshots": plan.snapshots.len(), "device_shards": plan.device_shards,
                       "advised_shards": plan.advised_shards,
                       "peak_rss_mb": peak_rss_mb()})
            );
        }
        Command::Reconcile => {
            let ctx = stack.function_context();
            let (report, requests, ms) = counted(stedi::reconcile::run_inline(
                &ctx,
                &stack.cfg.bucket,
                Scope::Full,
            ))
            .await;
            let report = report?;
            println!(
                "{}",
                json!({"phase": "reconcile", "ms": ms,
                       "requests": requests, "passes": report.passes,
                       "converged": report.converged, "snapshots": report.snapshots,
                       "device_shards": report.device_shards, "groups": report.groups,
                       "shards": ctx.cfg.customer_shards, "advised_shards": report.advised_shards,
                       "peak_rss_mb": peak_rss_mb()})
            );
        }
        Command::Probe { function, key } => {
            let t = Transition::from_name(&function)
                .with_context(|| format!("unknown function {function}"))?;
            let ctx = stack.function_context();
            for k in &key {
                println!("{}", invoke(&stack, &ctx, t, k).await?);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            println!("{}", json!({"peak_rss_mb": peak_rss_mb()}));
        }
    }
    Ok(())
}
