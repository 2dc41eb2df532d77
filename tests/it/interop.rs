//! Real clients, real conventions: the five Parquet tables read through the Glue catalog by
//! readers that share no code with the lake (awswrangler, which lists a table location
//! recursively unless given a partition filter, and DuckDB over the locations Glue lists),
//! and table locations that hold nothing but Parquet data files.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use stedi::schema::{ColType, Format, PARTITION_KEY, Table};
use stedi_tests::Local;

/// The sample's partition (every reading is of 2022-06-18, UTC).
const DT: &str = "2022-06-18";

/// Batch-truth row counts of the Parquet tables on the sample (DESIGN.md's, as the
/// pipeline test pins them).
fn rows(table: Table) -> u64 {
    let expected = crate::pipeline::EXPECTED
        .iter()
        .find(|(n, _)| *n == table.name());
    expected.map_or(0, |(_, n)| *n)
}

/// The pandas dtype awswrangler gives a column of this Glue type (its default
/// `numpy_nullable` backend).
fn pandas_dtype(ty: ColType) -> &'static str {
    match ty {
        ColType::Str => "string",
        ColType::Long => "Int64",
        ColType::Int => "Int32",
        ColType::Double => "float64",
    }
}

/// DuckDB's type for a column of this Glue type.
fn duckdb_type(ty: ColType) -> &'static str {
    match ty {
        ColType::Str => "VARCHAR",
        ColType::Long => "BIGINT",
        ColType::Int => "INTEGER",
        ColType::Double => "DOUBLE",
    }
}

/// `[[name, type]]` of the table's columns (then `dt`, a string, when partitioned).
fn columns(table: Table, ty: fn(ColType) -> &'static str) -> Value {
    let mut cols: Vec<Value> = table
        .columns()
        .iter()
        .map(|c| json!([c.name, ty(c.ty)]))
        .collect();
    if table.partitioned() {
        cols.push(json!([PARTITION_KEY, ty(ColType::Str)]));
    }
    Value::Array(cols)
}

/// Whether `name` is a data file's name: `<stem>.parquet`, no folder, not hidden.
fn data_file(name: &str) -> bool {
    !name.contains('/')
        && !name.starts_with(['_', '.'])
        && name
            .strip_suffix(".parquet")
            .is_some_and(|stem| !stem.is_empty())
}

/// Whether `folder` is `dt=YYYY-MM-DD`.
fn dt_folder(folder: &str) -> bool {
    folder.strip_prefix("dt=").is_some_and(stedi::keys::is_date)
}

/// Runs `tests/interop/read_tables.py` against the local stack and returns its JSON.
async fn read_tables(local: &Local) -> Value {
    let root = stedi_infra::project_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} not found: run `make tools` (installs awswrangler and duckdb into .venv)",
        python.display()
    );
    let cfg = &local.stack.cfg;
    let out = tokio::process::Command::new(&python)
        .arg(root.join("tests/interop/read_tables.py"))
        .args([&local.moto.endpoint, &cfg.bucket, &cfg.database])
        .args(["--dt", DT])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "read_tables.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("read_tables.py printed no JSON object ({e}):\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_readers_see_the_batch_truth_through_the_glue_catalog() {
    let local = Local::start().await.unwrap();
    let out = local.drop_sample(0).await.unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let bucket = &local.stack.cfg.bucket;

    // Every Parquet table's location holds only its data files: `<stem>.parquet` directly
    // in an unpartitioned table, `dt=YYYY-MM-DD/<stem>.parquet` in a partitioned one.
    let keys = local.keys().await.unwrap();
    let parquet: Vec<Table> = Table::ALL
        .into_iter()
        .filter(|t| t.format() == Format::Parquet)
        .collect();
    assert_eq!(parquet.len(), 5);
    let mut objects: BTreeMap<Table, BTreeSet<String>> = BTreeMap::new();
    for &table in &parquet {
        let under: BTreeSet<String> = keys
            .iter()
            .filter(|k| k.starts_with(table.prefix()))
            .cloned()
            .collect();
        assert!(!under.is_empty(), "{}: no objects", table.name());
        for key in &under {
            let rest = &key[table.prefix().len()..];
            let ok = match rest.split_once('/') {
                Some((folder, name)) => table.partitioned() && dt_folder(folder) && data_file(name),
                None => !table.partitioned() && data_file(rest),
            };
            assert!(
                ok,
                "{}: {key} is not a data file of the table's layout",
                table.name()
            );
        }
        objects.insert(table, under);
    }

    let got = read_tables(&local).await;
    let summary = |reader: &str, table: Table| -> &Value {
        let v = &got[reader][table.name()];
        assert!(
            v.get("error").is_none(),
            "{reader} on {}: {}",
            table.name(),
            v["error"]
        );
        v
    };
    for table in parquet {
        let rows = rows(table);
        let name = table.name();

        // The catalog: the table's columns and location, and its one partition.
        let glue = &got["glue"][name];
        let glue_cols: Vec<Value> = table
            .columns()
            .iter()
            .map(|c| json!([c.name, c.ty.glue()]))
            .collect();
        assert_eq!(glue["columns"], Value::Array(glue_cols), "{name}");
        assert_eq!(
            glue["location"],
            format!("s3://{bucket}/{}", table.prefix()),
            "{name}"
        );
        if table.partitioned() {
            assert_eq!(glue["partition_keys"], json!([[PARTITION_KEY, "string"]]));
            assert_eq!(
                glue["partitions"],
                json!({DT: format!("s3://{bucket}/{}dt={DT}/", table.prefix())}),
                "{name}"
            );
        } else {
            assert_eq!(glue["partition_keys"], json!([]), "{name}");
            assert_eq!(glue["partitions"], json!({}), "{name}");
        }

        // awswrangler, listing the whole location; then through Glue's partitions.
        let readers: &[&str] = if table.partitioned() {
            &["awswrangler", "awswrangler_partition_filter"]
        } else {
            &["awswrangler"]
        };
        for reader in readers {
            let v = summary(reader, table);
            assert_eq!(v["rows"], rows, "{reader} on {name}");
            assert_eq!(
                v["dtypes"],
                columns(table, pandas_dtype),
                "{reader} on {name}"
            );
        }
        if !table.partitioned() {
            assert!(
                got["awswrangler_partition_filter"].get(name).is_none(),
                "{name}"
            );
        }

        // DuckDB over the objects at the locations Glue gives, read as Hive lists them:
        // exactly the table's objects.
        let v = summary("duckdb", table);
        assert_eq!(v["rows"], rows, "duckdb on {name}");
        assert_eq!(v["types"], columns(table, duckdb_type), "duckdb on {name}");
        let files: BTreeSet<String> = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        assert_eq!(&files, &objects[&table], "duckdb on {name}");
    }

    // After a compaction (grace 0: the per-source objects are held outside the table
    // location at once), the same readers see the same rows from the compacted files.
    let ctx = local.stack.function_context();
    let ctx = stedi::Ctx::new(
        local.stack.s3.clone(),
        local.stack.glue.clone(),
        local.stack.dynamodb.clone(),
        stedi::config::Config {
            compact_grace_seconds: 0,
            ..ctx.cfg.clone()
        },
    );
    stedi_infra::lake::compact(&ctx, bucket, true)
        .await
        .unwrap();
    let got = read_tables(&local).await;
    for table in stedi::transitions::compact::tables() {
        let name = table.name();
        let gen1 = format!(
            "s3://{bucket}/{}",
            stedi::keys::generation_prefix(table, 1, DT)
        );
        assert_eq!(got["glue"][name]["partitions"], json!({DT: gen1}), "{name}");
        for reader in ["awswrangler", "awswrangler_partition_filter", "duckdb"] {
            let v = &got[reader][name];
            assert!(
                v.get("error").is_none(),
                "{reader} on {name}: {}",
                v["error"]
            );
            assert_eq!(
                v["rows"],
                rows(table),
                "{reader} on {name} after compaction"
            );
        }
        let files = got["duckdb"][name]["files"].as_array().unwrap().len();
        assert_eq!(files, 1, "{name}: one compacted file");
    }
}
