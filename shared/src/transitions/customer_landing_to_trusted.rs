//! customer_landing → customer_trusted: the latest record per e-mail, consenting customers
//! only, kept in shards by a hash of the e-mail; a file rewrites only the shards its
//! e-mails fall in, each with a conditional write. A consenting customer's device enters
//! the device index (not curated yet), so that its Step Trainer files that arrive before
//! the customer's first phone reading wait for it instead of being dropped.

use crate::error::Result;
use crate::keys::SourceKey;
use crate::rules::{self, Customers};
use crate::schema::Table;
use crate::summary::Summary;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::customer_trusted_to_curated::{
    DeviceChanges, IN_FLIGHT, apply_device_changes, change, merge_changes, serial,
};
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
    let shards = ctx.cfg.customer_shards;
    // The shards (a few in flight), then the device changes they imply.
    let done: Vec<(Summary, u64, DeviceChanges)> = stream::iter(by_shard(incoming, shards))
        .map(|(shard, part)| async move {
            let mut s = Summary::default();
            let (mut n, mut changes) = (0, DeviceChanges::new());
            rewrite_shard(
                ctx,
                bucket,
                Table::CustomerTrusted,
                shard,
                &mut s,
                |current| {
                    let (next, stats) = rules::merge_trusted(current, &part);
                    n = stats.upserted;
                    changes = DeviceChanges::new();
                    for email in part.rows.keys() {
                        let (old, new) = (serial(current, email), serial(&next, email));
                        if old != new {
                            if let Some(old) = &old {
                                change(&mut changes, shards, old, email, false, false);
                            }
                            if let Some(new) = &new {
                                change(&mut changes, shards, new, email, false, true);
                            }
                        }
                    }
                    Some(next)
                },
            )
            .await?;
            Ok::<_, crate::Error>((s, n, changes))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let (mut upserted, mut devices) = (0, DeviceChanges::new());
    for (d, n, changes) in done {
        s.absorb(d);
        upserted += n;
        merge_changes(&mut devices, changes);
    }
    apply_device_changes(ctx, bucket, devices, &mut s).await?;
    // Superseded, non-consenting and already-known records are filtered, not lost.
    s.rows_out = upserted;
    s.filtered += parsed - upserted;
    Ok(s)
}
