//! customer_landing → customer_trusted: the latest record per e-mail, consenting customers
//! only, kept in shards by a hash of the e-mail; a file rewrites only the shards its
//! e-mails fall in, each with a conditional write. A consenting customer's device enters
//! the device index (not curated yet), so that its Step Trainer files that arrive before
//! the customer's first phone reading wait for it instead of being dropped.
//!
//! A consenting customer whose latest record withdraws consent leaves every zone their
//! readings reached with the same event ([`withdraw`]), not at the next reconcile.

use std::collections::{BTreeMap, BTreeSet};

use crate::compute::PersonKind;
use crate::error::Result;
use crate::keys::{self, SourceKey};
use crate::rules::{self, Customers};
use crate::schema::Table;
use crate::streams::{Rule, Transition};
use crate::summary::Summary;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::customer_trusted_to_curated::{
    DeviceChanges, IN_FLIGHT, apply_device_changes, change, merge_changes, serial,
};
use super::{Ctx, RowOutcome, by_shard, erasure, rewrite_shard, scan_landing};

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
    type Done = (Summary, u64, DeviceChanges, Withdrawn);
    let done: Vec<Done> = stream::iter(by_shard(incoming, shards))
        .map(|(shard, part)| async move {
            let mut s = Summary::default();
            let (mut n, mut changes) = (0, DeviceChanges::new());
            let mut withdrawn = Withdrawn::new();
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
                    withdrawn = Withdrawn::new();
                    for email in part.rows.keys() {
                        let (old, new) = (serial(current, email), serial(&next, email));
                        let gone =
                            current.rows.contains_key(email) && !next.rows.contains_key(email);
                        if gone {
                            withdrawn.insert(email.clone(), old.clone());
                        }
                        if old != new {
                            if let Some(old) = &old {
                                change(&mut changes, shards, old, email, false, false);
                                if gone {
                                    change(&mut changes, shards, old, email, true, false);
                                }
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
            Ok::<_, crate::Error>((s, n, changes, withdrawn))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let (mut upserted, mut devices, mut withdrawn) = (0, DeviceChanges::new(), Withdrawn::new());
    for (d, n, changes, w) in done {
        s.absorb(d);
        upserted += n;
        merge_changes(&mut devices, changes);
        withdrawn.extend(w);
    }
    apply_device_changes(ctx, bucket, devices, &mut s).await?;
    withdraw(ctx, bucket, withdrawn, &mut s).await?;
    // Superseded, non-consenting and already-known records are filtered, not lost.
    s.rows_out = upserted;
    s.filtered += parsed - upserted;
    Ok(s)
}

/// Customers who were consenting and whose latest record now withdraws consent, with the
/// device their record named.
type Withdrawn = BTreeMap<String, Option<String>>;

/// Takes withdrawn customers out of the zones their readings reached: out of
/// customer_curated (customer_trusted and the device index are already done), and the
/// landing objects the erasure index names for them, their phone files and the Step
/// Trainer files of their devices, computed again with what those feed (the filters now
/// refuse their lines; a device another consenting customer owns keeps its readings).
/// Costs nothing but a map lookup per record unless someone withdraws. A phone file being
/// computed at the same moment registers its people only after its outputs are written,
/// so it may keep the customer's rows until the next reconcile.
async fn withdraw(ctx: &Ctx, bucket: &str, withdrawn: Withdrawn, s: &mut Summary) -> Result<()> {
    if withdrawn.is_empty() {
        return Ok(());
    }
    let shards = ctx.cfg.customer_shards;
    let mut by_curated_shard: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for email in withdrawn.keys() {
        by_curated_shard
            .entry(keys::shard_of(email, shards))
            .or_default()
            .push(email);
    }
    for (shard, emails) in by_curated_shard {
        rewrite_shard(ctx, bucket, Table::CustomerCurated, shard, s, |current| {
            let mut next = current.clone();
            let before = next.rows.len();
            next.rows.retain(|e, _| !emails.contains(&e.as_str()));
            (next.rows.len() != before).then_some(next)
        })
        .await?;
    }
    let secret = &ctx.cfg.erasure_hash_key;
    let mut landing = BTreeSet::new();
    let mut persons: Vec<(PersonKind, &str)> = Vec::new();
    for (email, serial) in &withdrawn {
        persons.push((PersonKind::Email, email));
        if let Some(serial) = serial {
            persons.push((PersonKind::Serial, serial));
        }
    }
    for (kind, person) in persons {
        let h = erasure::person_hash(secret, kind, person);
        for (key, table) in erasure::postings_of(ctx, bucket, &h).await?.found {
            // The readings only: the customer's own files are what this run just read.
            let reading = Transition::of_landing(table).is_some_and(|t| {
                matches!(t.rule(), Rule::Consented { .. } | Rule::OwnedDevice { .. })
            });
            if reading {
                landing.insert(key);
            }
        }
    }
    let (done, _) = erasure::recompute(ctx, bucket, &landing).await?;
    tracing::info!(
        customers = withdrawn.len(),
        files = landing.len(),
        "consent withdrawn: their reading files computed again"
    );
    s.outputs.extend(done.outputs);
    s.deleted.extend(done.deleted);
    Ok(())
}
