//! Arrow batches and Parquet objects.
//!
//! Outputs are written as they are read: rows go into builders, every `row_group_rows`
//! rows become a record batch handed to the Parquet writer (one row group), so memory is
//! bounded by a row group plus the compressed output. Files are zstd, lower-case columns,
//! the table's schema from [`crate::schema`] (no `ARROW:schema` copy in the footer),
//! dictionary-encoded but for the `bigint` times and the customer shards (one value a row).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arrow_array::builder::{Float64Builder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int32Array, Int32DictionaryArray, Int64Array, RecordBatch,
    StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::{ColumnPath, SchemaDescriptor};

use crate::error::{Error, Result};
use crate::record::Cell;
use crate::schema::{ColType, Table};

enum Builder {
    Str(StringBuilder),
    Long(Int64Builder),
    Int(Int32Builder),
    Double(Float64Builder),
}

/// Accumulates rows of one table as Arrow columns.
pub struct RowsBuilder {
    table: Table,
    builders: Vec<Builder>,
    rows: usize,
}

impl RowsBuilder {
    /// An empty builder for `table`.
    pub fn new(table: Table) -> Self {
        let builders = table
            .columns()
            .iter()
            .map(|c| match c.ty {
                ColType::Str => Builder::Str(StringBuilder::new()),
                ColType::Long => Builder::Long(Int64Builder::new()),
                ColType::Int => Builder::Int(Int32Builder::new()),
                ColType::Double => Builder::Double(Float64Builder::new()),
            })
            .collect();
        RowsBuilder {
            table,
            builders,
            rows: 0,
        }
    }

    /// Rows appended since the last [`RowsBuilder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row is pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one row; `cells` are in column order and already typed by
    /// [`crate::record::parse_line`].
    pub fn append(&mut self, cells: &[Cell<'_>]) {
        for (b, c) in self.builders.iter_mut().zip(cells) {
            match (b, c) {
                (Builder::Str(b), Cell::Str(s)) => b.append_value(s),
                (Builder::Long(b), Cell::Long(v)) => b.append_value(*v),
                (Builder::Int(b), Cell::Long(v)) => b.append_value(*v as i32),
                (Builder::Double(b), Cell::Double(v)) => b.append_value(*v),
                (Builder::Str(b), _) => b.append_null(),
                (Builder::Long(b), _) => b.append_null(),
                (Builder::Int(b), _) => b.append_null(),
                (Builder::Double(b), _) => b.append_null(),
            }
        }
        self.rows += 1;
    }

    /// Takes the pending rows as a batch.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::Str(b) => Arc::new(b.finish()),
                    Builder::Long(b) => Arc::new(b.finish()),
                    Builder::Int(b) => Arc::new(b.finish()),
                    Builder::Double(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.rows = 0;
        RecordBatch::try_new(self.table.arrow_schema(), arrays).map_err(|source| Error::Arrow {
            context: self.table.name().to_string(),
            source,
        })
    }
}

/// The lake's Parquet settings for `table`: zstd, `row_group_rows` a row group, and no
/// dictionary for `bigint` columns. Those are the lake's epoch-millisecond times (reading
/// times, registration and consent dates), nearly one value a row: a dictionary would
/// intern every value only to fall back to plain pages once it fills. Nor for the sharded
/// customer tables, one row a customer (e-mails, names, phones, serials are each one value
/// a row): a dictionary page of every value plus a page of indices cost a shard of 94
/// customers 11% more instructions and 5% more bytes than plain pages. Values go to the
/// column writers 8,192 at a time (the crate's default is 1,024): the same pages and bytes
/// here, 1% fewer instructions for the whole pipeline.
fn writer_properties(table: Table, row_group_rows: usize) -> WriterProperties {
    table
        .columns()
        .iter()
        .filter(|c| c.ty == ColType::Long)
        .fold(WriterProperties::builder(), |b, c| {
            b.set_column_dictionary_enabled(ColumnPath::from(c.name), false)
        })
        .set_dictionary_enabled(!table.sharded())
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_write_batch_size(8192)
        .build()
}

/// A Parquet writer of `table`'s schema into memory, with the lake's writer settings.
fn in_memory_writer(table: Table, row_group_rows: usize) -> Result<ArrowWriter<Vec<u8>>> {
    // No `ARROW:schema` in the footer: every reader of the lake (these functions, Athena,
    // DuckDB, pyarrow) takes the columns' types from the Parquet schema, which says the
    // same; writing it cost each object ~30k instructions and ~480 bytes.
    let mut options = ArrowWriterOptions::new()
        .with_properties(writer_properties(table, row_group_rows))
        .with_skip_arrow_metadata(true);
    // The Parquet schema converted once per process; were the conversion to fail, the
    // writer converts again and reports the error.
    static SCHEMAS: OnceLock<Vec<Option<SchemaDescriptor>>> = OnceLock::new();
    let converted = table.cached(&SCHEMAS, |t| {
        ArrowSchemaConverter::new().convert(&t.arrow_schema()).ok()
    });
    if let Some(schema) = converted {
        options = options.with_parquet_schema(schema.clone());
    }
    ArrowWriter::try_new_with_options(Vec::new(), table.arrow_schema(), options).map_err(|source| {
        Error::Parquet {
            context: table.name().to_string(),
            source,
        }
    })
}

/// One Parquet object being written: rows are buffered up to a row group, then encoded.
pub struct ParquetSink {
    rows: RowsBuilder,
    writer: ArrowWriter<Vec<u8>>,
    row_group_rows: usize,
    total: u64,
}

impl ParquetSink {
    /// A new in-memory Parquet object of `table`.
    pub fn new(table: Table, row_group_rows: usize) -> Result<Self> {
        let writer = in_memory_writer(table, row_group_rows)?;
        Ok(ParquetSink {
            rows: RowsBuilder::new(table),
            writer,
            row_group_rows,
            total: 0,
        })
    }

    /// Appends one row.
    pub fn append(&mut self, cells: &[Cell<'_>]) -> Result<()> {
        self.rows.append(cells);
        self.total += 1;
        if self.rows.len() >= self.row_group_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends a whole batch (of this table's schema).
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.flush()?;
        self.total += batch.num_rows() as u64;
        let table = self.rows.table;
        self.writer.write(batch).map_err(|source| Error::Parquet {
            context: table.name().to_string(),
            source,
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.total
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let batch = self.rows.finish()?;
        let table = self.rows.table;
        self.writer.write(&batch).map_err(|source| Error::Parquet {
            context: table.name().to_string(),
            source,
        })
    }

    /// Rows buffered (as builders or an open row group) and not yet encoded to the file.
    fn pending(&self) -> usize {
        self.rows.len() + self.writer.in_progress_rows()
    }

    /// Encodes everything buffered as a (possibly short) row group.
    fn close_row_group(&mut self) -> Result<()> {
        self.flush()?;
        let table = self.rows.table;
        self.writer.flush().map_err(|source| Error::Parquet {
            context: table.name().to_string(),
            source,
        })
    }

    /// Finishes the file and returns its bytes.
    pub fn finish(mut self) -> Result<Bytes> {
        self.flush()?;
        let table = self.rows.table;
        let buf = self.writer.into_inner().map_err(|source| Error::Parquet {
            context: table.name().to_string(),
            source,
        })?;
        Ok(Bytes::from(buf))
    }
}

/// Parquet objects of one source object, one per `dt`. Rows buffered over all partitions
/// are bounded by one row group's worth: past it, the partitions holding the most rows are
/// encoded (a file spanning many dates must not keep them all as open row groups).
pub struct PartitionedSink {
    table: Table,
    row_group_rows: usize,
    /// `(dt, sink)` in creation order; `index` finds one by `dt`.
    parts: Vec<(String, ParquetSink)>,
    index: BTreeMap<String, usize>,
    /// The position of the partition the last row went to: readings come grouped by day,
    /// so most rows skip the map lookup.
    last: Option<usize>,
    appended: usize,
}

impl PartitionedSink {
    /// No partitions yet.
    pub fn new(table: Table, row_group_rows: usize) -> Self {
        PartitionedSink {
            table,
            row_group_rows,
            parts: Vec::new(),
            index: BTreeMap::new(),
            last: None,
            appended: 0,
        }
    }

    /// Keeps the rows buffered over all partitions under `row_group_rows`.
    fn bound(&mut self) -> Result<()> {
        self.appended += 1;
        if self.appended < self.row_group_rows / 4 || self.parts.len() < 2 {
            return Ok(());
        }
        self.appended = 0;
        let mut pending: Vec<(usize, usize)> = self
            .parts
            .iter()
            .enumerate()
            .map(|(i, (_, s))| (s.pending(), i))
            .filter(|(n, _)| *n > 0)
            .collect();
        let mut total: usize = pending.iter().map(|(n, _)| n).sum();
        if total < self.row_group_rows {
            return Ok(());
        }
        // The fullest first (among equals, the later `dt`).
        let dt = |i: usize| self.parts[i].0.as_str();
        pending.sort_unstable_by(|a, b| (b.0, dt(b.1)).cmp(&(a.0, dt(a.1))));
        for (n, i) in pending {
            if total <= self.row_group_rows / 2 {
                break;
            }
            self.parts[i].1.close_row_group()?;
            total -= n;
        }
        Ok(())
    }

    /// The position of partition `dt`'s sink, created if needed.
    fn position(&mut self, dt: &str) -> Result<usize> {
        if let Some(i) = self.last
            && crate::record::same(self.parts[i].0.as_bytes(), dt.as_bytes())
        {
            return Ok(i);
        }
        let i = match self.index.get(dt) {
            Some(i) => *i,
            None => {
                let sink = ParquetSink::new(self.table, self.row_group_rows)?;
                self.parts.push((dt.to_string(), sink));
                self.index.insert(dt.to_string(), self.parts.len() - 1);
                self.parts.len() - 1
            }
        };
        self.last = Some(i);
        Ok(i)
    }

    /// Appends a row to partition `dt`.
    pub fn append(&mut self, dt: &str, cells: &[Cell<'_>]) -> Result<()> {
        let i = self.position(dt)?;
        self.parts[i].1.append(cells)?;
        self.bound()
    }

    /// The sink of partition `dt`, created if needed.
    pub fn part(&mut self, dt: &str) -> Result<&mut ParquetSink> {
        let i = self.position(dt)?;
        Ok(&mut self.parts[i].1)
    }

    /// Total rows over all partitions.
    pub fn rows(&self) -> u64 {
        self.parts.iter().map(|(_, s)| s.rows()).sum()
    }

    /// Finishes every partition, in `dt` order.
    pub fn finish(self) -> Result<Vec<Part>> {
        let mut parts = self.parts;
        parts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        parts
            .into_iter()
            .map(|(dt, sink)| {
                let rows = sink.rows();
                sink.finish().map(|bytes| Part { dt, rows, bytes })
            })
            .collect()
    }
}

/// The encoded Parquet object of one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// The partition (`dt`).
    pub dt: String,
    /// Rows it holds.
    pub rows: u64,
    /// The Parquet object.
    pub bytes: Bytes,
}

/// Reads a Parquet object, keeping only `columns` (by name; all when empty).
pub fn read_parquet(bytes: Bytes, columns: &[&str], context: &str) -> Result<Vec<RecordBatch>> {
    read_parquet_keyed(bytes, columns, &[], context)
}

/// Reads a Parquet object as [`read_parquet`] does, the string columns named in `keyed` as
/// dictionary arrays (`Dictionary(Int32, Utf8)`): a person column (a few distinct values
/// over many rows, dictionary-encoded in the file) is then not copied out once a row, and a
/// caller resolves each distinct value once a batch ([`Strings`]).
pub fn read_parquet_keyed(
    bytes: Bytes,
    columns: &[&str],
    keyed: &[&str],
    context: &str,
) -> Result<Vec<RecordBatch>> {
    let err = |source| Error::Parquet {
        context: context.to_string(),
        source,
    };
    let options = ArrowReaderOptions::new();
    let mut meta = ArrowReaderMetadata::load(&bytes, options.clone()).map_err(err)?;
    if !keyed.is_empty() {
        let fields: Vec<Field> = meta
            .schema()
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 if keyed.contains(&f.name().as_str()) => {
                    f.as_ref().clone().with_data_type(DataType::Dictionary(
                        Box::new(DataType::Int32),
                        Box::new(DataType::Utf8),
                    ))
                }
                _ => f.as_ref().clone(),
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            meta.schema().metadata().clone(),
        ));
        meta =
            ArrowReaderMetadata::try_new(Arc::clone(meta.metadata()), options.with_schema(schema))
                .map_err(err)?;
    }
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, meta);
    let builder = if columns.is_empty() {
        builder
    } else {
        let schema = builder.parquet_schema();
        let indices: Vec<usize> = (0..schema.num_columns())
            .filter(|i| columns.contains(&schema.column(*i).name()))
            .collect();
        let mask = ProjectionMask::leaves(schema, indices);
        builder.with_projection(mask)
    };
    let reader = builder.with_batch_size(65536).build().map_err(err)?;
    reader
        .map(|b| {
            b.map_err(|source| Error::Arrow {
                context: context.to_string(),
                source,
            })
        })
        .collect()
}

/// A string column read back from the lake, plain or as a dictionary
/// ([`read_parquet_keyed`]): each row's value as a position among `values`, so a caller
/// resolves each distinct value once and then each row by its key.
pub enum Strings<'a> {
    /// One value a row.
    Plain(&'a StringArray),
    /// Keys into a dictionary of values.
    Keyed(&'a Int32DictionaryArray, &'a StringArray),
}

impl<'a> Strings<'a> {
    /// Column `name` of `batch`, either way.
    pub fn of(batch: &'a RecordBatch, name: &str, context: &str) -> Result<Strings<'a>> {
        if let Some(d) = batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<Int32DictionaryArray>())
        {
            let values = d
                .values()
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| unexpected(name, context))?;
            return Ok(Strings::Keyed(d, values));
        }
        column::<StringArray>(batch, name, context).map(Strings::Plain)
    }

    /// The distinct values that rows hold, each once per run of equal rows (a dictionary's
    /// values that some row uses, in dictionary order; nulls skipped).
    pub fn runs(&self) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        match self {
            Strings::Plain(col) => Box::new(value_runs(col)),
            Strings::Keyed(d, values) => {
                let mut used = vec![false; values.len()];
                for k in d.keys().iter().flatten() {
                    if let Some(u) = usize::try_from(k).ok().and_then(|k| used.get_mut(k)) {
                        *u = true;
                    }
                }
                let values = *values;
                Box::new(
                    used.into_iter()
                        .enumerate()
                        .filter(|(k, u)| *u && values.is_valid(*k))
                        .map(move |(k, _)| values.value(k)),
                )
            }
        }
    }

    /// `f` of each row's value (`None` for a null row), computed once per distinct value
    /// of a dictionary, once per run of equal values otherwise.
    pub fn map_rows<T: Copy>(&self, mut f: impl FnMut(&'a str) -> Option<T>) -> Vec<Option<T>> {
        match self {
            Strings::Plain(col) => {
                let mut out = Vec::with_capacity(col.len());
                let mut last: Option<(&'a str, Option<T>)> = None;
                for v in col.iter() {
                    let Some(v) = v else {
                        out.push(None);
                        continue;
                    };
                    let t = match last {
                        Some((prev, t)) if prev == v => t,
                        _ => f(v),
                    };
                    last = Some((v, t));
                    out.push(t);
                }
                out
            }
            Strings::Keyed(d, values) => {
                let by_key: Vec<Option<T>> = (0..values.len())
                    .map(|k| values.is_valid(k).then(|| f(values.value(k))).flatten())
                    .collect();
                d.keys()
                    .iter()
                    .map(|k| {
                        k.and_then(|k| usize::try_from(k).ok())
                            .and_then(|k| by_key.get(k).copied().flatten())
                    })
                    .collect()
            }
        }
    }
}

fn unexpected(name: &str, context: &str) -> Error {
    Error::Arrow {
        context: context.to_string(),
        source: arrow_schema::ArrowError::SchemaError(format!(
            "column `{name}` missing or of an unexpected type"
        )),
    }
}

/// Typed column access on batches read back from the lake.
pub fn column<'b, T: 'static>(batch: &'b RecordBatch, name: &str, context: &str) -> Result<&'b T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| unexpected(name, context))
}

/// The values of a string column with each run of equal values given once (nulls
/// skipped): readings come grouped by person, so a caller collecting distinct persons
/// looks each run up once instead of each row.
fn value_runs(col: &StringArray) -> impl Iterator<Item = &str> {
    let mut last: Option<&str> = None;
    col.iter().flatten().filter(move |v| {
        let new = last != Some(*v);
        last = Some(v);
        new
    })
}

/// Converts row `i` of `batch` (a table's full schema) back into cells.
pub fn row_cells(batch: &RecordBatch, i: usize) -> Vec<Cell<'static>> {
    batch
        .columns()
        .iter()
        .map(|c| {
            if c.is_null(i) {
                return Cell::Null;
            }
            let any = c.as_any();
            if let Some(a) = any.downcast_ref::<StringArray>() {
                Cell::Str(a.value(i).to_string().into())
            } else if let Some(a) = any.downcast_ref::<Int64Array>() {
                Cell::Long(a.value(i))
            } else if let Some(a) = any.downcast_ref::<Int32Array>() {
                Cell::Long(a.value(i) as i64)
            } else if let Some(a) = any.downcast_ref::<Float64Array>() {
                Cell::Double(a.value(i))
            } else {
                Cell::Null
            }
        })
        .collect()
}

/// The footer entry (Parquet key-value metadata) of a compacted file: the sources it holds,
/// in row order, as JSON `[{"name", "rows"}]`.
pub const HOLDER_SOURCES: &str = "stedi.sources";

/// One source's rows in a compacted file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    /// The name of the source's own object (its stem, or an ML pair's name).
    pub name: String,
    /// Its rows, which follow those of the sources before it.
    pub rows: u64,
}

/// A compacted file being written: the sources' rows one after the other, their names and
/// row counts in the footer, so any one source's rows can be found and removed.
pub struct HolderWriter {
    table: Table,
    writer: ArrowWriter<Vec<u8>>,
    held: Vec<Held>,
}

impl HolderWriter {
    /// A new compacted file of `table`.
    pub fn new(table: Table, row_group_rows: usize) -> Result<Self> {
        let writer = in_memory_writer(table, row_group_rows)?;
        Ok(HolderWriter {
            table,
            writer,
            held: Vec::new(),
        })
    }

    /// Appends the rows of source `name`.
    pub fn add(&mut self, name: &str, batches: &[RecordBatch]) -> Result<()> {
        let mut rows = 0;
        for b in batches {
            rows += b.num_rows() as u64;
            self.writer.write(b).map_err(|source| Error::Parquet {
                context: format!("{} compacted file, source {name}", self.table.name()),
                source,
            })?;
        }
        self.held.push(Held {
            name: name.to_string(),
            rows,
        });
        Ok(())
    }

    /// Sources added so far.
    pub fn held(&self) -> &[Held] {
        &self.held
    }

    /// Finishes the file: its bytes and the sources it holds.
    pub fn finish(mut self) -> Result<(Bytes, Vec<Held>)> {
        let context = format!("{} compacted file", self.table.name());
        let list = serde_json::to_string(&self.held).map_err(|source| Error::Json {
            context: context.clone(),
            source,
        })?;
        self.writer
            .append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                HOLDER_SOURCES.to_string(),
                list,
            ));
        let buf = self
            .writer
            .into_inner()
            .map_err(|source| Error::Parquet { context, source })?;
        Ok((Bytes::from(buf), self.held))
    }
}

/// The sources a compacted (or batch) file's footer lists, in row order.
fn held_list(builder: &ParquetRecordBatchReaderBuilder<Bytes>, context: &str) -> Result<Vec<Held>> {
    let list = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == HOLDER_SOURCES))
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| "[]".into());
    serde_json::from_str(&list).map_err(|source| Error::Json {
        context: format!("{context}: {HOLDER_SOURCES}"),
        source,
    })
}

/// The sources a compacted (or batch) file holds, from its footer alone (no row decoded).
pub fn holder_sources(bytes: Bytes, context: &str) -> Result<Vec<Held>> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|source| Error::Parquet {
            context: context.to_string(),
            source,
        })?;
    held_list(&builder, context)
}

/// Reads a compacted file: the sources it holds (in row order) and its rows.
pub fn read_holder(bytes: Bytes, context: &str) -> Result<(Vec<Held>, Vec<RecordBatch>)> {
    let err = |source| Error::Parquet {
        context: context.to_string(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(err)?;
    let held = held_list(&builder, context)?;
    let batches = builder
        .with_batch_size(65536)
        .build()
        .map_err(err)?
        .map(|b| {
            b.map_err(|source| Error::Arrow {
                context: context.to_string(),
                source,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let total: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if held.iter().map(|h| h.rows).sum::<u64>() != total {
        return Err(Error::BadEvent(format!(
            "{context}: {HOLDER_SOURCES} does not account for its {total} rows"
        )));
    }
    Ok((held, batches))
}

/// Rows `[start, start + len)` of `batches` taken as one range across batch boundaries.
pub fn row_range(batches: &[RecordBatch], mut start: usize, mut len: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for b in batches {
        if len == 0 {
            break;
        }
        if start >= b.num_rows() {
            start -= b.num_rows();
            continue;
        }
        let n = len.min(b.num_rows() - start);
        out.push(b.slice(start, n));
        len -= n;
        start = 0;
    }
    out
}

/// What is left of a compacted file once the sources in `drop` are removed.
#[derive(Debug)]
pub struct Evicted {
    /// The new file (`None` when no source is left).
    pub bytes: Option<Bytes>,
    /// The sources it still holds.
    pub held: Vec<Held>,
    /// Rows removed.
    pub removed: u64,
}

/// Removes the rows of the sources in `drop` from compacted file `bytes`, keeping every
/// other source's rows in order (`None` when it holds none of them).
pub fn evict(
    table: Table,
    bytes: Bytes,
    drop: &std::collections::BTreeSet<String>,
    row_group_rows: usize,
    context: &str,
) -> Result<Option<Evicted>> {
    let (held, batches) = read_holder(bytes, context)?;
    if !held.iter().any(|h| drop.contains(&h.name)) {
        return Ok(None);
    }
    let mut w = HolderWriter::new(table, row_group_rows)?;
    let (mut at, mut removed) = (0usize, 0u64);
    for h in &held {
        let n = h.rows as usize;
        if drop.contains(&h.name) {
            removed += h.rows;
        } else {
            w.add(&h.name, &row_range(&batches, at, n))?;
        }
        at += n;
    }
    if w.held().is_empty() {
        return Ok(Some(Evicted {
            bytes: None,
            held: Vec::new(),
            removed,
        }));
    }
    let (bytes, held) = w.finish()?;
    Ok(Some(Evicted {
        bytes: Some(bytes),
        held,
        removed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// A Step Trainer file of `n` rows whose readings are `first..first + n`.
    fn step_file(first: i64, n: i64) -> Vec<RecordBatch> {
        let mut sink = ParquetSink::new(Table::StepTrainerTrusted, 3).unwrap();
        for i in first..first + n {
            let cells = [Cell::Long(i), Cell::Str(Cow::Borrowed("s")), Cell::Long(1)];
            sink.append(&cells).unwrap();
        }
        read_parquet(sink.finish().unwrap(), &[], "t").unwrap()
    }

    fn readings(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                column::<Int64Array>(b, "sensorreadingtime", "t")
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn a_person_column_reads_keyed_or_plain_with_the_same_values() {
        let mut sink = ParquetSink::new(Table::AccelerometerTrusted, 4).unwrap();
        for (i, user) in ["a", "a", "b", "a", "c", "c"].into_iter().enumerate() {
            let cells = [
                Cell::Str(Cow::Borrowed(user)),
                Cell::Long(i as i64),
                Cell::Double(1.0),
                Cell::Double(2.0),
                Cell::Double(3.0),
            ];
            sink.append(&cells).unwrap();
        }
        let bytes = sink.finish().unwrap();
        let plain = read_parquet(bytes.clone(), &["user"], "t").unwrap();
        let keyed = read_parquet_keyed(bytes, &["user", "x"], &["user"], "t").unwrap();
        // Two row groups (of 4 and 2 rows, a dictionary each), read as one batch each way;
        // the keyed read keeps its projection.
        assert_eq!((plain.len(), keyed.len()), (1, 1));
        assert_eq!(keyed[0].num_columns(), 2);
        let number = |u: &str| match u {
            "a" => Some(1),
            "b" => Some(2),
            _ => None,
        };
        let mut rows = Vec::new();
        let mut runs = Vec::new();
        let mut calls = (0, 0);
        for (p, k) in plain.iter().zip(&keyed) {
            let (p, k) = (
                Strings::of(p, "user", "t").unwrap(),
                Strings::of(k, "user", "t").unwrap(),
            );
            assert!(matches!((&p, &k), (Strings::Plain(_), Strings::Keyed(..))));
            let from_plain = p.map_rows(|u| {
                calls.0 += 1;
                number(u)
            });
            let from_keyed = k.map_rows(|u| {
                calls.1 += 1;
                number(u)
            });
            assert_eq!(from_plain, from_keyed);
            rows.extend(from_keyed);
            runs.push((p.runs().collect::<Vec<_>>(), k.runs().collect::<Vec<_>>()));
        }
        assert_eq!(rows, [Some(1), Some(1), Some(2), Some(1), None, None]);
        // Once a run (a, b, a, c) against once a distinct value.
        assert_eq!(calls, (4, 3));
        assert_eq!(runs, [(vec!["a", "b", "a", "c"], vec!["a", "b", "c"])]);
    }

    #[test]
    fn a_compacted_file_names_its_sources_and_evicts_exactly_theirs() {
        let t = Table::StepTrainerTrusted;
        let mut w = HolderWriter::new(t, 4).unwrap();
        w.add("a", &step_file(0, 5)).unwrap();
        w.add("b", &step_file(100, 7)).unwrap();
        w.add("c", &step_file(200, 2)).unwrap();
        let (bytes, held) = w.finish().unwrap();
        let names: Vec<_> = held.iter().map(|h| (h.name.as_str(), h.rows)).collect();
        assert_eq!(names, [("a", 5), ("b", 7), ("c", 2)]);
        let (back, batches) = read_holder(bytes.clone(), "t").unwrap();
        assert_eq!(back, held);
        assert_eq!(readings(&batches).len(), 14);

        // Row groups of 4 do not line up with the sources: the ranges still do.
        let drop = ["b".to_string()].into();
        let e = evict(t, bytes.clone(), &drop, 4, "t").unwrap().unwrap();
        assert_eq!(e.removed, 7);
        let (held, batches) = read_holder(e.bytes.unwrap(), "t").unwrap();
        assert_eq!(
            held.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert_eq!(readings(&batches), [0, 1, 2, 3, 4, 200, 201]);

        let none = ["z".to_string()].into();
        assert!(evict(t, bytes.clone(), &none, 4, "t").unwrap().is_none());
        let all = ["a", "b", "c"].map(String::from).into();
        let e = evict(t, bytes, &all, 4, "t").unwrap().unwrap();
        assert!(e.bytes.is_none());
        assert_eq!(e.removed, 14);
    }

    #[test]
    fn many_partitions_keep_few_rows_buffered() {
        let mut sink = PartitionedSink::new(Table::StepTrainerTrusted, 64);
        for i in 0..10_000i64 {
            let dt = format!("2022-06-{:02}", 1 + i % 20);
            let cells = [Cell::Long(i), Cell::Str(Cow::Borrowed("s")), Cell::Long(1)];
            sink.append(&dt, &cells).unwrap();
            let buffered: usize = sink.parts.iter().map(|(_, s)| s.pending()).sum();
            assert!(buffered <= 64 + 16, "{buffered} rows buffered after {i}");
        }
        let parts = sink.finish().unwrap();
        assert_eq!(parts.len(), 20);
        let rows: u64 = parts.iter().map(|p| p.rows).sum();
        assert_eq!(rows, 10_000);
        let back: usize = parts
            .iter()
            .flat_map(|p| read_parquet(p.bytes.clone(), &[], "t").unwrap())
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(back, 10_000);
    }

    #[test]
    fn value_runs_give_each_run_once_and_skip_nulls() {
        let col = StringArray::from(vec![
            Some("a"),
            Some("a"),
            None,
            Some("a"),
            Some("b"),
            Some("b"),
            Some("a"),
            None,
        ]);
        assert_eq!(value_runs(&col).collect::<Vec<_>>(), ["a", "b", "a"]);
        assert_eq!(
            value_runs(&StringArray::from(Vec::<&str>::new())).count(),
            0
        );
    }

    #[test]
    fn times_are_written_without_a_dictionary_and_the_rest_with_one() {
        let mut sink = PartitionedSink::new(Table::StepTrainerTrusted, 1000);
        for i in 0..100i64 {
            let cells = [
                Cell::Long(1_655_564_444_103 + i),
                Cell::Str(Cow::Borrowed("serial")),
                Cell::Long(200 + i % 3),
            ];
            sink.append("2022-06-18", &cells).unwrap();
        }
        let parts = sink.finish().unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(parts[0].bytes.clone())
            .unwrap()
            .metadata()
            .clone();
        let dictionary: Vec<(String, bool)> = meta
            .row_group(0)
            .columns()
            .iter()
            .map(|c| {
                (
                    c.column_path().string(),
                    c.dictionary_page_offset().is_some(),
                )
            })
            .collect();
        assert_eq!(
            dictionary,
            [
                ("sensorreadingtime".to_string(), false),
                ("serialnumber".to_string(), true),
                ("distancefromobject".to_string(), true)
            ]
        );
    }

    /// One row of `table` with a value in every column.
    fn full_row(table: Table) -> Vec<Cell<'static>> {
        table
            .columns()
            .iter()
            .map(|c| match c.ty {
                ColType::Str => Cell::Str(Cow::Borrowed("a@b")),
                ColType::Long | ColType::Int => Cell::Long(7),
                ColType::Double => Cell::Double(0.5),
            })
            .collect()
    }

    #[test]
    fn customer_shards_are_written_without_dictionaries() {
        for table in [Table::CustomerTrusted, Table::CustomerCurated] {
            let cells = full_row(table);
            let mut sink = ParquetSink::new(table, 100).unwrap();
            for _ in 0..10 {
                sink.append(&cells).unwrap();
            }
            let builder = ParquetRecordBatchReaderBuilder::try_new(sink.finish().unwrap()).unwrap();
            let columns = builder.metadata().row_group(0).columns();
            assert_eq!(columns.len(), table.columns().len());
            let with_dictionary: Vec<String> = columns
                .iter()
                .filter(|c| c.dictionary_page_offset().is_some())
                .map(|c| c.column_path().string())
                .collect();
            assert_eq!(with_dictionary, Vec::<String>::new(), "{}", table.name());
        }
    }

    #[test]
    fn objects_carry_no_arrow_schema_and_read_back_as_the_tables_types() {
        for table in [Table::AccelerometerTrusted, Table::StepTrainerTrusted] {
            let cells = full_row(table);
            let mut sink = ParquetSink::new(table, 10).unwrap();
            sink.append(&cells).unwrap();
            sink.append(&cells).unwrap();
            let builder = ParquetRecordBatchReaderBuilder::try_new(sink.finish().unwrap()).unwrap();
            let keys: Vec<String> = builder
                .metadata()
                .file_metadata()
                .key_value_metadata()
                .map(|kv| kv.iter().map(|e| e.key.clone()).collect())
                .unwrap_or_default();
            assert_eq!(keys, Vec::<String>::new(), "{}", table.name());
            assert_eq!(builder.schema(), &table.arrow_schema(), "{}", table.name());
            let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        }
    }

    #[test]
    fn partitions_round_trip_with_bounded_row_groups() {
        let mut sink = PartitionedSink::new(Table::StepTrainerTrusted, 2);
        for (i, dt) in ["2022-06-18", "2022-06-19", "2022-06-18", "2022-06-18"]
            .iter()
            .enumerate()
        {
            let cells = [
                Cell::Long(i as i64),
                Cell::Str(Cow::Borrowed("serial")),
                Cell::Long(200 + i as i64),
            ];
            sink.append(dt, &cells).unwrap();
        }
        assert_eq!(sink.rows(), 4);
        let parts = sink.finish().unwrap();
        let summary: Vec<_> = parts.iter().map(|p| (p.dt.as_str(), p.rows)).collect();
        assert_eq!(summary, [("2022-06-18", 3), ("2022-06-19", 1)]);

        let bytes = parts[0].bytes.clone();
        let meta = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
        assert_eq!(meta.metadata().num_row_groups(), 2);
        let batches = read_parquet(bytes, &["distancefromobject"], "t").unwrap();
        assert_eq!(batches[0].schema().fields().len(), 1);
        let d: Vec<i32> = batches
            .iter()
            .flat_map(|b| {
                column::<Int32Array>(b, "distancefromobject", "t")
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(d, [200, 202, 203]);
        let full = read_parquet(parts[1].bytes.clone(), &[], "t").unwrap();
        assert_eq!(
            row_cells(&full[0], 0),
            [
                Cell::Long(1),
                Cell::Str("serial".to_string().into()),
                Cell::Long(201)
            ]
        );
    }
}
