//! step_trainer_landing → step_trainer_trusted: readings of devices whose owner is in
//! customer_curated, one Parquet object per (source file, `dt`). The row rule is
//! [`StepTrainerFilter`]; it reads only the device-index shards of the file's serials.

use crate::compute::StepTrainerFilter;
use crate::error::Result;
use crate::keys::SourceKey;
use crate::summary::Summary;

use super::{Ctx, Transition, filter_landing};

/// Filters one landing file into the trusted zone.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let t = Transition::StepTrainerLandingToTrusted;
    filter_landing(ctx, bucket, src, t, StepTrainerFilter::sharded(&ctx.cfg)).await
}
