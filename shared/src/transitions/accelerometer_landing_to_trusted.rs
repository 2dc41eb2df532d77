//! accelerometer_landing → accelerometer_trusted: readings of consenting customers (with
//! `CONSENT_AS_OF=true`, only those taken at or after consent), one Parquet object per
//! (source file, `dt`). The row rule is [`AccelerometerFilter`]; it reads the consent
//! index of only the customer_trusted shards the file's users fall in.

use crate::compute::AccelerometerFilter;
use crate::error::Result;
use crate::keys::SourceKey;
use crate::summary::Summary;

use super::{Ctx, Transition, filter_landing, publish_filtered};

/// Filters one landing file into the trusted zone.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let t = Transition::AccelerometerLandingToTrusted;
    let f = filter_landing(ctx, bucket, src, AccelerometerFilter::sharded(&ctx.cfg)).await?;
    Ok(publish_filtered(ctx, bucket, src, t, f, Default::default())
        .await?
        .0)
}
