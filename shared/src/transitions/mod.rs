//! The five zone transitions, one module each, and what they share, one module per
//! responsibility: the context with its cached reference shards (`reference`), streaming a
//! landing file with quarantine (`landing`), the lineage of outputs (`lineage`), publishing
//! partitioned outputs (`publish`) and the conditional-write loop of the sharded tables
//! (`snapshot`).

pub mod accelerometer_landing_to_trusted;
pub mod customer_landing_to_trusted;
pub mod customer_trusted_to_curated;
pub mod machine_learning_trusted_to_curated;
pub mod step_trainer_landing_to_trusted;

pub mod compact;
pub mod erasure;
mod landing;
mod lineage;
mod publish;
mod reference;
mod snapshot;

pub use crate::compute::RowOutcome;
pub use crate::compute::encode_customers;
use crate::error::Result;
use crate::keys::SourceKey;
use crate::schema::Table;
use crate::summary::Summary;

pub use landing::{Filtered, filter_landing, quarantine_key, read_landing, scan_landing};
pub use lineage::{
    LAYOUT, Lineage, Manifest, manifest_key, read_json, read_manifest, write_json, write_manifest,
};
pub use publish::{prune_partition, publish_filtered, publish_partitioned};
pub use reference::{
    Ctx, Reference, SerialOf, decode_customers, device_entries, encode_devices, refs_unchanged,
};
pub use snapshot::{by_shard, rewrite_object, rewrite_shard};

/// The five functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// customer_landing → customer_trusted.
    CustomerLandingToTrusted,
    /// accelerometer_landing → accelerometer_trusted.
    AccelerometerLandingToTrusted,
    /// accelerometer_trusted (new object) → customer_curated.
    CustomerTrustedToCurated,
    /// step_trainer_landing → step_trainer_trusted.
    StepTrainerLandingToTrusted,
    /// step_trainer_trusted or accelerometer_trusted (new object) → machine_learning_curated.
    MachineLearningTrustedToCurated,
}

/// A transition travels (in reconcile work items) as its function name.
impl serde::Serialize for Transition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Transition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Transition::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown function {name:?}")))
    }
}

impl Transition {
    /// All five, in the natural order of the data.
    pub const ALL: [Transition; 5] = [
        Transition::CustomerLandingToTrusted,
        Transition::AccelerometerLandingToTrusted,
        Transition::CustomerTrustedToCurated,
        Transition::StepTrainerLandingToTrusted,
        Transition::MachineLearningTrustedToCurated,
    ];

    /// Function name (as in `functions/` and `template.yaml`).
    pub fn name(self) -> &'static str {
        match self {
            Transition::CustomerLandingToTrusted => "customer_landing_to_trusted",
            Transition::AccelerometerLandingToTrusted => "accelerometer_landing_to_trusted",
            Transition::CustomerTrustedToCurated => "customer_trusted_to_curated",
            Transition::StepTrainerLandingToTrusted => "step_trainer_landing_to_trusted",
            Transition::MachineLearningTrustedToCurated => "machine_learning_trusted_to_curated",
        }
    }

    /// Looks a function up by name.
    pub fn from_name(name: &str) -> Option<Transition> {
        Transition::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Tables whose new objects fire this function.
    pub fn sources(self) -> &'static [Table] {
        match self {
            Transition::CustomerLandingToTrusted => &[Table::CustomerLanding],
            Transition::AccelerometerLandingToTrusted => &[Table::AccelerometerLanding],
            Transition::CustomerTrustedToCurated => &[Table::AccelerometerTrusted],
            Transition::StepTrainerLandingToTrusted => &[Table::StepTrainerLanding],
            Transition::MachineLearningTrustedToCurated => {
                &[Table::StepTrainerTrusted, Table::AccelerometerTrusted]
            }
        }
    }

    /// The table this function writes.
    pub fn target(self) -> Table {
        match self {
            Transition::CustomerLandingToTrusted => Table::CustomerTrusted,
            Transition::AccelerometerLandingToTrusted => Table::AccelerometerTrusted,
            Transition::CustomerTrustedToCurated => Table::CustomerCurated,
            Transition::StepTrainerLandingToTrusted => Table::StepTrainerTrusted,
            Transition::MachineLearningTrustedToCurated => Table::MachineLearningCurated,
        }
    }

    /// Processes one accepted source object: the transition itself, then (landing files)
    /// the erasure index and the scrub of erased people's lines, then the compacted
    /// generations of the partitions it changed.
    pub async fn run(self, ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
        let mut summary = self.transition(ctx, bucket, src).await?;
        let persons = std::mem::take(&mut summary.persons);
        if erasure::guard(ctx, bucket, src, persons).await? > 0 {
            // Lines of an erased person were scrubbed from the file: compute what is left
            // (its outputs are replaced or deleted), index it again, and leave no old
            // version of what the first run wrote.
            let first = summary;
            summary = self.transition(ctx, bucket, src).await?;
            let persons = std::mem::take(&mut summary.persons);
            erasure::guard(ctx, bucket, src, persons).await?;
            for key in first.outputs.iter().chain(&first.deleted) {
                ctx.store.delete_noncurrent(bucket, key).await?;
            }
        }
        // Publish to readers of compacted partitions too.
        compact::follow(ctx, bucket, &mut summary).await?;
        summary.sources.insert(0, src.key.clone());
        Ok(summary)
    }

    /// The transition's own work on one source object.
    async fn transition(self, ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
        // Boxed: one future type for all five keeps the Lambda main's future shallow.
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Summary>> + Send + '_>> =
            match self {
                Transition::CustomerLandingToTrusted => {
                    Box::pin(customer_landing_to_trusted::run(ctx, bucket, src))
                }
                Transition::AccelerometerLandingToTrusted => {
                    Box::pin(accelerometer_landing_to_trusted::run(ctx, bucket, src))
                }
                Transition::CustomerTrustedToCurated => {
                    Box::pin(customer_trusted_to_curated::run(ctx, bucket, src))
                }
                Transition::StepTrainerLandingToTrusted => {
                    Box::pin(step_trainer_landing_to_trusted::run(ctx, bucket, src))
                }
                Transition::MachineLearningTrustedToCurated => {
                    Box::pin(machine_learning_trusted_to_curated::run(ctx, bucket, src))
                }
            };
        fut.await
    }
}
