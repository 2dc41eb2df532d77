//! Rule 1 and 2 of SCALE.md on the customer side: what one event reads and writes does not
//! grow with the number of customers in the lake. Counted in the store layer (requests and
//! body bytes), at 2,000 and at 20,000 registrations.

use stedi::Transition;
use stedi::summary::Requests;
use stedi_infra::synthetic::{customers_file, readings_file};
use stedi_tests::Local;

async fn run(local: &Local, ctx: &stedi::Ctx, t: Transition, key: &str) -> (Requests, u64) {
    let event = stedi::event::s3_notification(&local.stack.cfg.bucket, key);
    let (_, s) = stedi::lambda::handle(ctx, t, &event).await.unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    (s.requests, s.rows_out)
}

/// What one event costs once `customers` are registered: a one-record customer file, then a
/// 300-reading phone file of a consenting customer, cold and then warm.
struct Cost {
    customer: Requests,
    accel_cold: Requests,
    accel_warm: Requests,
    accel_warm_file: u64,
}

async fn grow_and_probe(local: &Local, from: u64, to: u64) -> Cost {
    let ctx = local.stack.function_context();
    for start in (from..to).step_by(5_000) {
        let key = format!("customer/landing/bulk-{start}.json");
        local
            .put(&key, customers_file(start, (start + 5_000).min(to)))
            .await
            .unwrap();
        run(local, &ctx, Transition::CustomerLandingToTrusted, &key).await;
    }
    // One new consenting customer.
    let key = format!("customer/landing/one-{to}.json");
    local
        .put(&key, customers_file(1_000_000 + to, 1_000_001 + to))
        .await
        .unwrap();
    let (customer, upserted) = run(local, &ctx, Transition::CustomerLandingToTrusted, &key).await;
    assert_eq!(upserted, 1);
    // A fresh function (cold), then a second file of the same user (warm).
    let ctx = local.stack.function_context();
    let user = to / 2 * 2 - 2; // even: consenting
    let mut probes = Vec::new();
    for n in 0..2 {
        let key = format!("accelerometer/landing/probe-{to}-{n}.json");
        let body = readings_file(user, 1_655_564_000_000 + n * 1_000, 300);
        let len = body.len() as u64;
        local.put(&key, body).await.unwrap();
        let (r, kept) = run(local, &ctx, Transition::AccelerometerLandingToTrusted, &key).await;
        assert_eq!(kept, 300);
        probes.push((r, len));
    }
    Cost {
        customer,
        accel_cold: probes[0].0,
        accel_warm: probes[1].0,
        accel_warm_file: probes[1].1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_event_cost_does_not_grow_with_the_customer_count() {
    let cfg = stedi::config::Config {
        customer_shards: 512,
        ..Default::default()
    };
    let local = Local::with_config(cfg).await.unwrap();
    let small = grow_and_probe(&local, 0, 2_000).await;
    let large = grow_and_probe(&local, 2_000, 20_000).await;

    // The same requests at 2k and 20k customers, for every probe.
    for (a, b) in [
        (small.customer, large.customer),
        (small.accel_cold, large.accel_cold),
        (small.accel_warm, large.accel_warm),
    ] {
        assert_eq!(
            (a.s3_get, a.s3_put, a.s3_list, a.s3_delete),
            (b.s3_get, b.s3_put, b.s3_list, b.s3_delete),
            "{a:?} vs {b:?}"
        );
        assert_eq!(
            (a.dynamodb_read_units, a.dynamodb_write_units),
            (b.dynamodb_read_units, b.dynamodb_write_units),
            "{a:?} vs {b:?}"
        );
    }
    // One-record customer file (a consenting customer): the landing object, one customer
    // shard, one device-index shard and the erasure epoch read; the two shards written,
    // and the customer's erasure-index posting (an item of the postings table).
    assert_eq!((small.customer.s3_get, small.customer.s3_put), (4, 2));
    assert_eq!(small.customer.dynamodb_write_units, 1);
    // Warm phone file: the consent shard is revalidated (304, no body), so the only bytes
    // read are the landing file's, whatever the customer count.
    assert_eq!(small.accel_warm.bytes_read, small.accel_warm_file);
    assert_eq!(large.accel_warm.bytes_read, large.accel_warm_file);
    // Cold: one consent shard on top of the file; ten times the customers is not ten times
    // the bytes (a shard holds customers / CUSTOMER_SHARDS of them).
    let shard_small = small.accel_cold.bytes_read - small.accel_warm_file;
    let shard_large = large.accel_cold.bytes_read - large.accel_warm_file;
    assert!(
        shard_large < 4 * shard_small,
        "{shard_small} -> {shard_large}"
    );
    assert!(
        large.customer.bytes_written < 4 * small.customer.bytes_written,
        "{} -> {}",
        small.customer.bytes_written,
        large.customer.bytes_written
    );
    eprintln!(
        "one-record customer file: {} -> {} B written; cold phone file: {} -> {} B of shard read",
        small.customer.bytes_written, large.customer.bytes_written, shard_small, shard_large
    );
}

/// The shards of `table` (or the device index when `None`) in the bucket.
async fn shard_objects(local: &Local, table: Option<stedi::schema::Table>) -> Vec<String> {
    let keys = local.keys().await.unwrap();
    let prefix = match table {
        Some(t) => stedi::keys::shard_key(t, 0).replace("part-00000.parquet", ""),
        None => stedi::keys::DEVICES_PREFIX.to_string(),
    };
    keys.into_iter()
        .filter(|k| k.starts_with(&prefix))
        .collect()
}

/// Changing `CUSTOMER_SHARDS` is a migration the next reconcile makes: up from 32 shards
/// to 61 and down to 3, the customer tables and the device index are exactly the new
/// count's shards (no object of the old count left), every table is the batch truth, a
/// second reconcile changes nothing, and a new customer lands in the new layout.
#[tokio::test]
async fn changing_the_shard_count_is_migrated_by_a_reconcile() {
    use stedi::schema::Table;
    use stedi_tests::truth::Truth;
    let mut local = Local::start().await.unwrap();
    assert_eq!(local.stack.cfg.function.customer_shards, 32);
    let out = local.drop_sample(0).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let truth = Truth::compute(&stedi_tests::sample_dir(), false).unwrap();
    for shards in [61, 3] {
        local.stack.cfg.function.customer_shards = shards;
        let report = local.reconcile().await.unwrap();
        assert!(report.changed() && report.converged, "{report:?}");
        crate::pipeline::assert_batch_truth(&local, &truth).await;
        for table in [
            Some(Table::CustomerTrusted),
            Some(Table::CustomerCurated),
            None,
        ] {
            let want: Vec<String> = (0..shards)
                .map(|s| match table {
                    Some(t) => stedi::keys::shard_key(t, s),
                    None => stedi::keys::device_shard_key(s),
                })
                .collect();
            assert_eq!(shard_objects(&local, table).await, want, "{table:?}");
        }
        let again = local.reconcile().await.unwrap();
        assert!(!again.changed(), "{again:?}");
    }
    // A new consenting customer arrives at 3 shards: one more row in customer_trusted, in
    // the shard its e-mail falls in.
    let email = "New.Customer@test.com";
    let line = serde_json::json!({
        "customerName": "New Customer", "email": email, "phone": "8015551212",
        "birthDay": "1999-01-01", "serialNumber": "new-serial",
        "registrationDate": 1655564376361_i64, "lastUpdateDate": 1655564376361_i64,
        "shareWithResearchAsOfDate": 1655564376361_i64,
        "shareWithPublicAsOfDate": 1655564376361_i64,
        "shareWithFriendsAsOfDate": 1655564376361_i64,
    });
    let before = local.counts().await.unwrap()["customer_trusted"];
    local
        .drop_bytes("customer/landing/new.json", format!("{line}\n"))
        .await
        .unwrap();
    assert_eq!(
        local.counts().await.unwrap()["customer_trusted"],
        before + 1
    );
    let shard = stedi::keys::shard_key(Table::CustomerTrusted, stedi::keys::shard_of(email, 3));
    let body = local.get(&shard).await.unwrap();
    let rows = stedi::columnar::read_parquet(body, &[], &shard).unwrap();
    let emails = crate::rows::emails(&rows);
    assert!(emails.iter().any(|e| e == email), "{emails:?}");
}
