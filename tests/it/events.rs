//! Keys as S3 really sends them: spaces, plus signs and unicode reach the handler intact.

use serde_json::{Value, json};
use stedi::schema::Table;
use stedi::transitions::machine_learning_trusted_to_curated as ml;
use stedi_infra::lake::LandingFile;
use stedi_tests::{Local, sample_dir};

/// A local stack holding 40 customers (every other one consenting).
async fn with_customers() -> Local {
    let local = Local::start().await.unwrap();
    local
        .drop_bytes(
            "customer/landing/customers.json",
            stedi_infra::synthetic::customers_file(0, 40),
        )
        .await
        .unwrap();
    local
}

/// The EventBridge event S3 sends for new object `key`.
fn created(bucket: &str, key: &str) -> Value {
    json!({"source": "aws.s3", "detail-type": "Object Created",
        "detail": {"bucket": {"name": bucket}, "object": {"key": key}}})
}

/// Uploads phone files `accelerometer/landing/session-<i>.json` for `ids`: customer `2i`'s
/// `lines` readings from `ts + 1 s * i`.
async fn put_sessions(local: &Local, ids: impl IntoIterator<Item = u64>, ts: i64, lines: i64) {
    for i in ids {
        let key = format!("accelerometer/landing/session-{i}.json");
        let body = stedi_infra::synthetic::readings_file(2 * i, ts + 1_000 * i as i64, lines);
        local.put(&key, body).await.unwrap();
    }
}

/// The SQS batch the event source mapping delivers for phone files
/// `accelerometer/landing/session-<i>.json` (message ids `m<i>`).
fn phone_batch(bucket: &str, ids: &[u64]) -> Value {
    let records: Vec<Value> = ids
        .iter()
        .map(|i| {
            let key = format!("accelerometer/landing/session-{i}.json");
            sqs_record(bucket, format!("m{i}"), &key)
        })
        .collect();
    json!({ "Records": records })
}

/// Uploads `files` (key, body) and runs the phone function on them as one SQS batch,
/// none failing; its summary.
async fn phone_files_as_one_batch(
    local: &Local,
    ctx: &stedi::Ctx,
    files: impl IntoIterator<Item = (String, String)>,
) -> stedi::summary::Summary {
    let bucket = &local.stack.cfg.bucket;
    let mut records = Vec::new();
    for (n, (key, body)) in files.into_iter().enumerate() {
        local.put(&key, body).await.unwrap();
        records.push(sqs_record(bucket, format!("m{n}"), &key));
    }
    let f = stedi::lambda::Function::Transition(stedi::Transition::AccelerometerLandingToTrusted);
    let (response, s) = stedi::lambda::invoke(ctx, f, &json!({ "Records": records }))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{s:?}");
    s
}

/// The SQS message `id` that carries new object `key`'s event.
fn sqs_record(bucket: &str, id: String, key: &str) -> Value {
    json!({"eventSource": "aws:sqs", "messageId": id, "body": created(bucket, key).to_string()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_keys_flow_through_eventbridge_and_sqs() {
    let local = Local::start().await.unwrap();
    let path = sample_dir().join("customer/landing/customer-1691348231425.json");
    let key = "customer/landing/my file+1 你好 😊.json";
    let out = local
        .drop(
            &[LandingFile {
                table: Table::CustomerLanding,
                path,
                key: key.to_string(),
            }],
            0,
        )
        .await
        .unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let s = out.of_function("customer_landing_to_trusted");
    assert_eq!(s.sources, [key]);
    assert_eq!((s.rows_in, s.rows_out, s.filtered), (956, 482, 474));
    let counts = local.counts().await.unwrap();
    assert_eq!(counts["customer_trusted"], 482);
}

/// Requests are the bill: one accelerometer landing file, processed by a cold function
/// after the customers are in, makes exactly these requests (GET the landing file, each
/// consent shard its readers need, the compaction pointer and the erasure epoch, with one
/// LIST of the erased markers and one for S3 manifests of an earlier release as the
/// function is cold; PUT the one `dt` output; write the manifest (an entry of the index
/// table, created where there is none: no old one to read) and each user's erasure-index
/// posting; DELETE the stale quarantine object; one Glue BatchCreatePartition), and its
/// byte counts are the sizes of what it read and wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_counts_its_requests() {
    let local = Local::start().await.unwrap();
    let landing = |table: Table, rel: &str| LandingFile {
        table,
        path: sample_dir().join(rel),
        key: rel.to_string(),
    };
    let customers = landing(
        Table::CustomerLanding,
        "customer/landing/customer-1691348231425.json",
    );
    local.drop(&[customers], 0).await.unwrap();

    // A new runner: a cold context, as a new Lambda instance would have.
    let stem = "accelerometer-1691348232031";
    let file = landing(
        Table::AccelerometerLanding,
        &format!("accelerometer/landing/{stem}.json"),
    );
    let landing_bytes = std::fs::metadata(&file.path).unwrap().len();
    let file_path = file.path.clone();
    let out = local.drop(&[file], 0).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let s = out.of_function("accelerometer_landing_to_trusted");
    let output = format!("accelerometer/trusted/dt=2022-06-18/{stem}.parquet");
    assert_eq!(s.outputs, std::slice::from_ref(&output));
    // The file's 50 people: 50 postings (items of the index table, in two batch writes:
    // no S3 PUT), then one look at who is erased (a GET of the erasure epoch, none yet,
    // and this cold function's one LIST of the erased markers), not 50 tombstone GETs. The
    // manifest an item too, created without a read (this cold function's one LIST finds
    // no S3 manifest of an earlier release): the output is the one S3 PUT.
    let r = s.requests;
    assert_eq!(
        (r.s3_get, r.s3_put, r.s3_delete, r.s3_list, r.s3_head),
        (28, 1, 1, 2, 0),
        "{r:?}"
    );
    assert_eq!((r.glue_calls, r.sqs_calls), (1, 0), "{r:?}");
    assert_eq!(r.dynamodb_read_units, 0, "{r:?}");

    // The lineage records one answer per user of the file (by the e-mail's hash: its
    // consent date, or nothing), and the shards it read are those users' shards.
    let manifest = local
        .manifest(Table::AccelerometerTrusted, stem)
        .await
        .unwrap();
    let lineage = serde_json::to_value(&manifest).unwrap();
    let text = std::fs::read_to_string(&file_path).unwrap();
    let users: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["user"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let recorded = lineage["refs"].as_object().unwrap();
    let hashes: Vec<String> = users.iter().map(|u| stedi::keys::hash_hex(u)).collect();
    assert_eq!(recorded.keys().cloned().collect::<Vec<_>>(), {
        let mut h = hashes.clone();
        h.sort();
        h
    });
    let consenting = recorded.values().filter(|v| *v != "").count();
    assert_eq!((users.len(), consenting), (50, 23), "{recorded:?}");
    let n = local.stack.cfg.function.customer_shards;
    let shards: std::collections::BTreeSet<String> = users
        .iter()
        .map(|u| stedi::keys::shard_key(Table::CustomerTrusted, stedi::keys::shard_of(u, n)))
        .collect();
    assert_eq!(shards.len(), 25, "{shards:?}");
    // GETs: the landing file, its users' shards, the partition's compaction pointer
    // (missing: never compacted, nothing to keep in step), and the erasure epoch (missing:
    // nobody erased); no previous manifest (the new one is created conditionally). PUT:
    // the output. Write units: one erasure-index posting per user, and the manifest's
    // entry, a unit per KB of it (its 50 answers).
    assert_eq!(r.s3_get, 1 + shards.len() as u64 + 1 + 1);
    assert_eq!(r.s3_put, 1);
    let json = serde_json::to_vec(&manifest).unwrap().len();
    assert_eq!((json / 1024, json % 1024 < 800), (1, true), "{json}");
    assert_eq!(r.dynamodb_write_units, users.len() as u64 + 2);
    let mut shard_bytes = 0;
    for k in &shards {
        shard_bytes += local.get(k).await.unwrap().len() as u64;
    }
    assert_eq!(r.bytes_read, landing_bytes + shard_bytes);
    let written = local.get(&output).await.unwrap().len();
    assert_eq!(r.bytes_written, written as u64);

    // The summary line carries them as metrics.
    let line: serde_json::Value = serde_json::from_str(&stedi::lambda::summary_line(
        stedi::lambda::Function::Transition(stedi::Transition::AccelerometerLandingToTrusted),
        &s,
    ))
    .unwrap();
    assert_eq!(line["s3_get"], 28);
    assert_eq!(line["bytes_written"], written as u64);
    // The whole drop's total is the sum over the functions.
    let sum = out
        .by_function
        .values()
        .fold(stedi::summary::Requests::default(), |a, s| a + s.requests);
    assert_eq!(out.total.requests, sum);
}

/// A known partition costs no Glue call: ten phone files of one new `dt` settled by one
/// runner (a warm context per function, as one Lambda instance working through a batch)
/// register the partition once, and the catalog has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_function_registers_a_partition_once() {
    let local = with_customers().await;
    let ts = 1_655_600_000_000; // 2022-06-19
    put_sessions(&local, 0..10, ts, 5).await;
    let out = local.settle().await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let accel = out.of_function("accelerometer_landing_to_trusted");
    assert_eq!((accel.sources.len(), accel.rows_out), (10, 50));
    assert_eq!(accel.requests.glue_calls, 1, "{:?}", accel.requests);
    let partitions = stedi::catalog::list_partitions(
        &local.stack.glue,
        &local.stack.cfg.database,
        Table::AccelerometerTrusted,
    )
    .await
    .unwrap();
    let dts: Vec<&str> = partitions.iter().map(|(dt, _)| dt.as_str()).collect();
    assert_eq!(dts, ["2022-06-19"]);
}

/// Work an SQS batch can share is done once per batch: ten phone files of one `dt` in one
/// batch write one trusted object for all ten (each file's rows listed under its name in
/// the footer), read that partition's compaction pointer once, after the batch's writes
/// (the order that keeps arrivals and compaction in step), and register the partition
/// once, and look up who is erased once (one GET of the erasure epoch, after every file's
/// people are registered). Every other request is per file: GET the file, PUT the
/// manifest (created where there is none, so no old one is read) and the user's
/// erasure-index posting, plus one GET per consent shard the users fall in. A first Step
/// Trainer file reads no old manifest (its waiting markers and old outputs are those of
/// the manifest its create is refused by, read only then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reads_each_partition_pointer_once_and_each_manifest_once() {
    use stedi_infra::synthetic::email;
    let local = with_customers().await;
    let bucket = local.stack.cfg.bucket.clone();
    let ts = 1_655_600_000_000; // 2022-06-19
    put_sessions(&local, 0..10, ts, 5).await;
    // One invocation of a cold function with the ten records, as the event source
    // mapping delivers a batch.
    let ctx = local.stack.function_context();
    let f = stedi::lambda::Function::Transition(stedi::Transition::AccelerometerLandingToTrusted);
    let all: Vec<u64> = (0..10).collect();
    let (response, s) = stedi::lambda::invoke(&ctx, f, &phone_batch(&bucket, &all))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{s:?}");
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!((s.sources.len(), s.rows_out), (10, 50));
    let n = local.stack.cfg.function.customer_shards;
    let shards: std::collections::BTreeSet<u32> = (0..10u64)
        .map(|i| stedi::keys::shard_of(&email(2 * i), n))
        .collect();
    // GET: the ten files, their users' consent shards, the partition pointer, and one
    // erasure epoch for the batch (its files' people registered first, then one look; a
    // cold function lists the erased markers once, and looks once for S3 manifests of an
    // earlier release). PUT: the object; the ten postings and the ten manifests are items
    // of the index table (a write unit each).
    let r = s.requests;
    assert_eq!(r.s3_get, 10 + shards.len() as u64 + 1 + 1, "{r:?}");
    assert_eq!((r.s3_put, r.s3_list), (1, 2), "{r:?}");
    assert_eq!(r.dynamodb_write_units, 10 + 10, "{r:?}");
    assert_eq!(r.glue_calls, 1, "{r:?}");
    let counts = local.counts().await.unwrap();
    assert_eq!(counts["accelerometer_trusted"], 50);
    let object = trusted_objects(&local).await;
    let name = local
        .object_of(Table::AccelerometerTrusted, "session-0")
        .await
        .unwrap();
    assert!(name.starts_with("session-0.b"), "{name}");
    let sources: Vec<(String, u64)> = (0..10).map(|i| (format!("session-{i}"), 5)).collect();
    assert_eq!(object, [(name, sources)]);

    // The rest of the pipeline settles (the ten files' queued events find them done); then
    // a Step Trainer file of customer 0's device, now owned, creates its manifest without
    // reading one: GET the file, the serial's device-index shard, the pointer and the
    // erasure epoch (still none: the list of erased markers stands); one LIST, the look
    // for S3 manifests of step_trainer_trusted of an earlier release; PUT the output; the
    // manifest and the serial's posting are table items.
    let out = local.settle().await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let key = "step_trainer/landing/session-0.json";
    local
        .put(key, stedi_infra::synthetic::step_file(0, ts, 5))
        .await
        .unwrap();
    let f = stedi::lambda::Function::Transition(stedi::Transition::StepTrainerLandingToTrusted);
    let (_, s) = stedi::lambda::invoke(&ctx, f, &created(&bucket, key))
        .await
        .unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!((s.sources.len(), s.rows_out), (1, 5));
    let r = s.requests;
    assert_eq!((r.s3_get, r.s3_put, r.s3_list), (4, 1, 1), "{r:?}");
    assert_eq!(r.dynamodb_write_units, 2, "{r:?}");

    // The ML join of that Step Trainer object (a cold function) meets the phone batch
    // object, whose ten users fall in several customer shards: it takes their devices from
    // the phone object's side manifest instead of reading those shards. GET: its own side
    // manifest (none yet), its object, the phone object and its side manifest, and the ML
    // partition's compaction pointer; PUT: the pair, its side manifest. In the index table:
    // its registration under the serial and in the dt's roster (a write unit each), then
    // the queries of the serial's folder and `wide` (a read unit each). One LIST: this cold function's look for S3
    // markers of an earlier release (none: a warm function looks no more).
    assert!(shards.len() > 1, "{shards:?}");
    let step_object = s
        .outputs
        .iter()
        .find(|k| k.starts_with(Table::StepTrainerTrusted.prefix()))
        .unwrap()
        .clone();
    let ctx = local.stack.function_context();
    let f = stedi::lambda::Function::Transition(stedi::Transition::MachineLearningTrustedToCurated);
    let (_, s) = stedi::lambda::invoke(&ctx, f, &created(&bucket, &step_object))
        .await
        .unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.rows_out, 5, "{s:?}");
    let r = s.requests;
    assert_eq!((r.s3_get, r.s3_list, r.s3_put), (5, 1, 2), "{r:?}");
    assert_eq!(
        (r.dynamodb_write_units, r.dynamodb_read_units),
        (2, 2),
        "{r:?}"
    );
    // Reconcile's rejoin reads the devices from the shards instead (a side manifest may be
    // rewritten by a concurrent item): one GET per shard for the manifest's one.
    let (_, again) = ml::with_fresh_devices(stedi::lambda::invoke(
        &ctx,
        f,
        &created(&bucket, &step_object),
    ))
    .await
    .unwrap();
    let r = again.requests;
    assert_eq!(again.rows_out, 5, "{again:?}");
    assert_eq!(r.s3_get, 4 + shards.len() as u64, "{r:?}");
    // Reconcile finds the pair as the batch truth has it: nothing to redo.
    let out = local.settle().await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    assert_eq!(local.counts().await.unwrap()["machine_learning_curated"], 5);
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "reconcile found work: {report:?}");
}

/// The same batch delivered again (its shared step failed after its files were done) and
/// cut short at the invocation's cutoff: the first file is computed again, the other two
/// are redelivered, and the batch's object keeps their rows (their manifests name it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_short_keeps_the_rows_of_the_files_it_did_not_start() {
    let local = with_customers().await;
    let bucket = local.stack.cfg.bucket.clone();
    let ts = 1_655_600_000_000; // 2022-06-19
    put_sessions(&local, 0..3, ts, 5).await;
    let ctx = local.stack.function_context();
    let f = stedi::lambda::Function::Transition(stedi::Transition::AccelerometerLandingToTrusted);
    let payload = phone_batch(&bucket, &[0, 1, 2]);
    let (response, s) = stedi::lambda::invoke(&ctx, f, &payload).await.unwrap();
    assert!(response.batch_item_failures.is_empty(), "{s:?}");
    let sources: Vec<(String, u64)> = (0..3).map(|i| (format!("session-{i}"), 5)).collect();
    let first = trusted_objects(&local).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].1, sources);

    let deadline = std::time::Instant::now();
    let (response, s) = stedi::lambda::invoke_until(&ctx, f, &payload, Some(deadline))
        .await
        .unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let again: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(again, ["m1", "m2"]);
    assert_eq!(s.sources.len(), 1, "{s:?}");
    // The object again, with the two files not started first (kept from it), then the one
    // computed again.
    let name = first[0].0.clone();
    let kept = vec![sources[1].clone(), sources[2].clone(), sources[0].clone()];
    assert_eq!(trusted_objects(&local).await, [(name, kept)]);
    assert_eq!(local.counts().await.unwrap()["accelerometer_trusted"], 15);
}

/// The trusted phone objects of `dt=2022-06-19`: name → (source, rows) their footers list.
async fn trusted_objects(local: &Local) -> Vec<(String, Vec<(String, u64)>)> {
    let prefix = "accelerometer/trusted/dt=2022-06-19/";
    let mut out = Vec::new();
    for key in local.keys().await.unwrap() {
        let Some(name) = key
            .strip_prefix(prefix)
            .and_then(|k| k.strip_suffix(".parquet"))
        else {
            continue;
        };
        // A file's own object is an ordinary Parquet file: no list in its footer.
        let sources = match stedi::columnar::read_holder(local.get(&key).await.unwrap(), &key) {
            Ok((held, _)) => held.into_iter().map(|h| (h.name, h.rows)).collect(),
            Err(_) => Vec::new(),
        };
        out.push((name.to_string(), sources));
    }
    out
}

/// One object per batch keeps every law per landing file: the same batch redelivered
/// writes the same object; unchanged files redelivered in another batch stay where they
/// are; files uploaded again and delivered together move to a new object, the first
/// rewritten without them; a file uploaded again alone gets its own object; reconcile
/// finds nothing to change; the rows are always each file's once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_object_keeps_each_file_once_through_redelivery_and_reupload() {
    use stedi_infra::synthetic::readings_file;
    let local = with_customers().await;
    let bucket = local.stack.cfg.bucket.clone();
    let batch = |ids: &[u64]| phone_batch(&bucket, ids);
    let ts = 1_655_600_000_000; // 2022-06-19
    put_sessions(&local, 0..10, ts, 5).await;
    let ctx = local.stack.function_context();
    let f = stedi::lambda::Function::Transition(stedi::Transition::AccelerometerLandingToTrusted);
    let invoke = |payload: serde_json::Value| {
        let ctx = &ctx;
        async move {
            let (response, s) = stedi::lambda::invoke(ctx, f, &payload).await.unwrap();
            assert!(response.batch_item_failures.is_empty(), "{s:?}");
            assert!(s.errors.is_empty(), "{:?}", s.errors);
            s
        }
    };
    let all: Vec<u64> = (0..10).collect();
    let rows = |ids: &[u64], n: u64| -> Vec<(String, u64)> {
        ids.iter().map(|i| (format!("session-{i}"), n)).collect()
    };
    invoke(batch(&all)).await;
    let first = trusted_objects(&local).await;
    assert_eq!(first.len(), 1);
    let name = first[0].0.clone();

    // The same batch again: the same object, nothing else.
    let keys = local.keys().await.unwrap();
    invoke(batch(&all)).await;
    assert_eq!(local.keys().await.unwrap(), keys);
    assert_eq!(trusted_objects(&local).await, first);

    // Three of its files redelivered in another batch (unchanged): they stay where they
    // are. Per file the manifest's create (a conditional write of the index table,
    // refused: one exists; a write unit all the same) and then its read, the posting (a
    // table item written again), and a GET of the object holding it (its footer lists
    // the file); no object written, nothing in S3.
    let s = invoke(batch(&[2, 5, 7])).await;
    assert_eq!(local.keys().await.unwrap(), keys);
    let r = s.requests;
    assert_eq!(
        (r.s3_put, r.s3_head, r.dynamodb_write_units),
        (0, 0, 3 + 3),
        "{r:?}"
    );

    // session-2 and session-7 uploaded again (4 readings each) and delivered together: a
    // second object holds them, the first (rewritten once per file) no longer does.
    put_sessions(&local, [2, 7], ts, 4).await;
    invoke(batch(&[2, 7])).await;
    let second = local
        .object_of(Table::AccelerometerTrusted, "session-2")
        .await
        .unwrap();
    assert_ne!(second, name);
    let rest: Vec<u64> = all
        .iter()
        .copied()
        .filter(|i| ![2, 7].contains(i))
        .collect();
    let mut want = vec![
        (name.clone(), rows(&rest, 5)),
        (second.clone(), rows(&[2, 7], 4)),
    ];
    want.sort();
    assert_eq!(trusted_objects(&local).await, want);
    assert_eq!(local.counts().await.unwrap()["accelerometer_trusted"], 48);

    // session-5 uploaded again with 2 readings, alone: its own object.
    let key = "accelerometer/landing/session-5.json";
    local
        .put(key, readings_file(10, ts + 5_000, 2))
        .await
        .unwrap();
    invoke(batch(&[5])).await;
    let rest: Vec<u64> = rest.into_iter().filter(|i| *i != 5).collect();
    let mut want = vec![
        (name.clone(), rows(&rest, 5)),
        (second.clone(), rows(&[2, 7], 4)),
        ("session-5".to_string(), Vec::new()),
    ];
    want.sort();
    assert_eq!(trusted_objects(&local).await, want);
    assert_eq!(local.counts().await.unwrap()["accelerometer_trusted"], 45);

    // A file whose own object was the last of its `dt` (2022-06-20), uploaded again and
    // delivered with another file of that `dt`: its old object goes before the batch's is
    // written, and the partition, dropped meanwhile, is registered again.
    let next = ts + 86_400_000; // 2022-06-20
    local
        .put(
            "accelerometer/landing/session-20.json",
            readings_file(20, next, 3),
        )
        .await
        .unwrap();
    invoke(batch(&[20])).await;
    local
        .put(
            "accelerometer/landing/session-20.json",
            readings_file(20, next, 2),
        )
        .await
        .unwrap();
    local
        .put(
            "accelerometer/landing/session-21.json",
            readings_file(22, next + 1_000, 3),
        )
        .await
        .unwrap();
    invoke(batch(&[20, 21])).await;
    let dts = |local: &Local| {
        let glue = local.stack.glue.clone();
        let db = local.stack.cfg.database.clone();
        async move {
            stedi::catalog::list_partitions(&glue, &db, Table::AccelerometerTrusted)
                .await
                .unwrap()
                .into_iter()
                .map(|(dt, _)| dt)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(dts(&local).await, ["2022-06-19", "2022-06-20"]);
    assert_eq!(
        local.counts().await.unwrap()["accelerometer_trusted"],
        45 + 5
    );

    // A file whose manifest names a batch object another invocation has not written yet
    // (written 0 s ago) waits: its record is redelivered, the others are done. Once that
    // object is abandoned (the manifest older than 15 minutes) the file is taken over.
    for i in [30, 31] {
        let key = format!("accelerometer/landing/session-{i}.json");
        local
            .put(
                &key,
                readings_file(2 * (i - 18), next + 2_000 * i as i64, 2),
            )
            .await
            .unwrap();
    }
    let ghost = |at: u64| stedi::transitions::Manifest {
        layout: stedi::transitions::LAYOUT,
        dts: ["2022-06-20".to_string()].into(),
        object: Some("session-30.bghost".to_string()),
        written_at: at,
        ..Default::default()
    };
    let accel = Table::AccelerometerTrusted;
    let now = stedi::transitions::compact::unix_now();
    local
        .set_manifest(accel, "session-30", &ghost(now))
        .await
        .unwrap();
    let (response, _) = stedi::lambda::invoke(&ctx, f, &batch(&[30, 31]))
        .await
        .unwrap();
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m30"]);
    assert_eq!(
        local.counts().await.unwrap()["accelerometer_trusted"],
        50 + 2
    );
    local
        .set_manifest(accel, "session-30", &ghost(now - 901))
        .await
        .unwrap();
    invoke(batch(&[30, 31])).await;
    assert_eq!(
        local.counts().await.unwrap()["accelerometer_trusted"],
        50 + 4
    );

    // The rest of the pipeline settles; reconcile has nothing to change.
    let out = local.settle().await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "{report:?}");
    assert_eq!(local.counts().await.unwrap()["accelerometer_trusted"], 54);

    // What two invocations computing one file at once can leave: a copy of its rows in a
    // batch object its manifest does not name (here every file of the first object, its
    // bytes under another batch's name). Reconcile holds the footers against the
    // manifests: each file is detached from the copy, which goes once empty.
    let dir = "accelerometer/trusted/dt=2022-06-19/";
    let copy = format!("{dir}session-0.b00000000000000ff.parquet");
    let bytes = local.get(&format!("{dir}{name}.parquet")).await.unwrap();
    local.put(&copy, bytes).await.unwrap();
    assert_eq!(
        local.counts().await.unwrap()["accelerometer_trusted"],
        54 + 35
    );
    let report = local.reconcile().await.unwrap();
    assert!(report.changed(), "{report:?}");
    assert_eq!(
        report.items.get("accelerometer_trusted").copied(),
        Some(7),
        "{report:?}"
    );
    assert!(!local.keys().await.unwrap().contains(&copy));
    assert_eq!(local.counts().await.unwrap()["accelerometer_trusted"], 54);

    // The other way: a manifest naming a batch object that does not list its file (written
    // more than 15 minutes ago, so not one on its way): session-0's manifest made to name
    // session-2 and session-7's object. Reconcile computes session-0 again (its own
    // object), then detaches it from the first object, which its manifest no longer names.
    let mut m = local.manifest(accel, "session-0").await.unwrap();
    m.object = Some(second.clone());
    m.written_at = 0;
    local.set_manifest(accel, "session-0", &m).await.unwrap();
    let report = local.reconcile().await.unwrap();
    assert_eq!(
        report.items.get("accelerometer_trusted").copied(),
        Some(2),
        "{report:?}"
    );
    assert_eq!(local.counts().await.unwrap()["accelerometer_trusted"], 54);
    assert_eq!(
        local
            .object_of(Table::AccelerometerTrusted, "session-0")
            .await
            .unwrap(),
        "session-0"
    );
    let rest: Vec<u64> = rest.into_iter().filter(|i| *i != 0).collect();
    let first = trusted_objects(&local)
        .await
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap();
    assert_eq!(first.1, rows(&rest, 5));
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "{report:?}");
}

/// A warm landing function keeps the list of erased people it read and asks one object a
/// look (the erasure epoch, conditionally) whether it still stands: an erasure made after
/// the list was read rewrites the epoch, so the person's next file is scrubbed; with no
/// erasure since, a look is one GET answered 304 and no LIST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_function_sees_an_erasure_made_after_it_listed_the_erased() {
    use stedi_infra::synthetic::{email, readings_file};
    let local = with_customers().await;
    let bucket = local.stack.cfg.bucket.clone();
    let ctx = local.stack.function_context();
    let f = stedi::lambda::Function::Transition(stedi::Transition::AccelerometerLandingToTrusted);
    let ts = 1_655_600_000_000; // 2022-06-19
    let arrive = |i: u64| {
        let (ctx, local, bucket) = (&ctx, &local, bucket.clone());
        async move {
            let key = format!("accelerometer/landing/session-{i}.json");
            local
                .put(&key, readings_file(i, ts + 1_000 * i as i64, 5))
                .await
                .unwrap();
            let (_, s) = stedi::lambda::invoke(ctx, f, &created(&bucket, &key))
                .await
                .unwrap();
            assert!(s.errors.is_empty(), "{:?}", s.errors);
            s
        }
    };
    // Cold: the epoch does not exist yet; the erased markers are listed once (none), as
    // is the folder of S3 manifests of an earlier release (empty).
    let s = arrive(0).await;
    assert_eq!((s.rows_out, s.requests.s3_list), (5, 2), "{s:?}");
    // Warm, nobody erased since: the epoch still missing, the list stands.
    let s = arrive(4).await;
    assert_eq!((s.rows_out, s.requests.s3_list), (5, 0), "{s:?}");

    // Customer 2 erased (by another function: the warm one is not told).
    let erasing = local.stack.function_context();
    stedi::transitions::erasure::erase(&erasing, &bucket, &email(2), "req-warm")
        .await
        .unwrap();
    let epoch = local
        .get(stedi::transitions::erasure::EPOCH_KEY)
        .await
        .unwrap();
    assert!(!epoch.is_empty());

    // Their session, dated before the erasure, reaches the warm function: the epoch has
    // changed, the markers are listed again, and the file is scrubbed (no rows of theirs).
    let s = arrive(2).await;
    assert_eq!(s.rows_out, 0, "{s:?}");
    assert_eq!(
        local
            .get("accelerometer/landing/session-2.json")
            .await
            .unwrap(),
        ""
    );
    assert_eq!(local.counts().await.unwrap()["accelerometer_trusted"], 10);

    // Another session: the epoch unchanged since the list (304), no LIST, and one GET of
    // it in all besides the file, its consent shard and the partition pointer.
    let s = arrive(6).await;
    let r = s.requests;
    assert_eq!((s.rows_out, r.s3_list, r.s3_get), (5, 0, 4), "{s:?}");
    assert_eq!(local.counts().await.unwrap()["accelerometer_trusted"], 15);
}

/// The phone (and Step Trainer, ML) function validates each reference shard once an
/// invocation, not once per file of its batch: ten files of one consenting customer (one
/// consent shard) GET the shard once, cold (its body) and warm (a 304), where each file
/// revalidated it before (10 GETs a batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_validates_each_reference_shard_once() {
    let local = with_customers().await;
    let ts = 1_655_600_000_000; // 2022-06-19
    let ctx = local.stack.function_context();
    for round in 0..2u64 {
        let files = (0..10u64).map(|j| {
            let key = format!("accelerometer/landing/one-{round}-{j}.json");
            let at = ts + 1_000 * (10 * round + j) as i64;
            (key, stedi_infra::synthetic::readings_file(0, at, 5))
        });
        let s = phone_files_as_one_batch(&local, &ctx, files).await;
        assert_eq!((s.sources.len(), s.rows_out), (10, 50), "{s:?}");
        // GET: the ten files, the one consent shard, the partition's compaction pointer
        // and the erasure epoch. LIST: a cold function's look at the erased markers and
        // for S3 manifests of an earlier release.
        let r = s.requests;
        let lists = if round == 0 { 2 } else { 0 };
        assert_eq!(
            (r.s3_get, r.s3_list),
            (10 + 1 + 1 + 1, lists),
            "round {round}: {r:?}"
        );
    }
}

/// A batch of files of many users reads the consent shard of each shard its users fall in:
/// with a customer or two a shard (300 consenting in the test's 32), that is every shard
/// for one batch. The reconcile advises the count that fits the lake (about 250 consenting
/// customers a shard: 2) and, migrated to it, the same batch reads the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_many_user_files_reads_a_consent_shard_per_shard_its_users_fall_in() {
    use stedi_infra::synthetic::{customers_file, email, readings_file};
    let mut local = Local::start().await.unwrap();
    local
        .drop_bytes("customer/landing/customers.json", customers_file(0, 600))
        .await
        .unwrap();
    let report = local.reconcile().await.unwrap();
    assert_eq!(report.advised_shards, Some(2), "{report:?}");
    let ts = 1_655_600_000_000; // 2022-06-19
    for (round, shards) in [(0u64, 32u32), (1, 2)] {
        if shards != local.stack.cfg.function.customer_shards {
            local.stack.cfg.function.customer_shards = shards;
            let report = local.reconcile().await.unwrap();
            assert_eq!(report.advised_shards, None, "{report:?}");
        }
        let ctx = local.stack.function_context();
        let mut touched = std::collections::BTreeSet::new();
        // Ten files of 30 consenting customers each (the even ones), 300 in all.
        let mut files = Vec::new();
        for j in 0..10u64 {
            let key = format!("accelerometer/landing/many-{round}-{j}.json");
            let at = ts + 1_000 * (10 * round + j) as i64;
            let mut body = String::new();
            for k in 0..30 {
                let i = 2 * (30 * j + k);
                body += &readings_file(i, at, 2);
                touched.insert(stedi::keys::shard_of(&email(i), shards));
            }
            files.push((key, body));
        }
        let s = phone_files_as_one_batch(&local, &ctx, files).await;
        assert_eq!((s.sources.len(), s.rows_out), (10, 600), "{s:?}");
        assert_eq!(touched.len(), shards as usize);
        // GET: the ten files, a consent shard for each shard touched, the partition's
        // compaction pointer and the erasure epoch: 44 at 32 shards, 14 at 2.
        let r = s.requests;
        assert_eq!(
            r.s3_get,
            10 + touched.len() as u64 + 2,
            "{shards} shards: {r:?}"
        );
    }
}
