//! The lake, declared once: every table (name, location, columns, storage) and every zone
//! transition (the tables that fire it, the table it writes, and the rule that admits a
//! row). The table and transition enums, the Glue definitions and Parquet schemas, the
//! erasure index's person columns, reconcile's stage order, the local routes and the
//! template check are all derived from these two lists.
//!
//! Adding a stream is its columns and entries here, a copy of a `functions/` folder and of
//! its sample `events/` under the new name, and `template.yaml` (which the drift test checks
//! against this list; see the README's "Adding a stream"). A reading stream filtered by
//! consent, for example a phone gyroscope:
//!
//! ```text
//! GyroscopeLanding = { name: "gyroscope_landing", prefix: "gyroscope/landing/",
//!     columns: GYROSCOPE, storage: Storage::JsonLines },
//! GyroscopeTrusted = { name: "gyroscope_trusted", prefix: "gyroscope/trusted/",
//!     columns: GYROSCOPE, storage: Storage::Partitioned },
//! GyroscopeLandingToTrusted = { name: "gyroscope_landing_to_trusted",
//!     sources: [GyroscopeLanding], target: GyroscopeTrusted,
//!     rule: Rule::Consented { user: "user", time: "timestamp" } },
//! ```

use crate::schema::{ColType, Column};

/// How a table's objects are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// JSON lines as they land (read through the OpenX JSON SerDe, case-insensitive).
    JsonLines,
    /// Parquet shards by a hash of the e-mail (`<prefix>part-NNNNN.parquet`).
    Sharded,
    /// Parquet objects partitioned by `dt`, the UTC date of the reading.
    Partitioned,
}

/// One table of the Glue database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    /// Glue table name.
    pub name: &'static str,
    /// Key prefix in the bucket (ends with `/`).
    pub prefix: &'static str,
    /// Columns in file order (the partition column `dt` is not stored in the files).
    pub columns: &'static [Column],
    /// How its objects are kept.
    pub storage: Storage,
}

/// The rule a transition admits rows by; the columns it needs are named, and looked up in
/// the source table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Customer records: the latest record per `email` (by `time`), consenting customers
    /// only, kept in the e-mail shards.
    LatestConsenting {
        /// The e-mail column.
        email: &'static str,
        /// The column that orders a customer's records.
        time: &'static str,
    },
    /// Readings of consenting customers: `user` is their e-mail, `time` the reading's
    /// epoch milliseconds (with `CONSENT_AS_OF=true`, only readings at or after consent).
    Consented {
        /// The e-mail column.
        user: &'static str,
        /// The reading-time column.
        time: &'static str,
    },
    /// Trusted customers that have readings in the source table (by its `user` column).
    CuratedByReadings {
        /// The e-mail column of the readings.
        user: &'static str,
    },
    /// Readings of devices whose owner is curated, by the `serial` the customer
    /// registered; `time` dates the reading.
    OwnedDevice {
        /// The device serial column.
        serial: &'static str,
        /// The reading-time column.
        time: &'static str,
    },
    /// Step Trainer readings joined with the same customer's phone readings at the same
    /// millisecond.
    JoinReadings,
}

/// One zone transition: one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionDef {
    /// Function name (as in `functions/` and `template.yaml`).
    pub name: &'static str,
    /// Tables whose new objects fire it.
    pub sources: &'static [Table],
    /// The table it writes.
    pub target: Table,
    /// What it admits.
    pub rule: Rule,
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

/// Declares the enum of a list and its definitions: each variant's definition is the
/// struct literal written beside it, whose `name` is how the variant is written in work
/// items and looked up (`what` names the kind in errors).
macro_rules! declare {
    ($(#[$meta:meta])* $enum:ident ($what:literal): $def:ident {
        $($(#[$doc:meta])* $variant:ident = { $($field:ident: $value:expr),* $(,)? }),* $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $enum {
            $($(#[$doc])* $variant),*
        }

        impl $enum {
            /// Every one, in the order declared.
            pub const ALL: [$enum; [$(stringify!($variant)),*].len()] = [$($enum::$variant),*];

            /// Its declaration.
            pub const fn def(self) -> &'static $def {
                match self {
                    $($enum::$variant => {
                        const DEF: $def = $def { $($field: $value),* };
                        &DEF
                    })*
                }
            }

            /// Its name: the Glue table or the function (as in `functions/` and
            /// `template.yaml`).
            pub fn name(self) -> &'static str {
                self.def().name
            }

            /// Looks one up by name.
            pub fn from_name(name: &str) -> Option<$enum> {
                $enum::ALL.into_iter().find(|x| x.name() == name)
            }
        }

        /// It travels (in reconcile work items) as its name.
        impl serde::Serialize for $enum {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $enum {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = <String as serde::Deserialize>::deserialize(d)?;
                $enum::from_name(&name).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown {} {name:?}", $what))
                })
            }
        }
    };
}

declare! {
    /// The tables of the Glue database: landing first, then in the order data flows.
    Table ("table"): TableDef {
        /// Raw customer records.
        CustomerLanding = {
            name: "customer_landing", prefix: "customer/landing/",
            columns: CUSTOMER, storage: Storage::JsonLines,
        },
        /// Raw phone accelerometer readings.
        AccelerometerLanding = {
            name: "accelerometer_landing", prefix: "accelerometer/landing/",
            columns: ACCELEROMETER, storage: Storage::JsonLines,
        },
        /// Raw Step Trainer readings.
        StepTrainerLanding = {
            name: "step_trainer_landing", prefix: "step_trainer/landing/",
            columns: STEP_TRAINER, storage: Storage::JsonLines,
        },
        /// Latest record per e-mail, consenting customers only (shards by e-mail).
        CustomerTrusted = {
            name: "customer_trusted", prefix: "customer/trusted/",
            columns: CUSTOMER, storage: Storage::Sharded,
        },
        /// Readings of consenting customers, by `dt`.
        AccelerometerTrusted = {
            name: "accelerometer_trusted", prefix: "accelerometer/trusted/",
            columns: ACCELEROMETER, storage: Storage::Partitioned,
        },
        /// Trusted customers that have accelerometer readings (shards by e-mail).
        CustomerCurated = {
            name: "customer_curated", prefix: "customer/curated/",
            columns: CUSTOMER, storage: Storage::Sharded,
        },
        /// Step Trainer readings of curated customers' devices, by `dt`.
        StepTrainerTrusted = {
            name: "step_trainer_trusted", prefix: "step_trainer/trusted/",
            columns: STEP_TRAINER, storage: Storage::Partitioned,
        },
        /// Step Trainer readings joined with the same customer's phone readings, by `dt`.
        MachineLearningCurated = {
            name: "machine_learning_curated", prefix: "step_trainer/curated/",
            columns: MACHINE_LEARNING, storage: Storage::Partitioned,
        },
    }
}

declare! {
    /// The zone transitions, one function each, in the order data flows.
    Transition ("function"): TransitionDef {
        /// customer_landing → customer_trusted.
        CustomerLandingToTrusted = {
            name: "customer_landing_to_trusted",
            sources: &[Table::CustomerLanding], target: Table::CustomerTrusted,
            rule: Rule::LatestConsenting { email: "email", time: "lastupdatedate" },
        },
        /// accelerometer_landing → accelerometer_trusted.
        AccelerometerLandingToTrusted = {
            name: "accelerometer_landing_to_trusted",
            sources: &[Table::AccelerometerLanding], target: Table::AccelerometerTrusted,
            rule: Rule::Consented { user: "user", time: "timestamp" },
        },
        /// accelerometer_trusted (new object) → customer_curated.
        CustomerTrustedToCurated = {
            name: "customer_trusted_to_curated",
            sources: &[Table::AccelerometerTrusted], target: Table::CustomerCurated,
            rule: Rule::CuratedByReadings { user: "user" },
        },
        /// step_trainer_landing → step_trainer_trusted.
        StepTrainerLandingToTrusted = {
            name: "step_trainer_landing_to_trusted",
            sources: &[Table::StepTrainerLanding], target: Table::StepTrainerTrusted,
            rule: Rule::OwnedDevice { serial: "serialnumber", time: "sensorreadingtime" },
        },
        /// step_trainer_trusted or accelerometer_trusted (new object) →
        /// machine_learning_curated.
        MachineLearningTrustedToCurated = {
            name: "machine_learning_trusted_to_curated",
            sources: &[Table::StepTrainerTrusted, Table::AccelerometerTrusted],
            target: Table::MachineLearningCurated,
            rule: Rule::JoinReadings,
        },
    }
}

impl Transition {
    /// Tables whose new objects fire this function.
    pub fn sources(self) -> &'static [Table] {
        self.def().sources
    }

    /// The table this function writes.
    pub fn target(self) -> Table {
        self.def().target
    }

    /// The rule it admits rows by.
    pub fn rule(self) -> Rule {
        self.def().rule
    }

    /// Whether the function reads the reference shards (consent, device index) and writes
    /// none of them (see [`crate::Ctx::reading_invocation`]): the phone, Step Trainer and
    /// ML transitions. The customer functions write shards and compute reading files
    /// inline after.
    pub fn reads_references_only(self) -> bool {
        matches!(
            self,
            Transition::AccelerometerLandingToTrusted
                | Transition::StepTrainerLandingToTrusted
                | Transition::MachineLearningTrustedToCurated
        )
    }

    /// The transition a landing table's new objects fire (`None` for other tables).
    pub fn of_landing(table: Table) -> Option<Transition> {
        Transition::ALL
            .into_iter()
            .find(|t| table.is_landing() && t.sources().contains(&table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_names_columns_of_its_source() {
        for t in Transition::ALL {
            let src = t.def().sources[0];
            let names: &[&str] = match t.def().rule {
                Rule::LatestConsenting { email, time } => &[email, time],
                Rule::Consented { user, time } => &[user, time],
                Rule::CuratedByReadings { user } => &[user],
                Rule::OwnedDevice { serial, time } => &[serial, time],
                Rule::JoinReadings => &[],
            };
            for n in names {
                assert!(src.column_index(n).is_some(), "{} has no {n}", src.name());
            }
        }
    }

    #[test]
    fn each_landing_table_feeds_one_transition() {
        let fed: Vec<(&str, &str)> = Table::landing()
            .map(|t| (t.name(), Transition::of_landing(t).map_or("", |t| t.name())))
            .collect();
        assert_eq!(
            fed,
            [
                ("customer_landing", "customer_landing_to_trusted"),
                ("accelerometer_landing", "accelerometer_landing_to_trusted"),
                ("step_trainer_landing", "step_trainer_landing_to_trusted"),
            ]
        );
        assert_eq!(Transition::of_landing(Table::AccelerometerTrusted), None);
        for t in Transition::ALL {
            assert_eq!(Transition::from_name(t.name()), Some(t));
        }
    }
}
