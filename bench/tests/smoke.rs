//! `make bench-smoke`: the benchmark's compute path on the sample (N=1) processes exactly
//! the DESIGN.md counts and writes the customer shards the functions write, and the
//! generator's N-fold data has exactly N times the counts.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn sample() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/stedi"
    ))
}

fn compute(what: &str, data: &std::path::Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_stedi-bench"))
        .args(["compute", "--what", what, "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_compute_path_processes_the_design_counts() {
    let r = compute("pipeline", &sample());
    assert_eq!(r["counts"]["customer_trusted"], 482);
    assert_eq!(r["counts"]["accelerometer_trusted"], 40981);
    assert_eq!(r["counts"]["customer_curated"], 482);
    assert_eq!(r["counts"]["step_trainer_trusted"], 14460);
    assert_eq!(r["counts"]["machine_learning_curated"], 40981);
    assert_eq!(r["rows_in"], 956 + 81273 + 28680);
    // The customer stages write what the functions write: one object per shard of the 256
    // that holds a customer (by the e-mail's FNV-1a hash), and the device index's shards
    // (by the serial's); the sample's 482 e-mails and their serials fall in 223 each.
    assert_eq!(r["counts"]["customer_trusted_objects"], 223);
    assert_eq!(r["counts"]["customer_curated_objects"], 223);
    assert_eq!(r["counts"]["device_index_objects"], 223);
    let acc = compute("accelerometer", &sample());
    assert_eq!(acc["rows_in"], 81273);
    assert_eq!(acc["rows_out"], 40981);
    assert_eq!(acc["bytes"], 6_871_328);
    // The ML join one output per pair of objects: the same rows, split by pair.
    let pairs = compute("machine_learning_pairs", &sample());
    assert_eq!(pairs["counts"]["machine_learning_curated"], 40981);
    assert_eq!(pairs["rows_in"], 14460);
}

#[test]
fn generated_data_has_exactly_n_times_the_counts() {
    let out = std::env::temp_dir().join(format!("stedi-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    stedi_bench::generate(&sample(), &out, 3, None).unwrap();
    let r = compute("pipeline", &out);
    assert_eq!(r["counts"]["customer_trusted"], 3 * 482);
    assert_eq!(r["counts"]["accelerometer_trusted"], 3 * 40981);
    assert_eq!(r["counts"]["customer_curated"], 3 * 482);
    assert_eq!(r["counts"]["step_trainer_trusted"], 3 * 14460);
    assert_eq!(r["counts"]["machine_learning_curated"], 3 * 40981);
    assert_eq!(r["rows_in"], 3 * (956 + 81273 + 28680));
    // 1,446 e-mails and their serials: 255 of the 256 shards each.
    assert_eq!(r["counts"]["customer_trusted_objects"], 255);
    assert_eq!(r["counts"]["customer_curated_objects"], 255);
    assert_eq!(r["counts"]["device_index_objects"], 255);
    let _ = std::fs::remove_dir_all(&out);
}
