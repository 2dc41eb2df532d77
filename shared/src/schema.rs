//! The eight tables, defined once. Bootstrap, the Glue partitions, the Parquet writers and
//! the Athena DDL are all generated from [`Table`]; column names are lower case, as Athena
//! shows them.

use std::sync::Arc;

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

/// A column (for the tables below).
const fn col(name: &'static str, ty: ColType, required: bool) -> Column {
    Column { name, ty, required }
}

const CUSTOMER: &[Column] = &[
    col("customername", ColType::Str, false),
    col("email", ColType::Str, true),
    col("phone", ColType::Str, false),
    col("birthday", ColType::Str, false),
    col("serialnumber", ColType::Str, false),
    col("registrationdate", ColType::Long, false),
    col("lastupdatedate", ColType::Long, true),
    col("sharewithresearchasofdate", ColType::Long, false),
    col("sharewithpublicasofdate", ColType::Long, false),
    col("sharewithfriendsasofdate", ColType::Long, false),
];

const ACCELEROMETER: &[Column] = &[
    col("user", ColType::Str, true),
    col("timestamp", ColType::Long, true),
    col("x", ColType::Double, true),
    col("y", ColType::Double, true),
    col("z", ColType::Double, true),
];

const STEP_TRAINER: &[Column] = &[
    col("sensorreadingtime", ColType::Long, true),
    col("serialnumber", ColType::Str, true),
    col("distancefromobject", ColType::Int, true),
];

const MACHINE_LEARNING: &[Column] = &[
    col("sensorreadingtime", ColType::Long, true),
    col("serialnumber", ColType::Str, true),
    col("distancefromobject", ColType::Int, true),
    col("x", ColType::Double, true),
    col("y", ColType::Double, true),
    col("z", ColType::Double, true),
];

/// The partition column of the partitioned tables: the UTC date of the reading.
pub const PARTITION_KEY: &str = "dt";

/// The eight tables of the Glue database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Raw customer records.
    CustomerLanding,
    /// Raw phone accelerometer readings.
    AccelerometerLanding,
    /// Raw Step Trainer readings.
    StepTrainerLanding,
    /// Latest record per e-mail, consenting customers only (shards by e-mail).
    CustomerTrusted,
    /// Readings of consenting customers, by `dt`.
    AccelerometerTrusted,
    /// Trusted customers that have accelerometer readings (shards by e-mail).
    CustomerCurated,
    /// Step Trainer readings of curated customers' devices, by `dt`.
    StepTrainerTrusted,
    /// Step Trainer readings joined with the same customer's phone readings, by `dt`.
    MachineLearningCurated,
}

/// A table travels (in reconcile work items) as its name.
impl serde::Serialize for Table {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Table {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Table::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown table {name:?}")))
    }
}

impl Table {
    /// All tables, landing first.
    pub const ALL: [Table; 8] = [
        Table::CustomerLanding,
        Table::AccelerometerLanding,
        Table::StepTrainerLanding,
        Table::CustomerTrusted,
        Table::AccelerometerTrusted,
        Table::CustomerCurated,
        Table::StepTrainerTrusted,
        Table::MachineLearningCurated,
    ];

    /// Glue table name.
    pub fn name(self) -> &'static str {
        match self {
            Table::CustomerLanding => "customer_landing",
            Table::AccelerometerLanding => "accelerometer_landing",
            Table::StepTrainerLanding => "step_trainer_landing",
            Table::CustomerTrusted => "customer_trusted",
            Table::AccelerometerTrusted => "accelerometer_trusted",
            Table::CustomerCurated => "customer_curated",
            Table::StepTrainerTrusted => "step_trainer_trusted",
            Table::MachineLearningCurated => "machine_learning_curated",
        }
    }

    /// Looks a table up by its Glue name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Key prefix in the bucket (ends with `/`).
    pub fn prefix(self) -> &'static str {
        match self {
            Table::CustomerLanding => "customer/landing/",
            Table::AccelerometerLanding => "accelerometer/landing/",
            Table::StepTrainerLanding => "step_trainer/landing/",
            Table::CustomerTrusted => "customer/trusted/",
            Table::AccelerometerTrusted => "accelerometer/trusted/",
            Table::CustomerCurated => "customer/curated/",
            Table::StepTrainerTrusted => "step_trainer/trusted/",
            Table::MachineLearningCurated => "step_trainer/curated/",
        }
    }

    /// Where lines of this landing table that cannot be read are kept.
    pub fn quarantine_prefix(self) -> String {
        let zone = self.prefix().split('/').next().unwrap_or_default();
        format!("{zone}/quarantine/")
    }

    /// Columns in file order (the partition column `dt` is not stored in the files).
    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::CustomerLanding | Table::CustomerTrusted | Table::CustomerCurated => CUSTOMER,
            Table::AccelerometerLanding | Table::AccelerometerTrusted => ACCELEROMETER,
            Table::StepTrainerLanding | Table::StepTrainerTrusted => STEP_TRAINER,
            Table::MachineLearningCurated => MACHINE_LEARNING,
        }
    }

    /// Storage format.
    pub fn format(self) -> Format {
        match self {
            Table::CustomerLanding | Table::AccelerometerLanding | Table::StepTrainerLanding => {
                Format::JsonLines
            }
            _ => Format::Parquet,
        }
    }

    /// Whether the table is partitioned by `dt`.
    pub fn partitioned(self) -> bool {
        matches!(
            self,
            Table::AccelerometerTrusted | Table::StepTrainerTrusted | Table::MachineLearningCurated
        )
    }

    /// Whether the table is kept in shards by a hash of the e-mail
    /// (`<prefix>part-NNNNN.parquet`, see [`crate::keys::shard_key`]).
    pub fn sharded(self) -> bool {
        matches!(self, Table::CustomerTrusted | Table::CustomerCurated)
    }

    /// Arrow schema of the table's Parquet files.
    pub fn arrow_schema(self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns()
            .iter()
            // Landing-required columns are never null downstream.
            .map(|c| Field::new(c.name, c.ty.arrow(), !c.required))
            .collect();
        Arc::new(Schema::new(fields))
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
        assert_eq!(prefixes.len(), 8);
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
