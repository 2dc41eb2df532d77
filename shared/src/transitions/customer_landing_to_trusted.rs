//! customer_landing → customer_trusted: the latest record per e-mail, consenting customers
//! only, kept in shards by a hash of the e-mail; a file rewrites only the shards its
//! e-mails fall in, each with a conditional write. A consenting customer's device enters
//! the device index (not curated yet), so that its Step Trainer files that arrive before
//! the customer's first phone reading wait for it instead of being dropped.
//!
//! Consent changes take effect with the customer's own event, not at the next reconcile
//! ([`readings_again`]): a consenting customer whose latest record withdraws consent leaves
//! every zone their readings reached, and a customer who enters customer_trusted (a new
//! consent) brings in the readings that landed before it.

use std::collections::{BTreeMap, BTreeSet};

use crate::compute::PersonKind;
use crate::error::Result;
use crate::keys::{self, SourceKey};
use crate::rules::{self, Customers};
use crate::schema::Table;
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
    type Done = (Summary, u64, DeviceChanges, Changed, Changed);
    let done: Vec<Done> = stream::iter(by_shard(incoming, shards))
        .map(|(shard, part)| async move {
            let mut s = Summary::default();
            let (mut n, mut changes) = (0, DeviceChanges::new());
            let (mut withdrawn, mut entered) = (Changed::new(), Changed::new());
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
                    (withdrawn, entered) = (Changed::new(), Changed::new());
                    for email in part.rows.keys() {
                        let (old, new) = (serial(current, email), serial(&next, email));
                        let (was, is) = (
                            current.rows.contains_key(email),
                            next.rows.contains_key(email),
                        );
                        if was && !is {
                            withdrawn.insert(email.clone(), old.clone());
                        }
                        if is && !was {
                            entered.insert(email.clone(), new.clone());
                        }
                        if old != new {
                            if let Some(old) = &old {
                                change(&mut changes, shards, old, email, false, false);
                                if was && !is {
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
            Ok::<_, crate::Error>((s, n, changes, withdrawn, entered))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let (mut upserted, mut devices) = (0, DeviceChanges::new());
    let (mut withdrawn, mut entered) = (Changed::new(), Changed::new());
    for (d, n, changes, w, e) in done {
        s.absorb(d);
        upserted += n;
        merge_changes(&mut devices, changes);
        withdrawn.extend(w);
        entered.extend(e);
    }
    apply_device_changes(ctx, bucket, devices, &mut s).await?;
    leave_curated(ctx, bucket, &withdrawn, &mut s).await?;
    readings_again(ctx, bucket, withdrawn, entered, &mut s).await?;
    // Superseded, non-consenting and already-known records are filtered, not lost.
    s.rows_out = upserted;
    s.filtered += parsed - upserted;
    Ok(s)
}

/// Customers whose consent changed with this file (withdrawn, or entering customer_trusted),
/// with the device their record names.
type Changed = BTreeMap<String, Option<String>>;

/// Takes customers whose latest record withdraws consent out of customer_curated
/// (customer_trusted and the device index are already done).
async fn leave_curated(
    ctx: &Ctx,
    bucket: &str,
    withdrawn: &Changed,
    s: &mut Summary,
) -> Result<()> {
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
    Ok(())
}

/// Computes again the reading files (phone, and Step Trainer of their devices) of the
/// customers whose consent this file changed, found through the erasure index, with what
/// those files feed: the withdrawn customers' rows leave every zone (a device another
/// consenting customer owns keeps its readings), and the readings of customers entering
/// customer_trusted that were filtered when they landed come in (their phone files make
/// them curated, then their devices' files join). Costs nothing but a map lookup per record
/// when nobody's consent changes; a new consenting customer costs a LIST per e-mail and
/// serial (empty for a sign-up before any session). A file bringing in more than
/// `GRANT_LOOKUP_LIMIT` customers (a bulk import, the backfill) leaves their readings to
/// `reconcile`; withdrawals are never deferred. A reading file being computed at the same
/// moment registers its people only after its outputs are written, so it may keep the
/// answer it read until the next reconcile.
async fn readings_again(
    ctx: &Ctx,
    bucket: &str,
    withdrawn: Changed,
    mut entered: Changed,
    s: &mut Summary,
) -> Result<()> {
    if entered.len() > ctx.cfg.grant_lookup_limit {
        tracing::warn!(
            customers = entered.len(),
            limit = ctx.cfg.grant_lookup_limit,
            "more customers entered customer_trusted than GRANT_LOOKUP_LIMIT: their earlier \
             readings are left to the next reconcile"
        );
        entered.clear();
    }
    if withdrawn.is_empty() && entered.is_empty() {
        return Ok(());
    }
    let secret = &ctx.cfg.erasure_hash_key;
    let mut persons = BTreeSet::new();
    for (email, serial) in withdrawn.iter().chain(&entered) {
        persons.insert(erasure::person_hash(secret, PersonKind::Email, email));
        if let Some(serial) = serial {
            persons.insert(erasure::person_hash(secret, PersonKind::Serial, serial));
        }
    }
    // Phone files sort before Step Trainer files: a device's files are computed once its
    // owner's phone files made them curated.
    let landing = erasure::readings_of(ctx, bucket, &persons).await?;
    let (done, _) = erasure::recompute(ctx, bucket, &landing).await?;
    tracing::info!(
        withdrawn = withdrawn.len(),
        entered = entered.len(),
        files = landing.len(),
        "consent changed: the customers' reading files computed again"
    );
    s.outputs.extend(done.outputs);
    s.deleted.extend(done.deleted);
    Ok(())
}
