//! Right to erasure: three customers of the sample erased (one consenting with phone and
//! Step Trainer readings, one not consenting, one whose phone readings arrive again after
//! the erasure); afterwards no object of the bucket, in any version, holds their e-mail or
//! serial once decoded, every table is the batch truth of the sample without them, and a
//! reconcile changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use arrow_array::{Array, StringArray};
use serde_json::Value;
use stedi::transitions::erasure::{self, Audit};
use stedi_infra::lake;
use stedi_tests::truth::Truth;
use stedi_tests::{Local, sample_dir};

use crate::pipeline;

/// Consenting, curated, with phone and Step Trainer readings (a serial no one else has).
const CONSENTING: (&str, &str) = (
    "Santosh.Clayton@test.com",
    "50f7b4f3-7af5-4b07-a421-7b902c8d2b7c",
);
/// Not consenting, with phone and Step Trainer lines in landing.
const NOT_CONSENTING: (&str, &str) = (
    "Frank.Hansen@test.com",
    "454a7430-d4ff-47cf-8666-7428f8a9894d",
);
/// Consenting; their phone readings are uploaded again after the erasure.
const LATE: (&str, &str) = (
    "Ben.Khatib@test.com",
    "20400202-c1da-4328-8e94-5bacc7d61ecb",
);

fn lower(v: &Value, name: &str) -> Option<String> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str().map(str::to_string))
}

/// Sample customers whose lines share a landing file with the erased ones.
const NEIGHBOURS: [(&str, &str); 2] = [
    (
        "Jane.Gonzalez@test.com",
        "2b6fe805-9059-4e1b-b7ed-720f5b4bf10c",
    ),
    (
        "David.Jones@test.com",
        "fe784255-4faf-47ab-96f7-ea79c6e87f0c",
    ),
];

/// The sample with the lines of the erased people and their neighbours moved into files of
/// their own, as per-session uploads hold them (the same lines, so the same batch truth):
/// the customer records of all five in one file, the phone lines of the consenting person
/// and a neighbour in one, of the non-consenting person and the other neighbour in another,
/// of the late person in a third, and the Step Trainer lines of all five serials in one.
fn sample_by_person() -> PathBuf {
    let dir = stedi_infra::project_root().join(".bench/test-erasure-by-person");
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b, c) = (CONSENTING, NOT_CONSENTING, LATE);
    let (n1, n2) = (NEIGHBOURS[0], NEIGHBOURS[1]);
    let moved = [a, b, c, n1, n2];
    let own_file = |zone: &str, v: &Value| -> Option<String> {
        let email = lower(v, "email").or_else(|| lower(v, "user"));
        let serial = lower(v, "serialnumber");
        let is = |p: (&str, &str)| email.as_deref() == Some(p.0);
        match zone {
            "customer" => moved
                .iter()
                .any(|p| is(*p))
                .then(|| "customer-people".into()),
            "accelerometer" => [(a, "a"), (n1, "a"), (b, "b"), (n2, "b"), (c, "c")]
                .iter()
                .find(|(p, _)| is(*p))
                .map(|(_, f)| format!("accelerometer-{f}")),
            _ => moved
                .iter()
                .any(|p| serial.as_deref() == Some(p.1))
                .then(|| "step_trainer-people".into()),
        }
    };
    for zone in ["customer", "accelerometer", "step_trainer"] {
        let from = sample_dir().join(zone).join("landing");
        let to = dir.join(zone).join("landing");
        std::fs::create_dir_all(&to).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&from)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut own: BTreeMap<String, String> = BTreeMap::new();
        for f in files {
            let mut kept = String::new();
            for l in std::fs::read_to_string(&f).unwrap().split_inclusive('\n') {
                match serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| own_file(zone, &v))
                {
                    Some(name) => own.entry(name).or_default().push_str(l),
                    None => kept.push_str(l),
                }
            }
            std::fs::write(to.join(f.file_name().unwrap()), kept).unwrap();
        }
        for (name, text) in own {
            std::fs::write(to.join(format!("{name}.json")), text).unwrap();
        }
    }
    dir
}

/// A copy of the sample without the lines of `people` (e-mails and serials).
fn sample_without(name: &str, people: &[(&str, &str)]) -> PathBuf {
    let emails: BTreeSet<&str> = people.iter().map(|p| p.0).collect();
    let serials: BTreeSet<&str> = people.iter().map(|p| p.1).collect();
    stedi_tests::sample_copy(&format!("erasure-{name}"), |zone, l| {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            return true;
        };
        let who = lower(&v, "email").or_else(|| lower(&v, "user"));
        let serial = lower(&v, "serialnumber");
        let erased_email = who.is_some_and(|w| emails.contains(w.as_str()));
        let erased_serial =
            zone == "step_trainer" && serial.is_some_and(|s| serials.contains(s.as_str()));
        !(erased_email || erased_serial)
    })
}

/// Every string a decoded object holds: Parquet string columns, JSON values (whole or
/// per line); the raw text when it is neither.
fn strings_of(key: &str, body: bytes::Bytes) -> Vec<String> {
    if key.ends_with(".parquet") {
        let batches = stedi::columnar::read_parquet(body, &[], key).unwrap();
        let mut out = Vec::new();
        for b in &batches {
            for c in b.columns() {
                if let Some(s) = c.as_any().downcast_ref::<StringArray>() {
                    out.extend(
                        (0..s.len())
                            .filter(|i| s.is_valid(*i))
                            .map(|i| s.value(i).to_string()),
                    );
                }
            }
        }
        return out;
    }
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::Object(m) => m.iter().for_each(|(k, v)| {
                out.push(k.clone());
                walk(v, out)
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        walk(&v, &mut out);
        return out;
    }
    for line in body.split(|b| *b == b'\n') {
        match serde_json::from_slice::<Value>(line) {
            Ok(v) => walk(&v, &mut out),
            Err(_) => out.push(String::from_utf8_lossy(line).into_owned()),
        }
    }
    out
}

/// Turns versioning on for the test's bucket.
async fn enable_versioning(local: &Local) {
    local
        .stack
        .s3
        .put_bucket_versioning()
        .bucket(&local.stack.cfg.bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// `(key, version id)` of every non-empty version of every object of the bucket.
async fn all_versions(local: &Local) -> Vec<(String, String)> {
    let s3 = &local.stack.s3;
    let bucket = &local.stack.cfg.bucket;
    let (mut out, mut key_marker, mut version_marker) = (Vec::new(), None, None);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .unwrap();
        for v in page.versions().iter().filter(|v| v.size() != Some(0)) {
            out.push((
                v.key().unwrap().to_string(),
                v.version_id().unwrap_or("null").to_string(),
            ));
        }
        if page.is_truncated() != Some(true) {
            return out;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
}

/// Every (key, version) whose decoded content names one of `people`.
async fn holding(local: &Local, people: &[(&str, &str)]) -> Vec<(String, String, String)> {
    use futures::stream::{self, StreamExt};
    let s3 = &local.stack.s3;
    let bucket = &local.stack.cfg.bucket;
    let bodies: Vec<(String, String, bytes::Bytes)> = stream::iter(all_versions(local).await)
        .map(|(key, version)| async move {
            let out = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .version_id(&version)
                .send()
                .await
                .unwrap();
            let body = out.body.collect().await.unwrap().into_bytes();
            (key, version, body)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut found = Vec::new();
    for (key, version, body) in bodies {
        for s in strings_of(&key, body) {
            for (email, serial) in people {
                if s.contains(email) || s.contains(serial) {
                    found.push((key.clone(), version.clone(), s.chars().take(80).collect()));
                }
            }
        }
    }
    found
}

fn phone_lines_of(email: &str) -> String {
    let dir = sample_dir().join("accelerometer/landing");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| l.contains(&format!("\"{email}\"")))
                .map(|l| format!("{l}\n"))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn removed(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

/// The rows an erasure of [`CONSENTING`] removes from the sample, per table.
fn consenting_removed() -> BTreeMap<String, u64> {
    removed(&[
        ("accelerometer_landing", 85),
        ("accelerometer_trusted", 85),
        ("customer_curated", 1),
        ("customer_landing", 1),
        ("customer_trusted", 1),
        ("step_trainer_landing", 30),
        ("step_trainer_trusted", 30),
    ])
}

async fn audit(local: &Local, request: &str) -> Audit {
    let body = local.get(&erasure::audit_key(request)).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_people_erased_from_every_zone_and_every_version() {
    // Files of more than 4 people are indexed by a wide index: the people's customer file
    // (5 people) and Step Trainer file (5 serials) are found through theirs, their phone
    // files (1 or 2 people) through postings.
    let local = Local::with_config(stedi::config::Config {
        erasure_wide_persons: 4,
        ..Default::default()
    })
    .await
    .unwrap();
    let bucket = local.stack.cfg.bucket.clone();
    enable_versioning(&local).await;
    let data = sample_by_person();
    let out = local
        .drop(&lake::landing_files(&data, None).unwrap(), 0)
        .await
        .unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    pipeline::assert_batch_truth(&local, &Truth::compute(&sample_dir(), false).unwrap()).await;
    // Compacted files hold the people too.
    let ctx = local.stack.function_context();
    lake::compact(&ctx, &bucket, true).await.unwrap();
    let people = [CONSENTING, NOT_CONSENTING, LATE];
    // The decoding below finds them where they are.
    let shard = stedi::keys::shard_key(
        stedi::schema::Table::CustomerTrusted,
        stedi::keys::shard_of(CONSENTING.0, local.stack.cfg.function.customer_shards),
    );
    for key in [shard.as_str(), "accelerometer/landing/accelerometer-a.json"] {
        let strings = strings_of(key, local.get(key).await.unwrap());
        assert!(strings.iter().any(|s| s == CONSENTING.0), "{key}");
    }

    // Two through `stedi erase`, one through a request object and the erasure function.
    let lines = lake::erase(&ctx, &bucket, CONSENTING.0, "req-a")
        .await
        .unwrap();
    assert!(lines[1].starts_with("requests: S3 GET "), "{lines:?}");
    // B's postings as a lake of layout 4 kept them, empty S3 objects not yet moved into
    // the table by a reconcile: the erasure finds them there too, and deletes them.
    let secret = local.stack.cfg.function.erasure_hash_key.clone();
    let hb = erasure::person_hash(&secret, stedi::compute::PersonKind::Email, NOT_CONSENTING.0);
    let theirs = local.postings_of(&hb).await.unwrap();
    assert_eq!(
        theirs,
        [
            "accelerometer/landing/accelerometer-b.json",
            "customer/landing/customer-people.json"
        ]
    );
    let pairs: Vec<(String, String)> = theirs.iter().map(|l| (hb.clone(), l.clone())).collect();
    local.unpost(&pairs).await.unwrap();
    for l in &theirs {
        local
            .put(&erasure::posting_key(&hb, l), Vec::new())
            .await
            .unwrap();
    }
    lake::erase(&ctx, &bucket, NOT_CONSENTING.0, "req-b")
        .await
        .unwrap();
    let left: Vec<String> = local
        .keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.starts_with(&erasure::person_prefix(&hb)))
        .collect();
    assert_eq!(left, [erasure::tombstone_key(&hb)]);
    assert_eq!(local.postings_of(&hb).await.unwrap(), Vec::<String>::new());
    let request = format!("{}req-c.json", erasure::REQUESTS_PREFIX);
    local
        .drop_bytes(&request, format!("{{\"email\": \"{}\"}}", LATE.0))
        .await
        .unwrap();

    let a = audit(&local, "req-a").await;
    assert_eq!(a.rows_removed, consenting_removed());
    assert_eq!(a.serials_shared, 0);
    let b = audit(&local, "req-b").await;
    assert_eq!(
        b.rows_removed,
        removed(&[
            ("accelerometer_landing", 87),
            ("customer_landing", 1),
            ("step_trainer_landing", 30),
        ])
    );
    let c = audit(&local, "req-c").await;
    assert_eq!(c.rows_removed["accelerometer_trusted"], 87);
    assert!(
        local.get(&request).await.is_err(),
        "the request object (it holds the e-mail) is deleted once handled"
    );
    // The audit records name no one.
    for r in ["req-a", "req-b", "req-c"] {
        let text =
            String::from_utf8(local.get(&erasure::audit_key(r)).await.unwrap().to_vec()).unwrap();
        for (email, serial) in people {
            assert!(!text.contains(email) && !text.contains(serial), "{text}");
        }
    }

    // C's phone readings, taken before the erasure, arrive again.
    let late = phone_lines_of(LATE.0);
    assert_eq!(late.lines().count(), 87);
    let keep = "{\"user\":\"Someone.Else@test.com\",\"timestamp\":1655564444103,\"x\":1.0,\"y\":2.0,\"z\":3.0}\n";
    local
        .drop_bytes("accelerometer/landing/late.json", format!("{late}{keep}"))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(
            local
                .get("accelerometer/landing/late.json")
                .await
                .unwrap()
                .to_vec()
        )
        .unwrap(),
        keep,
        "the late file keeps every other line byte-identical"
    );

    // Again in a file of five people (a wide index): the other four lines stay.
    let others: String = (1..=4)
        .map(|i| {
            format!(
                "{{\"user\":\"Someone.Else{i}@test.com\",\"timestamp\":165556444410{i},\"x\":1.0,\"y\":2.0,\"z\":3.0}}\n"
            )
        })
        .collect();
    local
        .drop_bytes(
            "accelerometer/landing/late-wide.json",
            format!("{late}{others}"),
        )
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(
            local
                .get("accelerometer/landing/late-wide.json")
                .await
                .unwrap()
                .to_vec()
        )
        .unwrap(),
        others,
        "the late wide file keeps every other line byte-identical"
    );
    let wide: Vec<String> = local
        .index_entries("persons-wide")
        .await
        .unwrap()
        .into_iter()
        .map(|(_, landing)| landing)
        .collect();
    assert!(
        wide.iter()
            .any(|k| k.ends_with("customer/landing/customer-1691348231425.json")),
        "{wide:?}"
    );
    assert!(
        !wide
            .iter()
            .any(|k| k.contains("-people") || k.contains("late")),
        "computed again with two or four people left, the people's files and the late file \
         are indexed by postings: {wide:?}"
    );

    let left = holding(&local, &people).await;
    assert!(
        left.is_empty(),
        "{} object versions still name them: {:?}",
        left.len(),
        &left[..left.len().min(10)]
    );
    let truth = Truth::compute(&sample_without("truth", &people), false).unwrap();
    pipeline::assert_batch_truth(&local, &truth).await;

    // The same request again changes nothing; a new one for the same person finds nothing.
    let before = local.keys().await.unwrap();
    assert_eq!(
        stedi::transitions::erasure::erase(&ctx, &bucket, CONSENTING.0, "req-a")
            .await
            .unwrap(),
        a
    );
    let again = stedi::transitions::erasure::erase(&ctx, &bucket, CONSENTING.0, "req-a2")
        .await
        .unwrap();
    assert!(again.rows_removed.is_empty(), "{again:?}");
    assert!(again.objects_rewritten.is_empty(), "{again:?}");
    let mut after = local.keys().await.unwrap();
    after.retain(|k| k != &erasure::audit_key("req-a2"));
    assert_eq!(before, after);

    // Nothing comes back at reconcile.
    let report = local.reconcile().await.unwrap();
    pipeline::assert_batch_truth(&local, &truth).await;
    assert!(holding(&local, &people).await.is_empty());
    let second = local.reconcile().await.unwrap();
    assert!(!second.changed(), "{report:?} then {second:?}");
}

/// Old versions exist only where versioning was on: in a bucket that never had it,
/// deleting the old versions of two objects asks the bucket once and lists nothing; once
/// versioning is on, it lists each object, deletes exactly its old versions (the one
/// written before versioning too) and remembers the answer.
#[tokio::test]
async fn old_versions_are_listed_only_in_a_versioned_bucket() {
    use stedi::store::{RequestCounts, Store, count_invocation};
    let local = Local::start().await.unwrap();
    let bucket = local.stack.cfg.bucket.clone();
    let store = Store::new(local.stack.s3.clone());
    let run = |keys: &'static [&'static str]| {
        let (store, bucket) = (store.clone(), bucket.clone());
        async move {
            let counts = RequestCounts::shared();
            let n = count_invocation(
                counts.clone(),
                store.delete_noncurrent(&bucket, keys.iter().copied()),
            )
            .await
            .unwrap();
            let r = counts.snapshot();
            (n, r.s3_get, r.s3_list, r.s3_delete)
        }
    };
    local.put("a.json", "1").await.unwrap();
    local.put("a.json", "2").await.unwrap();
    assert_eq!(run(&["a.json", "b.json"]).await, (0, 1, 0, 0));
    assert_eq!(versions_of_a(&local).await, 1);

    enable_versioning(&local).await;
    local.put("a.json", "3").await.unwrap();
    local.put("a.json", "4").await.unwrap();
    assert_eq!(versions_of_a(&local).await, 3);
    // One GET (the bucket's versioning), one LIST per key, one DELETE per old version.
    assert_eq!(run(&["a.json", "b.json"]).await, (2, 1, 2, 2));
    assert_eq!(versions_of_a(&local).await, 1);
    assert_eq!(&local.get("a.json").await.unwrap()[..], b"4");
    // The yes is remembered: no GET; nothing left to delete.
    assert_eq!(run(&["a.json"]).await, (0, 0, 1, 0));
    // Nothing to look at: no request at all.
    assert_eq!(run(&[]).await, (0, 0, 0, 0));
}

async fn versions_of_a(local: &Local) -> usize {
    let all = all_versions(local).await;
    all.iter().filter(|(k, _)| k == "a.json").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_stopped_half_way_is_finished_by_its_retry() {
    // The first attempt scrubs the person's customer and phone lines and takes their row out
    // of the customer shards, then stops at the device index. The retry (SQS delivers the
    // request again) finds their lines already gone: it must still find their device (its
    // Step Trainer lines, its device-index entry), compute every one of their files again
    // and delete the old versions the first attempt left. Its audit is that of the same
    // erasure in one go on another stack.
    let (local, once) = tokio::join!(Local::start(), Local::start());
    let (local, once) = (local.unwrap(), once.unwrap());
    for l in [&local, &once] {
        enable_versioning(l).await;
        let out = l.drop_sample(0).await.unwrap();
        assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    }
    let bucket = local.stack.cfg.bucket.clone();
    let ctx = local.stack.function_context();
    let stop = std::sync::Arc::new(stedi_tests::DenyPuts("_stedi/devices/"));
    let stopped = stedi::store::with_policy(
        stop,
        erasure::erase(&ctx, &bucket, CONSENTING.0, "req-stopped"),
    )
    .await;
    assert!(stopped.is_err(), "{stopped:?}");
    let h = erasure::person_hash(
        &local.stack.cfg.function.erasure_hash_key,
        stedi::compute::PersonKind::Email,
        CONSENTING.0,
    );
    let progress = format!("{}{h}.progress", erasure::REQUESTS_PREFIX);
    let keys = local.keys().await.unwrap();
    assert!(
        keys.contains(&progress),
        "the stopped attempt's progress is kept"
    );
    let phone = String::from_utf8(
        local
            .get("accelerometer/landing/accelerometer-1691348231445.json")
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        !phone.contains(CONSENTING.0),
        "the first attempt scrubbed their phone lines"
    );
    assert!(
        !holding(&local, &[CONSENTING]).await.is_empty(),
        "half done: their rows are still in the trusted tables"
    );

    let retried = erasure::erase(&ctx, &bucket, CONSENTING.0, "req-stopped")
        .await
        .unwrap();
    let ctx_once = once.stack.function_context();
    let in_one_go = erasure::erase(&ctx_once, &once.stack.cfg.bucket, CONSENTING.0, "req-once")
        .await
        .unwrap();
    assert_eq!(retried.rows_removed, consenting_removed());
    let what = |a: &Audit| {
        (
            a.rows_removed.clone(),
            a.objects_rewritten.clone(),
            a.objects_deleted.clone(),
            a.serials_shared,
        )
    };
    assert_eq!(what(&retried), what(&in_one_go));
    // No object, in any version, names them; their progress is gone, old versions too.
    let left = holding(&local, &[CONSENTING]).await;
    assert!(
        left.is_empty(),
        "{} object versions still name them: {:?}",
        left.len(),
        &left[..left.len().min(10)]
    );
    assert!(
        !all_versions(&local)
            .await
            .iter()
            .any(|(k, _)| k == &progress),
        "the progress object is deleted with its versions"
    );
    let truth = Truth::compute(&sample_without("stopped", &[CONSENTING]), false).unwrap();
    pipeline::assert_batch_truth(&local, &truth).await;
    let report = local.reconcile().await.unwrap();
    assert!(!report.changed(), "{report:?}");
}
