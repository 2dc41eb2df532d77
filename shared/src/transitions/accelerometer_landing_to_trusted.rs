//! accelerometer_landing → accelerometer_trusted: readings of consenting customers (with
//! `CONSENT_AS_OF=true`, only those taken at or after consent), one Parquet object per
//! (source file, `dt`). The row rule is [`AccelerometerFilter`].

use crate::compute::AccelerometerFilter;
use crate::error::Result;
use crate::keys::SourceKey;
use crate::schema::Table;
use crate::summary::Summary;

use super::{Ctx, publish_partitioned, scan_landing};

/// Filters one landing file into the trusted zone.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let (customers, ref_etag) = ctx.customers(bucket, Table::CustomerTrusted).await?;
    let mut filter = AccelerometerFilter::new(&customers, &ctx.cfg);
    let (mut s, source_etag) = scan_landing(ctx, bucket, src, |cells| filter.row(cells)).await?;
    let lineage = (source_etag, ref_etag.unwrap_or_default());
    let parts = filter.sink.finish()?;
    publish_partitioned(
        ctx,
        bucket,
        Table::AccelerometerTrusted,
        &src.stem,
        parts,
        lineage,
        &mut s,
    )
    .await?;
    Ok(s)
}
