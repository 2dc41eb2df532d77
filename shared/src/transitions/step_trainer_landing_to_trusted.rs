//! step_trainer_landing → step_trainer_trusted: readings of devices whose owner is in
//! customer_curated, one Parquet object per (source file, `dt`).

use crate::columnar::PartitionedSink;
use crate::error::Result;
use crate::keys::SourceKey;
use crate::rules::step_trainer;
use crate::schema::Table;
use crate::summary::Summary;

use super::{Ctx, DayCache, RowOutcome, publish_partitioned, scan_landing};

/// Filters one landing file into the trusted zone.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let (curated, ref_etag) = ctx.customers(bucket, Table::CustomerCurated).await?;
    let serials = curated.serials();
    let target = Table::StepTrainerTrusted;
    let mut sink = PartitionedSink::new(target, ctx.cfg.row_group_rows);
    let mut days = DayCache::default();
    let (mut s, source_etag) = scan_landing(ctx, bucket, src, |cells| {
        let serial = cells[step_trainer::SERIAL].as_str().unwrap_or_default();
        if !serials.contains(serial) {
            return Ok(RowOutcome::Filtered);
        }
        let ts = cells[step_trainer::TIME].as_long().unwrap_or_default();
        let Some(dt) = days.dt(ts) else {
            return Ok(RowOutcome::Bad(format!(
                "sensorreadingtime {ts} is out of range"
            )));
        };
        sink.append(dt, cells)?;
        Ok(RowOutcome::Kept)
    })
    .await?;
    let lineage = (source_etag, ref_etag.unwrap_or_default());
    publish_partitioned(
        ctx,
        bucket,
        target,
        &src.stem,
        sink.finish()?,
        lineage,
        &mut s,
    )
    .await?;
    Ok(s)
}
