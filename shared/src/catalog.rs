//! The Glue Data Catalog: table definitions generated from [`crate::schema`], and partition
//! registration.
//!
//! `BatchCreatePartition` reports failures per item in `Errors`, not as an exception, so
//! every item is checked: `AlreadyExists` is success once the existing partition is seen to
//! point at the right location (it is updated if not); any other item error fails the call.
//!
//! Every Glue call is counted (one per page of a paginated call): through the counters of
//! a [`Catalog`], and in the running invocation's (see [`crate::store::count_invocation`]);
//! the free functions, which take a bare client, count in the invocation's only.

use std::sync::Arc;

use aws_sdk_glue::Client;
use aws_sdk_glue::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types::{Column, PartitionInput, SerDeInfo, StorageDescriptor, TableInput};

use crate::error::{Error, Result};
use crate::schema::{Format, PARTITION_KEY, Table};
use crate::store::{Request, RequestCounts, record};

const BATCH: usize = 100;

/// `s3://bucket/prefix` location of a table.
pub fn table_location(bucket: &str, table: Table) -> String {
    format!("s3://{bucket}/{}", table.prefix())
}

/// `s3://bucket/prefix/dt=…/` location of a partition.
pub fn partition_location(bucket: &str, table: Table, dt: &str) -> String {
    format!("s3://{bucket}/{}", crate::keys::partition_prefix(table, dt))
}

fn glue_err<
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
>(
    op: &'static str,
    table: &str,
    e: SdkError<E, R>,
) -> Error {
    let (message, retryable) = match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("unknown");
            let retryable = matches!(
                code,
                "ThrottlingException"
                    | "InternalServiceException"
                    | "OperationTimeoutException"
                    | "ConcurrentModificationException"
                    | "ResourceNumberLimitExceededException"
            );
            (
                format!("{code}: {}", se.err().message().unwrap_or("")),
                retryable,
            )
        }
        SdkError::ConstructionFailure(_) => (format!("{e:?}"), false),
        _ => (
            format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ),
            true,
        ),
    };
    Error::Glue {
        op,
        table: table.to_string(),
        message,
        retryable,
    }
}

fn build_err(table: Table, e: impl std::fmt::Display) -> Error {
    Error::Glue {
        op: "build",
        table: table.name().to_string(),
        message: e.to_string(),
        retryable: false,
    }
}

/// The storage descriptor of `table` (or of one of its partitions) at `location`.
pub fn storage_descriptor(table: Table, location: String) -> Result<StorageDescriptor> {
    let columns = table
        .columns()
        .iter()
        .map(|(name, ty, _)| Column::builder().name(*name).r#type(ty.glue()).build())
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

/// The Glue client and the counters its calls are added to (shared with a
/// [`crate::store::Store`], so one context counts S3 and Glue in one place).
#[derive(Clone, Debug)]
pub struct Catalog {
    client: Client,
    counts: Arc<RequestCounts>,
}

impl Catalog {
    /// Glue calls through `client`, counted in `counts`.
    pub fn new(client: Client, counts: Arc<RequestCounts>) -> Catalog {
        Catalog { client, counts }
    }

    /// The underlying client (calls sent through it directly are not counted).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The counters of every call made through this catalog.
    pub fn counts(&self) -> &Arc<RequestCounts> {
        &self.counts
    }

    /// [`register_partitions`], counted.
    pub async fn register_partitions(
        &self,
        database: &str,
        bucket: &str,
        table: Table,
        dts: &[String],
    ) -> Result<()> {
        let g = Glue::counted(self);
        register(g, database, bucket, table, dts).await
    }

    /// [`drop_partition`], counted.
    pub async fn drop_partition(&self, database: &str, table: Table, dt: &str) -> Result<()> {
        drop_one(Glue::counted(self), database, table, dt).await
    }

    /// [`list_partitions`], counted.
    pub async fn list_partitions(
        &self,
        database: &str,
        table: Table,
    ) -> Result<Vec<(String, String)>> {
        list(Glue::counted(self), database, table).await
    }
}

/// A client and where its calls are counted.
#[derive(Clone, Copy)]
struct Glue<'a> {
    client: &'a Client,
    counts: Option<&'a Arc<RequestCounts>>,
}

impl<'a> Glue<'a> {
    fn counted(c: &'a Catalog) -> Self {
        Glue {
            client: &c.client,
            counts: Some(&c.counts),
        }
    }

    fn bare(client: &'a Client) -> Self {
        Glue {
            client,
            counts: None,
        }
    }

    /// The client, for one call (which is counted).
    fn call(&self) -> &'a Client {
        record(self.counts, Request::Glue);
        self.client
    }
}

/// Registers partitions `dts` of `table`; existing ones are checked and repointed if needed.
pub async fn register_partitions(
    glue: &Client,
    database: &str,
    bucket: &str,
    table: Table,
    dts: &[String],
) -> Result<()> {
    register(Glue::bare(glue), database, bucket, table, dts).await
}

async fn register(
    glue: Glue<'_>,
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
        let out = glue
            .call()
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
                });
            }
        }
    }
    Ok(())
}

fn partition_input(bucket: &str, table: Table, dt: &str) -> Result<PartitionInput> {
    Ok(PartitionInput::builder()
        .values(dt)
        .storage_descriptor(storage_descriptor(
            table,
            partition_location(bucket, table, dt),
        )?)
        .build())
}

async fn ensure_location(
    glue: Glue<'_>,
    database: &str,
    bucket: &str,
    table: Table,
    dt: &str,
) -> Result<()> {
    let qualified = format!("{database}.{}", table.name());
    let want = partition_location(bucket, table, dt);
    let got = glue
        .call()
        .get_partition()
        .database_name(database)
        .table_name(table.name())
        .partition_values(dt)
        .send()
        .await
        .map_err(|e| glue_err("GetPartition", &qualified, e))?;
    let have = got
        .partition()
        .and_then(|p| p.storage_descriptor())
        .and_then(|s| s.location());
    if have == Some(want.as_str()) {
        return Ok(());
    }
    glue.call()
        .update_partition()
        .database_name(database)
        .table_name(table.name())
        .partition_value_list(dt)
        .partition_input(partition_input(bucket, table, dt)?)
        .send()
        .await
        .map_err(|e| glue_err("UpdatePartition", &qualified, e))?;
    Ok(())
}

/// Removes partition `dt` of `table` (a missing partition is not an error).
pub async fn drop_partition(glue: &Client, database: &str, table: Table, dt: &str) -> Result<()> {
    drop_one(Glue::bare(glue), database, table, dt).await
}

async fn drop_one(glue: Glue<'_>, database: &str, table: Table, dt: &str) -> Result<()> {
    let qualified = format!("{database}.{}", table.name());
    match glue
        .call()
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
    list(Glue::bare(glue), database, table).await
}

async fn list(glue: Glue<'_>, database: &str, table: Table) -> Result<Vec<(String, String)>> {
    let qualified = format!("{database}.{}", table.name());
    let mut out = Vec::new();
    let mut pages = glue
        .client
        .get_partitions()
        .database_name(database)
        .table_name(table.name())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        record(glue.counts, Request::Glue);
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
    use crate::store::count_invocation;
    use crate::summary::Requests;

    fn offline_client() -> Client {
        // Nothing listens on port 9: every call fails fast, and is still a call.
        let conf = aws_sdk_glue::Config::builder()
            .behavior_version(aws_sdk_glue::config::BehaviorVersion::latest())
            .region(aws_sdk_glue::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(aws_sdk_glue::config::Credentials::for_tests())
            .retry_config(aws_sdk_glue::config::retry::RetryConfig::disabled())
            .build();
        Client::from_conf(conf)
    }

    #[tokio::test]
    async fn glue_calls_are_counted() {
        let counts = RequestCounts::shared();
        let catalog = Catalog::new(offline_client(), counts.clone());
        let t = Table::AccelerometerTrusted;
        let dts = ["2022-06-18".to_string()];
        assert!(
            catalog
                .register_partitions("db", "lake", t, &dts)
                .await
                .is_err()
        );
        assert!(catalog.drop_partition("db", t, "2022-06-18").await.is_err());
        assert!(catalog.list_partitions("db", t).await.is_err());
        assert_eq!(counts.snapshot().glue_calls, 3);
        // No partition to register is no call.
        catalog
            .register_partitions("db", "lake", t, &[])
            .await
            .unwrap();
        assert_eq!(counts.snapshot().glue_calls, 3);

        // The free functions count in the running invocation's counters.
        let inv = RequestCounts::shared();
        let client = offline_client();
        count_invocation(inv.clone(), async {
            assert!(
                register_partitions(&client, "db", "lake", t, &dts)
                    .await
                    .is_err()
            );
            assert!(drop_partition(&client, "db", t, "x").await.is_err());
            assert!(catalog.list_partitions("db", t).await.is_err());
        })
        .await;
        assert_eq!(
            inv.snapshot(),
            Requests {
                glue_calls: 3,
                ..Requests::default()
            }
        );
        assert_eq!(counts.snapshot().glue_calls, 4);
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
