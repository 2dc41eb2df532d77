//! The sample data through the five transitions, in natural order.

use std::collections::BTreeMap;

use stedi::Transition;
use stedi::catalog;
use stedi::schema::Table;
use stedi_infra::lake;
use stedi_tests::truth::Truth;
use stedi_tests::{Local, sample_dir};

use crate::rows;

/// DESIGN.md's row counts on the sample.
pub const EXPECTED: [(&str, u64); 8] = [
    ("accelerometer_landing", 81273),
    ("accelerometer_trusted", 40981),
    ("customer_curated", 482),
    ("customer_landing", 956),
    ("customer_trusted", 482),
    ("machine_learning_curated", 40981),
    ("step_trainer_landing", 28680),
    ("step_trainer_trusted", 14460),
];

pub async fn assert_batch_truth(local: &Local, truth: &Truth) {
    let trusted = rows::emails(&local.batches(Table::CustomerTrusted).await.unwrap());
    assert_eq!(
        trusted,
        truth.customer_trusted.iter().cloned().collect::<Vec<_>>()
    );
    let curated_batches = local.batches(Table::CustomerCurated).await.unwrap();
    let curated = rows::emails(&curated_batches);
    assert_eq!(
        curated,
        truth.customer_curated.iter().cloned().collect::<Vec<_>>()
    );
    // Each curated customer's row is their latest record (here: the device it names).
    let serials = rows::field(&curated_batches, "serialnumber");
    for (email, serial) in &truth.curated_serials {
        assert_eq!(
            serials.get(email),
            Some(serial),
            "customer_curated row of {email}"
        );
    }
    let accel = rows::accel(&local.batches(Table::AccelerometerTrusted).await.unwrap());
    assert!(
        accel == truth.accelerometer_trusted,
        "accelerometer_trusted differs"
    );
    let steps = rows::steps(&local.batches(Table::StepTrainerTrusted).await.unwrap());
    assert!(
        steps == truth.step_trainer_trusted,
        "step_trainer_trusted differs"
    );
    let ml = rows::ml(&local.batches(Table::MachineLearningCurated).await.unwrap());
    assert_eq!(ml.len(), truth.machine_learning_curated.len());
    assert!(
        ml == truth.machine_learning_curated,
        "machine_learning_curated differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natural_order_gives_the_batch_truth_and_redelivery_changes_nothing() {
    let local = Local::start().await.unwrap();
    let out = local.drop_sample(0).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let landing = Transition::ALL
        .into_iter()
        .filter(|t| t.sources().iter().all(|s| s.is_landing()));
    for f in landing.map(Transition::name) {
        assert!(
            out.of_function(f).balances(),
            "{f}: {:?}",
            out.of_function(f)
        );
    }
    let acc = out.of_function("accelerometer_landing_to_trusted");
    assert_eq!(
        (acc.rows_in, acc.rows_out, acc.filtered, acc.quarantined),
        (81273, 40981, 40292, 0)
    );

    let counts = local.counts().await.unwrap();
    assert_eq!(counts, BTreeMap::from(EXPECTED));
    let truth = Truth::compute(&sample_dir(), false).unwrap();
    assert_batch_truth(&local, &truth).await;

    // Every dt partition is registered, at its location, and holds objects.
    let bucket = &local.stack.cfg.bucket;
    for table in [
        Table::AccelerometerTrusted,
        Table::StepTrainerTrusted,
        Table::MachineLearningCurated,
    ] {
        let parts = catalog::list_partitions(&local.stack.glue, "stedi", table)
            .await
            .unwrap();
        assert_eq!(
            parts,
            [(
                "2022-06-18".to_string(),
                format!("s3://{bucket}/{}dt=2022-06-18/", table.prefix())
            )],
            "{}",
            table.name()
        );
    }

    // The ML table: exactly its six columns, no personal data.
    let ml = local.batches(Table::MachineLearningCurated).await.unwrap();
    let cols: Vec<String> = ml[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        cols,
        [
            "sensorreadingtime",
            "serialnumber",
            "distancefromobject",
            "x",
            "y",
            "z"
        ]
    );

    // Natural order needs no extra step: reconcile finds nothing to do.
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "{report:?}");
    assert_eq!(
        stedi_infra::lake::describe(&report),
        [
            "reconcile: nothing to change; every table equals the batch truth (1 pass)",
            // The sample's 482 consenting customers in the tests' 32 shards: ~15 a shard.
            "advice: set CUSTOMER_SHARDS=2 (about 250 consenting customers a shard) and \
             reconcile again to migrate"
        ]
    );

    let keys_before = local.keys().await.unwrap();
    // The customer tables are sharded by e-mail, the device index by serial: exactly the
    // shards the sample's customers and their devices fall in exist.
    let n = local.stack.cfg.function.customer_shards;
    let shard_keys = |table: Table, emails: &std::collections::BTreeSet<String>| {
        let shards: std::collections::BTreeSet<u32> =
            emails.iter().map(|e| stedi::keys::shard_of(e, n)).collect();
        shards
            .into_iter()
            .map(|k| stedi::keys::shard_key(table, k))
            .collect::<Vec<_>>()
    };
    let under = |prefix: &str| {
        keys_before
            .iter()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect::<Vec<_>>()
    };
    let trusted_shards = shard_keys(Table::CustomerTrusted, &truth.customer_trusted);
    let curated_shards = shard_keys(Table::CustomerCurated, &truth.customer_curated);
    assert_eq!(under("customer/trusted/"), trusted_shards);
    assert_eq!(under("customer/curated/"), curated_shards);
    let serials: std::collections::BTreeSet<u32> = truth
        .curated_serials
        .values()
        .map(|s| stedi::keys::shard_of(s, n))
        .collect();
    assert_eq!(under(stedi::keys::DEVICES_PREFIX).len(), serials.len());
    // The trusted objects: the files of one SQS batch share one object per `dt` (the
    // 9 phone files arrive together, as do the 3 Step Trainer files), named in each
    // file's manifest and listing the files in its footer.
    let mut objects = BTreeMap::new();
    for f in lake::landing_files(&sample_dir(), None).unwrap() {
        let Some(t) = stedi::Transition::of_landing(f.table).filter(|t| t.batches()) else {
            continue;
        };
        let stem = stedi::keys::accept(bucket, &f.key, &[f.table])
            .unwrap()
            .stem;
        let object = local.object_of(t.target(), &stem).await.unwrap();
        objects.insert(stem, (t.target(), object));
    }
    let trusted: std::collections::BTreeSet<(Table, String)> = objects.values().cloned().collect();
    let phone_objects = trusted
        .iter()
        .filter(|(t, _)| *t == Table::AccelerometerTrusted)
        .count();
    assert_eq!((objects.len(), phone_objects, trusted.len()), (12, 1, 2));
    for (table, object) in &trusted {
        let key = stedi::keys::output_key(*table, "2022-06-18", object);
        let (held, _) = stedi::columnar::read_holder(local.get(&key).await.unwrap(), &key).unwrap();
        let names: Vec<&str> = held.iter().map(|h| h.name.as_str()).collect();
        let want: Vec<&str> = objects
            .iter()
            .filter(|(_, o)| o == &&(*table, object.clone()))
            .map(|(s, _)| s.as_str())
            .collect();
        assert_eq!(names, want, "{key}");
    }
    // machine_learning_curated: one object per (Step Trainer object, phone object) pair
    // that shares a row, as an independent computation over the landing files says.
    let pairs = truth.ml_pairs(&sample_dir()).unwrap();
    let pair_keys: Vec<String> = pairs
        .iter()
        .map(|(dt, s, p)| {
            stedi::transitions::machine_learning_trusted_to_curated::pair_key(
                dt,
                &objects[s].1,
                &objects[p].1,
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(under(Table::MachineLearningCurated.prefix()), pair_keys);
    assert_eq!(pair_keys.len(), 1);
    // The join index: each trusted object (more devices than ML_WIDE_SERIALS) registers
    // once for the dt, as entries of the index table (no S3 marker): under `wide`, and in
    // the dt's roster.
    let join = local.join_entries().await.unwrap();
    assert_eq!(join.iter().filter(|(p, _)| p.ends_with("/wide")).count(), 2);
    assert_eq!(join.iter().filter(|(p, _)| !p.contains('/')).count(), 2);
    assert_eq!(join.len(), 4, "{join:#?}");
    assert_eq!(under("_stedi/join/"), Vec::<String>::new());
    // Step Trainer files wait only for devices of consenting customers who have no phone
    // reading yet; in the sample every consenting customer has one, so none waits (the
    // readings of the other devices are filtered for good).
    assert_eq!(truth.customer_trusted, truth.customer_curated);
    assert_eq!(under(stedi::keys::WAITING_PREFIX), Vec::<String>::new());
    // The erasure index: one posting per person (e-mail, or serial for Step Trainer lines)
    // per landing file holding them, up to ERASURE_WIDE_PERSONS people (the last phone
    // file, 50 users); one wide index per file holding more (the other 12).
    let wide_above = local.stack.cfg.function.erasure_wide_persons;
    let (mut postings, mut wide) = (0, Vec::new());
    let mut posted = std::collections::BTreeSet::new();
    for f in lake::landing_files(&sample_dir(), None).unwrap() {
        let field = match f.table {
            Table::CustomerLanding => "email",
            Table::AccelerometerLanding => "user",
            _ => "serialNumber",
        };
        let text = std::fs::read_to_string(&f.path).unwrap();
        let people: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v[field].as_str().map(str::to_string))
            .collect();
        if people.len() > wide_above {
            wide.push((f.table.name().to_string(), f.key.clone()));
        } else {
            postings += people.len();
            posted.insert(f.key.clone());
        }
    }
    wide.sort();
    assert_eq!((postings, wide.len()), (50, 12));
    // In the postings table, none left in S3 (no erasure ran: no tombstone either).
    let in_table = local.all_postings().await.unwrap();
    assert_eq!(in_table.len(), postings);
    let files: std::collections::BTreeSet<String> =
        in_table.iter().map(|(_, l)| l.clone()).collect();
    assert_eq!(files, posted);
    assert_eq!(posted.len(), 1);
    assert_eq!(
        under(stedi::transitions::erasure::PERSONS_PREFIX),
        Vec::<String>::new()
    );
    // The wide indexes are entries of the index table too (the largest, the customer
    // file's 956 people, is 16 KB: none needs an S3 object).
    assert_eq!(local.index_entries("persons-wide").await.unwrap(), wide);
    assert_eq!(
        under(stedi::transitions::erasure::WIDE_PREFIX),
        Vec::<String>::new()
    );
    // The pass that found nothing marked when it checked.
    assert_eq!(
        under("_stedi/reconcile/"),
        [stedi::keys::RECONCILE_CHECKED.to_string()]
    );
    // 13 landing, the shards, the trusted objects and the pairs, a side manifest per
    // trusted object (the landing files' manifests, the postings, the wide indexes and the
    // join index are entries of the index table), the reconcile mark.
    let shards = trusted_shards.len() + curated_shards.len() + serials.len();
    let expected = 13 + shards + trusted.len() + pair_keys.len() + trusted.len() + 1;
    assert_eq!(keys_before.len(), expected, "{keys_before:#?}");
    let again = local.drop_sample(3).await.unwrap();
    assert!(again.total.errors.is_empty(), "{:?}", again.total.errors);
    assert_eq!(local.counts().await.unwrap(), BTreeMap::from(EXPECTED));
    assert_eq!(local.keys().await.unwrap(), keys_before);
    assert_batch_truth(&local, &truth).await;
}

#[test]
fn the_truth_reproduces_the_design_counts() {
    // Guards the test oracle itself: DESIGN.md's numbers, and the Glue jobs' 43,681 when
    // the customer condition is dropped from the ML join.
    let t = Truth::compute(&sample_dir(), false).unwrap();
    assert_eq!(t.customer_trusted.len(), 482);
    assert_eq!(t.accelerometer_trusted.len(), 40981);
    assert_eq!(t.customer_curated.len(), 482);
    assert_eq!(t.step_trainer_trusted.len(), 14460);
    assert_eq!(t.machine_learning_curated.len(), 40981);
    let by_time: std::collections::HashMap<i64, usize> =
        t.accelerometer_trusted
            .iter()
            .fold(Default::default(), |mut m, a| {
                *m.entry(a.1).or_default() += 1;
                m
            });
    let timestamp_only: usize = t
        .step_trainer_trusted
        .iter()
        .map(|s| by_time.get(&s.0).copied().unwrap_or(0))
        .sum();
    assert_eq!(timestamp_only, 43681);
    let as_of = Truth::compute(&sample_dir(), true).unwrap();
    assert_eq!(as_of.accelerometer_trusted.len(), 32025);
}
