//! customer_landing → customer_trusted: the latest record per e-mail, consenting customers
//! only, kept in shards by a hash of the e-mail; a file rewrites only the shards its
//! e-mails fall in, each with a conditional write.

use crate::error::Result;
use crate::keys::SourceKey;
use crate::rules::{self, Customers};
use crate::schema::Table;
use crate::summary::Summary;

use super::{Ctx, RowOutcome, by_shard, rewrite_shard, scan_landing};

/// Folds one landing file into the shards of customer_trusted.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let mut incoming = Customers::default();
    let (mut s, _) = scan_landing(ctx, bucket, src, |cells| {
        incoming.offer(cells.iter().cloned().map(|c| c.into_owned()).collect());
        Ok(RowOutcome::Kept)
    })
    .await?;
    let parsed = s.rows_out;
    let mut upserted = 0;
    for (shard, part) in by_shard(incoming, ctx.cfg.customer_shards) {
        let mut n = 0;
        rewrite_shard(
            ctx,
            bucket,
            Table::CustomerTrusted,
            shard,
            &mut s,
            |current| {
                let (next, stats) = rules::merge_trusted(current, &part);
                n = stats.upserted;
                Some(next)
            },
        )
        .await?;
        upserted += n;
    }
    // Superseded, non-consenting and already-known records are filtered, not lost.
    s.rows_out = upserted;
    s.filtered += parsed - upserted;
    Ok(s)
}
