//! `stedi query`: Athena-style SQL over the lake, locally. Tables come from the Glue catalog
//! (location, columns, partition keys, SerDe), partitions from `GetPartitions` — only
//! registered partitions are visible, as in Athena — and the objects from S3 through a
//! DataFusion object store over the AWS SDK. Landing tables are read with the functions'
//! own case-insensitive JSON-lines reader (as the OpenX SerDe reads them; lines it cannot
//! read are not rows). Only the tables a statement names are loaded.
//!
//! Names resolve as in Athena: the tables live in a schema named after the Glue database
//! (`GLUE_DATABASE`, default `stedi`) of the catalog [`CATALOG`], which is also the default
//! schema, so `customer_trusted`, `stedi.customer_trusted`, `"stedi"."customer_trusted"` and
//! `awsdatacatalog.stedi.customer_trusted` name the same table.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext, col, lit};
use stedi::columnar::RowsBuilder;
use stedi::schema::Table;

use crate::s3store::S3Store;
use crate::stack::Stack;

/// Output format of `stedi query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned table.
    Table,
    /// CSV with a header.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// The catalog the Glue database is a schema of: Athena's name for the Glue Data Catalog.
pub const CATALOG: &str = "awsdatacatalog";

/// A DataFusion session over the lake.
pub struct Lake {
    /// The session, with the statement's tables registered.
    pub ctx: SessionContext,
    /// The object store it reads through.
    pub store: S3Store,
    /// The Glue database: the schema the tables are registered in (and the default one).
    pub database: String,
}

fn arrow_type(glue: &str) -> Result<DataType> {
    Ok(match glue {
        "string" => DataType::Utf8,
        "bigint" => DataType::Int64,
        "int" => DataType::Int32,
        "double" => DataType::Float64,
        other => bail!("unsupported Glue column type {other}"),
    })
}

/// Whether `sql` names `table` as a word.
fn mentions(sql: &str, table: &str) -> bool {
    let sql = sql.to_ascii_lowercase();
    sql.match_indices(table).any(|(i, _)| {
        let before = sql[..i].chars().next_back();
        let after = sql[i + table.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

impl Lake {
    /// A session with every Glue table that `sql` names.
    pub async fn for_sql(stack: &Stack, sql: &str) -> Result<Lake> {
        let db = &stack.cfg.database;
        // The default catalog and schema are created by the session: unqualified names
        // resolve in the Glue database, as in an Athena query run in that database.
        let config = SessionConfig::new().with_default_catalog_and_schema(CATALOG, db);
        let ctx = SessionContext::new_with_config(config);
        let store = S3Store::new(stack.s3.clone(), &stack.cfg.bucket);
        let url = url::Url::parse(&format!("s3://{}", stack.cfg.bucket))?;
        ctx.register_object_store(&url, Arc::new(store.clone()));
        let lake = Lake {
            ctx,
            store,
            database: db.clone(),
        };
        let mut pages = stack
            .glue
            .get_tables()
            .database_name(db)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.with_context(|| format!("listing the tables of Glue database {db}"))?;
            for t in page.table_list() {
                if mentions(sql, t.name()) {
                    lake.register(stack, t).await?;
                }
            }
        }
        Ok(lake)
    }

    /// `name` in the Glue database's schema.
    fn table_ref(&self, name: &str) -> TableReference {
        TableReference::full(CATALOG, self.database.as_str(), name)
    }

    async fn register(&self, stack: &Stack, t: &aws_sdk_glue::types::Table) -> Result<()> {
        let name = t.name();
        let qualified = self.table_ref(name);
        let sd = t
            .storage_descriptor()
            .with_context(|| format!("Glue table {name} has no storage descriptor"))?;
        let fields = sd
            .columns()
            .iter()
            .map(|c| {
                Ok(Field::new(
                    c.name(),
                    arrow_type(c.r#type().unwrap_or(""))?,
                    true,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let location = sd.location().unwrap_or_default().to_string();
        let serde = sd
            .serde_info()
            .and_then(|s| s.serialization_library())
            .unwrap_or_default();
        if serde.contains("JsonSerDe") {
            let batches = self
                .read_json_lines(stack, name, &location, &schema)
                .await?;
            let table = MemTable::try_new(schema, vec![batches])?;
            self.ctx.register_table(qualified, Arc::new(table))?;
            return Ok(());
        }
        if t.partition_keys().is_empty() {
            let table = listing(&location, schema)?;
            self.ctx.register_table(qualified, Arc::new(table))?;
            return Ok(());
        }
        // One listing per registered partition, each with its `dt` as a constant: a
        // filter on `dt` prunes the other partitions before any object is read.
        let table = Table::from_name(name)
            .with_context(|| format!("{name}: not a table of this product"))?;
        let parts =
            stedi::catalog::list_partitions(&stack.glue, &stack.cfg.database, table).await?;
        let mut union: Option<DataFrame> = None;
        for (dt, loc) in parts {
            let df = self
                .ctx
                .read_table(Arc::new(listing(&loc, schema.clone())?))?;
            let mut cols: Vec<_> = schema.fields().iter().map(|f| col(f.name())).collect();
            cols.push(lit(dt).alias("dt"));
            let df = df.select(cols)?;
            union = Some(match union {
                Some(u) => u.union(df)?,
                None => df,
            });
        }
        match union {
            Some(df) => {
                self.ctx.register_table(qualified, df.into_view())?;
            }
            None => {
                let mut fields: Vec<Field> =
                    schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                fields.push(Field::new("dt", DataType::Utf8, true));
                let empty = MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]])?;
                self.ctx.register_table(qualified, Arc::new(empty))?;
            }
        }
        Ok(())
    }

    async fn read_json_lines(
        &self,
        stack: &Stack,
        name: &str,
        location: &str,
        schema: &SchemaRef,
    ) -> Result<Vec<RecordBatch>> {
        let table = Table::from_name(name)
            .with_context(|| format!("{name}: not a table of this product"))?;
        let ours: Vec<&str> = table.columns().iter().map(|c| c.name).collect();
        let theirs: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        if ours != theirs {
            bail!(
                "Glue table {name} has columns {theirs:?}, expected {ours:?}: run `stedi bootstrap`"
            );
        }
        let prefix = location
            .strip_prefix(&format!("s3://{}/", stack.cfg.bucket))
            .with_context(|| format!("{name} is not in bucket {}", stack.cfg.bucket))?;
        let fctx = stack.function_context();
        let mut rows = RowsBuilder::new(table);
        for key in fctx.store.list(&stack.cfg.bucket, prefix).await? {
            if !key.ends_with(".json") {
                continue;
            }
            // Lines the functions would quarantine are not rows here either.
            stedi::transitions::read_landing(&fctx, &stack.cfg.bucket, &key, table, |cells| {
                rows.append(cells);
                Ok(stedi::compute::RowOutcome::Kept)
            })
            .await?;
        }
        // The lake's schema marks required columns non-null; the Glue view is nullable.
        let batch = rows.finish()?;
        Ok(vec![RecordBatch::try_new(
            schema.clone(),
            batch.columns().to_vec(),
        )?])
    }

    /// Runs `sql`. A result with no rows is one empty batch, so that it keeps its columns.
    pub async fn run(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        // DataFusion's message already includes its causes: one line, not the chain.
        let flat = |e: datafusion::error::DataFusionError| anyhow::anyhow!("{e}");
        let df = self.ctx.sql(sql).await.map_err(flat)?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut batches = df.collect().await.map_err(flat)?;
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema));
        }
        Ok(batches)
    }
}

fn listing(location: &str, schema: SchemaRef) -> Result<ListingTable> {
    let url = ListingTableUrl::parse(location)?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(ListingTable::try_new(config)?)
}

/// Runs one statement against the lake.
pub async fn query(stack: &Stack, sql: &str) -> Result<Vec<RecordBatch>> {
    Lake::for_sql(stack, sql).await?.run(sql).await
}

/// Renders batches as a table, CSV (a header line, nulls empty) or JSON (one array of
/// objects, nulls explicit), with arrow's own writers.
pub fn render(batches: &[RecordBatch], format: OutputFormat) -> Result<String> {
    let mut out = Vec::new();
    match format {
        OutputFormat::Table => {
            return Ok(
                datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string(),
            );
        }
        OutputFormat::Csv => {
            let mut w = arrow_csv::WriterBuilder::new()
                .with_header(true)
                .with_null(String::new())
                .build(&mut out);
            for b in batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow_json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow_json::writer::JsonArray>(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            if batches.iter().all(|b| b.num_rows() == 0) {
                // No row written: the writer leaves nothing, an empty result is `[]`.
                out = b"[]".to_vec();
            }
            out.push(b'\n');
        }
    }
    Ok(String::from_utf8(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_matched_as_words() {
        assert!(mentions(
            "select * from customer_trusted",
            "customer_trusted"
        ));
        assert!(mentions(
            "SELECT count(*) FROM Customer_Trusted;",
            "customer_trusted"
        ));
        assert!(!mentions(
            "select * from customer_trusted2",
            "customer_trusted"
        ));
        assert!(!mentions(
            "select * from my_customer_trusted",
            "customer_trusted"
        ));
    }

    #[test]
    fn csv_and_json_keep_quotes_nulls_and_numbers() {
        use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("say \"hi\", Ben"), None])),
                Arc::new(Int64Array::from(vec![Some(1655564444103), None])),
                Arc::new(Float64Array::from(vec![Some(-0.5), Some(2.0)])),
            ],
        )
        .unwrap();
        assert_eq!(
            render(std::slice::from_ref(&b), OutputFormat::Csv).unwrap(),
            "name,n,x\n\"say \"\"hi\"\", Ben\",1655564444103,-0.5\n,,2.0\n"
        );
        assert_eq!(
            render(&[b], OutputFormat::Json).unwrap(),
            "[{\"name\":\"say \\\"hi\\\", Ben\",\"n\":1655564444103,\"x\":-0.5},\
             {\"name\":null,\"n\":null,\"x\":2.0}]\n"
        );
        assert_eq!(render(&[], OutputFormat::Json).unwrap(), "[]\n");
        assert_eq!(render(&[], OutputFormat::Csv).unwrap(), "");
    }
}
