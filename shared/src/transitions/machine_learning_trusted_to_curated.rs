//! step_trainer_trusted / accelerometer_trusted (new object) → machine_learning_curated.
//!
//! One output per step trainer object and `dt`, named after it: the object's readings
//! joined with the same customer's phone readings at the same millisecond (which share its
//! `dt`). A new step trainer object computes its own output; a new accelerometer object
//! recomputes the outputs of every step trainer object in its `dt`, so the table is right
//! whichever side arrives second.
//!
//! The customer side is the device index (serial → curated owners, sharded by serial):
//! only the shards of the object's serials are read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::columnar::{PartitionedSink, read_parquet};
use crate::compute::{ml_join_batch, step_readings};
use crate::error::Result;
use crate::keys::{self, SourceKey};
use crate::rules::{DeviceIndex, MlJoin, SerialIndex};
use crate::schema::Table;
use crate::store::Fetched;
use crate::summary::Summary;

use super::Ctx;

/// Recomputes the machine-learning outputs affected by one trusted object.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let mut s = Summary::default();
    let Some(dt) = src.dt.as_deref() else {
        return Ok(s);
    };
    let step_keys: Vec<String> = match src.table {
        Table::StepTrainerTrusted => vec![src.key.clone()],
        _ => ctx
            .store
            .list(
                bucket,
                &keys::partition_prefix(Table::StepTrainerTrusted, dt),
            )
            .await?
            .into_iter()
            .filter(|k| k.ends_with(".parquet"))
            .collect(),
    };
    let inputs = DtInputs::load(ctx, bucket, dt).await?;
    for step_key in step_keys {
        let Ok(step) = keys::accept(bucket, &step_key, &[Table::StepTrainerTrusted]) else {
            continue;
        };
        recompute(ctx, bucket, &step, &inputs, &mut s).await?;
    }
    Ok(s)
}

/// What every output of one `dt` is joined with, listed once per invocation: the
/// accelerometer objects of the `dt`.
pub struct DtInputs {
    dt: String,
    accel: Vec<(String, String)>,
}

impl DtInputs {
    /// Lists the `dt`'s accelerometer objects.
    pub async fn load(ctx: &Ctx, bucket: &str, dt: &str) -> Result<DtInputs> {
        Ok(DtInputs {
            dt: dt.to_string(),
            accel: accel_objects(ctx, bucket, dt).await?,
        })
    }
}

/// Where the lineage of the output of step trainer object `stem` in `dt` is kept.
pub fn manifest_key(dt: &str, stem: &str) -> String {
    format!(
        "{}dt={dt}/{stem}.json",
        keys::lineage_prefix(Table::MachineLearningCurated)
    )
}

/// The phone-side inputs of an output: every accelerometer object of its `dt`.
pub fn inputs_digest(accel: &[(String, String)]) -> String {
    super::digest(accel.iter().flat_map(|(k, e)| [k.as_str(), e.as_str()]))
}

/// The accelerometer_trusted objects of `dt` with their ETags.
pub async fn accel_objects(ctx: &Ctx, bucket: &str, dt: &str) -> Result<Vec<(String, String)>> {
    let prefix = keys::partition_prefix(Table::AccelerometerTrusted, dt);
    Ok(ctx
        .store
        .list_with_etags(bucket, &prefix)
        .await?
        .into_iter()
        .filter(|(k, _)| k.ends_with(".parquet"))
        .collect())
}

/// The owners of `serials` from the device-index shards they fall in, and those shards'
/// ETags (key → ETag).
async fn owners(
    ctx: &Ctx,
    bucket: &str,
    serials: BTreeSet<&str>,
) -> Result<(SerialIndex, BTreeMap<String, String>)> {
    let shards = ctx.cfg.customer_shards;
    let mut loaded: BTreeMap<u32, Arc<DeviceIndex>> = BTreeMap::new();
    let mut refs = BTreeMap::new();
    let mut index = SerialIndex::new();
    for serial in serials {
        let shard = keys::shard_of(serial, shards);
        let devices = match loaded.entry(shard) {
            std::collections::btree_map::Entry::Occupied(e) => e.get().clone(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let (key, devices, etag) = ctx.reference::<Box<str>>(bucket, shard).await?;
                refs.insert(key, etag.unwrap_or_default());
                e.insert(devices).clone()
            }
        };
        let emails: Vec<String> = devices.get(serial).iter().map(|e| e.to_string()).collect();
        if !emails.is_empty() {
            index.insert(serial.to_string(), emails);
        }
    }
    Ok((index, refs))
}

/// Recomputes the output of one step trainer object (deleting it when the object is gone
/// or nothing joins).
pub async fn recompute(
    ctx: &Ctx,
    bucket: &str,
    step: &SourceKey,
    inputs: &DtInputs,
    s: &mut Summary,
) -> Result<()> {
    let (dt, accel) = (inputs.dt.as_str(), &inputs.accel);
    let target = Table::MachineLearningCurated;
    let out_key = keys::output_key(target, dt, &step.stem);
    let mkey = manifest_key(dt, &step.stem);
    let Fetched::Body(bytes, step_etag) = ctx.store.fetch(bucket, &step.key, None).await? else {
        ctx.store.delete(bucket, &out_key).await?;
        ctx.store.delete(bucket, &mkey).await?;
        return super::prune_partition(ctx, bucket, target, dt).await;
    };
    let readings = step_readings(&read_parquet(bytes, &[], &step.key)?, &step.key)?;
    s.rows_in += readings.len() as u64;
    let serials: BTreeSet<&str> = readings.iter().map(|r| r.1.as_str()).collect();
    let (devices, refs) = owners(ctx, bucket, serials).await?;
    let join = MlJoin::new(readings).with_index(&devices);
    let mut sink = PartitionedSink::new(target, ctx.cfg.row_group_rows);
    if !join.is_empty() {
        for (acc_key, _) in accel {
            let Fetched::Body(bytes, _) = ctx.store.fetch(bucket, acc_key, None).await? else {
                continue;
            };
            for b in read_parquet(bytes, &[], acc_key)? {
                ml_join_batch(&join, &b, dt, &mut sink, acc_key)?;
            }
        }
    }
    let mut manifest = super::Manifest {
        layout: super::LAYOUT,
        dts: Default::default(),
        lineage: super::Lineage {
            source_etag: step_etag,
            inputs: inputs_digest(accel),
            refs,
        },
    };
    match sink.finish()?.into_iter().next() {
        Some((dt, rows, bytes)) => {
            ctx.store.put(bucket, &out_key, bytes).await?;
            let dts = [dt];
            crate::catalog::register_partitions(&ctx.glue, &ctx.cfg.database, bucket, target, &dts)
                .await?;
            s.rows_out += rows;
            s.outputs.push(out_key);
            manifest.dts.extend(dts);
        }
        None => {
            ctx.store.delete(bucket, &out_key).await?;
            super::prune_partition(ctx, bucket, target, dt).await?;
        }
    }
    super::write_manifest(ctx, bucket, &mkey, &manifest).await
}
