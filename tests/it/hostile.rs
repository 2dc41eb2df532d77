//! Properties 3 and 9: every landing line accounted for, bad input given a defined outcome.

use serde_json::{Value, json};
use stedi::Transition;
use stedi::schema::Table;
use stedi_tests::{Local, sample_dir};

const GOOD_USER: &str = "Santosh.Clayton@test.com";
const TS: i64 = 1655564444103;

async fn with_customers() -> Local {
    let local = Local::start().await.unwrap();
    let customers =
        std::fs::read(sample_dir().join("customer/landing/customer-1691348231425.json")).unwrap();
    local
        .drop_bytes("customer/landing/customers.json", customers)
        .await
        .unwrap();
    local
}

fn line(v: Value) -> Vec<u8> {
    let mut b = v.to_string().into_bytes();
    b.push(b'\n');
    b
}

fn quarantine(body: &[u8]) -> Vec<(u64, String)> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["line"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_file_lands_its_good_lines_and_quarantines_each_bad_one() {
    let local = with_customers().await;
    let good = json!({"user": GOOD_USER, "timestamp": TS, "x": 1.0, "y": 2.0, "z": 3.0});
    let mut body: Vec<u8> = b"\xEF\xBB\xBF".to_vec(); // BOM before line 1
    body.extend(line(good.clone())); // 1 good
    body.extend(b"{not json\n"); // 2 bad: syntax
    body.extend(line(
        json!({"user": GOOD_USER, "timestamp": TS, "x": 1, "y": 1}),
    )); // 3 bad: no z
    body.extend(line(
        json!({"user": GOOD_USER, "timestamp": "abc", "x": 1, "y": 1, "z": 1}),
    )); // 4 bad
    body.extend(line(
        json!({"user": GOOD_USER, "timestamp": 1.5, "x": 1, "y": 1, "z": 1}),
    )); // 5 bad
    body.extend(b"{\"user\":\"\xff\xfe\",\"timestamp\":1,\"x\":1,\"y\":1,\"z\":1}\n"); // 6 bad: UTF-8
    body.extend(line(
        json!({"user": GOOD_USER, "timestamp": TS.to_string(), "x": "1", "y": 2, "z": 3}),
    )); // 7 good
    body.extend(line(
        json!({"user": GOOD_USER, "timestamp": TS as f64, "x": 1, "y": 2, "z": 3}),
    )); // 8 good
    body.extend(
        format!(r#"{{"USER":"nobody","TIMESTAMP":{TS},"x":1,"Y":2,"z":3,"extra":[1],"user":"{GOOD_USER}"}}"#)
            .into_bytes(),
    ); // 9 good: case variants, unknown field, duplicate key (last wins)
    body.extend(b"\r\n");
    body.extend(line(
        json!({"user": "not-a-customer@x", "timestamp": TS, "x": 1, "y": 1, "z": 1}),
    )); // 10 filtered
    body.extend(b"   \n"); // 11 blank: not a record
    body.extend(b"[1,2]\n"); // 12 bad: not an object
    body.extend(vec![b'x'; 10 * 1024 * 1024]); // 13 bad: a 10 MB line
    body.push(b'\n');
    body.extend(line(
        json!({"user": GOOD_USER, "timestamp": i64::MAX, "x": 1, "y": 1, "z": 1}),
    )); // 14 bad
    body.extend(good.to_string().into_bytes()); // 15 good, no final newline

    let key = "accelerometer/landing/mixed batch.json";
    let out = local.drop_bytes(key, body).await.unwrap();
    let s = out.of_function("accelerometer_landing_to_trusted");
    assert_eq!(s.sources, [key]);
    assert_eq!(
        (s.rows_in, s.rows_out, s.filtered, s.quarantined),
        (14, 5, 1, 8)
    );
    assert!(s.balances());
    let q = local
        .get("accelerometer/quarantine/mixed batch.jsonl")
        .await
        .unwrap();
    let q = quarantine(&q);
    let lines: Vec<u64> = q.iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 12, 13, 14]);
    let reason = |n: u64| q.iter().find(|(l, _)| *l == n).unwrap().1.clone();
    assert!(reason(2).contains("key must be a string"), "{}", reason(2));
    assert_eq!(reason(3), "missing required field `z`");
    assert!(
        reason(4).contains("\"abc\" is not a number"),
        "{}",
        reason(4)
    );
    assert!(reason(5).contains("1.5 is not an integer"), "{}", reason(5));
    assert!(reason(6).contains("invalid unicode"), "{}", reason(6));
    assert!(
        reason(12).contains("expected a JSON object") || reason(12).contains("invalid type"),
        "{}",
        reason(12)
    );
    assert_eq!(
        reason(13),
        "line of 10485760 bytes exceeds MAX_LINE_BYTES=1048576"
    );
    assert!(reason(14).contains("out of range"), "{}", reason(14));

    let trusted = local
        .get("accelerometer/trusted/dt=2022-06-18/mixed batch.parquet")
        .await
        .unwrap();
    let batches = stedi::columnar::read_parquet(trusted, &[], "t").unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 5);
}

/// Runs one function directly on one key (an S3 notification), as `stedi run` does.
async fn run(local: &Local, t: Transition, key: &str) -> stedi::summary::Summary {
    let ctx = local.stack.function_context();
    let event = stedi::event::s3_notification(&local.stack.cfg.bucket, key);
    let (resp, summary) = stedi::lambda::handle(&ctx, t, &event).await.unwrap();
    assert_eq!(resp, json!({"batchItemFailures": []}));
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_blank_and_odd_files_have_defined_outcomes() {
    let local = with_customers().await;
    let t = Transition::AccelerometerLandingToTrusted;
    for (name, body) in [
        ("empty", b"".to_vec()),
        ("blank", b"\n\r\n   \n\n".to_vec()),
        ("bom-only", b"\xEF\xBB\xBF".to_vec()),
    ] {
        let key = format!("accelerometer/landing/{name}.json");
        local.put(&key, body).await.unwrap();
        let s = run(&local, t, &key).await;
        assert_eq!((s.rows_in, s.rows_out, s.quarantined), (0, 0, 0), "{name}");
        assert!(s.outputs.is_empty(), "{name}: {:?}", s.outputs);
    }
    // A CRLF file without a final newline: both lines land.
    let crlf = format!(
        "{}\r\n{}",
        json!({"user": GOOD_USER, "timestamp": TS, "x": 1, "y": 1, "z": 1}),
        json!({"user": GOOD_USER, "timestamp": TS + 1, "x": 1, "y": 1, "z": 1})
    );
    local
        .put("accelerometer/landing/crlf.json", crlf)
        .await
        .unwrap();
    let s = run(&local, t, "accelerometer/landing/crlf.json").await;
    assert_eq!(
        (s.rows_in, s.rows_out, s.filtered, s.quarantined),
        (2, 2, 0, 0)
    );
    assert!(s.balances());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_are_refused_without_writing() {
    let local = Local::start().await.unwrap();
    let before = local.keys().await.unwrap();
    let cases = [
        (
            Transition::CustomerLandingToTrusted,
            "customer/trusted/customer_trusted.json",
            "outside the source prefix",
        ),
        (
            Transition::CustomerLandingToTrusted,
            "accelerometer/landing/a.json",
            "outside the source prefix",
        ),
        (
            Transition::CustomerLandingToTrusted,
            "customer/landing/../trusted/x.json",
            "escape its prefix",
        ),
        (
            Transition::CustomerLandingToTrusted,
            "/customer/landing/x.json",
            "outside the source prefix",
        ),
        (
            Transition::CustomerLandingToTrusted,
            "customer/landing/x.csv",
            "not a .json object",
        ),
        (
            Transition::StepTrainerLandingToTrusted,
            "step_trainer/landing/a/../../../customer/trusted/x.json",
            "escape its prefix",
        ),
        (
            Transition::MachineLearningTrustedToCurated,
            "customer/curated/customer_curated.parquet",
            "outside the source prefix",
        ),
    ];
    for (t, key, why) in cases {
        let s = run(&local, t, key).await;
        assert_eq!(s.errors.len(), 1, "{key}");
        assert!(s.errors[0].contains(why), "{key}: {}", s.errors[0]);
        assert!(
            s.errors[0].starts_with("refused key s3://stedi-test/"),
            "{}",
            s.errors[0]
        );
    }
    assert_eq!(local.keys().await.unwrap(), before);
    let _ = Table::ALL;
}

/// A store whose endpoint refuses connections: the error is retryable (SQS redelivers the
/// record) and keeps the SDK's error, with its causes, as its source.
#[tokio::test]
async fn an_unreachable_store_fails_retryably_and_keeps_the_cause() {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:1")
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(1))
        .force_path_style(true)
        .build();
    let store = stedi::store::Store::new(aws_sdk_s3::Client::from_conf(conf));
    let Err(e) = store.fetch("lake", "customer/landing/x.json", None).await else {
        panic!("a refused connection must fail");
    };
    assert!(e.is_retryable(), "{e}");
    assert!(
        matches!(&e, stedi::Error::S3 { op: "GetObject", key, .. } if key == "customer/landing/x.json"),
        "{e:?}"
    );
    let source = std::error::Error::source(&e).expect("the SDK error is kept as the source");
    let mut chain = vec![source.to_string()];
    let mut next = source.source();
    while let Some(cause) = next {
        chain.push(cause.to_string());
        next = cause.source();
    }
    assert!(chain.len() >= 2, "{chain:?}");
    assert!(
        chain.iter().any(|c| c.contains("dispatch failure")),
        "{chain:?}"
    );
}
