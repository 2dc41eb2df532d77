//! Properties 2 and 4: no lost updates on the snapshots, outputs replaced without debris,
//! and retryable failures redelivered until the tables are right.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stedi::Transition;
use stedi::catalog;
use stedi::schema::Table;
use stedi::store::{Precondition, PutOutcome, Store};
use stedi_infra::runner::Runner;
use stedi_tests::proxy::Proxy;
use stedi_tests::truth::Truth;
use stedi_tests::{Local, sample_dir};

use crate::{pipeline, rows};

fn customer_lines() -> Vec<String> {
    std::fs::read_to_string(sample_dir().join("customer/landing/customer-1691348231425.json"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Splits the sample's customers over `n` files and processes them all at once.
async fn concurrent_customers(n: usize) {
    let local = Local::start().await.unwrap();
    let lines = customer_lines();
    let mut keys = Vec::new();
    for i in 0..n {
        let part: Vec<&str> = lines
            .iter()
            .skip(i)
            .step_by(n)
            .map(String::as_str)
            .collect();
        let key = format!("customer/landing/part {i}.json");
        local.put(&key, part.join("\n")).await.unwrap();
        keys.push(key);
    }
    let ctx = Arc::new(local.stack.function_context());
    let mut tasks = tokio::task::JoinSet::new();
    for key in keys {
        let (ctx, bucket) = (ctx.clone(), local.stack.cfg.bucket.clone());
        tasks.spawn(async move {
            let ev = stedi::event::s3_notification(&bucket, &key);
            stedi::lambda::handle(&ctx, Transition::CustomerLandingToTrusted, &ev)
                .await
                .unwrap()
                .1
        });
    }
    let mut conflicts = 0;
    let mut upserted = 0;
    while let Some(s) = tasks.join_next().await {
        let s = s.unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        conflicts += s.conflicts;
        upserted += s.rows_out;
    }
    let truth = Truth::compute(&sample_dir(), false).unwrap();
    let trusted = rows::emails(&local.batches(Table::CustomerTrusted).await.unwrap());
    assert_eq!(trusted.len(), 482);
    assert_eq!(
        trusted,
        truth.customer_trusted.iter().cloned().collect::<Vec<_>>()
    );
    assert_eq!(upserted, 482);
    if n >= 8 {
        assert!(conflicts > 0, "{n} concurrent writers never lost a race");
    }
    eprintln!("{n} writers: {conflicts} conditional-write conflicts retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_snapshot_writers_lose_nothing() {
    concurrent_customers(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn eight_concurrent_snapshot_writers_lose_nothing() {
    concurrent_customers(8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_is_retried_on_the_fresh_snapshot() {
    let local = Local::start().await.unwrap();
    let ctx = local.stack.function_context();
    let bucket = local.stack.cfg.bucket.clone();
    let customer = |email: &str| {
        let line = json!({"email": email, "lastUpdateDate": 1, "shareWithResearchAsOfDate": 1,
                          "serialNumber": "s"})
        .to_string();
        let mut cells = Vec::new();
        stedi::record::parse_line(
            line.as_bytes(),
            Table::CustomerTrusted.columns(),
            &mut cells,
        )
        .unwrap();
        cells
            .into_iter()
            .map(|c| c.into_owned())
            .collect::<stedi::rules::CustomerRow>()
    };
    let theirs = stedi::rules::Customers::latest_of([customer("theirs@x")]);
    let theirs =
        stedi::transitions::encode_customers(Table::CustomerTrusted, &theirs, 100).unwrap();
    let key = stedi::keys::shard_key(Table::CustomerTrusted, 3);
    let runtime = tokio::runtime::Handle::current();
    let mut calls = 0;
    let mut summary = stedi::summary::Summary::default();
    stedi::transitions::rewrite_shard(
        &ctx,
        &bucket,
        Table::CustomerTrusted,
        3,
        &mut summary,
        |cur| {
            calls += 1;
            if calls == 1 {
                // Another invocation writes between our read and our write.
                tokio::task::block_in_place(|| {
                    runtime
                        .block_on(ctx.store.put(&bucket, &key, theirs.clone()))
                        .unwrap()
                });
            }
            let mut next = cur.clone();
            next.rows.insert("ours@x".into(), customer("ours@x"));
            Some(next)
        },
    )
    .await
    .unwrap();
    assert_eq!(calls, 2);
    assert_eq!(summary.conflicts, 1);
    let emails = rows::emails(&local.batches(Table::CustomerTrusted).await.unwrap());
    assert_eq!(emails, ["ours@x", "theirs@x"]);
}

/// A conditional write refused by its own success (its response lost, the SDK's retry
/// answered 412): the re-read finds the body in place, and the update is not run again
/// (what it noted of the change stands).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_by_its_own_success_is_not_applied_again() {
    let local = Local::start().await.unwrap();
    let ctx = local.stack.function_context();
    let bucket = local.stack.cfg.bucket.clone();
    let key = "_stedi/devices/part-00003.jsonl";
    local.put(key, "v1").await.unwrap();
    let runtime = tokio::runtime::Handle::current();
    let (mut calls, mut summary) = (0, stedi::summary::Summary::default());
    stedi::transitions::rewrite_object(&ctx, &bucket, key, &mut summary, |cur| {
        calls += 1;
        assert_eq!(
            cur.as_deref(),
            Some(&b"v1"[..]),
            "update ran on its own write"
        );
        // The same bytes land between our read and our conditional write.
        tokio::task::block_in_place(|| {
            runtime
                .block_on(ctx.store.put(&bucket, key, "v2".into()))
                .unwrap()
        });
        Ok(Some("v2".into()))
    })
    .await
    .unwrap();
    assert_eq!((calls, summary.conflicts), (1, 1));
    assert_eq!(summary.outputs, [key]);
    assert_eq!(&local.get(key).await.unwrap()[..], b"v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_answer_412_on_a_stale_etag() {
    let local = Local::start().await.unwrap();
    let store = Store::new(local.stack.s3.clone());
    let b = &local.stack.cfg.bucket;
    let first = store
        .put_if(b, "k", "a".into(), &Precondition::Absent)
        .await
        .unwrap();
    let PutOutcome::Written(etag) = first else {
        panic!("first write refused")
    };
    let again = store
        .put_if(b, "k", "b".into(), &Precondition::Absent)
        .await
        .unwrap();
    assert_eq!(again, PutOutcome::PreconditionFailed);
    let next = store
        .put_if(b, "k", "c".into(), &Precondition::Matches(etag.clone()))
        .await
        .unwrap();
    let PutOutcome::Written(current) = next else {
        panic!("a write on the current ETag refused")
    };
    let stale = store
        .put_if(b, "k", "d".into(), &Precondition::Matches(etag.clone()))
        .await
        .unwrap();
    assert_eq!(stale, PutOutcome::PreconditionFailed);
    assert_eq!(&local.get("k").await.unwrap()[..], b"c");
    // A delete on a stale ETag leaves the object (how a reconcile pass that read the
    // full-check mark leaves one another pass wrote since); on the current one it deletes.
    assert!(!store.delete_if(b, "k", &etag).await.unwrap());
    assert_eq!(&local.get("k").await.unwrap()[..], b"c");
    assert!(store.delete_if(b, "k", &current).await.unwrap());
    assert!(!local.keys().await.unwrap().contains(&"k".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocessing_a_source_replaces_its_outputs_and_partitions() {
    let local = Local::start().await.unwrap();
    let customers = customer_lines().join("\n");
    local
        .drop_bytes("customer/landing/c.json", customers)
        .await
        .unwrap();
    let user = "Santosh.Clayton@test.com";
    let reading =
        |ts: i64| json!({"user": user, "timestamp": ts, "x": 1, "y": 2, "z": 3}).to_string();
    let day = 86_400_000;
    let key = "accelerometer/landing/phone.json";
    let t0 = 1655564444103; // 2022-06-18
    local
        .drop_bytes(key, format!("{}\n{}", reading(t0), reading(t0 + 1)))
        .await
        .unwrap();
    let old = "accelerometer/trusted/dt=2022-06-18/phone.parquet";
    assert!(local.keys().await.unwrap().contains(&old.to_string()));

    // The same object again, now with readings of the next two days only.
    let out = local
        .drop_bytes(
            key,
            format!("{}\n{}", reading(t0 + day), reading(t0 + 2 * day)),
        )
        .await
        .unwrap();
    let s = out.of_function("accelerometer_landing_to_trusted");
    assert_eq!(s.deleted, [old]);
    let keys = local.keys().await.unwrap();
    let trusted: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("accelerometer/trusted/dt="))
        .collect();
    assert_eq!(
        trusted,
        [
            "accelerometer/trusted/dt=2022-06-19/phone.parquet",
            "accelerometer/trusted/dt=2022-06-20/phone.parquet"
        ]
    );
    let parts = catalog::list_partitions(&local.stack.glue, "stedi", Table::AccelerometerTrusted)
        .await
        .unwrap();
    let dts: Vec<&str> = parts.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(
        dts,
        ["2022-06-19", "2022-06-20"],
        "no partition points at nothing"
    );
    assert_eq!(local.counts().await.unwrap()["accelerometer_trusted"], 2);

    // And emptied: every output and partition goes.
    let out = local.drop_bytes(key, "").await.unwrap();
    assert_eq!(
        out.of_function("accelerometer_landing_to_trusted")
            .deleted
            .len(),
        2
    );
    let parts = catalog::list_partitions(&local.stack.glue, "stedi", Table::AccelerometerTrusted)
        .await
        .unwrap();
    assert!(parts.is_empty(), "{parts:?}");
    assert_eq!(local.counts().await.unwrap()["accelerometer_trusted"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_outage_mid_drop_is_retried_to_the_batch_truth() {
    let local = Local::start().await.unwrap();
    let target = local
        .moto
        .endpoint
        .trim_start_matches("http://")
        .to_string();
    let proxy = Proxy::start(target).await.unwrap();
    // The handlers reach S3 and Glue through the proxy; the queues do not.
    let faulty = local.via(&proxy.endpoint).await.unwrap();
    let mut runner = Runner::with_context(&local.stack, faulty.function_context())
        .await
        .unwrap();
    let files = stedi_infra::lake::landing_files(&sample_dir(), None).unwrap();
    let zone = |t: Table| -> Vec<_> { files.iter().filter(|f| f.table == t).cloned().collect() };
    let timeout = Duration::from_secs(300);
    let customers = zone(Table::CustomerLanding);
    stedi_infra::lake::drop_files(&local.stack, &mut runner, &customers, 0, timeout, |_| {})
        .await
        .unwrap();

    // The endpoint goes away while the accelerometer files are being processed ...
    proxy.set_down(true);
    for f in zone(Table::AccelerometerLanding) {
        stedi_infra::lake::upload(&local.stack, &f).await.unwrap();
    }
    assert_eq!(runner.pump_once().await.unwrap(), 9);
    assert!(proxy.refused() > 0, "the outage never hit a request");
    let failed = runner.by_function["accelerometer_landing_to_trusted"]
        .errors
        .len();
    assert_eq!(
        failed, 9,
        "every record of the batch fails and stays in the queue"
    );
    // ... and comes back: SQS redelivers the failed records.
    proxy.set_down(false);
    runner.drain(timeout).await.unwrap();
    let steps = zone(Table::StepTrainerLanding);
    stedi_infra::lake::drop_files(&local.stack, &mut runner, &steps, 0, timeout, |_| {})
        .await
        .unwrap();
    assert_eq!(runner.dead_letters().await.unwrap(), 0);
    let counts = local.counts().await.unwrap();
    assert_eq!(counts, std::collections::BTreeMap::from(pipeline::EXPECTED));
    let truth = Truth::compute(&sample_dir(), false).unwrap();
    pipeline::assert_batch_truth(&local, &truth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_keeps_failing_is_parked_in_the_dead_letter_queue() {
    let local = Local::start().await.unwrap();
    let target = local
        .moto
        .endpoint
        .trim_start_matches("http://")
        .to_string();
    let proxy = Proxy::start(target).await.unwrap();
    proxy.set_down(true);
    let faulty = local.via(&proxy.endpoint).await.unwrap();
    let mut runner = Runner::with_context(&local.stack, faulty.function_context())
        .await
        .unwrap();
    local
        .put("customer/landing/c.json", customer_lines().join("\n"))
        .await
        .unwrap();
    runner.drain(Duration::from_secs(120)).await.unwrap();
    // maxReceiveCount is 3 in the test stack: three failed invocations, then the DLQ.
    assert_eq!(runner.invocations, 3);
    assert_eq!(runner.summary.errors.len(), 3);
    assert_eq!(runner.dead_letters().await.unwrap(), 1);
    assert!(
        local
            .keys()
            .await
            .unwrap()
            .iter()
            .all(|k| !k.contains("trusted"))
    );
}
