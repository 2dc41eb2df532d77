//! The scheduled reconcile's two scopes: the daily changed pass reads only the reading
//! files' manifests written since the last pass and still finds what lost events left
//! behind; the full pass finds nothing after it.

use std::path::Path;
use std::time::Duration;

use stedi::keys::RECONCILE_CHECKED;
use stedi::lambda::Function;
use stedi::reconcile::{Item, Plan, Scope};
use stedi::schema::Table;
use stedi::summary::Requests;
use stedi::transitions::is_batch_name;
use stedi_infra::lake;
use stedi_tests::truth::Truth;
use stedi_tests::{DenyPuts, Local, sample_copy, sample_dir};

use crate::pipeline;

/// One planning pass of `scope`, with the requests it made (counted in the store layer).
async fn plan(local: &Local, scope: Scope) -> (Plan, Requests) {
    let ctx = local.stack.function_context();
    let counts = stedi::store::RequestCounts::shared();
    let plan = stedi::store::count_invocation(
        counts.clone(),
        stedi::reconcile::plan(&ctx, &local.stack.cfg.bucket, scope),
    )
    .await
    .unwrap();
    (plan, counts.snapshot())
}

/// Seconds since the epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The first `n` lines of a file.
fn head(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.split_inclusive('\n').take(n).collect()
}

/// Empties the queues of `functions` (each message received and deleted): the events of
/// what the test just did to their landing files are lost.
async fn lose_events(local: &Local, functions: &[stedi::Transition]) {
    let sqs = &local.stack.sqs;
    for &t in functions {
        let url = local
            .stack
            .queue_url(Function::Transition(t))
            .await
            .unwrap();
        loop {
            let got = sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let messages = got.messages();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                sqs.delete_message()
                    .queue_url(&url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_pass_finds_what_lost_events_left_from_the_listings() {
    let local = Local::start().await.unwrap();
    local.drop_sample(0).await.unwrap();
    let keys = local.keys().await.unwrap();
    let readings = lake::landing_files(&sample_dir(), None)
        .unwrap()
        .into_iter()
        .filter(|f| f.table != Table::CustomerLanding)
        .count() as u64;
    assert_eq!(readings, 12);
    // Batch objects of the two reading tables: the full pass reads each one's footer.
    let batch_objects = keys
        .iter()
        .filter(|k| {
            let t = Table::AccelerometerTrusted.prefix();
            let s = Table::StepTrainerTrusted.prefix();
            (k.starts_with(t) || k.starts_with(s))
                && k.rsplit('/')
                    .next()
                    .and_then(|n| n.strip_suffix(".parquet"))
                    .is_some_and(is_batch_name)
        })
        .count() as u64;

    // As a pass a quarter of an hour after these uploads leaves the lake: every manifest
    // written before now checked.
    let checked = serde_json::json!({"checked_before": unix_now() + 1}).to_string();
    local.put(RECONCILE_CHECKED, checked).await.unwrap();

    // In step, both scopes find nothing; both read the twelve reading files' manifests in
    // one query of each table's (the same read units), the changed pass none of the batch
    // objects' footers, and lists neither table's objects for them (one LIST of the
    // objects and one of those held aside, per reading table).
    let (full, full_req) = plan(&local, Scope::Full).await;
    let (changed, changed_req) = plan(&local, Scope::Changed).await;
    assert!(full.is_done() && full.stage.is_none(), "{full:?}");
    assert!(changed.is_done() && changed.stage.is_none(), "{changed:?}");
    // Nor the customer file, older than the last pass: the shards are the customer state.
    assert_eq!(
        full_req.s3_get - changed_req.s3_get,
        batch_objects + 1,
        "full {full_req:?}, changed {changed_req:?}"
    );
    assert_eq!(
        full_req.dynamodb_read_units, changed_req.dynamodb_read_units,
        "full {full_req:?}, changed {changed_req:?}"
    );
    assert_eq!(full_req.s3_list - changed_req.s3_list, 4);
    assert_eq!((changed_req.s3_put, changed_req.s3_delete), (0, 0));

    // Three events lost, each written a second after the manifests (S3 times its objects to
    // the second): a new phone file, a Step Trainer file uploaded again with half its
    // lines, a phone file deleted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let data = sample_copy("reconcile-changed-pass", |_, _| true);
    let phone = data.join("accelerometer/landing");
    let step = data.join("step_trainer/landing");
    let new_phone = head(&phone.join("accelerometer-1691348231810.json"), 300);
    std::fs::write(phone.join("accelerometer-lost-event.json"), &new_phone).unwrap();
    local
        .put(
            "accelerometer/landing/accelerometer-lost-event.json",
            new_phone,
        )
        .await
        .unwrap();
    let half = head(&step.join("step_trainer-1691348232085.json"), 1000);
    std::fs::write(step.join("step_trainer-1691348232085.json"), &half).unwrap();
    local
        .put("step_trainer/landing/step_trainer-1691348232085.json", half)
        .await
        .unwrap();
    std::fs::remove_file(phone.join("accelerometer-1691348231445.json")).unwrap();
    local
        .delete("accelerometer/landing/accelerometer-1691348231445.json")
        .await
        .unwrap();
    lose_events(
        &local,
        &[
            stedi::Transition::AccelerometerLandingToTrusted,
            stedi::Transition::StepTrainerLandingToTrusted,
        ],
    )
    .await;

    // The changed pass finds the two phone files from the LISTs alone: one without a
    // manifest, one manifest without its file. (Its stage stops there; the Step Trainer
    // file is the next stage's.)
    let (changed, changed_req) = plan(&local, Scope::Changed).await;
    assert_eq!(changed.stage, Some(Table::AccelerometerTrusted));
    assert_eq!(
        changed.items,
        vec![
            Item::Landing {
                function: stedi::Transition::AccelerometerLandingToTrusted,
                key: "accelerometer/landing/accelerometer-lost-event.json".into(),
            },
            Item::Orphan {
                table: Table::AccelerometerTrusted,
                stem: "accelerometer-1691348231445".into(),
            },
        ]
    );
    // The full check finds the same at this stage, holding each of the nine phone files'
    // manifests against its ETag and answers to do it, and reading the customer file.
    let (full_now, full_now_req) = plan(&local, Scope::Full).await;
    assert_eq!(full_now.items, changed.items);
    assert_eq!(std::fs::read_dir(&phone).unwrap().count(), 9);
    assert_eq!(full_now_req.s3_get - changed_req.s3_get, 1);

    // Driven to the end with the changed scope, the lake is the batch truth of the changed
    // landing data, and a full pass finds nothing left to do.
    let report = local.reconcile_scoped(Scope::Changed).await.unwrap();
    let items = |table: &str| report.items.get(table).copied();
    assert_eq!(items("accelerometer_trusted"), Some(2), "{report:?}");
    // The Step Trainer file uploaded again: written after its manifest.
    assert_eq!(items("step_trainer_trusted"), Some(1), "{report:?}");
    let truth = Truth::compute(&data, false).unwrap();
    pipeline::assert_batch_truth(&local, &truth).await;
    let again = local.reconcile().await.unwrap();
    assert!(
        !again.changed(),
        "the full pass after the changed one: {again:?}"
    );

    // Files uploaded again with the same bytes, together (one SQS batch), their events
    // run: their rows stay in the object holding them and their manifests are not written
    // again, so the files are newer than their manifests. The changed pass computes them
    // once more, which writes the manifests: once, not every day.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let same = [
        "accelerometer-1691348231810.json",
        "accelerometer-1691348231724.json",
    ];
    for name in same {
        let body = std::fs::read(phone.join(name)).unwrap();
        local
            .put(&format!("accelerometer/landing/{name}"), body)
            .await
            .unwrap();
    }
    let out = local.settle().await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    assert!(
        out.total.outputs.is_empty(),
        "nothing written: {:?}",
        out.total.outputs
    );
    let (changed, _) = plan(&local, Scope::Changed).await;
    let keys: Vec<Item> = same
        .iter()
        .map(|name| Item::Landing {
            function: stedi::Transition::AccelerometerLandingToTrusted,
            key: format!("accelerometer/landing/{name}"),
        })
        .collect();
    let mut found = changed.items.clone();
    found.sort_by_key(|i| format!("{i:?}"));
    let mut want = keys.clone();
    want.sort_by_key(|i| format!("{i:?}"));
    assert_eq!(found, want);
    let report = local.reconcile_scoped(Scope::Changed).await.unwrap();
    assert_eq!(
        report.items.get("accelerometer_trusted"),
        Some(&2),
        "{report:?}"
    );
    let (after, _) = plan(&local, Scope::Changed).await;
    assert!(after.is_done() && after.stage.is_none(), "{after:?}");

    // Manifests written since the last pass are read: one recording an older upload than
    // the file (two uploads computed at once, the older finishing last: here the file is
    // uploaded again, its event lost, and the manifest written again after it), and those
    // of a batch whose object was never written (dead-lettered half-way: here the object
    // deleted and its files' manifests written again, long enough ago not to be on its
    // way).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let checked = serde_json::json!({"checked_before": unix_now()}).to_string();
    local.put(RECONCILE_CHECKED, checked).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let older = "accelerometer-1691348231576";
    let v2 = head(&phone.join(format!("{older}.json")), 200);
    std::fs::write(phone.join(format!("{older}.json")), &v2).unwrap();
    local
        .put(&format!("accelerometer/landing/{older}.json"), v2)
        .await
        .unwrap();
    lose_events(&local, &[stedi::Transition::AccelerometerLandingToTrusted]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let accel = Table::AccelerometerTrusted;
    let manifest = local.manifest(accel, older).await.unwrap();
    local.set_manifest(accel, older, &manifest).await.unwrap();
    let lost = local
        .object_of(Table::AccelerometerTrusted, "accelerometer-1691348231931")
        .await
        .unwrap();
    let mut of_lost = Vec::new();
    for stem in local.manifest_stems(accel).await.unwrap() {
        let mut m = local.manifest(accel, &stem).await.unwrap();
        if m.object.as_deref() != Some(lost.as_str()) {
            continue;
        }
        for dt in &m.dts {
            let object = stedi::keys::output_key(Table::AccelerometerTrusted, dt, &lost);
            if local.keys().await.unwrap().contains(&object) {
                local.delete(&object).await.unwrap();
            }
        }
        m.written_at = unix_now() as u64 - 1000;
        local.set_manifest(accel, &stem, &m).await.unwrap();
        of_lost.push(stem);
    }
    assert!(!of_lost.is_empty());
    let landing = |stem: &str| Item::Landing {
        function: stedi::Transition::AccelerometerLandingToTrusted,
        key: format!("accelerometer/landing/{stem}.json"),
    };
    let mut want: Vec<Item> = of_lost.iter().map(|s| landing(s)).collect();
    if !of_lost.iter().any(|s| s == older) {
        want.push(landing(older));
    }
    want.sort_by_key(|i| format!("{i:?}"));
    let (changed, changed_req) = plan(&local, Scope::Changed).await;
    let mut found = changed.items.clone();
    found.sort_by_key(|i| format!("{i:?}"));
    assert_eq!(found, want);
    // The full check finds the older upload's manifest; the lost object's files it finds
    // in a later pass, its footer check running only once every manifest is fresh.
    let (full_now, full_now_req) = plan(&local, Scope::Full).await;
    assert_eq!(full_now.items, vec![landing(older)]);
    // Both passes read every manifest in one query of the table's; the changed pass held
    // only those written since the last pass against the objects, listing the table's
    // objects to find the lost one (the full pass reads the customer file).
    assert_eq!(full_now_req.s3_get - changed_req.s3_get, 1);
    assert_eq!(
        full_now_req.dynamodb_read_units,
        changed_req.dynamodb_read_units
    );
    assert_eq!(changed_req.s3_list - full_now_req.s3_list, 2);
    let report = local.reconcile_scoped(Scope::Changed).await.unwrap();
    assert_eq!(
        report.items.get("accelerometer_trusted"),
        Some(&(want.len() as u64)),
        "{report:?}"
    );
    let truth = Truth::compute(&data, false).unwrap();
    pipeline::assert_batch_truth(&local, &truth).await;
}

/// Records the keys every `GetObject` of a task is for.
#[derive(Default)]
struct Reads(std::sync::Mutex<Vec<String>>);

impl stedi::store::Authorizer for Reads {
    fn allows(&self, action: &str, resource: &str) -> bool {
        if action == "s3:GetObject"
            && let Some((_, key)) = resource.split_once(":::")
            && let Some((_, key)) = key.split_once('/')
            && let Ok(mut reads) = self.0.lock()
        {
            reads.push(key.to_string());
        }
        true
    }
    fn name(&self) -> &str {
        "reads"
    }
}

/// A planning pass of `scope` and the customer landing objects it read.
async fn customer_files_read(local: &Local, scope: Scope) -> (Plan, Vec<String>) {
    let ctx = local.stack.function_context();
    let reads = std::sync::Arc::new(Reads::default());
    let plan = stedi::store::with_policy(
        reads.clone(),
        stedi::reconcile::plan(&ctx, &local.stack.cfg.bucket, scope),
    )
    .await
    .unwrap();
    let mut read: Vec<String> = reads
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|k| k.starts_with(Table::CustomerLanding.prefix()))
        .cloned()
        .collect();
    read.sort();
    (plan, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_pass_reads_only_the_customer_files_written_since_the_last_pass() {
    // The changed pass holds only the customer files written since the last pass that
    // found nothing to do against the shards: a lost sign-up is found, a record older than
    // a withdrawal already folded in is not taken for one; the full pass reads every
    // customer file (the customers rebuilt from landing).
    let local = Local::start().await.unwrap();
    local.drop_sample(0).await.unwrap();
    let checked = serde_json::json!({"checked_before": unix_now() + 1}).to_string();
    local.put(RECONCILE_CHECKED, checked).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let data = sample_copy("reconcile-changed-customers", |_, _| true);
    let email = "Santosh.Clayton@test.com";
    // A withdrawal, through its event; then a record older than it but newer than the
    // sample's, consenting, through its event too (which leaves the customer out).
    let withdrawal = crate::order::withdrawal(email, &data);
    let mut older = crate::order::customer_record(email);
    crate::order::later(&mut older, 500);
    let older = crate::order::customer_file(&older, "older.json", &data);
    for f in [&withdrawal, &older] {
        local.drop(std::slice::from_ref(f), 0).await.unwrap();
    }
    // A sign-up whose event is lost.
    let mut new = crate::order::customer_record(email);
    new["email"] = serde_json::json!("New.Customer@test.com");
    new["customerName"] = serde_json::json!("New Customer");
    new["serialNumber"] = serde_json::json!("00000000-new-0000-0000-000000000001");
    let signup = crate::order::customer_file(&new, "signup.json", &data);
    local
        .put(&signup.key, std::fs::read(&signup.path).unwrap())
        .await
        .unwrap();
    lose_events(&local, &[stedi::Transition::CustomerLandingToTrusted]).await;
    let truth = Truth::compute(&data, false).unwrap();
    assert!(!truth.customer_trusted.contains(email));
    assert!(truth.customer_trusted.contains("New.Customer@test.com"));

    // The changed pass reads the three files written since (and, for the customer the
    // older record would bring in, their other files the erasure index lists: the
    // withdrawal; the sample's file holds too many people for postings), plans the lost
    // sign-up alone, and rewrites no shard itself.
    let (changed, changed_read) = customer_files_read(&local, Scope::Changed).await;
    assert_eq!(
        changed_read,
        [
            older.key.clone(),
            signup.key.clone(),
            withdrawal.key.clone(),
            withdrawal.key.clone(),
        ]
    );
    assert_eq!(changed.stage, Some(Table::CustomerTrusted));
    assert_eq!(
        changed.items,
        [Item::Landing {
            function: stedi::Transition::CustomerLandingToTrusted,
            key: signup.key.clone(),
        }]
    );
    assert!(changed.snapshots.is_empty(), "{changed:?}");
    let due = stedi::keys::FULL_CHECK_DUE;
    assert!(!local.keys().await.unwrap().iter().any(|k| k == due));

    // Driven to the end with the changed scope: the batch truth, the sign-up folded in by
    // its own transition; then a full pass changes nothing.
    let report = local.reconcile_scoped(Scope::Changed).await.unwrap();
    assert_eq!(
        report.items.get("customer_trusted").copied(),
        Some(1),
        "{report:?}"
    );
    pipeline::assert_batch_truth(&local, &truth).await;
    // The full pass reads every customer file, and finds nothing left to do.
    let (full, full_read) = customer_files_read(&local, Scope::Full).await;
    assert_eq!(
        full_read,
        [
            "customer/landing/customer-1691348231425.json".to_string(),
            older.key.clone(),
            signup.key.clone(),
            withdrawal.key.clone(),
        ]
    );
    assert!(full.is_done(), "{full:?}");
    // Every file taken as written since the last pass: the shards reflect each customer
    // file, the sample's 956 records read back from the shards among them. The withdrawn
    // customer's consenting records (the sample's, the older one) each send the pass to
    // their other files before it decides.
    let everything = serde_json::json!({"checked_before": 1}).to_string();
    local.put(RECONCILE_CHECKED, everything).await.unwrap();
    let (all_new, all_read) = customer_files_read(&local, Scope::Changed).await;
    assert!(all_new.is_done() && all_new.stage.is_none(), "{all_new:?}");
    assert_eq!(
        all_read,
        [
            "customer/landing/customer-1691348231425.json".to_string(),
            older.key.clone(),
            older.key.clone(),
            signup.key.clone(),
            withdrawal.key.clone(),
            withdrawal.key.clone(),
            withdrawal.key.clone(),
        ]
    );
    let again = local.reconcile().await.unwrap();
    assert!(
        !again.changed(),
        "after {report:?}, the full pass: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_pass_that_moves_a_customer_checks_every_reading_file_against_the_answers() {
    // A withdrawal whose event was lost: the reading files' manifests are all newer than the
    // files, so only their answers show them stale. The changed pass rewrites the customer's
    // shard, and with it checks every manifest, as the full pass does; it also marks the
    // full check due, so that when the items it plans are lost (here: never run), the next
    // changed pass, which finds the shard in step, still checks every manifest.
    let local = Local::start().await.unwrap();
    local.drop_sample(0).await.unwrap();
    let data = sample_copy("reconcile-changed-customer", |_, _| true);
    let email = "Santosh.Clayton@test.com";
    let file = crate::order::withdrawal(email, &data);
    local
        .put(&file.key, std::fs::read(&file.path).unwrap())
        .await
        .unwrap();
    lose_events(&local, &[stedi::Transition::CustomerLandingToTrusted]).await;
    // A pass that cannot write the mark stops before it rewrites the shard: no pass after
    // it can take the shard for in step with its answers unchecked.
    let ctx = local.stack.function_context();
    let stopped = stedi::store::with_policy(
        std::sync::Arc::new(DenyPuts("_stedi/reconcile/")),
        stedi::reconcile::plan(&ctx, &local.stack.cfg.bucket, Scope::Changed),
    )
    .await;
    assert!(stopped.is_err(), "{stopped:?}");
    let (changed, _) = plan(&local, Scope::Changed).await;
    assert_eq!(changed.snapshots.len(), 1, "{changed:?}");
    assert_eq!(changed.snapshots[0].0, Table::CustomerTrusted);
    assert_eq!(changed.stage, Some(Table::AccelerometerTrusted));
    let due = stedi::keys::FULL_CHECK_DUE;
    assert!(local.keys().await.unwrap().iter().any(|k| k == due));
    let (again, _) = plan(&local, Scope::Changed).await;
    assert!(again.snapshots.is_empty(), "{again:?}");
    assert_eq!(again.items, changed.items);
    assert_eq!(
        changed.items.len(),
        4,
        "the customer's phone files: {:?}",
        changed.items
    );
    let report = local.reconcile_scoped(Scope::Changed).await.unwrap();
    let truth = Truth::compute(&data, false).unwrap();
    assert!(!truth.customer_trusted.contains(email));
    pipeline::assert_batch_truth(&local, &truth).await;
    // The pass that found nothing left, checking in full, took the mark away.
    assert!(!local.keys().await.unwrap().iter().any(|k| k == due));
    let again = local.reconcile().await.unwrap();
    assert!(
        !again.changed(),
        "after {report:?}, the full pass: {again:?}"
    );
}
