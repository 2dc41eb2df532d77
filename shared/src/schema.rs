//! Column types and what each table of [`crate::streams`] derives from its declaration.
//! Bootstrap, the Glue partitions, the Parquet writers and
//! the Athena DDL are all generated from [`Table`]; column names are lower case, as Athena
//! shows them.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// Column types used by the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// UTF-8 string (`string`).
    Str,
    /// 64-bit integer, epoch milliseconds among others (`bigint`).
    Long,
    /// 32-bit integer (`int`).
    Int,
    /// 64-bit float (`double`).
    Double,
}

impl ColType {
    /// The Glue / Hive type name.
    pub fn glue(self) -> &'static str {
        match self {
            ColType::Str => "string",
            ColType::Long => "bigint",
            ColType::Int => "int",
            ColType::Double => "double",
        }
    }

    /// The Arrow type.
    pub fn arrow(self) -> DataType {
        match self {
            ColType::Str => DataType::Utf8,
            ColType::Long => DataType::Int64,
            ColType::Int => DataType::Int32,
            ColType::Double => DataType::Float64,
        }
    }
}

/// Storage format of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON lines, read through the OpenX JSON SerDe, case-insensitive.
    JsonLines,
    /// Parquet (zstd).
    Parquet,
}

/// One column of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Lower-case name (as Glue and the Parquet files have it).
    pub name: &'static str,
    /// Type.
    pub ty: ColType,
    /// Whether a landing line must carry it.
    pub required: bool,
}

/// The partition column of the partitioned tables: the UTC date of the reading.
pub const PARTITION_KEY: &str = "dt";

pub use crate::streams::{Storage, Table};

impl Table {
    /// Key prefix in the bucket (ends with `/`).
    pub fn prefix(self) -> &'static str {
        self.def().prefix
    }

    /// Where lines of this landing table that cannot be read are kept.
    pub fn quarantine_prefix(self) -> String {
        let zone = self.prefix().split('/').next().unwrap_or_default();
        format!("{zone}/quarantine/")
    }

    /// Columns in file order (the partition column `dt` is not stored in the files).
    pub fn columns(self) -> &'static [Column] {
        self.def().columns
    }

    /// Storage format.
    pub fn format(self) -> Format {
        match self.def().storage {
            Storage::JsonLines => Format::JsonLines,
            Storage::Sharded | Storage::Partitioned => Format::Parquet,
        }
    }

    /// Whether the table is partitioned by `dt`.
    pub fn partitioned(self) -> bool {
        self.def().storage == Storage::Partitioned
    }

    /// Whether the table is kept in shards by a hash of the e-mail
    /// (`<prefix>part-NNNNN.parquet`, see [`crate::keys::shard_key`]).
    pub fn sharded(self) -> bool {
        self.def().storage == Storage::Sharded
    }

    /// Position of the column `name` in the table's files.
    pub fn column_index(self, name: &str) -> Option<usize> {
        self.columns().iter().position(|c| c.name == name)
    }

    /// Whether objects land here as JSON lines (a landing table).
    pub fn is_landing(self) -> bool {
        self.def().storage == Storage::JsonLines
    }

    /// The landing tables.
    pub fn landing() -> impl Iterator<Item = Table> {
        Table::ALL.into_iter().filter(|t| t.is_landing())
    }

    /// Arrow schema of the table's Parquet files (built once per process).
    pub fn arrow_schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
        self.cached(&SCHEMAS, |t| {
            let fields: Vec<Field> = t
                .columns()
                .iter()
                // Landing-required columns are never null downstream.
                .map(|c| Field::new(c.name, c.ty.arrow(), !c.required))
                .collect();
            Arc::new(Schema::new(fields))
        })
        .clone()
    }

    /// This table's entry of a per-process cache holding `build(t)` for every table.
    pub(crate) fn cached<T>(
        self,
        cache: &'static OnceLock<Vec<T>>,
        build: impl Fn(Table) -> T,
    ) -> &'static T {
        // `ALL` lists the tables in declaration order, which is their discriminants' order.
        &cache.get_or_init(|| Table::ALL.into_iter().map(build).collect())[self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_prefixes_are_distinct() {
        let mut prefixes: Vec<_> = Table::ALL.iter().map(|t| t.prefix()).collect();
        prefixes.sort();
        prefixes.dedup();
        assert_eq!(prefixes.len(), Table::ALL.len());
        for t in Table::ALL {
            assert_eq!(Table::from_name(t.name()), Some(t));
            assert!(t.prefix().ends_with('/'));
        }
    }

    #[test]
    fn ml_table_carries_no_personal_data() {
        let cols: Vec<_> = Table::MachineLearningCurated
            .columns()
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            cols,
            [
                "sensorreadingtime",
                "serialnumber",
                "distancefromobject",
                "x",
                "y",
                "z"
            ]
        );
    }

    #[test]
    fn snapshot_and_quarantine_locations() {
        assert!(Table::CustomerTrusted.sharded() && Table::CustomerCurated.sharded());
        assert!(!Table::AccelerometerTrusted.sharded());
        assert_eq!(
            Table::StepTrainerLanding.quarantine_prefix(),
            "step_trainer/quarantine/"
        );
    }
}
