//! accelerometer_trusted (new object) → customer_curated: the trusted customers who have
//! readings. The object's distinct users are added to the customer_curated shards their
//! e-mails fall in, and their devices to the device index (serial → curated owners, by a
//! hash of the serial) that the Step Trainer filter and the ML join read; every shard is
//! rewritten with a conditional write.
//!
//! A serial that gets its first owner may have Step Trainer files waiting for it (see
//! [`super::step_trainer_landing_to_trusted`]): they are sent back through the Step
//! Trainer queue (`STEP_TRAINER_QUEUE_URL`; unset, processed in this invocation).

use std::collections::{BTreeMap, BTreeSet};

use arrow_array::StringArray;

use crate::columnar::{column, read_parquet};
use crate::error::Result;
use crate::keys::{self, SourceKey};
use crate::rules::{self, Customers, DeviceEntry, customer};
use crate::schema::Table;
use crate::store::Fetched;
use crate::summary::Summary;

use super::reference::device_entries;
use super::{Ctx, encode_devices, rewrite_object, rewrite_shard};

/// Adds the users of one accelerometer_trusted object to customer_curated.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let mut s = Summary::default();
    let Fetched::Body(bytes, _) = ctx.store.fetch(bucket, &src.key, None).await? else {
        // Replaced or deleted since the event: the newer object has its own event.
        return Ok(s);
    };
    let shards = ctx.cfg.customer_shards;
    let mut first_owned = BTreeSet::new();
    let mut users: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for b in read_parquet(bytes, &["user"], &src.key)? {
        let col = column::<StringArray>(&b, "user", &src.key)?;
        s.rows_in += b.num_rows() as u64;
        for u in col.iter().flatten() {
            users
                .entry(keys::shard_of(u, shards))
                .or_default()
                .insert(u.to_string());
        }
    }
    for (shard, users) in users {
        let trusted = ctx
            .customer_shard(bucket, Table::CustomerTrusted, shard)
            .await?;
        let known: Vec<String> = users
            .iter()
            .filter(|u| trusted.rows.contains_key(*u))
            .cloned()
            .collect();
        s.rows_out += known.len() as u64;
        s.filtered += (users.len() - known.len()) as u64;
        if known.is_empty() {
            continue;
        }
        // The device index first: a retry after a failure in between finds the curated
        // rows unchanged and redoes the same (idempotent) index changes.
        let curated = ctx
            .customer_shard(bucket, Table::CustomerCurated, shard)
            .await?;
        let changes = device_changes(&curated, &trusted, &known, shards);
        first_owned.extend(apply_device_changes(ctx, bucket, changes, &mut s).await?);
        rewrite_shard(
            ctx,
            bucket,
            Table::CustomerCurated,
            shard,
            &mut s,
            |current| {
                Some(rules::merge_curated(
                    current,
                    &trusted,
                    known.iter().cloned(),
                ))
            },
        )
        .await?;
    }
    redrive_waiting(ctx, bucket, &first_owned, &mut s).await?;
    Ok(s)
}

/// Sends the Step Trainer files waiting for `serials` (which just got their first owner)
/// back through the Step Trainer function.
async fn redrive_waiting(
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
                let done = super::step_trainer_landing_to_trusted::run(ctx, bucket, &src).await?;
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
    let mut first_owned = BTreeSet::new();
    for (shard, (add, remove)) in changes {
        let key = keys::device_shard_key(shard);
        let mut firsts = BTreeSet::new();
        rewrite_object(ctx, bucket, &key, s, |current| {
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
        first_owned.extend(firsts);
    }
    Ok(first_owned)
}
