//! Keys as S3 really sends them: spaces, plus signs and unicode reach the handler intact.

use stedi::schema::Table;
use stedi_infra::lake::LandingFile;
use stedi_tests::{Local, sample_dir};

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
/// consent shard its readers need, the compaction pointer and each user's tombstone; PUT
/// the one `dt` output, the manifest (created where there is none: no old one to read)
/// and each user's erasure-index posting; DELETE the stale quarantine object; one Glue
/// BatchCreatePartition), and its
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
    let r = s.requests;
    assert_eq!(
        (r.s3_get, r.s3_put, r.s3_delete, r.s3_list, r.s3_head),
        (77, 52, 1, 0, 0),
        "{r:?}"
    );
    assert_eq!((r.glue_calls, r.sqs_calls), (1, 0), "{r:?}");

    // The lineage records one answer per user of the file (by the e-mail's hash: its
    // consent date, or nothing), and the shards it read are those users' shards.
    let manifest = stedi::transitions::manifest_key(Table::AccelerometerTrusted, stem);
    let manifest_bytes = local.get(&manifest).await.unwrap();
    let lineage: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
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
    // (missing: never compacted, nothing to keep in step), and each user's tombstone
    // (missing: nobody erased); no previous manifest (the new one is created with
    // If-None-Match). PUTs: the output, the manifest and one (empty) erasure-index posting
    // per user.
    assert_eq!(r.s3_get, 1 + shards.len() as u64 + 1 + users.len() as u64);
    assert_eq!(r.s3_put, 2 + users.len() as u64);
    let mut shard_bytes = 0;
    for k in &shards {
        shard_bytes += local.get(k).await.unwrap().len() as u64;
    }
    assert_eq!(r.bytes_read, landing_bytes + shard_bytes);
    let written = local.get(&output).await.unwrap().len() + manifest_bytes.len();
    assert_eq!(r.bytes_written, written as u64);

    // The summary line carries them as metrics.
    let line: serde_json::Value = serde_json::from_str(&stedi::lambda::summary_line(
        stedi::lambda::Function::Transition(stedi::Transition::AccelerometerLandingToTrusted),
        &s,
    ))
    .unwrap();
    assert_eq!(line["s3_get"], 77);
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
    use stedi_infra::synthetic::{customers_file, readings_file};
    let local = Local::start().await.unwrap();
    local
        .drop_bytes("customer/landing/customers.json", customers_file(0, 40))
        .await
        .unwrap();
    let ts = 1_655_600_000_000; // 2022-06-19
    for i in 0..10u64 {
        let key = format!("accelerometer/landing/session-{i}.json");
        let body = readings_file(2 * i, ts + 1_000 * i as i64, 5);
        local.put(&key, body).await.unwrap();
    }
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
/// batch read that partition's compaction pointer once, after all ten objects' writes (the
/// order that keeps arrivals and compaction in step), and register the partition once.
/// Every other request is per object: GET the file and its user's tombstone, PUT the
/// output, the manifest (created where there is none, so no old one is read) and the
/// user's erasure-index posting, plus one GET per consent shard the users fall in. A Step
/// Trainer file reads its old manifest once (for its waiting markers and its old outputs
/// alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reads_each_partition_pointer_once_and_each_manifest_once() {
    use serde_json::json;
    use stedi_infra::synthetic::{customers_file, email, readings_file};
    let local = Local::start().await.unwrap();
    local
        .drop_bytes("customer/landing/customers.json", customers_file(0, 40))
        .await
        .unwrap();
    let bucket = local.stack.cfg.bucket.clone();
    // The EventBridge event S3 sends for a new object.
    let created = |key: &str| {
        json!({"source": "aws.s3", "detail-type": "Object Created",
            "detail": {"bucket": {"name": bucket}, "object": {"key": key}}})
    };
    let ts = 1_655_600_000_000; // 2022-06-19
    let mut records = Vec::new();
    for i in 0..10u64 {
        let key = format!("accelerometer/landing/session-{i}.json");
        let body = readings_file(2 * i, ts + 1_000 * i as i64, 5);
        local.put(&key, body).await.unwrap();
        records.push(
            json!({"eventSource": "aws:sqs", "messageId": format!("m{i}"),
            "body": created(&key).to_string()}),
        );
    }
    // One invocation of a cold function with the ten records, as the event source
    // mapping delivers a batch.
    let ctx = local.stack.function_context();
    let f = stedi::lambda::Function::Transition(stedi::Transition::AccelerometerLandingToTrusted);
    let (response, s) = stedi::lambda::invoke(&ctx, f, &json!({ "Records": records }))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{s:?}");
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!((s.sources.len(), s.rows_out), (10, 50));
    let n = local.stack.cfg.function.customer_shards;
    let shards: std::collections::BTreeSet<u32> = (0..10u64)
        .map(|i| stedi::keys::shard_of(&email(2 * i), n))
        .collect();
    let r = s.requests;
    assert_eq!(r.s3_get, 10 + shards.len() as u64 + 1 + 10, "{r:?}");
    assert_eq!((r.s3_put, r.s3_list), (30, 0), "{r:?}");
    assert_eq!(r.glue_calls, 1, "{r:?}");
    let counts = local.counts().await.unwrap();
    assert_eq!(counts["accelerometer_trusted"], 50);

    // The rest of the pipeline settles (the ten files' queued events find them done); then
    // a Step Trainer file of customer 0's device, now owned, reads its manifest once: GET
    // the file, the serial's device-index shard, the manifest, the pointer and the
    // serial's tombstone; PUT the output, the manifest and the serial's posting.
    let out = local.settle().await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let key = "step_trainer/landing/session-0.json";
    local
        .put(key, stedi_infra::synthetic::step_file(0, ts, 5))
        .await
        .unwrap();
    let f = stedi::lambda::Function::Transition(stedi::Transition::StepTrainerLandingToTrusted);
    let (_, s) = stedi::lambda::invoke(&ctx, f, &created(key)).await.unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!((s.sources.len(), s.rows_out), (1, 5));
    let r = s.requests;
    assert_eq!((r.s3_get, r.s3_put, r.s3_list), (5, 3, 0), "{r:?}");
}
