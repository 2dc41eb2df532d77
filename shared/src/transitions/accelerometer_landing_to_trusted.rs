//! accelerometer_landing → accelerometer_trusted: readings of consenting customers (with
//! `CONSENT_AS_OF=true`, only those taken at or after consent), one Parquet object per
//! (source file, `dt`). The row rule is [`AccelerometerFilter`]; it reads the consent
//! index of only the customer_trusted shards the file's users fall in.

use crate::compute::AccelerometerFilter;
use crate::error::Result;
use crate::keys::SourceKey;
use crate::summary::Summary;

use super::{Ctx, Transition, filter_landing};

/// Filters one landing file into the trusted zone.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let t = Transition::AccelerometerLandingToTrusted;
    filter_landing(ctx, bucket, src, t, AccelerometerFilter::sharded(&ctx.cfg)).await
}
