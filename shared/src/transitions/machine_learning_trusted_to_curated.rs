//! step_trainer_trusted / accelerometer_trusted (new object) → machine_learning_curated.
//!
//! One output per step trainer object and `dt`, named after it: the object's readings
//! joined with the same customer's phone readings at the same millisecond (which share its
//! `dt`). A new step trainer object computes its own output; a new accelerometer object
//! recomputes the outputs of every step trainer object in its `dt`, so the table is right
//! whichever side arrives second.
//!
//! The customer side is customer_trusted: a customer joined to phone readings is curated
//! by definition, and reading the trusted snapshot avoids racing the curated writer.

use crate::columnar::{PartitionedSink, read_parquet};
use crate::compute::{ml_join_batch, step_readings};
use crate::error::Result;
use crate::keys::{self, SourceKey};
use crate::rules::{MlJoin, SerialIndex};
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

/// What every output of one `dt` is joined with, loaded once per invocation: the
/// accelerometer objects of the `dt` and the consenting customers' device index.
pub struct DtInputs {
    dt: String,
    accel: Vec<(String, String)>,
    customers_etag: String,
    devices: SerialIndex,
}

impl DtInputs {
    /// Lists the `dt`'s accelerometer objects and indexes customer_trusted by serial.
    pub async fn load(ctx: &Ctx, bucket: &str, dt: &str) -> Result<DtInputs> {
        let (customers, etag) = ctx.customers(bucket, Table::CustomerTrusted).await?;
        Ok(DtInputs {
            dt: dt.to_string(),
            accel: accel_objects(ctx, bucket, dt).await?,
            customers_etag: etag.unwrap_or_default(),
            devices: customers.serial_index(),
        })
    }
}

/// Where the lineage of the output of step trainer object `stem` in `dt` is kept.
pub fn manifest_key(dt: &str, stem: &str) -> String {
    format!(
        "{}_manifests/dt={dt}/{stem}.json",
        Table::MachineLearningCurated.prefix()
    )
}

/// The inputs an output is computed from: the step trainer object, every accelerometer
/// object of its `dt`, and customer_trusted.
pub fn inputs_digest(step_etag: &str, accel: &[(String, String)], customers: &str) -> String {
    let mut parts = vec![step_etag, customers];
    for (k, e) in accel {
        parts.push(k);
        parts.push(e);
    }
    super::digest(parts)
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
    let digest = inputs_digest(&step_etag, accel, &inputs.customers_etag);
    let readings = step_readings(&read_parquet(bytes, &[], &step.key)?, &step.key)?;
    s.rows_in += readings.len() as u64;
    let join = MlJoin::new(readings).with_index(&inputs.devices);
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
        dts: Default::default(),
        source_etag: step_etag,
        inputs: digest,
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
    let body = serde_json::to_vec(&manifest).unwrap_or_default();
    ctx.store.put(bucket, &mkey, body.into()).await
}
