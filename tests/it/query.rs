//! `stedi query` and `stedi ddl`: what Athena would see, from the Glue catalog and S3.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use datafusion::sql::sqlparser::ast::{HiveIOFormat, HiveRowFormat, Statement};
use datafusion::sql::sqlparser::dialect::HiveDialect;
use datafusion::sql::sqlparser::parser::Parser;
use stedi::catalog;
use stedi::config::Config;
use stedi::schema::Table;
use stedi_infra::query::{self, Lake, OutputFormat};
use stedi_infra::stack::Stack;
use stedi_tests::truth::Truth;
use stedi_tests::{Local, sample_dir};

fn longs(b: &[RecordBatch], col: usize) -> Vec<i64> {
    b.iter()
        .flat_map(|b| {
            let a = b.column(col).as_any().downcast_ref::<Int64Array>().unwrap();
            (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
        })
        .collect()
}

fn strings(b: &[RecordBatch], col: usize) -> Vec<String> {
    b.iter()
        .flat_map(|b| {
            let a = b
                .column(col)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            (0..a.len())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_the_batch_truth_and_see_only_registered_partitions() {
    let local = Local::start().await.unwrap();
    local.drop_sample(0).await.unwrap();
    let stack = &local.stack;
    let truth = Truth::compute(&sample_dir(), false).unwrap();

    // Rows per serial number in machine_learning_curated.
    let b = query::query(
        stack,
        "SELECT serialnumber, count(*) AS n FROM machine_learning_curated \
         GROUP BY serialnumber ORDER BY serialnumber",
    )
    .await
    .unwrap();
    let got: BTreeMap<String, i64> = strings(&b, 0).into_iter().zip(longs(&b, 1)).collect();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for r in &truth.machine_learning_curated {
        *want.entry(r.1.clone()).or_default() += 1;
    }
    assert_eq!(got, want);

    // A three-way join: readings per consenting customer with a device.
    let b = query::query(
        stack,
        "SELECT count(*) FROM accelerometer_trusted a JOIN customer_trusted c ON a.user = c.email \
         JOIN customer_curated k ON k.email = c.email",
    )
    .await
    .unwrap();
    assert_eq!(longs(&b, 0), [40981]);

    athena_examples_run_unchanged_with_database_qualified_names(stack, &truth).await;

    // A partition in S3 but not in Glue is invisible until it is registered.
    let ml = stedi_infra::lake::table_objects(stack, Table::MachineLearningCurated)
        .await
        .unwrap()
        .remove(0);
    let copy = ml.replace("/dt=2022-06-18/", "/dt=2022-06-19/");
    let copy = copy.as_str();
    let bytes = local.get(&ml).await.unwrap();
    let rows_in_copy = stedi::columnar::read_parquet(bytes.clone(), &[], "t")
        .unwrap()
        .iter()
        .map(|b| b.num_rows() as i64)
        .sum::<i64>();
    local.put(copy, bytes).await.unwrap();
    let count = "SELECT count(*) FROM machine_learning_curated";
    let on_19 = "SELECT count(*) FROM machine_learning_curated WHERE dt = '2022-06-19'";
    assert_eq!(
        longs(&query::query(stack, count).await.unwrap(), 0),
        [40981]
    );
    assert_eq!(longs(&query::query(stack, on_19).await.unwrap(), 0), [0]);
    let dts = ["2022-06-19".to_string()];
    catalog::register_partitions(
        &stack.glue,
        "stedi",
        &stack.cfg.bucket,
        Table::MachineLearningCurated,
        &dts,
    )
    .await
    .unwrap();
    assert_eq!(
        longs(&query::query(stack, count).await.unwrap(), 0),
        [40981 + rows_in_copy]
    );

    // Partition pruning: a filter on dt reads that partition's objects only.
    let lake = Lake::for_sql(stack, on_19).await.unwrap();
    assert_eq!(longs(&lake.run(on_19).await.unwrap(), 0), [rows_in_copy]);
    let fetched = lake.store.fetched();
    assert!(!fetched.is_empty());
    assert!(
        fetched
            .iter()
            .all(|k| k.starts_with("step_trainer/curated/dt=2022-06-19/")),
        "{fetched:?}"
    );

    // The example from the issue, and the output formats.
    let b = query::query(stack, "SELECT * FROM machine_learning_curated WHERE dt = '2022-06-18' ORDER BY sensorreadingtime, serialnumber, x, y, z LIMIT 2").await.unwrap();
    let cols: Vec<String> = b[0]
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
            "z",
            "dt"
        ]
    );
    let csv = query::render(&b, OutputFormat::Csv).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.starts_with("sensorreadingtime,serialnumber,distancefromobject,x,y,z,dt\n"));
    let json: serde_json::Value =
        serde_json::from_str(&query::render(&b, OutputFormat::Json).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[0]["dt"], "2022-06-18");
    assert!(json[0]["sensorreadingtime"].is_i64());

    // Bad SQL is a clear error, not a panic.
    let e = query::query(stack, "SELEC 1").await.unwrap_err();
    assert!(format!("{e:#}").contains("SQL error"), "{e:#}");
    let e = query::query(stack, "SELECT nope FROM customer_trusted")
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("nope"), "{e:#}");
}

/// The README's Athena examples, verbatim, and every way Athena names a table.
async fn athena_examples_run_unchanged_with_database_qualified_names(stack: &Stack, truth: &Truth) {
    // The README's first Athena example, verbatim (no ORDER BY: compared as a map).
    let b = query::query(
        stack,
        "SELECT serialnumber, dt, count(*) FROM stedi.machine_learning_curated GROUP BY 1, 2;",
    )
    .await
    .unwrap();
    let keys = strings(&b, 0).into_iter().zip(strings(&b, 1));
    let got: Vec<((String, String), i64)> = keys.zip(longs(&b, 2)).collect();
    let got_map: BTreeMap<(String, String), i64> = got.iter().cloned().collect();
    assert_eq!(got_map.len(), got.len(), "one row per (serialnumber, dt)");
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in &truth.machine_learning_curated {
        let dt = stedi::keys::dt_of_millis(r.0).unwrap();
        *want.entry((r.1.clone(), dt)).or_default() += 1;
    }
    assert_eq!(got_map, want);
    assert_eq!(got.len(), 482);
    assert_eq!(got.iter().map(|g| g.1).sum::<i64>(), 40981);

    // The second, verbatim: curated customers whose device sent no step trainer readings.
    let b = query::query(
        stack,
        "SELECT email FROM stedi.customer_curated WHERE serialnumber NOT IN (SELECT serialnumber FROM stedi.step_trainer_trusted);",
    )
    .await
    .unwrap();
    let mut got = strings(&b, 0);
    got.sort();
    let stepped: BTreeSet<&str> = truth
        .step_trainer_trusted
        .iter()
        .map(|s| s.1.as_str())
        .collect();
    // Curated customers by whether their device sent readings (one partition, both sides).
    let (matched, unmatched): (Vec<_>, Vec<_>) = truth
        .curated_serials
        .iter()
        .partition(|(_, s)| stepped.contains(s.as_str()));
    let want: Vec<String> = unmatched.into_iter().map(|(e, _)| e.clone()).collect();
    assert_eq!(got, want);
    // Every curated customer's device sent readings on the sample, so the answer is empty;
    // the complement shows the subquery is matched.
    assert_eq!(got.len(), 0);
    assert_eq!(b.iter().map(|b| b.num_columns()).collect::<Vec<_>>(), [1]);
    let b = query::query(
        stack,
        "SELECT count(*) FROM stedi.customer_curated WHERE serialnumber IN (SELECT serialnumber FROM stedi.step_trainer_trusted);",
    )
    .await
    .unwrap();
    let matched = matched.len();
    assert_eq!(longs(&b, 0), [matched as i64]);
    assert_eq!(matched, 482);

    // Quoted identifiers, the catalog Athena names, and unqualified names: one table.
    for sql in [
        r#"SELECT count(*) FROM "stedi"."machine_learning_curated""#,
        r#"SELECT count(*) FROM "stedi".machine_learning_curated;"#,
        "SELECT count(*) FROM awsdatacatalog.stedi.machine_learning_curated",
        "SELECT count(*) FROM machine_learning_curated",
    ] {
        assert_eq!(
            longs(&query::query(stack, sql).await.unwrap(), 0),
            [40981],
            "{sql}"
        );
    }
    let b = query::query(
        stack,
        r#"SELECT count(*) FROM "stedi"."customer_curated" c JOIN stedi.customer_trusted t ON c.email = t.email"#,
    )
    .await
    .unwrap();
    assert_eq!(longs(&b, 0), [482]);

    // Another database is not this one.
    let e = query::query(stack, "SELECT count(*) FROM other.customer_curated")
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("other"), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_the_configured_glue_database() {
    let local = Local::with_config(Config {
        database: "lakehouse".into(),
        ..Config::default()
    })
    .await
    .unwrap();
    let customers =
        std::fs::read(sample_dir().join("customer/landing/customer-1691348231425.json")).unwrap();
    local
        .put("customer/landing/customer-1691348231425.json", customers)
        .await
        .unwrap();
    for sql in [
        "SELECT count(*) FROM lakehouse.customer_landing;",
        r#"SELECT count(*) FROM "lakehouse"."customer_landing""#,
        "SELECT count(*) FROM customer_landing",
    ] {
        assert_eq!(
            longs(&query::query(&local.stack, sql).await.unwrap(), 0),
            [956],
            "{sql}"
        );
    }
    let e = query::query(&local.stack, "SELECT count(*) FROM stedi.customer_landing")
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("stedi"), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_parses_and_matches_the_glue_tables() {
    let local = Local::start().await.unwrap();
    let statements = stedi_infra::ddl::statements("stedi", &local.stack.cfg.bucket).unwrap();
    assert_eq!(statements.len(), 8 + 3);
    let mut repaired = Vec::new();
    for text in &statements {
        if let Some(rest) = text.strip_prefix("MSCK REPAIR TABLE `stedi`.`") {
            repaired.push(rest.trim_end_matches("`;").to_string());
            continue;
        }
        let parsed =
            Parser::parse_sql(&HiveDialect {}, text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let Statement::CreateTable(ct) = &parsed[0] else {
            panic!("not a CREATE TABLE: {text}")
        };
        let name = ct
            .name
            .0
            .last()
            .unwrap()
            .to_string()
            .trim_matches('`')
            .to_string();
        let glue = local
            .stack
            .glue
            .get_table()
            .database_name("stedi")
            .name(&name)
            .send()
            .await
            .unwrap();
        let glue = glue.table().unwrap();
        let sd = glue.storage_descriptor().unwrap();
        let cols: Vec<(String, String)> = ct
            .columns
            .iter()
            .map(|c| (c.name.value.clone(), c.data_type.to_string().to_lowercase()))
            .collect();
        let glue_cols: Vec<(String, String)> = sd
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.r#type().unwrap().to_string()))
            .collect();
        assert_eq!(cols, glue_cols, "{name}");
        let hive = ct.hive_formats.as_ref().unwrap();
        assert_eq!(hive.location.as_deref(), sd.location(), "{name}");
        let Some(HiveRowFormat::SERDE { class }) = &hive.row_format else {
            panic!("{name}: no SerDe")
        };
        assert_eq!(
            Some(class.as_str()),
            sd.serde_info().unwrap().serialization_library()
        );
        let Some(HiveIOFormat::IOF { input_format, .. }) = &hive.storage else {
            panic!("{name}: no input format")
        };
        assert_eq!(
            input_format.to_string().trim_matches('\''),
            sd.input_format().unwrap()
        );
        let glue_parts: Vec<String> = glue
            .partition_keys()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let parts = ct_partitions(text);
        assert_eq!(parts, glue_parts, "{name}");
    }
    assert_eq!(
        repaired,
        [
            "accelerometer_trusted",
            "step_trainer_trusted",
            "machine_learning_curated"
        ]
    );
}

/// The partition columns of a DDL statement (by text: the parser keeps them in a
/// dialect-specific place).
fn ct_partitions(text: &str) -> Vec<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PARTITIONED BY ("))
        .map(|l| {
            l.trim_end_matches(')')
                .split(',')
                .map(|c| {
                    c.split_whitespace()
                        .next()
                        .unwrap()
                        .trim_matches('`')
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}
