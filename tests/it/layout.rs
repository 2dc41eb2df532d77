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
    // accelerometer_trusted: 9 sources; step_trainer_trusted: 3; ML: a side manifest per
    // trusted object (one per SQS batch: the 9 phone files arrive together, as do the 3
    // Step Trainer files).
    assert_eq!(lineage.len(), 9 + 3 + 2, "{lineage:?}");

    // The earlier layout kept the manifests inside the table locations.
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
