//! A reading stream filtered by consent ([`Rule::Consented`]; accelerometer_landing →
//! accelerometer_trusted): readings of consenting customers (with `CONSENT_AS_OF=true`,
//! only those taken at or after consent), one Parquet object per (source file or SQS batch,
//! `dt`). The
//! row rule is [`ConsentFilter`]; it reads the consent index of only the customer_trusted
//! shards the file's users fall in.

use crate::compute::ConsentFilter;
use crate::error::Result;
use crate::keys::SourceKey;
use crate::summary::Summary;

use super::{Batch, Ctx, Previous, Rule, Transition, filter_landing, publish_filtered};

/// Filters one landing file of `t`'s source into its trusted table.
pub async fn run(
    ctx: &Ctx,
    bucket: &str,
    src: &SourceKey,
    t: Transition,
    batch: Option<&Batch>,
) -> Result<Summary> {
    let filter = ConsentFilter::sharded(t, &ctx.cfg)?;
    debug_assert!(matches!(t.rule(), Rule::Consented { .. }));
    let f = filter_landing(ctx, bucket, src, filter).await?;
    Ok(publish_filtered(
        ctx,
        bucket,
        src,
        t,
        f,
        Default::default(),
        Previous::Unread,
        batch,
    )
    .await?
    .0)
}
