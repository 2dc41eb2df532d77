//! customer_landing → customer_trusted: the latest record per e-mail, consenting customers
//! only, kept in shards by a hash of the e-mail; a file rewrites only the shards its
//! e-mails fall in, each with a conditional write. A consenting customer's device enters
//! the device index (not curated yet), so that its Step Trainer files that arrive before
//! the customer's first phone reading wait for it instead of being dropped.
//!
//! Changes take effect with the customer's own event, not at the next reconcile: a curated
//! customer's row in customer_curated follows their record ([`update_curated`]); a
//! consenting customer whose latest record withdraws consent leaves every zone their
//! readings reached; a customer who enters customer_trusted (a new consent) brings in the
//! readings that landed before it; a customer whose record names another device takes its
//! readings over from the old one ([`readings_again`]).

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
    type Done = (Summary, u64, DeviceChanges, Changes);
    let done: Vec<Done> = stream::iter(by_shard(incoming, shards))
        .map(|(shard, part)| async move {
            let mut s = Summary::default();
            let (mut n, mut devices, mut changes) = (0, DeviceChanges::new(), Changes::default());
            rewrite_shard(
                ctx,
                bucket,
                Table::CustomerTrusted,
                shard,
                &mut s,
                |current| {
                    let (next, stats) = rules::merge_trusted(current, &part);
                    n = stats.upserted;
                    devices = DeviceChanges::new();
                    changes = Changes::default();
                    for email in part.rows.keys() {
                        let (old, new) = (serial(current, email), serial(&next, email));
                        changes.note(email, current.rows.get(email), next.rows.get(email));
                        let withdrawn =
                            current.rows.contains_key(email) && !next.rows.contains_key(email);
                        if old != new {
                            if let Some(old) = &old {
                                change(&mut devices, shards, old, email, false, false);
                                if withdrawn {
                                    change(&mut devices, shards, old, email, true, false);
                                }
                            }
                            if let Some(new) = &new {
                                change(&mut devices, shards, new, email, false, true);
                            }
                        }
                    }
                    Some(next)
                },
            )
            .await?;
            Ok::<_, crate::Error>((s, n, devices, changes))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let (mut upserted, mut devices, mut changes) = (0, DeviceChanges::new(), Changes::default());
    for (d, n, more_devices, more) in done {
        s.absorb(d);
        upserted += n;
        merge_changes(&mut devices, more_devices);
        changes.absorb(more);
    }
    // A curated customer's device that moved is entered curated, not waiting.
    let moved = update_curated(ctx, bucket, &changes, &mut s).await?;
    let curated: BTreeSet<(&str, &str)> = moved
        .values()
        .flat_map(|(add, _)| add.iter().filter(|e| e.curated))
        .map(|e| (e.serial.as_str(), e.email.as_str()))
        .collect();
    for (add, _) in devices.values_mut() {
        add.retain(|e| e.curated || !curated.contains(&(e.serial.as_str(), e.email.as_str())));
    }
    merge_changes(&mut devices, moved);
    apply_device_changes(ctx, bucket, devices, &mut s).await?;
    readings_again(ctx, bucket, &changes, &mut s).await?;
    // Superseded, non-consenting and already-known records are filtered, not lost.
    s.rows_out = upserted;
    s.filtered += parsed - upserted;
    Ok(s)
}

/// What a customer file changed for customers it names: who left customer_trusted (a
/// withdrawal), who entered it (a new consent), and whose record changed while they stay
/// (with their new record), each with the serials involved.
#[derive(Debug, Default)]
struct Changes {
    /// E-mail → the device their last consenting record named.
    withdrawn: BTreeMap<String, Option<String>>,
    /// E-mail → the device their record names.
    entered: BTreeMap<String, Option<String>>,
    /// E-mail → their new record, the device it replaced (when it names another one), and
    /// whether the consent date moved.
    updated: BTreeMap<String, Updated>,
}

#[derive(Debug)]
struct Updated {
    row: rules::CustomerRow,
    old_serial: Option<String>,
    date_moved: bool,
}

impl Changes {
    /// Notes `email`'s trusted record before (`was`) and after (`is`) the file.
    fn note(
        &mut self,
        email: &str,
        was: Option<&rules::CustomerRow>,
        is: Option<&rules::CustomerRow>,
    ) {
        let serial_of =
            |r: &rules::CustomerRow| r[rules::customer::SERIAL].as_str().map(str::to_string);
        match (was, is) {
            (Some(was), None) => {
                self.withdrawn.insert(email.to_string(), serial_of(was));
            }
            (None, Some(is)) => {
                self.entered.insert(email.to_string(), serial_of(is));
            }
            (Some(was), Some(is)) if was != is => {
                let research = |r: &rules::CustomerRow| r[rules::customer::RESEARCH].as_long();
                let (old, new) = (serial_of(was), serial_of(is));
                self.updated.insert(
                    email.to_string(),
                    Updated {
                        row: is.clone(),
                        old_serial: old.filter(|o| Some(o) != new.as_ref()),
                        date_moved: research(was) != research(is),
                    },
                );
            }
            _ => {}
        }
    }

    fn absorb(&mut self, more: Changes) {
        self.withdrawn.extend(more.withdrawn);
        self.entered.extend(more.entered);
        self.updated.extend(more.updated);
    }
}

/// Keeps customer_curated in step with the file: withdrawn customers leave it, and a
/// curated customer's changed record replaces theirs (customer_trusted and the device
/// index are done by the caller). A curated customer whose record names another device
/// takes their curated device-index entry to it: the returned changes. One GET of each
/// curated shard the file's withdrawn or updated customers fall in; a PUT only when the
/// shard changes.
async fn update_curated(
    ctx: &Ctx,
    bucket: &str,
    changes: &Changes,
    s: &mut Summary,
) -> Result<DeviceChanges> {
    let shards = ctx.cfg.customer_shards;
    let mut by_shard: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for email in changes.withdrawn.keys().chain(changes.updated.keys()) {
        by_shard
            .entry(keys::shard_of(email, shards))
            .or_default()
            .push(email);
    }
    let mut devices = DeviceChanges::new();
    for (shard, emails) in by_shard {
        let mut moved = DeviceChanges::new();
        rewrite_shard(ctx, bucket, Table::CustomerCurated, shard, s, |current| {
            let mut next = current.clone();
            moved = DeviceChanges::new();
            for email in &emails {
                if changes.withdrawn.contains_key(*email) {
                    next.rows.remove(*email);
                    continue;
                }
                let (Some(u), Some(row)) = (changes.updated.get(*email), next.rows.get_mut(*email))
                else {
                    continue;
                };
                *row = u.row.clone();
                if let Some(old) = &u.old_serial {
                    change(&mut moved, shards, old, email, true, false);
                    if let Some(new) = u.row[rules::customer::SERIAL].as_str() {
                        change(&mut moved, shards, new, email, true, true);
                        change(&mut moved, shards, new, email, false, false);
                    }
                }
            }
            (next != *current).then_some(next)
        })
        .await?;
        merge_changes(&mut devices, moved);
    }
    Ok(devices)
}

/// Computes again the reading files (phone, and Step Trainer of their devices) of the
/// customers whose consent or device this file changed, found through the erasure index,
/// with customer_curated and what deleted outputs fed (the machine-learning join of the
/// objects written follows from their own events):
/// - a withdrawn customer's rows leave every zone (a device another consenting customer
///   owns keeps its readings);
/// - a customer entering customer_trusted brings in the readings that were filtered when
///   they landed (their phone files make them curated, then their devices' files join);
/// - a customer whose record names another device: their phone files (the join finds a
///   phone object by its users' devices) and both devices' files (the old one's rows go
///   unless another owner keeps them, the new one's come in); with `CONSENT_AS_OF=true`, a
///   moved consent date: their phone and device files.
///
/// Costs nothing when nobody's consent or device changes; a new consenting customer costs
/// a LIST per e-mail and serial (empty for a sign-up before any session). A file bringing
/// in more than `GRANT_LOOKUP_LIMIT` customers (a bulk import, the backfill) leaves their
/// readings to `reconcile`; withdrawals are never deferred. A reading file being computed
/// at the same moment registers its people only after its outputs are written, so it may
/// keep the answer it read until the next reconcile.
async fn readings_again(ctx: &Ctx, bucket: &str, changes: &Changes, s: &mut Summary) -> Result<()> {
    let mut emails: BTreeSet<&str> = BTreeSet::new();
    let mut serials: BTreeSet<&str> = BTreeSet::new();
    for (email, serial) in &changes.withdrawn {
        emails.insert(email);
        serials.extend(serial.as_deref());
    }
    let entered = &changes.entered;
    if entered.len() > ctx.cfg.grant_lookup_limit {
        tracing::warn!(
            customers = entered.len(),
            limit = ctx.cfg.grant_lookup_limit,
            "more customers entered customer_trusted than GRANT_LOOKUP_LIMIT: their earlier \
             readings are left to the next reconcile"
        );
    } else {
        for (email, serial) in entered {
            emails.insert(email);
            serials.extend(serial.as_deref());
        }
    }
    for (email, u) in &changes.updated {
        let serial = u.row[rules::customer::SERIAL].as_str();
        if u.old_serial.is_some() {
            // Their phone files too: the machine-learning join finds a phone object by its
            // users' devices.
            emails.insert(email);
            serials.extend(u.old_serial.as_deref());
            serials.extend(serial);
        }
        if u.date_moved && ctx.cfg.consent_as_of {
            emails.insert(email);
            serials.extend(serial);
        }
    }
    if emails.is_empty() && serials.is_empty() {
        return Ok(());
    }
    let secret = &ctx.cfg.erasure_hash_key;
    let persons: BTreeSet<String> = emails
        .iter()
        .map(|e| erasure::person_hash(secret, PersonKind::Email, e))
        .chain(
            serials
                .iter()
                .map(|v| erasure::person_hash(secret, PersonKind::Serial, v)),
        )
        .collect();
    // Phone files sort before Step Trainer files: a device's files are computed once its
    // owner's phone files made them curated.
    let landing = erasure::readings_of(ctx, bucket, &persons).await?;
    let (done, _) = erasure::recompute(ctx, bucket, &landing, true).await?;
    tracing::info!(
        withdrawn = changes.withdrawn.len(),
        entered = changes.entered.len(),
        updated = changes.updated.len(),
        files = landing.len(),
        "consent or devices changed: the customers' reading files computed again"
    );
    s.outputs.extend(done.outputs);
    s.deleted.extend(done.deleted);
    Ok(())
}
