//! `stedi drop`: the progress it reports and the per-function lines it ends with.

use std::time::Duration;

use stedi::schema::Table;
use stedi_infra::lake::{self, DropEvent};
use stedi_infra::runner::Runner;
use stedi_tests::{Local, sample_dir};

/// Splits a drop line into its rows part and its timing part.
fn parts(line: &str) -> (&str, &str) {
    line.split_once("; ")
        .unwrap_or_else(|| panic!("no timing in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_drop_reports_each_function_and_every_landing_line_balances() {
    let local = Local::start().await.unwrap();
    let files = lake::landing_files(&sample_dir(), None).unwrap();
    let mut runner = Runner::new(&local.stack).await.unwrap();
    let mut uploaded = Vec::new();
    let mut drained = Vec::new();
    let report = lake::drop_files(
        &local.stack,
        &mut runner,
        &files,
        0,
        Duration::from_secs(300),
        |e| match e {
            DropEvent::Uploaded { file, bytes } => uploaded.push((file.key.clone(), bytes)),
            DropEvent::Draining(zone) => drained.push(zone),
            DropEvent::Redelivering { .. } => panic!("no redelivery was asked for"),
        },
    )
    .await
    .unwrap();

    // Progress: every file with its size, each zone drained after its uploads.
    let sizes: Vec<(String, u64)> = files
        .iter()
        .map(|f| (f.key.clone(), std::fs::metadata(&f.path).unwrap().len()))
        .collect();
    assert_eq!(uploaded, sizes);
    assert_eq!(drained, lake::natural_order());
    assert_eq!(report.files, 13);
    assert_eq!(report.bytes, sizes.iter().map(|s| s.1).sum::<u64>());

    // One line per function, in the natural order of the data; exact row counts.
    let lines = report.lines();
    let rows: Vec<&str> = lines.iter().map(|l| parts(l).0).collect();
    assert_eq!(
        rows,
        [
            "customer_landing_to_trusted         rows in 956 out 482 filtered 474 quarantined 0",
            "accelerometer_landing_to_trusted    rows in 81273 out 40981 filtered 40292 quarantined 0",
            "customer_trusted_to_curated         rows in 40981 out 482 filtered 0 quarantined 0",
            "step_trainer_landing_to_trusted     rows in 28680 out 14460 filtered 14220 quarantined 0",
            "machine_learning_trusted_to_curated rows in 55441 out 40981 filtered 0 quarantined 0",
        ]
    );
    for f in &report.functions {
        if f.reads_landing() {
            assert_eq!(
                f.rows_in,
                f.rows_out + f.filtered + f.quarantined,
                "{}",
                f.function.name()
            );
        }
        assert!(f.balances());
    }
    let landing: Vec<&str> = report
        .functions
        .iter()
        .filter(|f| f.reads_landing())
        .map(|f| f.function.name())
        .collect();
    assert_eq!(
        landing,
        [
            "customer_landing_to_trusted",
            "accelerometer_landing_to_trusted",
            "step_trainer_landing_to_trusted"
        ]
    );

    // Invocations and handler time: what the runner measured, per function.
    for (f, line) in report.functions.iter().zip(&lines) {
        let name = f.function.name();
        let ms = &runner.handler_ms_by_function[name];
        assert_eq!(f.invocations, ms.len() as u64, "{name}");
        assert!(f.invocations >= 1, "{name}");
        assert!(
            (f.handler_ms - ms.iter().sum::<f64>()).abs() < 1e-6,
            "{name}"
        );
        let s = if f.invocations == 1 { "" } else { "s" };
        assert_eq!(
            parts(line).1,
            format!(
                "{} invocation{s}, handlers {:.0} ms",
                f.invocations, f.handler_ms
            ),
            "{name}"
        );
    }
    let total: u64 = report.functions.iter().map(|f| f.invocations).sum();
    assert_eq!(total, runner.invocations);
    // Requests, per function: one line each, summing to what the whole drop counted.
    let requests = report
        .functions
        .iter()
        .fold(stedi::summary::Requests::default(), |a, f| a + f.requests);
    assert_eq!(requests, runner.summary.requests);
    assert_eq!(report.requests_lines().len(), report.functions.len());

    // A second drop on the same runner reports only what it caused.
    let customers: Vec<_> = files
        .iter()
        .filter(|f| f.table == Table::CustomerLanding)
        .cloned()
        .collect();
    let again = lake::drop_files(
        &local.stack,
        &mut runner,
        &customers,
        0,
        Duration::from_secs(300),
        |_| {},
    )
    .await
    .unwrap();
    let lines = again.lines();
    let rows: Vec<&str> = lines.iter().map(|l| parts(l).0).collect();
    assert_eq!(
        rows,
        ["customer_landing_to_trusted rows in 956 out 482 filtered 474 quarantined 0"]
    );
    // The same file again: it reads its file and the shards its e-mails fall in, changes
    // none, and removes its (absent) quarantine object; for the erasure index, its 956
    // people being more than ERASURE_WIDE_PERSONS, it writes one wide index (the sorted
    // keyed hashes, 32 hex digits and a newline each: an entry of the index table, a write
    // unit per KB of the item) and GETs the erasure epoch (still none: the erased markers
    // this warm function listed on the first drop stand, no LIST). Nothing written to S3.
    let shards = local.stack.cfg.function.customer_shards;
    let emails = 956;
    let key = &customers[0].key;
    let partition = format!("{}/persons-wide/customer_landing", local.stack.cfg.bucket);
    let item = "pk".len() + partition.len() + "sk".len() + key.len() + "h".len() + emails * 33;
    let requests = again.requests_lines();
    let (head, bytes) = requests[0].split_once("; ").unwrap();
    assert_eq!(
        head,
        format!(
            "customer_landing_to_trusted requests PUT 0 GET {} LIST 0 DELETE 1 Glue 0 SQS 0 DynamoDB RRU 0 WRU {}",
            1 + shards + 1,
            item.div_ceil(1024)
        )
    );
    assert!(bytes.ends_with("wrote 0 B"), "{bytes}");
}
