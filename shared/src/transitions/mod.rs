//! The zone transitions of [`crate::streams`], one module per rule, and what they share, one module per
//! responsibility: the context with its cached reference shards (`reference`), streaming a
//! landing file with quarantine (`landing`), the lineage of outputs (`lineage`), publishing
//! partitioned outputs (`publish`), the conditional-write loop of the sharded tables
//! (`snapshot`), and the delayed recheck of a consent or device change (`recheck`).

pub mod consented;
pub mod customer_landing_to_trusted;
pub mod customer_trusted_to_curated;
pub mod machine_learning_trusted_to_curated;
pub mod step_trainer_landing_to_trusted;

pub mod compact;
pub mod erasure;
mod landing;
mod lineage;
mod publish;
pub(crate) mod recheck;
mod reference;
mod snapshot;

pub use crate::compute::RowOutcome;
pub use crate::compute::encode_customers;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::keys::SourceKey;

pub use crate::streams::{Rule, Transition};
use crate::summary::Summary;

pub use crate::compute::encode_devices;
pub use crate::rules::by_shard;
pub use landing::{Filtered, filter_landing, quarantine_key, read_landing, scan_landing};
pub use lineage::{
    Answers, IN_FLIGHT_SECONDS, LAYOUT, Lineage, Manifest, Stored, all_manifests, create_manifest,
    delete_manifest, legacy_manifest_key, migrate_manifests, read_json, read_manifest,
    stored_manifest, write_json, write_manifest,
};
pub use publish::{
    Batch, Previous, detach, forget, is_batch_name, prune_partition, publish_filtered,
    publish_partitioned,
};
pub use reference::{Ctx, Reference, SerialOf, decode_customers, device_entries, refs_unchanged};
pub use snapshot::{rewrite_object, rewrite_object_from, rewrite_shard, rewrite_shard_from};

impl Transition {
    /// Processes one accepted source object: [`Transition::compute`], then the compacted
    /// generations of the partitions it changed ([`compact::follow`]).
    pub async fn run(self, ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
        let mut summary = self.compute(ctx, bucket, src).await?;
        compact::follow(ctx, bucket, &mut summary).await?;
        Ok(summary)
    }

    /// The transition itself on one accepted source object, then (landing files) the
    /// erasure index and the scrub of erased people's lines; the compacted generations are
    /// the caller's to follow (once per batch: [`compact::follow`] after every write).
    pub async fn compute(self, ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
        let summary = self.transition(ctx, bucket, src, None).await?;
        // Boxed: keeps the callers' futures (the erasure's recompute among them) shallow.
        Box::pin(self.settle(ctx, bucket, src, summary)).await
    }

    /// The first half of [`Transition::compute`] for one file of an SQS batch: its outputs
    /// go into `batch` (written by the caller, [`Batch::write`]); [`Transition::settle`]
    /// follows once they are written.
    pub async fn compute_into(
        self,
        ctx: &Ctx,
        bucket: &str,
        src: &SourceKey,
        batch: &Batch,
    ) -> Result<Summary> {
        self.transition(ctx, bucket, src, Some(batch)).await
    }

    /// The second half of [`Transition::compute`], once the outputs `summary` names are
    /// written: the erasure index of the people the source holds, and the scrub of erased
    /// people's lines (the source then computed again alone, its old outputs replaced and
    /// no old version of them left).
    pub async fn settle(
        self,
        ctx: &Ctx,
        bucket: &str,
        src: &SourceKey,
        mut summary: Summary,
    ) -> Result<Summary> {
        let persons = std::mem::take(&mut summary.persons);
        let scrubbed = erasure::guard(ctx, bucket, src, persons).await?;
        self.settled(ctx, bucket, src, summary, scrubbed).await
    }

    /// [`Transition::settle`] for the files of one SQS batch (bucket, source, summary),
    /// their outputs written: every file's people are registered in the erasure index
    /// first, then the erased people are read once a bucket for all of them (register, then
    /// look: [`erasure::erased_now`]), then each file is scrubbed where it must be. One
    /// answer per file, in order.
    pub async fn settle_batch(
        self,
        ctx: &Ctx,
        files: Vec<(String, SourceKey, Summary)>,
    ) -> Vec<Result<Summary>> {
        let mut registered = Vec::with_capacity(files.len());
        for (bucket, src, mut summary) in files {
            let persons = std::mem::take(&mut summary.persons);
            let r = erasure::register(ctx, &bucket, &src, persons).await;
            registered.push((bucket, src, summary, r));
        }
        let mut looked: HashMap<String, Arc<BTreeSet<String>>> = HashMap::new();
        let mut out = Vec::with_capacity(registered.len());
        for (bucket, src, summary, r) in registered {
            let settled = async {
                let scrubbed = match r? {
                    None => 0,
                    Some(registered) => {
                        let erased = match looked.get(&bucket) {
                            Some(erased) => erased.clone(),
                            None => {
                                let erased = erasure::erased_now(ctx, &bucket).await?;
                                looked.insert(bucket.clone(), erased.clone());
                                erased
                            }
                        };
                        erasure::scrub_erased(ctx, &bucket, &src, registered, &erased).await?
                    }
                };
                Box::pin(self.settled(ctx, &bucket, &src, summary, scrubbed)).await
            };
            out.push(settled.await);
        }
        out
    }

    /// The end of [`Transition::settle`] once `scrubbed` lines were scrubbed from the
    /// source.
    async fn settled(
        self,
        ctx: &Ctx,
        bucket: &str,
        src: &SourceKey,
        mut summary: Summary,
        scrubbed: u64,
    ) -> Result<Summary> {
        if scrubbed > 0 {
            // Lines of an erased person were scrubbed from the file: compute what is left
            // (its outputs are replaced or deleted), index it again, and leave no old
            // version of what the first run wrote.
            let first = summary;
            summary = self.transition(ctx, bucket, src, None).await?;
            let persons = std::mem::take(&mut summary.persons);
            erasure::guard(ctx, bucket, src, persons).await?;
            let written = first.outputs.iter().chain(&first.deleted);
            ctx.store
                .delete_noncurrent(bucket, written.map(String::as_str))
                .await?;
        }
        summary.sources.insert(0, src.key.clone());
        Ok(summary)
    }

    /// Whether the transition filters readings (the phone's and the Step Trainer's landing
    /// files): what a customer's consent decides the fate of.
    pub fn filters_readings(self) -> bool {
        matches!(
            self.rule(),
            Rule::Consented { .. } | Rule::OwnedDevice { .. }
        )
    }

    /// Whether the transition's outputs can share one object per SQS batch ([`Batch`]):
    /// the reading filters.
    pub fn batches(self) -> bool {
        self.filters_readings()
    }

    /// The transition's own work on one source object (the reading filters' outputs into
    /// `batch` when given). Boxed, one future type for all five: it keeps the Lambda main's
    /// future shallow, and a transition that runs others (a withdrawal computes the
    /// customer's reading files again) is then `Send` without the compiler looking into
    /// itself.
    fn transition<'a>(
        self,
        ctx: &'a Ctx,
        bucket: &'a str,
        src: &'a SourceKey,
        batch: Option<&'a Batch>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Summary>> + Send + 'a>> {
        let run = self.rule_run(ctx, bucket, src, batch);
        Box::pin(async move {
            match run.await {
                Err(Error::NoSuchObject { key, .. }) if self.batches() && key == src.key => {
                    self.gone(ctx, bucket, src).await
                }
                done => done,
            }
        })
    }

    /// The rule's own run (see [`Transition::transition`]).
    fn rule_run<'a>(
        self,
        ctx: &'a Ctx,
        bucket: &'a str,
        src: &'a SourceKey,
        batch: Option<&'a Batch>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Summary>> + Send + 'a>> {
        match self.rule() {
            Rule::LatestConsenting { .. } => {
                Box::pin(customer_landing_to_trusted::run(ctx, bucket, src))
            }
            Rule::Consented { .. } => Box::pin(consented::run(ctx, bucket, src, self, batch)),
            Rule::CuratedByReadings { .. } => {
                Box::pin(customer_trusted_to_curated::run(ctx, bucket, src))
            }
            Rule::OwnedDevice { .. } => Box::pin(step_trainer_landing_to_trusted::run(
                ctx, bucket, src, self, batch,
            )),
            Rule::JoinReadings => {
                Box::pin(machine_learning_trusted_to_curated::run(ctx, bucket, src))
            }
        }
    }

    /// A reading file that no longer exists when its transition runs (deleted since its
    /// event, or the event was its deletion): its rows leave the objects holding them, its
    /// bookkeeping and quarantine object go ([`publish::forget`]). Then one LIST looks again:
    /// a file put back at the key meanwhile is computed again, whichever of its events came
    /// first.
    async fn gone(self, ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
        let mut s = Summary::default();
        publish::forget(ctx, bucket, self.target(), &src.stem, &mut s).await?;
        ctx.store.delete(bucket, &quarantine_key(src)).await?;
        tracing::info!(key = %src.key, "landing object gone: its rows taken out");
        if !ctx.store.list(bucket, &src.key).await?.contains(&src.key) {
            return Ok(s);
        }
        match self.rule_run(ctx, bucket, src, None).await {
            Ok(mut again) => {
                again.absorb(s);
                Ok(again)
            }
            // Gone again since the LIST: its rows are out already.
            Err(Error::NoSuchObject { key, .. }) if key == src.key => Ok(s),
            Err(e) => Err(e),
        }
    }
}
