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
use crate::rules::{self, Customers, customer};
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
type DeviceChanges = BTreeMap<u32, (Vec<(String, String)>, Vec<(String, String)>)>;

fn serial(c: &Customers, email: &str) -> Option<String> {
    c.rows
        .get(email)
        .and_then(|r| r[customer::SERIAL].as_str())
        .map(str::to_string)
}

/// The index entries of `known` users' current devices, and the removal of a device a
/// curated record named before its customer changed it.
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
            let entry = changes.entry(keys::shard_of(new, shards)).or_default();
            entry.0.push((new.clone(), email.clone()));
        }
        if let Some(old) = old.filter(|o| Some(o) != new.as_ref()) {
            let entry = changes.entry(keys::shard_of(&old, shards)).or_default();
            entry.1.push((old, email.clone()));
        }
    }
    changes
}

/// Applies the changes; returns the serials that had no owner before.
async fn apply_device_changes(
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
            let mut entries: BTreeSet<(String, String)> = match current {
                Some(bytes) => device_entries(&bytes, &key)?.into_iter().collect(),
                None => BTreeSet::new(),
            };
            let before = entries.clone();
            for e in &remove {
                entries.remove(e);
            }
            entries.extend(add.iter().cloned());
            firsts = add
                .iter()
                .filter(|(serial, _)| !before.iter().any(|(s, _)| s == serial))
                .map(|(serial, _)| serial.clone())
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
