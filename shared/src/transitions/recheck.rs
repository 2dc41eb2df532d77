//! The delayed recheck of a consent or device change.
//!
//! The customer function computes the changed customers' reading files again at once, found
//! through their postings. A reading file being computed at that same moment may have read
//! the old answer, and it registers its posting only when its outputs are written: the
//! change can miss it. So the customer function also sends a `recheck` work item to the
//! reconcile queue, delayed by `RECHECK_DELAY_SECONDS` (longer than a reading function's
//! timeout, so every invocation that read the old answer has finished). The reconcile
//! function lists those customers' reading files again and computes again each one whose
//! manifest records an answer that is no longer current, or that has no manifest: one LIST
//! per person, one GET per file's manifest and per reference shard its answers fall in,
//! nothing written when every file is current. A customer file bringing in more customers
//! than `GRANT_LOOKUP_LIMIT` (a bulk import) sends their recheck instead of looking them up
//! itself: their earlier readings come in with it, not at the next reconcile pass.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::reference::{Ctx, Reference};
use super::{LAYOUT, Transition, erasure, manifest_key, read_manifest};
use crate::compute::Answer;
use crate::error::Result;
use crate::keys;
use crate::reconcile::{self, Item};
use crate::schema::Table;
use crate::streams::Rule;
use crate::summary::Summary;

/// Persons (keyed hashes) in one `recheck` work item: ~17 KB of message, far below SQS's
/// 256 KB, and one LIST each for the reconcile function.
pub const PERSONS_PER_ITEM: usize = 500;

/// Sends the recheck of `persons` (keyed hashes, see [`erasure::person_hash`]) to the
/// reconcile queue, delayed `RECHECK_DELAY_SECONDS`, [`PERSONS_PER_ITEM`] an item. Without
/// a queue (a direct invocation), nothing: the next reconcile pass is the recheck. Returns
/// the items sent.
pub(crate) async fn send(ctx: &Ctx, bucket: &str, persons: &BTreeSet<String>) -> Result<usize> {
    let Some((sqs, url)) = &ctx.reconcile_queue else {
        return Ok(0);
    };
    let persons: Vec<String> = persons.iter().cloned().collect();
    let items: Vec<Item> = persons
        .chunks(PERSONS_PER_ITEM)
        .map(|chunk| Item::Recheck {
            persons: chunk.to_vec(),
        })
        .collect();
    let delay = i32::try_from(ctx.cfg.recheck_delay_seconds).unwrap_or(900);
    reconcile::Queue { sqs, url }
        .send(bucket, &items, delay)
        .await?;
    Ok(items.len())
}

/// Runs a `recheck` item: the reading files of `persons` whose outputs are not current are
/// computed again (through the reconcile queue, one item each, past
/// `RECOMPUTE_INLINE_LIMIT`).
pub(crate) async fn run(ctx: &Ctx, bucket: &str, persons: &BTreeSet<String>) -> Result<Summary> {
    let (checked, stale) = stale_readings(ctx, bucket, persons).await?;
    tracing::info!(
        persons = persons.len(),
        files = checked,
        stale = stale.len(),
        "recheck of a consent or device change"
    );
    compute_again(ctx, bucket, &stale).await
}

/// Computes the reading files `landing` again with what their outputs feed, or, when they
/// are more than `RECOMPUTE_INLINE_LIMIT` and there is a reconcile queue, sends them there
/// one item each (the reconcile function computes each as here), so no invocation has to
/// outlast its timeout.
pub(crate) async fn compute_again(
    ctx: &Ctx,
    bucket: &str,
    landing: &BTreeSet<String>,
) -> Result<Summary> {
    if landing.is_empty() {
        return Ok(Summary::default());
    }
    if let Some((sqs, url)) = ctx
        .reconcile_queue
        .as_ref()
        .filter(|_| landing.len() > ctx.cfg.recompute_inline_limit)
    {
        // A device's Step Trainer files computed before its owner's phone files made the
        // owner curated wait for the device and are sent again once the owner is.
        let items: Vec<Item> = landing
            .iter()
            .map(|key| Item::Recompute { key: key.clone() })
            .collect();
        reconcile::Queue { sqs, url }
            .send(bucket, &items, 0)
            .await?;
        tracing::info!(
            files = landing.len(),
            limit = ctx.cfg.recompute_inline_limit,
            "reading files sent to the reconcile queue, more than RECOMPUTE_INLINE_LIMIT"
        );
        return Ok(Summary::default());
    }
    let (done, _) = erasure::recompute(ctx, bucket, landing, true).await?;
    Ok(done)
}

/// The reading files the erasure index names for `persons` (how many), and those among
/// them whose manifest is missing, of an earlier layout, or records for a key consulted an
/// answer it no longer gives.
async fn stale_readings(
    ctx: &Ctx,
    bucket: &str,
    persons: &BTreeSet<String>,
) -> Result<(usize, BTreeSet<String>)> {
    let landing = erasure::readings_of(ctx, bucket, persons, BTreeMap::new()).await?;
    let tables: Vec<Table> = Table::landing().collect();
    let mut now = Now::default();
    let mut stale = BTreeSet::new();
    for key in &landing {
        let Ok(src) = keys::accept(bucket, key, &tables) else {
            continue;
        };
        let Some(t) = Transition::of_landing(src.table) else {
            continue;
        };
        let fresh = match read_manifest(ctx, bucket, &manifest_key(t.target(), &src.stem)).await? {
            Some(m) if m.layout == LAYOUT => {
                now.current(ctx, bucket, t.rule(), &m.lineage.refs).await?
            }
            _ => false,
        };
        if !fresh {
            stale.insert(key.clone());
        }
    }
    Ok((landing.len(), stale))
}

/// What each key of the reference shards read so far answers now (by its FNV-1a hash), per
/// shard: the consent shards (customer_trusted) and the device index.
#[derive(Default)]
struct Now {
    consent: HashMap<u32, HashMap<u64, String>>,
    devices: HashMap<u32, HashMap<u64, String>>,
}

impl Now {
    /// Whether every key `refs` records (hash in hex → answer) still gives its answer under
    /// `rule` (other rules consult nothing).
    async fn current(
        &mut self,
        ctx: &Ctx,
        bucket: &str,
        rule: Rule,
        refs: &BTreeMap<String, String>,
    ) -> Result<bool> {
        for (hex, recorded) in refs {
            let Ok(hash) = u64::from_str_radix(hex, 16) else {
                return Ok(false);
            };
            let shard = keys::shard_of_hash(hash, ctx.cfg.customer_shards);
            let answers = match rule {
                Rule::Consented { .. } => {
                    shard_answers::<i64>(ctx, bucket, &mut self.consent, shard).await?
                }
                Rule::OwnedDevice { .. } => {
                    shard_answers::<bool>(ctx, bucket, &mut self.devices, shard).await?
                }
                _ => return Ok(true),
            };
            if answers.get(&hash).map_or("", String::as_str) != recorded {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The answers of reference shard `shard` (read once, through the warm cache).
async fn shard_answers<'a, V: Reference + Answer>(
    ctx: &Ctx,
    bucket: &str,
    held: &'a mut HashMap<u32, HashMap<u64, String>>,
    shard: u32,
) -> Result<&'a HashMap<u64, String>> {
    Ok(match held.entry(shard) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            let (_, index, _) = ctx.reference::<V>(bucket, shard).await?;
            e.insert(
                index
                    .groups()
                    .map(|(key, values)| (keys::fnv1a(key), V::answer(values)))
                    .collect(),
            )
        }
    })
}
