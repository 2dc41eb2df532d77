//! The Glue Data Catalog: table definitions generated from [`crate::schema`], and partition
//! registration.
//!
//! `BatchCreatePartition` reports failures per item in `Errors`, not as an exception, so
//! every item is checked: `AlreadyExists` is success once the existing partition is seen to
//! point at the right location (it is updated if not); any other item error fails the call.
//!
//! Every Glue call is counted (one per page of a paginated call) in the running
//! invocation's counters (see [`crate::store::count_invocation`]).

use aws_sdk_glue::Client;
use aws_sdk_glue::error::SdkError;
use aws_sdk_glue::types::{Column, PartitionInput, SerDeInfo, StorageDescriptor, TableInput};

use crate::error::{Error, Result, sdk_message, sdk_retryable};
use crate::schema::{Format, PARTITION_KEY, Table};
use crate::store::{Request, authorize_glue, record};

const BATCH: usize = 100;

/// `s3://bucket/prefix` location of a table.
pub fn table_location(bucket: &str, table: Table) -> String {
    format!("s3://{bucket}/{}", table.prefix())
}

/// `s3://bucket/prefix/dt=…/` location of a partition.
pub fn partition_location(bucket: &str, table: Table, dt: &str) -> String {
    format!("s3://{bucket}/{}", crate::keys::partition_prefix(table, dt))
}

fn glue_err<E, R>(op: &'static str, table: &str, e: SdkError<E, R>) -> Error
where
    E: crate::error::ServiceError,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let retryable = sdk_retryable(&e, |code| {
        matches!(
            code,
            "ThrottlingException"
                | "InternalServiceException"
                | "OperationTimeoutException"
                | "ConcurrentModificationException"
                | "ResourceNumberLimitExceededException"
        )
    });
    Error::Glue {
        op,
        table: table.to_string(),
        message: sdk_message(&e),
        retryable,
        source: Some(Box::new(e)),
    }
}

fn build_err(table: Table, e: impl std::fmt::Display) -> Error {
    Error::Glue {
        op: "build",
        table: table.name().to_string(),
        message: e.to_string(),
        retryable: false,
        source: None,
    }
}

/// The storage descriptor of `table` (or of one of its partitions) at `location`.
pub fn storage_descriptor(table: Table, location: String) -> Result<StorageDescriptor> {
    let columns = table
        .columns()
        .iter()
        .map(|c| Column::builder().name(c.name).r#type(c.ty.glue()).build())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| build_err(table, e))?;
    let (serde, input, output) = match table.format() {
        Format::JsonLines => (
            SerDeInfo::builder()
                .serialization_library("org.openx.data.jsonserde.JsonSerDe")
                .parameters("case.insensitive", "TRUE")
                .parameters("dots.in.keys", "FALSE")
                .parameters("ignore.malformed.json", "FALSE")
                .build(),
            "org.apache.hadoop.mapred.TextInputFormat",
            "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        ),
        Format::Parquet => (
            SerDeInfo::builder()
                .serialization_library(
                    "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                )
                .parameters("serialization.format", "1")
                .build(),
            "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        ),
    };
    Ok(StorageDescriptor::builder()
        .set_columns(Some(columns))
        .location(location)
        .input_format(input)
        .output_format(output)
        .serde_info(serde)
        .build())
}

/// The Glue definition of `table` in `bucket`.
pub fn table_input(table: Table, bucket: &str) -> Result<TableInput> {
    let mut t = TableInput::builder()
        .name(table.name())
        .table_type("EXTERNAL_TABLE")
        .parameters("EXTERNAL", "TRUE")
        .parameters(
            "classification",
            match table.format() {
                Format::JsonLines => "json",
                Format::Parquet => "parquet",
            },
        )
        .storage_descriptor(storage_descriptor(table, table_location(bucket, table))?);
    if table.partitioned() {
        t = t.partition_keys(
            Column::builder()
                .name(PARTITION_KEY)
                .r#type("string")
                .build()
                .map_err(|e| build_err(table, e))?,
        );
    }
    t.build().map_err(|e| build_err(table, e))
}

/// Registers partitions `dts` of `table`; existing ones are checked and repointed if needed.
pub async fn register_partitions(
    glue: &Client,
    database: &str,
    bucket: &str,
    table: Table,
    dts: &[String],
) -> Result<()> {
    let qualified = format!("{database}.{}", table.name());
    for chunk in dts.chunks(BATCH) {
        let inputs = chunk
            .iter()
            .map(|dt| partition_input(bucket, table, dt))
            .collect::<Result<Vec<_>>>()?;
        record(Request::Glue);
        authorize_glue(
            "BatchCreatePartition",
            "glue:BatchCreatePartition",
            database,
            table.name(),
        )?;
        let out = glue
            .batch_create_partition()
            .database_name(database)
            .table_name(table.name())
            .set_partition_input_list(Some(inputs))
            .send()
            .await
            .map_err(|e| glue_err("BatchCreatePartition", &qualified, e))?;
        for item in out.errors() {
            let dt = item.partition_values().first().cloned().unwrap_or_default();
            let code = item
                .error_detail()
                .and_then(|d| d.error_code())
                .unwrap_or("unknown");
            if code == "AlreadyExistsException" {
                ensure_location(glue, database, bucket, table, &dt).await?;
            } else {
                let message = item
                    .error_detail()
                    .and_then(|d| d.error_message())
                    .unwrap_or("");
                return Err(Error::Glue {
                    op: "BatchCreatePartition",
                    table: qualified,
                    message: format!("partition dt={dt}: {code}: {message}"),
                    retryable: matches!(
                        code,
                        "ThrottlingException"
                            | "InternalServiceException"
                            | "ConcurrentModificationException"
                    ),
                    source: None,
                });
            }
        }
    }
    Ok(())
}

fn partition_input(bucket: &str, table: Table, dt: &str) -> Result<PartitionInput> {
    partition_input_at(table, dt, partition_location(bucket, table, dt))
}

fn partition_input_at(table: Table, dt: &str, location: String) -> Result<PartitionInput> {
    Ok(PartitionInput::builder()
        .values(dt)
        .storage_descriptor(storage_descriptor(table, location)?)
        .build())
}

async fn ensure_location(
    glue: &Client,
    database: &str,
    bucket: &str,
    table: Table,
    dt: &str,
) -> Result<()> {
    let want = partition_location(bucket, table, dt);
    let have = partition_location_now(glue, database, table, dt).await?;
    // A compacted partition points at its current generation (see `transitions::compact`):
    // that is the right location too, and repointing it would undo the compaction.
    let compacted = have
        .as_deref()
        .and_then(|l| l.strip_prefix(&format!("s3://{bucket}/")))
        .is_some_and(|p| crate::keys::generation_of(table, dt, p).is_some());
    if have.as_deref() == Some(want.as_str()) || compacted {
        return Ok(());
    }
    set_partition_location(glue, database, table, dt, want).await
}

/// The location partition `dt` of `table` points at (`None` when it is not registered).
pub async fn partition_location_now(
    glue: &Client,
    database: &str,
    table: Table,
    dt: &str,
) -> Result<Option<String>> {
    let qualified = format!("{database}.{}", table.name());
    record(Request::Glue);
    authorize_glue("GetPartition", "glue:GetPartition", database, table.name())?;
    match glue
        .get_partition()
        .database_name(database)
        .table_name(table.name())
        .partition_values(dt)
        .send()
        .await
    {
        Ok(got) => Ok(got
            .partition()
            .and_then(|p| p.storage_descriptor())
            .and_then(|s| s.location())
            .map(str::to_string)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_entity_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(glue_err("GetPartition", &qualified, e)),
    }
}

/// Points partition `dt` of `table` at `location` in one `UpdatePartition`: readers that
/// plan through the catalog see the old files or the new ones, never both.
pub async fn set_partition_location(
    glue: &Client,
    database: &str,
    table: Table,
    dt: &str,
    location: String,
) -> Result<()> {
    let qualified = format!("{database}.{}", table.name());
    record(Request::Glue);
    authorize_glue(
        "UpdatePartition",
        "glue:UpdatePartition",
        database,
        table.name(),
    )?;
    glue.update_partition()
        .database_name(database)
        .table_name(table.name())
        .partition_value_list(dt)
        .partition_input(partition_input_at(table, dt, location)?)
        .send()
        .await
        .map_err(|e| glue_err("UpdatePartition", &qualified, e))?;
    Ok(())
}

/// Removes partition `dt` of `table` (a missing partition is not an error).
pub async fn drop_partition(glue: &Client, database: &str, table: Table, dt: &str) -> Result<()> {
    let qualified = format!("{database}.{}", table.name());
    record(Request::Glue);
    authorize_glue(
        "DeletePartition",
        "glue:DeletePartition",
        database,
        table.name(),
    )?;
    match glue
        .delete_partition()
        .database_name(database)
        .table_name(table.name())
        .partition_values(dt)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_entity_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(glue_err("DeletePartition", &qualified, e)),
    }
}

/// Every registered partition of `table`: `(dt, location)`.
pub async fn list_partitions(
    glue: &Client,
    database: &str,
    table: Table,
) -> Result<Vec<(String, String)>> {
    let qualified = format!("{database}.{}", table.name());
    let mut out = Vec::new();
    let mut pages = glue
        .get_partitions()
        .database_name(database)
        .table_name(table.name())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        record(Request::Glue);
        authorize_glue(
            "GetPartitions",
            "glue:GetPartitions",
            database,
            table.name(),
        )?;
        let page = page.map_err(|e| glue_err("GetPartitions", &qualified, e))?;
        for p in page.partitions() {
            let dt = p.values().first().cloned().unwrap_or_default();
            let loc = p
                .storage_descriptor()
                .and_then(|s| s.location())
                .unwrap_or_default()
                .to_string();
            out.push((dt, loc));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RequestCounts, count_invocation};
    use crate::summary::Requests;
    use crate::testing::offline_glue;

    #[tokio::test]
    async fn glue_calls_are_counted() {
        let client = offline_glue();
        let t = Table::AccelerometerTrusted;
        let dts = ["2022-06-18".to_string()];
        let inv = RequestCounts::shared();
        count_invocation(inv.clone(), async {
            assert!(
                register_partitions(&client, "db", "lake", t, &dts)
                    .await
                    .is_err()
            );
            assert!(
                drop_partition(&client, "db", t, "2022-06-18")
                    .await
                    .is_err()
            );
            assert!(list_partitions(&client, "db", t).await.is_err());
            // No partition to register is no call.
            register_partitions(&client, "db", "lake", t, &[])
                .await
                .unwrap();
        })
        .await;
        assert_eq!(
            inv.snapshot(),
            Requests {
                glue_calls: 3,
                ..Requests::default()
            }
        );
    }

    #[test]
    fn tables_are_generated_from_the_schema() {
        let t = table_input(Table::AccelerometerTrusted, "lake").unwrap();
        let sd = t.storage_descriptor().unwrap();
        assert_eq!(sd.location(), Some("s3://lake/accelerometer/trusted/"));
        let cols: Vec<_> = sd
            .columns()
            .iter()
            .map(|c| format!("{} {}", c.name(), c.r#type().unwrap_or("")))
            .collect();
        assert_eq!(
            cols,
            [
                "user string",
                "timestamp bigint",
                "x double",
                "y double",
                "z double"
            ]
        );
        assert_eq!(t.partition_keys()[0].name(), "dt");
        assert_eq!(
            sd.serde_info().unwrap().serialization_library(),
            Some("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
        );
        let landing = table_input(Table::CustomerLanding, "lake").unwrap();
        assert!(landing.partition_keys().is_empty());
        assert_eq!(
            landing
                .storage_descriptor()
                .unwrap()
                .serde_info()
                .unwrap()
                .parameters()
                .unwrap()
                .get("case.insensitive")
                .map(String::as_str),
            Some("TRUE")
        );
        assert_eq!(
            partition_location("lake", Table::MachineLearningCurated, "2022-06-18"),
            "s3://lake/step_trainer/curated/dt=2022-06-18/"
        );
    }
}
