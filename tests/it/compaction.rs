//! Compaction (SCALE.md rule 4): a `dt` of many small per-source objects becomes one file
//! for the readers that plan through the catalog, without a row seen twice or missed,
//! during or after, and every property of the lake survives it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use stedi::catalog;
use stedi::config::Config;
use stedi::keys;
use stedi::schema::Table;
use stedi::transitions::compact;
use stedi_infra::lake::{self, LandingFile};
use stedi_tests::truth::Truth;
use stedi_tests::{Local, sample_dir};

use crate::order::withdrawal;
use crate::pipeline;

/// Lines per phone file: the sample's 81,273 phone lines make 91 files.
const LINES: usize = 900;

/// The sample with its phone lines cut into files of [`LINES`] lines
/// (`accelerometer/landing/phone-NNN.json`); customers and Step Trainer files as they are.
fn split_sample(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stedi-it-compact-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for zone in ["customer", "step_trainer"] {
        let to = dir.join(zone).join("landing");
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(sample_dir().join(zone).join("landing")).unwrap() {
            let f = f.unwrap().path();
            std::os::unix::fs::symlink(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let mut paths: Vec<_> = std::fs::read_dir(sample_dir().join("accelerometer/landing"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let mut lines = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).unwrap();
        lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    let to = dir.join("accelerometer/landing");
    std::fs::create_dir_all(&to).unwrap();
    for (i, chunk) in lines.chunks(LINES).enumerate() {
        std::fs::write(
            to.join(format!("phone-{i:03}.json")),
            chunk.join("\n") + "\n",
        )
        .unwrap();
    }
    dir
}

fn phone_file(dir: &Path, i: usize) -> LandingFile {
    let name = format!("phone-{i:03}.json");
    LandingFile {
        table: Table::AccelerometerLanding,
        path: dir.join("accelerometer/landing").join(&name),
        key: format!("accelerometer/landing/{name}"),
    }
}

/// The one partition of `table` and the keys of the objects at its location.
async fn partition(local: &Local, table: Table) -> (String, String, Vec<String>) {
    let cfg = &local.stack.cfg;
    let parts = catalog::list_partitions(&local.stack.glue, &cfg.database, table)
        .await
        .unwrap();
    assert_eq!(parts.len(), 1, "{}: {parts:?}", table.name());
    let (dt, location) = parts.into_iter().next().unwrap();
    let prefix = location
        .strip_prefix(&format!("s3://{}/", cfg.bucket))
        .unwrap()
        .to_string();
    let objects = local
        .keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.starts_with(&prefix) && k.ends_with(".parquet"))
        .collect();
    (dt, prefix, objects)
}

async fn compact(local: &Local, force: bool) -> Vec<String> {
    let ctx = local.stack.function_context();
    lake::compact(&ctx, &local.stack.cfg.bucket, force)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dt_of_91_small_files_becomes_one_file_and_every_property_holds() {
    // One object per file (no SQS batch objects): a dt of many small objects.
    let local = Local::with_config(Config {
        compact_grace_seconds: 0,
        batch_object_bytes: 0,
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = split_sample("props");
    let files = lake::landing_files(&dir, None).unwrap();
    assert_eq!(
        files
            .iter()
            .filter(|f| f.table == Table::AccelerometerLanding)
            .count(),
        91
    );
    let out = local.drop(&files, 0).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let truth = Truth::compute(&dir, false).unwrap();
    pipeline::assert_batch_truth(&local, &truth).await;
    let t = Table::AccelerometerTrusted;
    let (dt, before, objects) = partition(&local, t).await;
    assert_eq!(before, keys::partition_prefix(t, &dt));
    assert_eq!(objects.len(), 91);
    let ml_objects = partition(&local, Table::MachineLearningCurated)
        .await
        .2
        .len();
    assert!(ml_objects > 16, "{ml_objects} ML objects");

    // Compact: the phone and ML partitions are due (>= COMPACT_MIN_OBJECTS small objects),
    // the Step Trainer one (a few sample files) is not.
    let lines = compact(&local, false).await;
    assert!(
        lines[0].starts_with("accelerometer_trusted")
            && lines[0].contains("partitions compacted 1, files written 1, sources 91, rows 40981"),
        "{lines:?}"
    );
    assert!(lines[1].contains("partitions compacted 0"), "{lines:?}");
    assert!(lines[2].contains("partitions compacted 1"), "{lines:?}");
    let (_, location, objects) = partition(&local, t).await;
    assert_eq!(location, keys::generation_prefix(t, 1, &dt));
    assert_eq!(objects, [keys::holder_key(t, 1, &dt, 0, 1)]);
    let (_, ml_location, ml_now) = partition(&local, Table::MachineLearningCurated).await;
    assert_eq!(
        ml_location,
        keys::generation_prefix(Table::MachineLearningCurated, 1, &dt)
    );
    assert_eq!(ml_now.len(), 1);
    let (_, step_location, _) = partition(&local, Table::StepTrainerTrusted).await;
    assert_eq!(
        step_location,
        keys::partition_prefix(Table::StepTrainerTrusted, &dt)
    );
    pipeline::assert_batch_truth(&local, &truth).await;
    assert_eq!(
        local.counts().await.unwrap(),
        std::collections::BTreeMap::from(pipeline::EXPECTED)
    );
    // With no grace period the per-source objects are held at once, outside the table
    // location: readers that list it see each row once, in the compacted file.
    let under = |all: &[String], prefix: &str| all.iter().filter(|k| k.starts_with(prefix)).count();
    let all = local.keys().await.unwrap();
    let working = keys::partition_prefix(t, &dt);
    assert_eq!(under(&all, &working), 0);
    assert_eq!(under(&all, &keys::held_key(&working)), 91);

    // A re-drop of one small file after compaction changes no count: its rows leave the
    // compacted file for a copy of its object.
    local.drop(&[phone_file(&dir, 7)], 0).await.unwrap();
    let (_, _, objects) = partition(&local, t).await;
    assert_eq!(
        objects,
        [
            keys::holder_key(t, 1, &dt, 0, 1),
            keys::copy_key(t, 1, &dt, "phone-007")
        ]
    );
    pipeline::assert_batch_truth(&local, &truth).await;

    // A changed re-upload replaces exactly that source's rows.
    let changed = phone_file(&dir, 12);
    let text = std::fs::read_to_string(&changed.path).unwrap();
    let kept: Vec<&str> = text.lines().skip(300).collect();
    std::fs::write(&changed.path, kept.join("\n") + "\n").unwrap();
    local.drop(&[changed], 0).await.unwrap();
    let truth = Truth::compute(&dir, false).unwrap();
    assert!(truth.accelerometer_trusted.len() < 40981);
    pipeline::assert_batch_truth(&local, &truth).await;

    // Compaction again: 2 copies are not due; forced, they are folded into generation 2,
    // and generation 1 is deleted at once (grace 0). A third run has nothing to do.
    let lines = compact(&local, false).await;
    assert!(lines[0].contains("partitions compacted 0"), "{lines:?}");
    compact(&local, true).await;
    let (_, location, objects) = partition(&local, t).await;
    assert_eq!(location, keys::generation_prefix(t, 2, &dt));
    assert_eq!(objects.len(), 1);
    let all = local.keys().await.unwrap();
    let gen1 = keys::generation_prefix(t, 1, &dt);
    assert!(
        !all.iter().any(|k| k.starts_with(&gen1)),
        "generation 1 left"
    );
    pipeline::assert_batch_truth(&local, &truth).await;
    let lines = compact(&local, true).await;
    assert!(
        lines.iter().all(|l| l.contains("partitions compacted 0")),
        "{lines:?}"
    );
    assert_eq!(local.keys().await.unwrap(), all);

    // A withdrawal, then reconcile: the customer's rows leave the compacted files too.
    let email = "Santosh.Clayton@test.com";
    local.drop(&[withdrawal(email, &dir)], 0).await.unwrap();
    local.reconcile().await.unwrap();
    let truth = Truth::compute(&dir, false).unwrap();
    assert!(!truth.customer_trusted.contains(email));
    pipeline::assert_batch_truth(&local, &truth).await;
    let (_, location, _) = partition(&local, t).await;
    assert_eq!(location, keys::generation_prefix(t, 2, &dt));
    // And reconcile stays incremental: nothing left to do.
    assert!(!local.reconcile().await.unwrap().changed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_arrivals_during_a_compaction_see_every_row_once() {
    // One object per file (no SQS batch objects): a dt of many small objects.
    let local = Local::with_config(Config {
        batch_object_bytes: 0,
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = split_sample("flight");
    let files = lake::landing_files(&dir, None).unwrap();
    local.drop(&files, 0).await.unwrap();
    let truth = Truth::compute(&dir, false).unwrap();
    let want = std::collections::BTreeMap::from(pipeline::EXPECTED);
    let t = Table::AccelerometerTrusted;
    let (dt, _, _) = partition(&local, t).await;

    // Compaction in one task; queries and three re-drops (arrivals) meanwhile.
    let ctx = local.stack.function_context();
    let bucket = local.stack.cfg.bucket.clone();
    let now = compact::unix_now();
    let dt2 = dt.clone();
    let task = tokio::spawn(async move {
        for table in compact::tables() {
            compact::compact_dt(&ctx, &bucket, table, &dt2, now, false)
                .await
                .unwrap();
        }
    });
    let mut queries = 0;
    let mut redropped = false;
    while !task.is_finished() {
        assert_eq!(local.counts().await.unwrap(), want, "query {queries}");
        queries += 1;
        if !redropped {
            let again: Vec<_> = [3, 40, 77].map(|i| phone_file(&dir, i)).into();
            local.drop(&again, 0).await.unwrap();
            redropped = true;
        }
    }
    task.await.unwrap();
    assert!(queries > 0);
    assert_eq!(local.counts().await.unwrap(), want);
    pipeline::assert_batch_truth(&local, &truth).await;
    let (_, location, _) = partition(&local, t).await;
    assert_eq!(location, keys::generation_prefix(t, 1, &dt));

    // After a second compaction the replaced generation stays for the grace period
    // (COMPACT_GRACE_SECONDS, 3600 by default), then goes.
    local.drop(&[phone_file(&dir, 5)], 0).await.unwrap();
    let ctx = local.stack.function_context();
    let bucket = &local.stack.cfg.bucket;
    compact::compact_dt(&ctx, bucket, t, &dt, now, true)
        .await
        .unwrap();
    let gen1 = keys::generation_prefix(t, 1, &dt);
    let held: BTreeSet<String> = local
        .keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.starts_with(&gen1))
        .collect();
    assert!(!held.is_empty());
    // Within the grace period the per-source objects stay where they are.
    let working = keys::partition_prefix(t, &dt);
    let count = |all: &[String], prefix: &str| all.iter().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(count(&local.keys().await.unwrap(), &working), 91);
    assert_eq!(local.counts().await.unwrap(), want);
    let later = now + Config::default().compact_grace_seconds;
    let s = compact::compact_dt(&ctx, bucket, t, &dt, later, false)
        .await
        .unwrap();
    assert_eq!(
        s.deleted.iter().filter(|k| k.starts_with(&gen1)).count(),
        held.len()
    );
    let all = local.keys().await.unwrap();
    assert_eq!(count(&all, &gen1), 0);
    // The `dt=` folder's grace period is over too: its objects are held.
    assert_eq!(count(&all, &working), 0);
    assert_eq!(count(&all, &keys::held_key(&working)), 91);
    assert_eq!(local.counts().await.unwrap(), want);
    pipeline::assert_batch_truth(&local, &truth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_partition_emptied_and_filled_again_stays_readable() {
    // One object per file (no SQS batch objects): a dt of many small objects.
    let local = Local::with_config(Config {
        compact_grace_seconds: 0,
        batch_object_bytes: 0,
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = split_sample("refill");
    let files: Vec<LandingFile> = lake::landing_files(&dir, None)
        .unwrap()
        .into_iter()
        .filter(|f| f.table == Table::CustomerLanding)
        .chain([phone_file(&dir, 0)])
        .collect();
    local.drop(&files, 0).await.unwrap();
    let t = Table::AccelerometerTrusted;
    let rows = |counts: &std::collections::BTreeMap<&str, u64>| counts["accelerometer_trusted"];
    let first = rows(&local.counts().await.unwrap());
    local.drop(&[phone_file(&dir, 1)], 0).await.unwrap();
    let before = rows(&local.counts().await.unwrap());
    let second = before - first;
    assert!(first > 0 && second > 0, "{first} {second}");
    compact(&local, true).await;
    let (dt, location, _) = partition(&local, t).await;
    assert_eq!(location, keys::generation_prefix(t, 1, &dt));
    assert_eq!(rows(&local.counts().await.unwrap()), before);

    // Both sources gone: reconcile removes their rows; the partition stays on its
    // (now empty) generation.
    for f in [phone_file(&dir, 0), phone_file(&dir, 1)] {
        local
            .stack
            .s3
            .delete_object()
            .bucket(&local.stack.cfg.bucket)
            .key(&f.key)
            .send()
            .await
            .unwrap();
    }
    local.reconcile().await.unwrap();
    let (_, location, objects) = partition(&local, t).await;
    assert_eq!(location, keys::generation_prefix(t, 1, &dt));
    assert!(objects.is_empty(), "{objects:?}");
    assert_eq!(rows(&local.counts().await.unwrap()), 0);

    // A source arriving again is read through the catalog at once.
    local.drop(&[phone_file(&dir, 1)], 0).await.unwrap();
    let (_, _, objects) = partition(&local, t).await;
    assert_eq!(objects, [keys::copy_key(t, 1, &dt, "phone-001")]);
    assert_eq!(rows(&local.counts().await.unwrap()), second);
}
