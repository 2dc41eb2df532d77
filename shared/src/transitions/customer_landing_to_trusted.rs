//! customer_landing → customer_trusted: the latest record per e-mail, consenting customers
//! only, kept as one snapshot object rewritten with conditional writes.

use crate::error::Result;
use crate::keys::SourceKey;
use crate::rules::{self, Customers};
use crate::schema::Table;
use crate::summary::Summary;

use super::{Ctx, RowOutcome, rewrite_snapshot, scan_landing};

/// Folds one landing file into the snapshot.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let mut incoming = Customers::default();
    let (mut s, _) = scan_landing(ctx, bucket, src, |cells| {
        incoming.offer(cells.iter().cloned().map(|c| c.into_owned()).collect());
        Ok(RowOutcome::Kept)
    })
    .await?;
    let parsed = s.rows_out;
    let mut upserted = 0;
    rewrite_snapshot(ctx, bucket, Table::CustomerTrusted, &mut s, |current| {
        let (next, stats) = rules::merge_trusted(current, &incoming);
        upserted = stats.upserted;
        (next != *current).then_some(next)
    })
    .await?;
    // Superseded, non-consenting and already-known records are filtered, not lost.
    s.rows_out = upserted;
    s.filtered += parsed - upserted;
    Ok(s)
}
