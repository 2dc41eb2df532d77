//! accelerometer_landing → accelerometer_trusted: readings of consenting customers (with
//! `CONSENT_AS_OF=true`, only those taken at or after consent), one Parquet object per
//! (source file, `dt`).

use crate::columnar::PartitionedSink;
use crate::error::Result;
use crate::keys::SourceKey;
use crate::rules::{accelerometer, reading_allowed};
use crate::schema::Table;
use crate::summary::Summary;

use super::{Ctx, DayCache, RowOutcome, publish_partitioned, scan_landing};

/// Filters one landing file into the trusted zone.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let (customers, ref_etag) = ctx.customers(bucket, Table::CustomerTrusted).await?;
    let consent = customers.consent_dates();
    let target = Table::AccelerometerTrusted;
    let mut sink = PartitionedSink::new(target, ctx.cfg.row_group_rows);
    let mut days = DayCache::default();
    let as_of = ctx.cfg.consent_as_of;
    let (mut s, source_etag) = scan_landing(ctx, bucket, src, |cells| {
        let user = cells[accelerometer::USER].as_str().unwrap_or_default();
        let ts = cells[accelerometer::TIMESTAMP]
            .as_long()
            .unwrap_or_default();
        if !reading_allowed(consent.get(user).copied(), ts, as_of) {
            return Ok(RowOutcome::Filtered);
        }
        let Some(dt) = days.dt(ts) else {
            return Ok(RowOutcome::Bad(format!("timestamp {ts} is out of range")));
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
