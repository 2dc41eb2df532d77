//! machine_learning_curated per arrival (SCALE.md rule 2): either side first, concurrent
//! arrivals, and a phone file's cost that does not grow with its `dt`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use stedi::Transition;
use stedi::keys;
use stedi::schema::Table;
use stedi_infra::lake::{self, LandingFile};
use stedi_infra::synthetic::{customers_file, readings_file, step_file};
use stedi_tests::truth::Truth;
use stedi_tests::{Local, sample_dir};

use crate::{order::shuffle, pipeline};

const ML: &str = "machine_learning_trusted_to_curated";

/// The sample cut into one phone file per user and one Step Trainer file per device, for
/// the users of the first `users` e-mails (in order) that have phone readings, with every
/// customer record, in a folder of its own for test `test` (tests run at once):
/// `(folder for the truth, landing files)`.
fn one_file_per_session(test: &str, users: usize) -> (PathBuf, Vec<LandingFile>) {
    let dir = std::env::temp_dir().join(format!("stedi-it-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let lines = |zone: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut paths: Vec<_> = std::fs::read_dir(sample_dir().join(zone).join("landing"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(p).unwrap();
            out.extend(text.lines().map(str::to_string));
        }
        out
    };
    let field = |line: &str, name: &str| -> String {
        let v: Value = serde_json::from_str(line).unwrap();
        v[name].as_str().unwrap_or_default().to_string()
    };
    let customers = lines("customer");
    let serial_of: BTreeMap<String, String> = customers
        .iter()
        .map(|l| (field(l, "email"), field(l, "serialNumber")))
        .collect();
    let mut phone: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines("accelerometer") {
        phone.entry(field(&l, "user")).or_default().push(l);
    }
    let chosen: Vec<String> = phone.keys().take(users).cloned().collect();
    let serials: BTreeSet<&String> = chosen.iter().filter_map(|u| serial_of.get(u)).collect();
    let mut steps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines("step_trainer") {
        let serial = field(&l, "serialNumber");
        if serials.contains(&serial) {
            steps.entry(serial).or_default().push(l);
        }
    }
    let write = |zone: &str, name: String, body: Vec<String>| {
        let folder = dir.join(zone).join("landing");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(name), body.join("\n") + "\n").unwrap();
    };
    write("customer", "customers.json".into(), customers);
    for (i, u) in chosen.iter().enumerate() {
        write(
            "accelerometer",
            format!("phone-{i:03}.json"),
            phone[u].clone(),
        );
    }
    for (i, (_, body)) in steps.into_iter().enumerate() {
        write("step_trainer", format!("device-{i:03}.json"), body);
    }
    let files = lake::landing_files(&dir, None).unwrap();
    (dir, files)
}

async fn assert_truth(local: &Local, dir: &Path, what: &str) {
    let truth = Truth::compute(dir, false).unwrap();
    let counts = local.counts().await.unwrap();
    assert_eq!(
        counts["machine_learning_curated"],
        truth.machine_learning_curated.len() as u64,
        "{what}"
    );
    pipeline::assert_batch_truth(local, &truth).await;
}

/// Every object under `prefix`, deleted.
async fn delete_under(local: &Local, prefix: &str) {
    for key in local.keys().await.unwrap() {
        if key.starts_with(prefix) {
            local.delete(&key).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_any_order_and_concurrently_join_to_the_truth_without_reconcile() {
    let local = Local::start().await.unwrap();
    let (dir, files) = one_file_per_session("any-order", 40);
    let (customers, mut readings): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|f| f.table == Table::CustomerLanding);
    assert!(readings.len() > 60, "{} reading files", readings.len());
    local.drop(&customers, 0).await.unwrap();
    shuffle(&mut readings, 0x5E55_1011);
    let mut ml_rows_written = 0;
    for f in &readings {
        // One file at a time, each fully processed: any interleaving of the two sides,
        // Step Trainer files before their owner's first phone file among them.
        let out = local.drop(std::slice::from_ref(f), 0).await.unwrap();
        assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
        ml_rows_written += out.of_function(ML).rows_out;
    }
    assert_truth(&local, &dir, "after the shuffled drop").await;
    let final_rows = local.counts().await.unwrap()["machine_learning_curated"];
    assert!(final_rows > 1000, "{final_rows}");
    assert!(
        ml_rows_written <= 2 * final_rows,
        "{ml_rows_written} rows written for {final_rows}"
    );
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "reconcile found work: {report:?}");

    // The join again from nothing, every trusted object's arrival at once.
    let join = local.join_entries().await.unwrap();
    assert!(!join.is_empty());
    let bucket = local.stack.cfg.bucket.clone();
    let entries = join
        .iter()
        .map(|(dt, sk)| (format!("{bucket}/join/{dt}"), sk.clone()))
        .collect();
    local.index().remove(entries).await.unwrap();
    let keys = local.keys().await.unwrap();
    assert!(!keys.iter().any(|k| k.starts_with("_stedi/join/")));
    delete_under(&local, "_stedi/lineage/machine_learning_curated/").await;
    delete_under(&local, Table::MachineLearningCurated.prefix()).await;
    let ctx = local.stack.function_context();
    let bucket = local.stack.cfg.bucket.clone();
    let mut arrivals = Vec::new();
    for table in [Table::StepTrainerTrusted, Table::AccelerometerTrusted] {
        for key in lake::table_objects(&local.stack, table).await.unwrap() {
            arrivals.push(keys::accept(&bucket, &key, &[table]).unwrap());
        }
    }
    shuffle(&mut arrivals, 7);
    let t = Transition::MachineLearningTrustedToCurated;
    let runs = arrivals.iter().map(|src| t.run(&ctx, &bucket, src));
    let summaries = futures::future::join_all(runs).await;
    let written: u64 = summaries.into_iter().map(|s| s.unwrap().rows_out).sum();
    assert_truth(&local, &dir, "after concurrent arrivals").await;
    assert!(written >= final_rows, "{written} < {final_rows}");
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "reconcile found work: {report:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Requests of one phone file's arrival, per function, and the rows it added to
/// machine_learning_curated.
async fn one_session(
    local: &Local,
    user: u64,
    ts: i64,
    lines: i64,
) -> (BTreeMap<String, [u64; 6]>, u64) {
    let step = LandingFile {
        table: Table::StepTrainerLanding,
        path: PathBuf::new(),
        key: format!("step_trainer/landing/session-{user}.json"),
    };
    local
        .put(&step.key, step_file(user, ts, lines))
        .await
        .unwrap();
    local.settle().await.unwrap();
    let key = format!("accelerometer/landing/session-{user}.json");
    let out = local
        .drop_bytes(&key, readings_file(user, ts, lines))
        .await
        .unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    (requests_of(&out), out.of_function(ML).rows_out)
}

/// Requests per function of a drop: [get, list, put, glue, DynamoDB read units, write
/// units].
fn requests_of(out: &stedi_tests::Outcome) -> BTreeMap<String, [u64; 6]> {
    out.by_function
        .iter()
        .map(|(f, s)| {
            let r = s.requests;
            let units = [r.dynamodb_read_units, r.dynamodb_write_units];
            let s3 = [r.s3_get, r.s3_list, r.s3_put, r.glue_calls];
            (
                f.to_string(),
                [s3[0], s3[1], s3[2], s3[3], units[0], units[1]],
            )
        })
        .collect()
}

/// `n` phone files of other consenting customers into the `dt` of `ts`, three readings
/// each, all at once.
async fn fill(local: &Local, from: u64, n: u64, ts: i64) {
    for i in from..from + n {
        let user = 2 * (i % 500) + 10; // even: consenting; 10.. leaves the probes' users alone
        let key = format!("accelerometer/landing/other-{i:04}.json");
        local
            .put(&key, readings_file(user, ts + 1_000 * i as i64, 3))
            .await
            .unwrap();
    }
    let out = local.settle().await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_file_costs_the_same_in_a_dt_of_10_or_500_objects() {
    // One object per file (no SQS batch objects): a dt of 500 objects.
    let local = Local::with_config(stedi::config::Config {
        batch_object_bytes: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    local
        .drop_bytes("customer/landing/customers.json", customers_file(0, 1_200))
        .await
        .unwrap();
    let ts = 1_655_510_400_000; // 2022-06-18T00:00:00Z
    // A first session registers the dt's partitions, as any busy day has.
    one_session(&local, 6, ts + 40_000_000, 10).await;
    fill(&local, 0, 10, ts).await;
    let (small, small_rows) = one_session(&local, 2, ts + 50_000_000, 400).await;
    fill(&local, 10, 490, ts).await;
    let objects = lake::table_objects(&local.stack, Table::AccelerometerTrusted)
        .await
        .unwrap();
    assert_eq!(objects.len(), 502);
    let (large, large_rows) = one_session(&local, 4, ts + 60_000_000, 400).await;
    assert_eq!((small_rows, large_rows), (400, 400));
    assert_eq!(
        small.keys().collect::<Vec<_>>(),
        large.keys().collect::<Vec<_>>()
    );
    for (f, s) in &small {
        // GET, LIST, PUT, Glue, read and write units: the same with 10 or 500 objects in
        // the dt.
        assert_eq!(
            *s, large[f],
            "{f}: requests [get, list, put, glue, rru, wru] with 10 vs 500 objects"
        );
    }
    // Both sides of the session joined: ML GETs its side manifests, the two objects and the
    // users' customer shard; queries the serial's join-index folder and `wide/`.
    println!("requests per function [get, list, put, glue, rru, wru]: {small:?}");
}

/// Requests per function ([get, list, put, glue]) of one round of `n` sessions of
/// consenting customers into the `dt` of `ts` (a phone and a Step Trainer file each, one
/// device): the Step Trainer files land together, then the phone files together, so each
/// side is one SQS batch and one batch object holding `n` devices. Also the rows the round
/// added to machine_learning_curated.
async fn batch_round(
    local: &Local,
    round: u64,
    n: u64,
    ts: i64,
) -> (BTreeMap<String, [u64; 6]>, u64) {
    const LINES: i64 = 20;
    let mut requests: BTreeMap<String, [u64; 6]> = BTreeMap::new();
    let mut rows = 0;
    for zone in ["step_trainer", "accelerometer"] {
        for j in 0..n {
            let user = 2 * (round * n + j); // even: consenting
            let at = ts + (round * n + j) as i64 * 100_000;
            let body = match zone {
                "step_trainer" => step_file(user, at, LINES),
                _ => readings_file(user, at, LINES),
            };
            let key = format!("{zone}/landing/round-{round}-{j:03}.json");
            local.put(&key, body).await.unwrap();
        }
        let out = local.settle().await.unwrap();
        assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
        for (f, counts) in requests_of(&out) {
            let sum = requests.entry(f).or_default();
            for (t, v) in sum.iter_mut().zip(counts) {
                *t += v;
            }
        }
        rows += out.of_function(ML).rows_out;
    }
    (requests, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_many_sessions_costs_the_same_in_a_dt_of_one_or_four_batches() {
    // Batches of 40 sessions: 40 devices an object, more than ML_WIDE_SERIALS used to
    // allow before an object joined with the whole dt.
    const SESSIONS: u64 = 40;
    let local = Local::start().await.unwrap();
    local
        .drop_bytes("customer/landing/customers.json", customers_file(0, 400))
        .await
        .unwrap();
    let ts = 1_655_510_400_000; // 2022-06-18T00:00:00Z
    // A first round registers the dt's partitions, as any busy day has.
    batch_round(&local, 0, SESSIONS, ts).await;
    let (early, early_rows) = batch_round(&local, 1, SESSIONS, ts).await;
    batch_round(&local, 2, SESSIONS, ts).await;
    batch_round(&local, 3, SESSIONS, ts).await;
    let (late, late_rows) = batch_round(&local, 4, SESSIONS, ts).await;
    let objects = lake::table_objects(&local.stack, Table::StepTrainerTrusted)
        .await
        .unwrap();
    assert_eq!(objects.len(), 5);
    // Each session's 20 phone readings meet its device's 20 at the same milliseconds.
    assert_eq!((early_rows, late_rows), (800, 800));
    assert_eq!(
        early.keys().collect::<Vec<_>>(),
        late.keys().collect::<Vec<_>>()
    );
    for (f, e) in &early {
        assert_eq!(
            *e, late[f],
            "{f}: requests [get, list, put, glue, rru, wru] with 1 vs 4 batches in the dt"
        );
    }
    // Each side registers under its 40 serials and in the dt's roster (a write unit each)
    // and queries each serial's folder and `wide` (a read unit each); one LIST a round: a
    // new runner's (a cold function's) look for join-index markers of an earlier release
    // in S3 (none: a warm function looks no more).
    assert_eq!(
        (early[ML][1], early[ML][4], early[ML][5]),
        (1, 2 * (SESSIONS + 1), 2 * (SESSIONS + 1)),
        "{early:?}"
    );
    println!("requests per function [get, list, put, glue, rru, wru]: {early:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_takes_the_customers_sessions_out_with_its_own_event() {
    let local = Local::start().await.unwrap();
    let (dir, files) = one_file_per_session("withdrawal", 12);
    local.drop(&files, 0).await.unwrap();
    assert_truth(&local, &dir, "the sessions").await;
    let ml_before = crate::rows::ml(&local.batches(Table::MachineLearningCurated).await.unwrap());
    // A user of a phone file whose device has a Step Trainer file (ML rows).
    let phone_dir = dir.join("accelerometer/landing");
    let (phone, email, serial) = (0..12)
        .map(|i| {
            let name = format!("phone-{i:03}");
            let text = std::fs::read_to_string(phone_dir.join(format!("{name}.json"))).unwrap();
            let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
            let email = first["user"].as_str().unwrap().to_string();
            let rec = crate::order::customer_record(&email);
            (
                name,
                email,
                rec["serialNumber"].as_str().unwrap().to_string(),
            )
        })
        .find(|(_, _, serial)| ml_before.iter().any(|r| &r.1 == serial))
        .unwrap();

    let withdrawal = crate::order::withdrawal(&email, &dir);
    let out = local.drop(&[withdrawal], 0).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let customer = out.of_function("customer_landing_to_trusted");
    // Its own shards and device index written; the customer's phone file and device file
    // computed again: their trusted objects and their ML pair had only the customer's rows.
    let prefixes = |keys: &[String]| -> Vec<String> {
        let mut p: Vec<String> = keys
            .iter()
            .map(|k| k[..k.rfind('/').unwrap() + 1].to_string())
            .collect();
        p.sort();
        p
    };
    assert_eq!(
        prefixes(&customer.outputs),
        ["_stedi/devices/", "customer/curated/", "customer/trusted/"]
    );
    assert_eq!(customer.deleted.len(), 3, "{:?}", customer.deleted);
    let deleted = |table: Table| under(&customer.deleted, table);
    assert_eq!(deleted(Table::AccelerometerTrusted), 1);
    assert_eq!(deleted(Table::StepTrainerTrusted), 1);
    assert_eq!(deleted(Table::MachineLearningCurated), 1);
    assert!(
        customer
            .deleted
            .iter()
            .any(|k| k.contains(&format!("/{phone}."))),
        "{:?}",
        customer.deleted
    );
    // The event alone: the batch truth without the customer, nothing left for reconcile.
    assert_withdrawn(&local, &dir, ml_before, &serial).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_landing_file_takes_its_rows_out_with_its_own_event() {
    // Six sessions of consenting customers (even numbers), 20 readings a side each: one
    // batch object per side.
    const LINES: i64 = 20;
    let dir = std::env::temp_dir().join(format!("stedi-it-deleted-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let write = |zone: &str, name: &str, body: String| {
        let folder = dir.join(zone).join("landing");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(name), body).unwrap();
    };
    write("customer", "customers.json", customers_file(0, 20));
    let ts = 1_655_510_400_000; // 2022-06-18T00:00:00Z
    for u in (0..12).step_by(2) {
        let at = ts + u as i64 * 100_000;
        let name = format!("session-{u:02}.json");
        write("accelerometer", &name, readings_file(u, at, LINES));
        write("step_trainer", &name, step_file(u, at, LINES));
    }
    let local = Local::start().await.unwrap();
    local
        .drop(&lake::landing_files(&dir, None).unwrap(), 0)
        .await
        .unwrap();
    assert_truth(&local, &dir, "the sessions").await;
    for t in [Table::AccelerometerTrusted, Table::StepTrainerTrusted] {
        let objects = lake::table_objects(&local.stack, t).await.unwrap();
        assert_eq!(objects.len(), 1, "{objects:?}");
    }
    let ml_before = crate::rows::ml(&local.batches(Table::MachineLearningCurated).await.unwrap());
    assert_eq!(ml_before.len(), 6 * LINES as usize);

    // Customer 0's Step Trainer file is deleted: its own event takes exactly its rows out of
    // the batch object holding them, and its ML rows with them.
    let key = "step_trainer/landing/session-00.json";
    let stems = |list: Vec<String>| list.iter().any(|s| s == "session-00");
    let step_manifests = || local.manifest_stems(Table::StepTrainerTrusted);
    assert!(stems(step_manifests().await.unwrap()));
    local.delete(key).await.unwrap();
    std::fs::remove_file(dir.join(key)).unwrap();
    let out = local.settle().await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let step = out.of_function("step_trainer_landing_to_trusted");
    assert_eq!(step.sources, [key]);
    assert_eq!((step.rows_in, step.rows_out), (0, 0));
    // The batch object rewritten without the file's rows; its ML pair joined again.
    assert_eq!((step.outputs.len(), step.deleted.len()), (1, 0), "{step:?}");
    assert_eq!(under(&step.outputs, Table::StepTrainerTrusted), 1);
    assert!(!stems(step_manifests().await.unwrap()));
    let serial = stedi_infra::synthetic::serial(0);
    assert_withdrawn(&local, &dir, ml_before, &serial).await;

    // Customer 2's phone file is deleted: its rows leave accelerometer_trusted and their ML
    // rows go with its own event. They have no readings left, so the batch truth no longer
    // counts them curated, nor their device's 20 Step Trainer readings: that change waits
    // for reconcile.
    let key = "accelerometer/landing/session-02.json";
    local.delete(key).await.unwrap();
    std::fs::remove_file(dir.join(key)).unwrap();
    let out = local.settle().await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let phone = out.of_function("accelerometer_landing_to_trusted");
    assert_eq!(phone.sources, [key]);
    assert_eq!(
        (phone.outputs.len(), phone.deleted.len()),
        (1, 0),
        "{phone:?}"
    );
    assert_eq!(under(&phone.outputs, Table::AccelerometerTrusted), 1);
    let truth = Truth::compute(&dir, false).unwrap();
    let counts = local.counts().await.unwrap();
    let want = |table: &str, n: usize| assert_eq!(counts[table], n as u64, "{table}");
    want("accelerometer_trusted", truth.accelerometer_trusted.len());
    want(
        "machine_learning_curated",
        truth.machine_learning_curated.len(),
    );
    want("customer_curated", truth.customer_curated.len() + 1);
    want(
        "step_trainer_trusted",
        truth.step_trainer_trusted.len() + LINES as usize,
    );
    assert_eq!(truth.machine_learning_curated.len(), 4 * LINES as usize);
    let report = local.reconcile().await.unwrap();
    assert!(report.changed(), "{report:?}");
    assert_truth(&local, &dir, "after reconcile").await;

    // A deletion delivered again finds no manifest and changes nothing; one that meets a
    // manifest naming a batch object not written yet (the key re-uploaded, being computed
    // by another invocation) fails for SQS to deliver it again, and changes nothing.
    let ctx = local.stack.function_context();
    let bucket = &local.stack.cfg.bucket;
    let keys_before = local.keys().await.unwrap();
    let mut s = stedi::summary::Summary::default();
    stedi::transitions::forget(
        &ctx,
        bucket,
        Table::StepTrainerTrusted,
        "session-00",
        &mut s,
    )
    .await
    .unwrap();
    assert_eq!((s.outputs.len(), s.deleted.len()), (0, 0), "{s:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let in_flight = stedi::transitions::Manifest {
        layout: stedi::transitions::LAYOUT,
        dts: BTreeSet::from(["2022-06-18".to_string()]),
        object: Some("session-99.b0123456789abcdef".into()),
        written_at: now,
        ..Default::default()
    };
    local
        .set_manifest(Table::AccelerometerTrusted, "session-99", &in_flight)
        .await
        .unwrap();
    let e = stedi::transitions::forget(
        &ctx,
        bucket,
        Table::AccelerometerTrusted,
        "session-99",
        &mut s,
    )
    .await
    .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(local.keys().await.unwrap(), keys_before);
    // The manifest stays: the deletion is delivered again later.
    assert_eq!(
        local
            .manifest(Table::AccelerometerTrusted, "session-99")
            .await
            .unwrap(),
        in_flight
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// After a withdrawal of the owner of `serial`: the batch truth, the ML rows of everyone
/// else as they were, and nothing for a reconcile pass to do.
async fn assert_withdrawn(
    local: &Local,
    dir: &Path,
    ml_before: Vec<stedi_tests::truth::Ml>,
    serial: &str,
) {
    assert_truth(local, dir, "after the withdrawal").await;
    let ml = crate::rows::ml(&local.batches(Table::MachineLearningCurated).await.unwrap());
    let others: Vec<_> = ml_before.into_iter().filter(|r| r.1 != serial).collect();
    assert_eq!(ml, others);
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "reconcile found work: {report:?}");
}

/// A local stack whose customer function computes at most one reading file itself
/// (`RECOMPUTE_INLINE_LIMIT=1`): a customer's session (two files) goes to reconcile.
async fn inline_limit_one() -> Local {
    let cfg = stedi::config::Config {
        recompute_inline_limit: 1,
        ..stedi::config::Config::default()
    };
    Local::with_config(cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_with_more_files_than_the_inline_limit_hands_them_to_reconcile() {
    // RECOMPUTE_INLINE_LIMIT=1: the customer's two files (a phone file and their device's
    // Step Trainer file) are more than the customer function computes itself; it sends one
    // reconcile item each, and the reconcile function computes them as it would have.
    let local = inline_limit_one().await;
    let (dir, files) = one_file_per_session("withdrawal-queued", 12);
    let (phone, email, serial) = user_with_device(&dir, &files);
    local.drop(&files, 0).await.unwrap();
    let ml_before = crate::rows::ml(&local.batches(Table::MachineLearningCurated).await.unwrap());
    assert!(ml_before.iter().any(|r| r.1 == serial));

    let withdrawal = crate::order::withdrawal(&email, &dir);
    let out = local.drop(&[withdrawal], 0).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    // The customer function wrote its own state and computed no reading file.
    let customer = out.of_function("customer_landing_to_trusted");
    assert!(customer.deleted.is_empty(), "{:?}", customer.deleted);
    assert!(only_customer_state(&customer), "{:?}", customer.outputs);
    // The reconcile function computed exactly the two files, one item each, and took out
    // what the inline path takes out: the phone object, the device object, their ML pair.
    let reconciled = out.of_function("reconcile");
    let landing: Vec<&String> = reconciled
        .sources
        .iter()
        .filter(|k| k.contains("/landing/"))
        .collect();
    assert_eq!(landing.len(), 2, "{:?}", reconciled.sources);
    assert_eq!(
        landing
            .iter()
            .filter(|k| k.starts_with("accelerometer/landing/") && k.contains(&format!("/{phone}.")))
            .count(),
        1,
        "{landing:?}"
    );
    assert_eq!(
        landing
            .iter()
            .filter(|k| k.starts_with("step_trainer/landing/"))
            .count(),
        1,
        "{landing:?}"
    );
    let deleted = |table: Table| under(&reconciled.deleted, table);
    assert_eq!(
        deleted(Table::AccelerometerTrusted),
        1,
        "{:?}",
        reconciled.deleted
    );
    assert_eq!(
        deleted(Table::StepTrainerTrusted),
        1,
        "{:?}",
        reconciled.deleted
    );
    assert_eq!(
        deleted(Table::MachineLearningCurated),
        1,
        "{:?}",
        reconciled.deleted
    );
    assert_withdrawn(&local, &dir, ml_before, &serial).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_with_more_files_than_the_inline_limit_hands_them_to_reconcile() {
    // The consent of a_consent_brings_in_the_sessions_that_landed_before_it_with_its_own_event
    // with RECOMPUTE_INLINE_LIMIT=1: the two files go to reconcile, which brings them in.
    let local = inline_limit_one().await;
    let LateConsent {
        dir,
        phone,
        serial,
        out,
    } = late_consent(&local, "consent-queued").await;
    let customer = out.of_function("customer_landing_to_trusted");
    let reconciled = out.of_function("reconcile");
    let written = |keys: &[String], table: Table| under(keys, table);
    for table in [Table::AccelerometerTrusted, Table::StepTrainerTrusted] {
        assert_eq!(
            written(&customer.outputs, table),
            0,
            "{:?}",
            customer.outputs
        );
        assert_eq!(
            written(&reconciled.outputs, table),
            1,
            "{:?}",
            reconciled.outputs
        );
    }
    assert_eq!(
        written(&reconciled.outputs, Table::CustomerCurated),
        1,
        "{:?}",
        reconciled.outputs
    );
    assert!(
        reconciled
            .outputs
            .iter()
            .any(|k| k.contains(&format!("/{phone}."))),
        "{:?}",
        reconciled.outputs
    );
    assert!(reconciled.deleted.is_empty(), "{:?}", reconciled.deleted);
    assert_consented(&local, &dir, &serial).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A late consent and what its drop did.
struct LateConsent {
    dir: PathBuf,
    /// The customer's phone file (its name).
    phone: String,
    /// Their device.
    serial: String,
    out: stedi_tests::Outcome,
}

/// One session per user (`test` names the files' folder); a user whose device has a Step
/// Trainer file withdraws before the readings land, so none of their rows are in (checked:
/// the batch truth, no ML row of the device); then their consent, the same record later,
/// is dropped.
async fn late_consent(local: &Local, test: &str) -> LateConsent {
    let (dir, files) = one_file_per_session(test, 12);
    let (phone, email, serial) = user_with_device(&dir, &files);
    let withdrawal = crate::order::withdrawal(&email, &dir);
    land_with_record_between(local, files, withdrawal).await;
    assert_truth(local, &dir, "before the consent").await;
    assert_eq!(ml_rows_of(local, &serial).await, 0);
    let mut rec = crate::order::customer_record(&email);
    crate::order::later(&mut rec, 2000);
    let consent = crate::order::customer_file(&rec, "consent.json", &dir);
    let out = local.drop(&[consent], 0).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    LateConsent {
        dir,
        phone,
        serial,
        out,
    }
}

/// Whether every object `s` wrote is the customer function's own state (customer shards,
/// the device index): no reading file computed.
pub(crate) fn only_customer_state(s: &stedi::summary::Summary) -> bool {
    s.outputs
        .iter()
        .all(|k| k.starts_with("customer/") || k.starts_with("_stedi/devices/"))
}

/// Drops the customer files of `files`, then `record` (one customer's newer record), then
/// the reading files: the readings land under that record.
async fn land_with_record_between(local: &Local, files: Vec<LandingFile>, record: LandingFile) {
    let (customers, readings): (Vec<LandingFile>, Vec<LandingFile>) = files
        .into_iter()
        .partition(|f| f.table == Table::CustomerLanding);
    local.drop(&customers, 0).await.unwrap();
    local.drop(&[record], 0).await.unwrap();
    local.drop(&readings, 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_brings_in_the_sessions_that_landed_before_it_with_its_own_event() {
    let local = Local::start().await.unwrap();
    let LateConsent {
        dir,
        phone,
        serial,
        out,
    } = late_consent(&local, "consent").await;
    let customer = out.of_function("customer_landing_to_trusted");
    // The phone file and the device file computed again in the same invocation (the
    // user's trusted rows and their curated record); the machine-learning pair follows from
    // the trusted objects' own events.
    let written = |table: Table| under(&customer.outputs, table);
    for table in [
        Table::AccelerometerTrusted,
        Table::StepTrainerTrusted,
        Table::CustomerCurated,
    ] {
        assert_eq!(written(table), 1, "{table:?}: {:?}", customer.outputs);
    }
    assert_eq!(written(Table::MachineLearningCurated), 0);
    // One pair, whichever of the two objects' events wrote it (both may).
    let pairs: BTreeSet<String> = out.of_function(ML).outputs.into_iter().collect();
    let pairs: Vec<String> = pairs.into_iter().collect();
    assert_eq!(under(&pairs, Table::MachineLearningCurated), 1, "{pairs:?}");
    assert!(
        customer
            .outputs
            .iter()
            .any(|k| k.contains(&format!("/{phone}."))),
        "{:?}",
        customer.outputs
    );
    assert!(customer.deleted.is_empty(), "{:?}", customer.deleted);
    // The event alone gives the batch truth; nothing is left for reconcile.
    assert_consented(&local, &dir, &serial).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_is_checked_again_later_and_its_current_files_are_left_alone() {
    // RECHECK_DELAY_SECONDS=0: the recheck the consent sends runs in the same drop. The
    // customer function computed the two files itself; the recheck (the reconcile
    // function) lists the customer's postings again, finds both files computed with the
    // consent as it stands, and writes nothing.
    let cfg = stedi::config::Config {
        recheck_delay_seconds: 0,
        ..stedi::config::Config::default()
    };
    let local = Local::with_config(cfg).await.unwrap();
    let LateConsent {
        dir, serial, out, ..
    } = late_consent(&local, "consent-recheck").await;
    let customer = out.of_function("customer_landing_to_trusted");
    for table in [Table::AccelerometerTrusted, Table::StepTrainerTrusted] {
        assert_eq!(under(&customer.outputs, table), 1, "{:?}", customer.outputs);
    }
    // One recheck item sent (the customer's e-mail and serial), one SQS request.
    assert_eq!(customer.requests.sqs_calls, 1, "{:?}", customer.requests);
    let recheck = out.of_function("reconcile");
    assert!(recheck.outputs.is_empty(), "{:?}", recheck.outputs);
    assert!(recheck.deleted.is_empty(), "{:?}", recheck.deleted);
    let r = recheck.requests;
    // Two postings queried (the e-mail's and the serial's: a read unit each), the two
    // reading tables' wide indexes queried (none: a read unit each) and those kept in S3
    // listed; the customer's two one-record files (the withdrawal and the consent) and
    // their customer_trusted shard read, which agrees with the newer; the two manifests
    // (entries of the index table: a read unit each) and the consent shard and
    // device-index shard their answers fall in read; nothing written.
    assert_eq!(
        (r.s3_list, r.s3_get, r.s3_put, r.s3_delete),
        (1, 5, 0, 0),
        "{r:?}"
    );
    assert_eq!(
        (r.dynamodb_read_units, r.dynamodb_write_units),
        (2 + 2 + 2, 0),
        "{r:?}"
    );
    assert_consented(&local, &dir, &serial).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_computed_while_its_customer_withdrew_is_caught_by_the_recheck() {
    // The race the recheck is for: a reading file computed at the moment its customer
    // withdraws read the consent that was still there, and wrote its posting after the
    // customer function had listed the customer's postings. Here the customer's two postings
    // are taken away while the withdrawal runs and put back after it: the withdrawal finds
    // no file, and the customer's rows stay in every zone. The recheck it sent, delayed 20 s
    // here (15 minutes by default), finds both files computed with a consent that is gone
    // and computes them again.
    let delay = std::time::Duration::from_secs(20);
    let cfg = stedi::config::Config {
        recheck_delay_seconds: delay.as_secs() as u32,
        ..stedi::config::Config::default()
    };
    let local = Local::with_config(cfg).await.unwrap();
    let (dir, files) = one_file_per_session("withdrawal-recheck", 12);
    let (phone, email, serial) = user_with_device(&dir, &files);
    local.drop(&files, 0).await.unwrap();
    let ml_before = crate::rows::ml(&local.batches(Table::MachineLearningCurated).await.unwrap());
    let secret = local.stack.cfg.function.erasure_hash_key.clone();
    use stedi::compute::PersonKind;
    use stedi::transitions::erasure::person_hash;
    let persons = vec![
        person_hash(&secret, PersonKind::Email, &email),
        person_hash(&secret, PersonKind::Serial, &serial),
    ];
    let mut hidden = Vec::new();
    for h in &persons {
        for landing in local.postings_of(h).await.unwrap() {
            hidden.push((h.clone(), landing));
        }
    }
    local.unpost(&hidden).await.unwrap();
    assert_eq!(hidden.len(), 2, "{hidden:?}");

    let withdrawal = crate::order::withdrawal(&email, &dir);
    let started = std::time::Instant::now();
    let out = local.drop(&[withdrawal], 0).await.unwrap();
    assert!(
        started.elapsed() < delay,
        "the withdrawal's drop outlasted the recheck's delay: the staging needs a longer one"
    );
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let customer = out.of_function("customer_landing_to_trusted");
    assert!(customer.deleted.is_empty(), "{:?}", customer.deleted);
    assert_eq!(customer.requests.sqs_calls, 1, "the recheck sent");
    assert!(out.of_function("reconcile").sources.is_empty());
    local.post(&hidden).await.unwrap();
    assert!(
        ml_rows_of(&local, &serial).await > 0,
        "the missed files' rows stay"
    );

    // Once the delay is over, the recheck reaches the reconcile function.
    tokio::time::sleep(delay.saturating_sub(started.elapsed())).await;
    let s = local.settle().await.unwrap().of_function("reconcile");
    assert_eq!(s.deleted.len(), 3, "{:?}", s.deleted);
    for table in [
        Table::AccelerometerTrusted,
        Table::StepTrainerTrusted,
        Table::MachineLearningCurated,
    ] {
        assert_eq!(under(&s.deleted, table), 1, "{table:?}: {:?}", s.deleted);
    }
    assert!(
        s.deleted.iter().any(|k| k.contains(&format!("/{phone}."))),
        "{:?}",
        s.deleted
    );
    local.settle().await.unwrap();
    assert_withdrawn(&local, &dir, ml_before, &serial).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// After a consent of the owner of `serial`: the batch truth, ML rows of the device, and
/// nothing for a reconcile pass to do.
async fn assert_consented(local: &Local, dir: &Path, serial: &str) {
    assert_truth(local, dir, "after the consent").await;
    assert!(ml_rows_of(local, serial).await > 0);
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "reconcile found work: {report:?}");
}

/// The machine_learning_curated rows of device `serial`.
async fn ml_rows_of(local: &Local, serial: &str) -> usize {
    crate::rows::ml(&local.batches(Table::MachineLearningCurated).await.unwrap())
        .into_iter()
        .filter(|r| r.1 == serial)
        .count()
}

/// Of the users of `one_file_per_session`'s phone files, the first whose device has a Step
/// Trainer file: (phone file name, e-mail, serial).
fn user_with_device(dir: &Path, files: &[LandingFile]) -> (String, String, String) {
    let device_serials: BTreeSet<String> = files
        .iter()
        .filter(|f| f.table == Table::StepTrainerLanding)
        .flat_map(|f| {
            let text = std::fs::read_to_string(&f.path).unwrap();
            text.lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    v["serialNumber"].as_str().unwrap().to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    (0..)
        .map(|i| {
            let name = format!("phone-{i:03}");
            let path = dir.join(format!("accelerometer/landing/{name}.json"));
            let text = std::fs::read_to_string(path).unwrap();
            let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
            let email = first["user"].as_str().unwrap().to_string();
            let rec = crate::order::customer_record(&email);
            let serial = rec["serialNumber"].as_str().unwrap().to_string();
            (name, email, serial)
        })
        .find(|(_, _, serial)| device_serials.contains(serial))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_move_redelivered_after_a_stop_still_takes_the_old_devices_readings_out() {
    // A curated customer's record names another device. The first attempt folds it into
    // customer_trusted and moves the device-index entry, then stops before rewriting their
    // customer_curated row (its PUT denied, as a timeout would stop it). The redelivery
    // finds the record in place: only the curated row, which still names the old device,
    // tells the move, and the old device's readings must still leave.
    let local = Local::start().await.unwrap();
    let (dir, files) = one_file_per_session("device-move-redelivered", 12);
    let (_, email, serial) = user_with_device(&dir, &files);
    local.drop(&files, 0).await.unwrap();
    assert!(ml_rows_of(&local, &serial).await > 0);
    let mut rec = crate::order::customer_record(&email);
    crate::order::later(&mut rec, 2000);
    rec["serialNumber"] = serde_json::json!("NEW-DEVICE-00002");
    let moved = crate::order::customer_file(&rec, "moved.json", &dir);
    local
        .put(&moved.key, std::fs::read(&moved.path).unwrap())
        .await
        .unwrap();
    let bucket = local.stack.cfg.bucket.clone();
    let message = |received: u32| {
        let body = stedi::event::s3_notification(&bucket, &moved.key).to_string();
        serde_json::json!({"Records": [{
            "eventSource": "aws:sqs", "messageId": "m", "receiptHandle": "r", "body": body,
            "attributes": {"ApproximateReceiveCount": received.to_string()},
        }]})
    };
    let f = stedi::lambda::Function::Transition(Transition::CustomerLandingToTrusted);
    let ctx = local.stack.function_context();
    let stop = std::sync::Arc::new(stedi_tests::DenyPuts("customer/curated/"));
    let first = stedi::store::with_policy(stop, stedi::lambda::invoke(&ctx, f, &message(1))).await;
    let failed = match first {
        Ok((_, s)) => !s.errors.is_empty(),
        Err(_) => true,
    };
    assert!(failed, "the first attempt stops at customer_curated");
    assert!(
        ml_rows_of(&local, &serial).await > 0,
        "the old device's rows are still in"
    );

    let (_, s) = stedi::lambda::invoke(&ctx, f, &message(2)).await.unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let deleted = |table: Table| under(&s.deleted, table);
    assert_eq!(deleted(Table::StepTrainerTrusted), 1, "{:?}", s.deleted);
    local.settle().await.unwrap();
    assert_eq!(ml_rows_of(&local, &serial).await, 0);
    assert_truth(&local, &dir, "after the redelivered move").await;
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "reconcile found work: {report:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_new_device_takes_over_with_its_own_event() {
    let local = Local::start().await.unwrap();
    let (dir, mut files) = one_file_per_session("new-device", 12);
    let (_, email, serial) = user_with_device(&dir, &files);
    // The device they move to already sent a session (its readings: the old device's,
    // under the new serial), filtered when it landed: nobody owned it.
    let new_serial = "NEW-DEVICE-00001";
    let old_device = files
        .iter()
        .find(|f| {
            f.table == Table::StepTrainerLanding
                && std::fs::read_to_string(&f.path)
                    .unwrap()
                    .contains(&format!("\"{serial}\""))
        })
        .unwrap();
    let body: String = std::fs::read_to_string(&old_device.path)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("\"{serial}\"")))
        .map(|l| l.replace(&format!("\"{serial}\""), &format!("\"{new_serial}\"")) + "\n")
        .collect();
    let path = dir.join("step_trainer/landing/device-new.json");
    std::fs::write(&path, body).unwrap();
    files.push(LandingFile {
        table: Table::StepTrainerLanding,
        path,
        key: "step_trainer/landing/device-new.json".into(),
    });
    local.drop(&files, 0).await.unwrap();
    assert_truth(&local, &dir, "before the move").await;
    assert!(ml_rows_of(&local, &serial).await > 0);
    assert_eq!(ml_rows_of(&local, new_serial).await, 0);

    // Their record now names the new device.
    let mut rec = crate::order::customer_record(&email);
    crate::order::later(&mut rec, 2000);
    rec["serialNumber"] = serde_json::json!(new_serial);
    let moved = crate::order::customer_file(&rec, "new-device.json", &dir);
    let out = local.drop(&[moved], 0).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let customer = out.of_function("customer_landing_to_trusted");
    assert!(
        customer.outputs.iter().any(|k| k.contains("/device-new.")),
        "{:?}",
        customer.outputs
    );
    // The event alone: the curated row names the new device, its readings and their ML
    // pairs are in, the old device's are out (unless another customer owns it).
    assert_truth(&local, &dir, "after the move").await;
    assert!(ml_rows_of(&local, new_serial).await > 0);
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "reconcile found work: {report:?}");

    // A later change of their phone number alone: their customer_curated row follows.
    crate::order::later(&mut rec, 1000);
    rec["phone"] = serde_json::json!("8015550000");
    let phone = crate::order::customer_file(&rec, "new-phone.json", &dir);
    let out = local.drop(&[phone], 0).await.unwrap();
    let customer = out.of_function("customer_landing_to_trusted");
    let mut written: Vec<&str> = customer
        .outputs
        .iter()
        .map(|k| &k[..k.rfind('/').unwrap()])
        .collect();
    written.sort();
    assert_eq!(written, ["customer/curated", "customer/trusted"]);
    let curated = local.batches(Table::CustomerCurated).await.unwrap();
    assert_eq!(
        crate::rows::field(&curated, "phone")
            .get(&email)
            .map(String::as_str),
        Some("8015550000")
    );
    assert_truth(&local, &dir, "after the new phone number").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// How many of `keys` are objects of `table`.
fn under(keys: &[String], table: Table) -> usize {
    keys.iter()
        .filter(|k| k.starts_with(table.prefix()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curated_customer_who_gains_a_device_brings_its_sessions_in() {
    let local = Local::start().await.unwrap();
    let (dir, files) = one_file_per_session("gain-device", 12);
    let (_, email, serial) = user_with_device(&dir, &files);
    // Their latest record names no device when their sessions land.
    let mut rec = crate::order::customer_record(&email);
    crate::order::later(&mut rec, 1000);
    rec["serialNumber"] = Value::Null;
    let none = crate::order::customer_file(&rec, "no-device.json", &dir);
    land_with_record_between(&local, files, none).await;
    assert_truth(&local, &dir, "without a device").await;
    // Then it names one: a curated customer's new device, moved from none.
    crate::order::later(&mut rec, 1000);
    rec["serialNumber"] = serde_json::json!(serial);
    let gained = crate::order::customer_file(&rec, "device.json", &dir);
    let out = local.drop(&[gained], 0).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let customer = out.of_function("customer_landing_to_trusted");
    assert_eq!(
        under(&customer.outputs, Table::StepTrainerTrusted),
        1,
        "{:?}",
        customer.outputs
    );
    assert_truth(&local, &dir, "with the device").await;
    assert!(ml_rows_of(&local, &serial).await > 0);
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "reconcile found work: {report:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
