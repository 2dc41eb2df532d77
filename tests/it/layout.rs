//! The lake's layout: every table location holds only that table's Parquet data files (the
//! bookkeeping lives under `_stedi/`), and a lake of the earlier layout is migrated by
//! `reconcile` with nothing lost.

use std::collections::BTreeMap;

use stedi::keys::BOOKKEEPING_PREFIX;
use stedi::schema::{Format, Table};
use stedi_tests::Local;

use crate::pipeline;

/// Every object under each Parquet table's location, read the way generic readers
/// (awswrangler without a partition filter, Glue crawlers) read it: recursively.
fn non_data_objects(keys: &[String]) -> Vec<String> {
    let mut bad = Vec::new();
    for t in Table::ALL
        .into_iter()
        .filter(|t| t.format() == Format::Parquet)
    {
        for k in keys.iter().filter(|k| k.starts_with(t.prefix())) {
            let rest = &k[t.prefix().len()..];
            let data_file = rest.ends_with(".parquet")
                && rest
                    .split('/')
                    .rev()
                    .skip(1)
                    .all(|seg| seg.starts_with("dt=") && t.partitioned());
            if !data_file {
                bad.push(k.clone());
            }
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_locations_hold_only_parquet_data_and_old_lakes_migrate() {
    let local = Local::start().await.unwrap();
    local.drop_sample(0).await.unwrap();
    let keys = local.keys().await.unwrap();
    assert_eq!(non_data_objects(&keys), Vec::<String>::new());
    let lineage_prefix = format!("{BOOKKEEPING_PREFIX}lineage/");
    let lineage: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with(&lineage_prefix))
        .collect();
    // The ML join's side manifests are S3 objects, one per trusted object (one per SQS
    // batch: the 9 phone files arrive together, as do the 3 Step Trainer files).
    assert_eq!(lineage.len(), 2, "{lineage:?}");
    // The landing files' manifests are entries of the index table: accelerometer_trusted
    // 9 sources, step_trainer_trusted 3.
    let lineage_entries = local.index_entries("lineage").await.unwrap();
    let mut manifests = Vec::new();
    for (table, stem) in &lineage_entries {
        let table = Table::from_name(table).unwrap();
        manifests.push((
            table,
            stem.clone(),
            local.manifest(table, stem).await.unwrap(),
        ));
    }
    let per_table = |t: Table| manifests.iter().filter(|m| m.0 == t).count();
    assert_eq!(
        (
            per_table(Table::AccelerometerTrusted),
            per_table(Table::StepTrainerTrusted),
            manifests.len()
        ),
        (9, 3, 12)
    );

    // The earliest layout kept every manifest as an S3 object inside the table locations.
    let mut moved = 0;
    for key in &lineage {
        let rest = &key[lineage_prefix.len()..];
        let (table, file) = rest.split_once('/').unwrap();
        let table = Table::from_name(table).unwrap();
        let old = format!("{}_manifests/{file}", table.prefix());
        local
            .put(&old, local.get(key).await.unwrap())
            .await
            .unwrap();
        local
            .stack
            .s3
            .delete_object()
            .bucket(&local.stack.cfg.bucket)
            .key(key.as_str())
            .send()
            .await
            .unwrap();
        moved += 1;
    }
    for (table, stem, m) in &manifests {
        let old = format!("{}_manifests/{stem}.json", table.prefix());
        local
            .put(&old, serde_json::to_vec(m).unwrap())
            .await
            .unwrap();
    }
    let bucket = &local.stack.cfg.bucket;
    let keyed = lineage_entries
        .iter()
        .map(|(t, stem)| (format!("{bucket}/lineage/{t}"), stem.clone()))
        .collect();
    local.index().remove(keyed).await.unwrap();
    assert_eq!(local.index_entries("lineage").await.unwrap(), Vec::new());
    // Each moves twice: into the bookkeeping prefix, then into the index table.
    moved += 2 * manifests.len();
    assert_eq!(non_data_objects(&local.keys().await.unwrap()).len(), 14);
    // And the erasure postings and the ML join index as empty S3 objects, not entries of
    // the index table.
    let postings = local.all_postings().await.unwrap();
    assert_eq!(postings.len(), 50);
    local.unpost(&postings).await.unwrap();
    for (h, l) in &postings {
        let key = stedi::transitions::erasure::posting_key(h, l);
        local.put(&key, Vec::new()).await.unwrap();
    }
    let join = local.join_entries().await.unwrap();
    assert_eq!(join.len(), 4, "{join:?}");
    let entries = join
        .iter()
        .map(|(dt, sk)| (format!("{}/join/{dt}", local.stack.cfg.bucket), sk.clone()))
        .collect();
    local.index().remove(entries).await.unwrap();
    // An S3 marker per folder entry (`dt=<dt>/<folder>`); the roster entries (`dt=<dt>`)
    // come back from them.
    let markers: Vec<String> = join
        .iter()
        .filter(|(p, _)| p.contains('/'))
        .map(|(p, sk)| format!("_stedi/join/{p}/{sk}"))
        .collect();
    assert_eq!(markers.len(), 2);
    for key in &markers {
        local.put(key, Vec::new()).await.unwrap();
    }
    assert_eq!(local.all_postings().await.unwrap(), Vec::new());
    assert_eq!(local.join_entries().await.unwrap(), Vec::new());

    let report = local.reconcile().await.unwrap();
    assert_eq!(
        report.migrated,
        moved + postings.len() + markers.len(),
        "{report:?}"
    );
    // Every entry is in the table again, none left in S3.
    assert_eq!(local.all_postings().await.unwrap(), postings);
    assert_eq!(local.join_entries().await.unwrap(), join);
    assert_eq!(
        local.index_entries("lineage").await.unwrap(),
        lineage_entries
    );
    for (table, stem, m) in &manifests {
        assert_eq!(&local.manifest(*table, stem).await.unwrap(), m);
    }
    // The lineage came along: nothing is recomputed.
    assert!(report.items.values().all(|n| *n == 0), "{report:?}");
    let after = local.keys().await.unwrap();
    assert_eq!(non_data_objects(&after), Vec::<String>::new());
    // The same objects, and the mark of the pass that found nothing to recompute.
    let mut want = keys.clone();
    want.push(stedi::keys::RECONCILE_CHECKED.to_string());
    want.sort();
    assert_eq!(after, want);
    assert_eq!(
        local.counts().await.unwrap(),
        BTreeMap::from(pipeline::EXPECTED)
    );
    let again = local.reconcile().await.unwrap();
    assert!(!again.changed(), "{again:?}");
}

/// A lake of layout 4 kept each landing file's manifest as an S3 object. Until `reconcile`
/// moves them into the index table, the functions read them there: a phone file uploaded
/// again replaces its rows (without its old manifest they would be written a second time),
/// a deleted one takes them out, and each S3 manifest goes once its file is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_of_an_older_lake_are_honoured_before_reconcile_moves_them() {
    let local = Local::start().await.unwrap();
    local.drop_sample(0).await.unwrap();
    let accel = Table::AccelerometerTrusted;
    let bucket = local.stack.cfg.bucket.clone();
    let stems = local.manifest_stems(accel).await.unwrap();
    assert_eq!(stems.len(), 9);
    // Two files with rows in accelerometer_trusted: their manifests put back as S3
    // objects, their entries removed.
    let mut with_rows = Vec::new();
    for stem in &stems {
        if !local.manifest(accel, stem).await.unwrap().dts.is_empty() {
            with_rows.push(stem.clone());
        }
    }
    assert_eq!(with_rows.len(), 9, "{with_rows:?}");
    let (again, gone) = (&with_rows[0], &with_rows[1]);
    let mut legacy = Vec::new();
    for stem in [again, gone] {
        let m = local.manifest(accel, stem).await.unwrap();
        // The sample's phone files arrive in one batch: one object holds their rows.
        assert!(
            stedi::transitions::is_batch_name(m.object_of(stem)),
            "{m:?}"
        );
        let key = stedi::transitions::legacy_manifest_key(accel, stem);
        local
            .put(&key, serde_json::to_vec(&m).unwrap())
            .await
            .unwrap();
        legacy.push(key);
    }
    let pk = format!("{bucket}/lineage/{}", accel.name());
    let entries = vec![(pk.clone(), again.clone()), (pk, gone.clone())];
    local.index().remove(entries).await.unwrap();
    assert_eq!(local.manifest_stems(accel).await.unwrap().len(), 7);

    // Uploaded again, alone: its own object now, its rows out of the batch's.
    let landing = format!("accelerometer/landing/{again}.json");
    let body = local.get(&landing).await.unwrap();
    let out = local.drop_bytes(&landing, body).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    assert_eq!(
        local.counts().await.unwrap(),
        BTreeMap::from(pipeline::EXPECTED)
    );
    assert_eq!(local.object_of(accel, again).await.unwrap(), *again);
    let keys = local.keys().await.unwrap();
    assert!(!keys.contains(&legacy[0]), "{keys:?}");
    assert!(keys.contains(&legacy[1]), "{keys:?}");

    // Deleted: its rows leave with its S3 manifest.
    let landing = format!("accelerometer/landing/{gone}.json");
    local.delete(&landing).await.unwrap();
    let out = local.settle().await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let phone = out.of_function("accelerometer_landing_to_trusted");
    assert_eq!(phone.sources, [landing]);
    // The batch object rewritten without the file's rows.
    assert_eq!(
        (phone.outputs.len(), phone.deleted.len()),
        (1, 0),
        "{phone:?}"
    );
    assert!(!local.keys().await.unwrap().contains(&legacy[1]));
    assert_eq!(local.manifest_stems(accel).await.unwrap().len(), 8);

    // Nothing left for reconcile to move or compute again.
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "{report:?}");
}

/// A manifest too large for a DynamoDB item (a bulk phone file: an answer recorded for each
/// of its 13,000 users) keeps its JSON in an S3 object under `_stedi/manifests/`, named by
/// the entry's version: written again, the old body goes; the file deleted, both go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_too_large_for_an_item_keeps_its_json_in_s3() {
    let local = Local::start().await.unwrap();
    let accel = Table::AccelerometerTrusted;
    let bulk = |users: usize| {
        (0..users)
            .map(|i| {
                format!(
                    "{{\"user\":\"bulk{i}@test.com\",\"timestamp\":1655564444103,\"x\":1.0,\"y\":0.0,\"z\":0.0}}\n"
                )
            })
            .collect::<String>()
    };
    let bodies = || async {
        let prefix = stedi::keys::manifest_body_prefix(accel);
        let keys = local.keys().await.unwrap();
        keys.into_iter()
            .filter(|k| k.starts_with(&prefix))
            .collect::<Vec<_>>()
    };
    let landing = "accelerometer/landing/bulk.json";
    let out = local.drop_bytes(landing, bulk(13_000)).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let m = local.manifest(accel, "bulk").await.unwrap();
    // No customer: every user answers "" (no consent), every line filtered.
    assert_eq!(m.lineage.refs.len(), 13_000);
    assert!(m.lineage.refs.values().all(|a| a.is_empty()));
    assert!(serde_json::to_vec(&m).unwrap().len() > 256 * 1024);
    let first = bodies().await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("_stedi/manifests/accelerometer_trusted/bulk/"));

    // Uploaded again with one user more: a new body, the old one gone.
    let out = local.drop_bytes(landing, bulk(13_001)).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let m = local.manifest(accel, "bulk").await.unwrap();
    assert_eq!(m.lineage.refs.len(), 13_001);
    let second = bodies().await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first);

    // Reconcile reads it through its entry and finds it current.
    let report = local.reconcile().await.unwrap();
    assert_eq!(report.items.values().sum::<u64>(), 0, "{report:?}");

    // Deleted: the entry and its body go.
    local.delete(landing).await.unwrap();
    let out = local.settle().await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    assert_eq!(
        local.manifest_stems(accel).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(bodies().await, Vec::<String>::new());
}

/// A partition of the index table larger than a query page (1 MB) is read a page at a time
/// and whole, in order: five entries of 300 KiB come as a page of three and a page of two
/// (the query the reconcile planner reads each table's manifests with, reducing each to
/// what the plan needs before the next page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_past_a_query_page_is_read_page_by_page() {
    let local = Local::start().await.unwrap();
    let ctx = local.stack.function_context();
    let pk = "stedi-test/pages";
    let value = "x".repeat(300 * 1024);
    for i in 0..5 {
        let attrs = stedi::index::Attrs::from([("v".to_string(), value.clone())]);
        let (written, _) = ctx
            .index
            .put_item(pk, &format!("k{i}"), &attrs, true)
            .await
            .unwrap();
        assert!(written);
    }
    let mut pages = ctx.index.pages(pk, "");
    let (mut sizes, mut keys) = (Vec::new(), Vec::new());
    while let Some(page) = pages.next().await.unwrap() {
        sizes.push(page.len());
        for (k, attrs) in page {
            assert_eq!(attrs.get("v").map(String::len), Some(300 * 1024));
            keys.push(k);
        }
    }
    assert_eq!(sizes, [3, 2]);
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
    assert_eq!(ctx.index.items(pk, "").await.unwrap().len(), 5);
}
