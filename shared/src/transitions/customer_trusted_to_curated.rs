//! accelerometer_trusted (new object) → customer_curated: the trusted customers who have
//! readings. The object's distinct users are added to the customer_curated shards their
//! e-mails fall in, and their devices are flagged curated in the device index (serial →
//! consenting owners, by a hash of the serial) that the Step Trainer filter reads; every
//! shard is rewritten with a conditional write.
//!
//! A serial that gets its first owner may have Step Trainer files waiting for it (see
//! [`super::step_trainer_landing_to_trusted`]): they are sent back through the Step
//! Trainer queue (`STEP_TRAINER_QUEUE_URL`; unset, processed in this invocation).

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::columnar::{Strings, read_parquet_keyed};
use crate::error::Result;
use crate::keys::{self, SourceKey};
use crate::rules::{self, Customers, DeviceEntry, customer};
use crate::schema::Table;
use crate::store::Fetched;
use crate::streams::Transition;
use crate::summary::Summary;

use super::reference::device_entries;
use super::{Ctx, decode_customers, encode_devices, rewrite_object, rewrite_shard_from};

/// What one customer shard needs: the object's users it knows (and their trusted rows),
/// the curated shard as read (its rewrite starts from it), and whether they change the
/// curated shard (then its device changes come first).
struct ShardPlan {
    shard: u32,
    trusted: Customers,
    known: Vec<String>,
    curated: Fetched,
    changes: DeviceChanges,
}

/// Adds the users of one accelerometer_trusted object to customer_curated.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let mut s = Summary::default();
    let Fetched::Body(bytes, _) = super::compact::fetch_working(ctx, bucket, &src.key).await?
    else {
        // Replaced or deleted since the event: the newer object has its own event.
        return Ok(s);
    };
    let shards = ctx.cfg.customer_shards;
    let mut users: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for b in read_parquet_keyed(bytes, &["user"], &["user"], &src.key)? {
        s.rows_in += b.num_rows() as u64;
        for u in Strings::of(&b, "user", &src.key)?.runs() {
            let shard = users.entry(keys::shard_of(u, shards)).or_default();
            if !shard.contains(u) {
                shard.insert(u.to_string());
            }
        }
    }
    // Plan, shard by shard (a few in flight): users already curated with their current
    // record change nothing and cost no further request.
    let plans: Vec<(usize, usize, Option<ShardPlan>)> = stream::iter(users)
        .map(|(shard, users)| async move {
            let mut trusted = ctx
                .customer_shard(bucket, Table::CustomerTrusted, shard)
                .await?;
            // Only the object's users are looked at: the plan holds their rows alone.
            trusted.rows.retain(|email, _| users.contains(email));
            let known: Vec<String> = trusted.rows.keys().cloned().collect();
            let unknown = users.len() - known.len();
            if known.is_empty() {
                return Ok((0, unknown, None));
            }
            let key = keys::shard_key(Table::CustomerCurated, shard);
            let read = ctx.store.fetch(bucket, &key, None).await?;
            let curated = match &read {
                Fetched::Body(bytes, _) => decode_customers(bytes.clone(), &key)?,
                _ => Customers::default(),
            };
            if rules::merge_curated(&curated, &trusted, known.iter().cloned()) == curated {
                return Ok((known.len(), unknown, None));
            }
            let changes = device_changes(&curated, &trusted, &known, shards);
            let plan = ShardPlan {
                shard,
                trusted,
                known,
                curated: read,
                changes,
            };
            Ok::<_, crate::Error>((plan.known.len(), unknown, Some(plan)))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let mut devices = DeviceChanges::new();
    let mut work = Vec::new();
    for (known, unknown, plan) in plans {
        s.rows_out += known as u64;
        s.filtered += unknown as u64;
        if let Some(mut plan) = plan {
            merge_changes(&mut devices, std::mem::take(&mut plan.changes));
            work.push(plan);
        }
    }
    // The device index first: a retry after a failure in between finds the curated rows
    // unchanged and redoes the same (idempotent) index changes.
    let first_owned = apply_device_changes(ctx, bucket, devices, &mut s).await?;
    let done: Vec<Summary> = stream::iter(work)
        .map(|plan| async move {
            let mut s = Summary::default();
            rewrite_shard_from(
                ctx,
                bucket,
                Table::CustomerCurated,
                plan.shard,
                Some(plan.curated),
                &mut s,
                |cur| {
                    Some(rules::merge_curated(
                        cur,
                        &plan.trusted,
                        plan.known.iter().cloned(),
                    ))
                },
            )
            .await?;
            Ok::<_, crate::Error>(s)
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    done.into_iter().for_each(|d| s.absorb(d));
    redrive_waiting(ctx, bucket, &first_owned, &mut s).await?;
    Ok(s)
}

/// Sends the Step Trainer files waiting for `serials` (which just got their first owner)
/// back through the Step Trainer function.
pub(super) async fn redrive_waiting(
    ctx: &Ctx,
    bucket: &str,
    serials: &BTreeSet<String>,
    s: &mut Summary,
) -> Result<()> {
    let mut waiting = BTreeSet::new();
    for serial in serials {
        let prefix = keys::waiting_prefix(&keys::hash_hex(serial));
        for marker in ctx.store.list(bucket, &prefix).await? {
            if let Fetched::Body(body, _) = ctx.store.fetch(bucket, &marker, None).await? {
                waiting.insert(String::from_utf8_lossy(&body).into_owned());
            }
        }
    }
    let landing = [Table::StepTrainerLanding];
    let keys: Vec<String> = waiting
        .into_iter()
        .filter(|k| keys::accept(bucket, k, &landing).is_ok())
        .collect();
    match &ctx.step_trainer_queue {
        Some((sqs, url)) => {
            let bodies: Vec<String> = keys
                .iter()
                .map(|k| crate::event::s3_notification(bucket, k).to_string())
                .collect();
            for chunk in bodies.chunks(10) {
                crate::lambda::send_batch(sqs, url, chunk, 0).await?;
            }
        }
        None => {
            for key in &keys {
                let src = keys::accept(bucket, key, &landing)?;
                let t = Transition::StepTrainerLandingToTrusted;
                let done =
                    super::step_trainer_landing_to_trusted::run(ctx, bucket, &src, t, None).await?;
                s.outputs.extend(done.outputs);
            }
        }
    }
    if !keys.is_empty() {
        tracing::info!(
            files = keys.len(),
            "Step Trainer files sent again: their device has an owner"
        );
    }
    Ok(())
}

/// Device-index entries to add and remove, by device shard.
pub(super) type DeviceChanges = BTreeMap<u32, (Vec<DeviceEntry>, Vec<DeviceEntry>)>;

pub(super) fn serial(c: &Customers, email: &str) -> Option<String> {
    c.rows
        .get(email)
        .and_then(|r| r[customer::SERIAL].as_str())
        .map(str::to_string)
}

/// Records that `email` owns `serial` (curated or not), or no longer does.
pub(super) fn change(
    changes: &mut DeviceChanges,
    shards: u32,
    serial: &str,
    email: &str,
    curated: bool,
    add: bool,
) {
    let entry = changes.entry(keys::shard_of(serial, shards)).or_default();
    let e = DeviceEntry {
        serial: serial.to_string(),
        email: email.to_string(),
        curated,
    };
    if add {
        entry.0.push(e)
    } else {
        entry.1.push(e)
    }
}

/// The index entries of `known` users' current devices (now curated: their waiting entry
/// goes), and the removal of a device a curated record named before its customer changed it.
fn device_changes(
    curated: &Customers,
    trusted: &Customers,
    known: &[String],
    shards: u32,
) -> DeviceChanges {
    let mut changes = DeviceChanges::new();
    for email in known {
        let new = serial(trusted, email);
        let old = serial(curated, email);
        if let Some(new) = &new {
            change(&mut changes, shards, new, email, true, true);
            change(&mut changes, shards, new, email, false, false);
        }
        if let Some(old) = old.filter(|o| Some(o) != new.as_ref()) {
            change(&mut changes, shards, &old, email, true, false);
        }
    }
    changes
}

/// Applies the changes, shard by shard, with conditional writes (a waiting entry is not
/// added beside the same owner's curated one); returns the serials that got their first
/// curated owner.
pub(super) async fn apply_device_changes(
    ctx: &Ctx,
    bucket: &str,
    changes: DeviceChanges,
    s: &mut Summary,
) -> Result<BTreeSet<String>> {
    let done: Vec<(Summary, BTreeSet<String>)> = stream::iter(changes)
        .map(|(shard, (add, remove))| async move {
            let mut s = Summary::default();
            let key = keys::device_shard_key(shard);
            let mut firsts = BTreeSet::new();
            rewrite_object(ctx, bucket, &key, &mut s, |current| {
                let mut entries: BTreeSet<DeviceEntry> = match current {
                    Some(bytes) => device_entries(&bytes, &key)?.into_iter().collect(),
                    None => BTreeSet::new(),
                };
                let before = entries.clone();
                for e in &remove {
                    entries.remove(e);
                }
                for e in &add {
                    let curated = DeviceEntry {
                        curated: true,
                        ..e.clone()
                    };
                    if e.curated || !entries.contains(&curated) {
                        entries.insert(e.clone());
                    }
                }
                let owned = |set: &BTreeSet<DeviceEntry>, serial: &str| {
                    set.iter().any(|d| d.curated && d.serial == serial)
                };
                firsts = add
                    .iter()
                    .filter(|e| e.curated && !owned(&before, &e.serial))
                    .map(|e| e.serial.clone())
                    .collect();
                if entries == before {
                    return Ok(None);
                }
                let entries: Vec<_> = entries.into_iter().collect();
                encode_devices(&entries).map(Some)
            })
            .await?;
            Ok::<_, crate::Error>((s, firsts))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let mut first_owned = BTreeSet::new();
    for (d, firsts) in done {
        s.absorb(d);
        first_owned.extend(firsts);
    }
    Ok(first_owned)
}

/// Adds `more` to `into`, shard by shard.
pub(super) fn merge_changes(into: &mut DeviceChanges, more: DeviceChanges) {
    for (k, (add, remove)) in more {
        let entry = into.entry(k).or_default();
        entry.0.extend(add);
        entry.1.extend(remove);
    }
}

/// Shard reads and writes one invocation keeps in flight.
pub(super) const IN_FLIGHT: usize = 8;
