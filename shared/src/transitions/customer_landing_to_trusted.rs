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
//! readings over from the old one ([`readings_again`]). A customer brought in by a record
//! older than one another file already delivered (a withdrawal, say) is folded again with
//! the newer record ([`newer_records`]): the shards hold consenting customers only, so they
//! cannot tell on their own.

use std::collections::{BTreeMap, BTreeSet};

use crate::compute::PersonKind;
use crate::error::Result;
use crate::keys::{self, SourceKey};
use crate::rules::{self, Customers};
use crate::schema::Table;
use crate::summary::Summary;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::customer_trusted_to_curated::{
    DeviceChanges, IN_FLIGHT, apply_device_changes, change, merge_changes, redrive_waiting, serial,
};
use super::{
    Ctx, RowOutcome, by_shard, decode_customers, erasure, recheck, rewrite_shard,
    rewrite_shard_from, scan_landing,
};
use crate::compute::LandingScan;
use crate::record::Cell;
use crate::store::Fetched;

/// Folds one landing file into the shards of customer_trusted.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let mut incoming = Customers::default();
    let (mut s, _) = scan_landing(ctx, bucket, src, |cells| {
        incoming.offer(cells.iter().cloned().map(|c| c.into_owned()).collect());
        Ok(RowOutcome::Kept)
    })
    .await?;
    let parsed = s.rows_out;
    let (upserted, mut changes) = fold(ctx, bucket, incoming, &mut s).await?;
    // The postings of the customers the file brought in: their other customer files (a
    // newer record that arrived first is folded in after this file's), then their readings.
    let secret = &ctx.cfg.erasure_hash_key;
    let looked_up = changes.entered.len() <= ctx.cfg.grant_lookup_limit;
    let listed = match looked_up {
        true => {
            let persons: Vec<String> = changes
                .entered
                .keys()
                .map(|e| erasure::person_hash(secret, PersonKind::Email, e))
                .collect();
            erasure::postings(ctx, bucket, persons).await?
        }
        false => BTreeMap::new(),
    };
    let newer = newer_records(ctx, bucket, &src.key, &changes.entered, &listed).await?;
    if !newer.rows.is_empty() {
        let (_, later) = fold(ctx, bucket, newer, &mut s).await?;
        changes.then(later);
    }
    let moved = update_curated(ctx, bucket, &changes, &mut s).await?;
    readings_again(ctx, bucket, &changes, &moved, looked_up, listed, &mut s).await?;
    // Superseded, non-consenting and already-known records are filtered, not lost (one
    // retracted for a newer record elsewhere too).
    let upserted = upserted - changes.retracted.len() as u64;
    s.rows_out = upserted;
    s.filtered += parsed - upserted;
    Ok(s)
}

/// Folds `incoming` (latest record per e-mail) into the customer_trusted shards its e-mails
/// fall in (a few in flight, conditional writes), then the device-index changes that
/// implies: the records it took (upserted) and what changed for whom.
async fn fold(
    ctx: &Ctx,
    bucket: &str,
    incoming: Customers,
    s: &mut Summary,
) -> Result<(u64, Changes)> {
    let shards = ctx.cfg.customer_shards;
    // Redelivered, the file may have been folded by an attempt that stopped before its
    // follow-up work: the records already in place count as changed again.
    let again = crate::event::redelivered();
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
                        let (was, is) = (current.rows.get(email), next.rows.get(email));
                        changes.note(email, was, is);
                        if again {
                            changes.note_again(email, was, is, &part.rows[email]);
                        }
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
    apply_device_changes(ctx, bucket, devices, s).await?;
    Ok((upserted, changes))
}

/// The newest records, in other customer files, of the customers this file (`key`) brought
/// into customer_trusted (`entered`), where they are newer than this file's: a file that
/// arrived before an older one (its withdrawal, say, must stand). Found through each
/// customer's postings (`listed`): files of at most `ERASURE_WIDE_PERSONS` people, each read
/// whole with one GET; a bulk file, indexed wide, is left to `reconcile`.
async fn newer_records(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    entered: &BTreeMap<String, rules::CustomerRow>,
    listed: &BTreeMap<String, Vec<String>>,
) -> Result<Customers> {
    let secret = &ctx.cfg.erasure_hash_key;
    let mut files: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for email in entered.keys() {
        let h = erasure::person_hash(secret, PersonKind::Email, email);
        for landing in listed.get(&h).into_iter().flatten() {
            if landing != key && landing.starts_with(Table::CustomerLanding.prefix()) {
                files.entry(landing).or_default().insert(email);
            }
        }
    }
    let mut newer = Customers::default();
    for (file, emails) in files {
        // A file gone since: its postings are stale.
        for (_, row) in records_in(ctx, bucket, file, |e| emails.contains(e))
            .await?
            .rows
        {
            newer.offer(row);
        }
    }
    newer.rows.retain(|email, row| {
        entered
            .get(email)
            .is_some_and(|this| !rules::supersedes(this, row))
    });
    Ok(newer)
}

/// The latest record, per e-mail `keep` picks, that customer landing file `key` holds
/// (none when the file is gone): the file read whole with one GET (one-record files, found
/// through postings).
pub(super) async fn records_in(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Customers> {
    let mut out = Customers::default();
    let Fetched::Body(body, _) = ctx.store.fetch(bucket, key, None).await? else {
        return Ok(out);
    };
    let mut scan = LandingScan::new(Table::CustomerLanding, key, &ctx.cfg);
    let mut offer = |cells: &[Cell<'_>]| {
        if cells[rules::customer::EMAIL].as_str().is_some_and(&keep) {
            out.offer(cells.iter().cloned().map(Cell::into_owned).collect());
        }
        Ok(RowOutcome::Kept)
    };
    scan.push(&body, &mut offer)?;
    scan.finish(&mut offer)?;
    Ok(out)
}

/// What a customer file changed for customers it names: who left customer_trusted (a
/// withdrawal), who entered it (a new consent), and whose record changed while they stay
/// (with their new record), each with the serials involved.
#[derive(Debug, Default)]
struct Changes {
    /// E-mail → the device their last consenting record named.
    withdrawn: BTreeMap<String, Option<String>>,
    /// E-mail → the record that brought them in.
    entered: BTreeMap<String, rules::CustomerRow>,
    /// E-mail → their new record, the device it replaced (when it names another one), and
    /// whether the consent date moved.
    updated: BTreeMap<String, Updated>,
    /// Brought in, then taken out again by a newer record found elsewhere: never entered,
    /// but a phone file may have made them curated in between.
    retracted: BTreeSet<String>,
}

#[derive(Debug)]
struct Updated {
    row: rules::CustomerRow,
    /// The device the record named before, when it names another one (or none) now.
    moved_from: Option<Option<String>>,
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
        match (was, is) {
            (Some(was), None) => {
                self.withdrawn.insert(email.to_string(), serial_of(was));
            }
            (None, Some(is)) => {
                self.entered.insert(email.to_string(), is.clone());
            }
            (Some(was), Some(is)) if was != is => {
                let research = |r: &rules::CustomerRow| r[rules::customer::RESEARCH].as_long();
                let (old, new) = (serial_of(was), serial_of(is));
                self.updated.insert(
                    email.to_string(),
                    Updated {
                        row: is.clone(),
                        moved_from: (old != new).then_some(old),
                        date_moved: research(was) != research(is),
                    },
                );
            }
            _ => {}
        }
    }

    /// On a redelivery, notes a record this file holds that is already in place as if it
    /// had just changed: a consenting one entered (and updated, for customer_curated), a
    /// non-consenting one with nobody in customer_trusted withdrawn. All the follow-up work
    /// is idempotent; done twice, it changes nothing the second time.
    fn note_again(
        &mut self,
        email: &str,
        was: Option<&rules::CustomerRow>,
        is: Option<&rules::CustomerRow>,
        incoming: &rules::CustomerRow,
    ) {
        match (was, is) {
            (Some(was), Some(is)) if was == is && is == incoming => {
                self.entered.insert(email.to_string(), is.clone());
                self.updated.insert(
                    email.to_string(),
                    Updated {
                        row: is.clone(),
                        moved_from: None,
                        date_moved: false,
                    },
                );
            }
            (None, None) => {
                self.withdrawn
                    .insert(email.to_string(), serial_of(incoming));
            }
            _ => {}
        }
    }

    fn absorb(&mut self, more: Changes) {
        self.withdrawn.extend(more.withdrawn);
        self.entered.extend(more.entered);
        self.updated.extend(more.updated);
        self.retracted.extend(more.retracted);
    }

    /// Adds what a later fold in the same invocation changed: a customer brought in and
    /// then taken out again never entered; one brought in and then updated entered with
    /// the later record.
    fn then(&mut self, later: Changes) {
        for (email, serial) in later.withdrawn {
            match self.entered.remove(&email) {
                Some(_) => {
                    self.retracted.insert(email);
                }
                None => {
                    self.withdrawn.insert(email, serial);
                }
            }
        }
        for (email, u) in later.updated {
            match self.entered.get_mut(&email) {
                Some(row) => *row = u.row,
                None => {
                    self.updated.insert(email, u);
                }
            }
        }
        self.entered.extend(later.entered);
    }
}

/// Keeps customer_curated in step with the file: withdrawn (and retracted) customers leave
/// it, and a curated customer's changed record replaces theirs (customer_trusted and the
/// device index are done by the caller). A curated customer whose record names another
/// device (or one where it named none) takes their curated device-index entry to it, and
/// Step Trainer files waiting for that device are sent again; the device index is changed
/// before the curated row, from the device the curated row names, so a retry after a
/// failure in between finds the move again. One GET of each curated shard the file's
/// withdrawn or updated customers fall in; a PUT only when the shard changes. Returns the
/// moves it found (e-mail, the device the curated row named): on a redelivery they are
/// what still tells the old device, whose readings leave.
async fn update_curated(
    ctx: &Ctx,
    bucket: &str,
    changes: &Changes,
    s: &mut Summary,
) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    let shards = ctx.cfg.customer_shards;
    let leaving =
        |email: &str| changes.withdrawn.contains_key(email) || changes.retracted.contains(email);
    let mut by_shard: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for email in changes
        .withdrawn
        .keys()
        .chain(changes.updated.keys())
        .chain(&changes.retracted)
    {
        by_shard
            .entry(keys::shard_of(email, shards))
            .or_default()
            .push(email);
    }
    for (shard, emails) in by_shard {
        let key = keys::shard_key(Table::CustomerCurated, shard);
        let seed = ctx.store.fetch(bucket, &key, None).await?;
        let stored = match &seed {
            Fetched::Body(bytes, _) => decode_customers(bytes.clone(), &key)?,
            _ => Customers::default(),
        };
        let mut moved = DeviceChanges::new();
        for email in &emails {
            // Only a curated customer's device moves here (the curated function moves the
            // others' when they become curated).
            let Some(u) = changes.updated.get(*email) else {
                continue;
            };
            if !stored.rows.contains_key(*email) {
                continue;
            }
            let (old, new) = (serial(&stored, email), serial_of(&u.row));
            if old != new {
                if let Some(old) = &old {
                    change(&mut moved, shards, old, email, true, false);
                    found.push((email.to_string(), old.clone()));
                }
                if let Some(new) = &new {
                    change(&mut moved, shards, new, email, true, true);
                    change(&mut moved, shards, new, email, false, false);
                }
            }
        }
        let first_owned = apply_device_changes(ctx, bucket, moved, s).await?;
        redrive_waiting(ctx, bucket, &first_owned, s).await?;
        rewrite_shard_from(
            ctx,
            bucket,
            Table::CustomerCurated,
            shard,
            Some(seed),
            s,
            |current| {
                let mut next = current.clone();
                for email in &emails {
                    if leaving(email) {
                        next.rows.remove(*email);
                    } else if let (Some(u), Some(row)) =
                        (changes.updated.get(*email), next.rows.get_mut(*email))
                    {
                        *row = u.row.clone();
                    }
                }
                Some(next)
            },
        )
        .await?;
    }
    Ok(found)
}

/// The device a customer record names.
fn serial_of(row: &rules::CustomerRow) -> Option<String> {
    row[rules::customer::SERIAL].as_str().map(str::to_string)
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
/// a LIST per e-mail and serial (empty for a sign-up before any session). More files than
/// `RECOMPUTE_INLINE_LIMIT` go to the reconcile queue, one item each. A reading file being
/// computed at the same moment registers its people only after its outputs are written, so
/// it may keep the answer it read: every changed customer is checked again
/// `RECHECK_DELAY_SECONDS` later ([`super::recheck`]). A file bringing in more than
/// `GRANT_LOOKUP_LIMIT` customers (a bulk import, the backfill) leaves their readings to
/// that recheck alone; withdrawals are never deferred.
async fn readings_again(
    ctx: &Ctx,
    bucket: &str,
    changes: &Changes,
    moved: &[(String, String)],
    looked_up: bool,
    listed: BTreeMap<String, Vec<String>>,
    s: &mut Summary,
) -> Result<()> {
    let mut emails: BTreeSet<&str> = BTreeSet::new();
    let mut serials: BTreeSet<&str> = BTreeSet::new();
    for (email, serial) in &changes.withdrawn {
        emails.insert(email);
        serials.extend(serial.as_deref());
    }
    // A move is the record's own (`moved_from`), or, for a curated customer, what their
    // curated row still names (the same on a first delivery; on a redelivery after a stop,
    // the only record of the old device).
    let curated_moves: BTreeMap<&str, &str> = moved
        .iter()
        .map(|(e, old)| (e.as_str(), old.as_str()))
        .collect();
    for (email, u) in &changes.updated {
        let serial = u.row[rules::customer::SERIAL].as_str();
        let curated_old = curated_moves.get(email.as_str()).copied();
        if u.moved_from.is_some() || curated_old.is_some() {
            // Their phone files too: the machine-learning join finds a phone object by its
            // users' devices.
            emails.insert(email);
            serials.extend(u.moved_from.iter().flatten().map(String::as_str));
            serials.extend(curated_old);
            serials.extend(serial);
        }
        if u.date_moved && ctx.cfg.consent_as_of {
            emails.insert(email);
            serials.extend(serial);
        }
    }
    let secret = &ctx.cfg.erasure_hash_key;
    let hashed = |emails: &BTreeSet<&str>, serials: &BTreeSet<&str>| -> BTreeSet<String> {
        emails
            .iter()
            .map(|e| erasure::person_hash(secret, PersonKind::Email, e))
            .chain(
                serials
                    .iter()
                    .map(|v| erasure::person_hash(secret, PersonKind::Serial, v)),
            )
            .collect()
    };
    let (mut entered_emails, mut entered_serials) = (BTreeSet::new(), BTreeSet::new());
    for (email, row) in &changes.entered {
        entered_emails.insert(email.as_str());
        entered_serials.extend(row[rules::customer::SERIAL].as_str());
    }
    let entered = hashed(&entered_emails, &entered_serials);
    let mut persons = hashed(&emails, &serials);
    if looked_up {
        persons.extend(entered.iter().cloned());
    } else {
        tracing::warn!(
            customers = changes.entered.len(),
            limit = ctx.cfg.grant_lookup_limit,
            "more customers entered customer_trusted than GRANT_LOOKUP_LIMIT: their earlier \
             readings are left to the recheck (the next reconcile without a reconcile queue)"
        );
    }
    if persons.is_empty() && entered.is_empty() {
        return Ok(());
    }
    // The recheck first: should this invocation stop before the end, the redelivery sends
    // it again (a duplicate recheck finds nothing to do).
    let rechecked: BTreeSet<String> = persons.iter().chain(&entered).cloned().collect();
    recheck::send(ctx, bucket, &rechecked).await?;
    if persons.is_empty() {
        return Ok(());
    }
    // Phone files sort before Step Trainer files: a device's files are computed once its
    // owner's phone files made them curated.
    let landing = erasure::readings_of(ctx, bucket, &persons, listed).await?;
    let (done, queued) = recheck::compute_again(ctx, bucket, &landing).await?;
    tracing::info!(
        withdrawn = changes.withdrawn.len(),
        entered = changes.entered.len(),
        updated = changes.updated.len(),
        files = landing.len(),
        limit = ctx.cfg.recompute_inline_limit,
        queued,
        "consent or devices changed: the customers' reading files computed again (sent to \
         the reconcile queue when more than RECOMPUTE_INLINE_LIMIT)"
    );
    s.outputs.extend(done.outputs);
    s.deleted.extend(done.deleted);
    Ok(())
}
