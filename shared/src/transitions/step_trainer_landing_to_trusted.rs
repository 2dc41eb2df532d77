//! step_trainer_landing → step_trainer_trusted: readings of devices whose owner is in
//! customer_curated, one Parquet object per (source file, `dt`). The row rule is
//! [`StepTrainerFilter`].

use crate::compute::StepTrainerFilter;
use crate::error::Result;
use crate::keys::SourceKey;
use crate::schema::Table;
use crate::summary::Summary;

use super::{Ctx, publish_partitioned, scan_landing};

/// Filters one landing file into the trusted zone.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let (curated, ref_etag) = ctx.customers(bucket, Table::CustomerCurated).await?;
    let mut filter = StepTrainerFilter::new(&curated, &ctx.cfg);
    let (mut s, source_etag) = scan_landing(ctx, bucket, src, |cells| filter.row(cells)).await?;
    let lineage = (source_etag, ref_etag.unwrap_or_default());
    let parts = filter.sink.finish()?;
    publish_partitioned(
        ctx,
        bucket,
        Table::StepTrainerTrusted,
        &src.stem,
        parts,
        lineage,
        &mut s,
    )
    .await?;
    Ok(s)
}
