//! The delayed recheck of a consent or device change.
//!
//! The customer function computes the changed customers' reading files again at once, found
//! through their postings. A reading file being computed at that same moment may have read
//! the old answer, and it registers its posting only when its outputs are written: the
//! change can miss it. Two customer files of one customer processed at the same moment can
//! miss each other's record the same way. So the customer function also sends a `recheck`
//! work item to the reconcile queue, delayed by `RECHECK_DELAY_SECONDS` (longer than the
//! reading functions' and reconcile's timeouts, so every invocation that read the old answer
//! has finished). The reconcile function lists those customers' postings again, folds again
//! a customer file whose newer record customer_trusted does not reflect
//! ([`customers_astray`]), and computes again each reading file whose manifest records an
//! answer that is no longer current, or that has no manifest: one LIST per person, one GET
//! per file's manifest and per reference shard its answers fall in, nothing written when
//! every file is current. A customer file bringing in more customers than
//! `GRANT_LOOKUP_LIMIT` (a bulk import) sends their recheck instead of looking them up
//! itself: their earlier readings come in with it, not at the next reconcile pass.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::stream::{self, StreamExt, TryStreamExt};

use super::customer_trusted_to_curated::IN_FLIGHT;
use super::reference::{Ctx, Reference};
use super::{LAYOUT, Manifest, Transition, customer_landing_to_trusted, erasure, read_manifest};
use crate::compute::{Answer, PersonKind};
use crate::error::Result;
use crate::keys;
use crate::reconcile::{self, Item};
use crate::rules;
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

/// Runs a `recheck` item: the customer files of `persons` whose newest record
/// customer_trusted does not reflect are folded again ([`customers_astray`]), then their
/// reading files whose outputs are not current are computed again (through the reconcile
/// queue, one item each, past `RECOMPUTE_INLINE_LIMIT`).
pub(crate) async fn run(ctx: &Ctx, bucket: &str, persons: &BTreeSet<String>) -> Result<Summary> {
    let listed = erasure::postings(ctx, bucket, persons.iter().cloned()).await?;
    let mut s = customers_again(ctx, bucket, &listed).await?;
    let (checked, stale) = stale_readings(ctx, bucket, persons, listed).await?;
    let (done, queued) = compute_again(ctx, bucket, &stale).await?;
    tracing::info!(
        persons = persons.len(),
        customer_files = s.sources.len(),
        files = checked,
        stale = stale.len(),
        queued,
        "recheck of a consent or device change"
    );
    s.absorb(done);
    Ok(s)
}

/// Folds again the customer files of [`customers_astray`]: a newer record missed takes
/// effect now, with its follow-up work.
async fn customers_again(
    ctx: &Ctx,
    bucket: &str,
    listed: &BTreeMap<String, Vec<String>>,
) -> Result<Summary> {
    let t = Transition::CustomerLandingToTrusted;
    let mut s = Summary::default();
    for key in customers_astray(ctx, bucket, listed).await? {
        let Ok(src) = keys::accept(bucket, &key, t.sources()) else {
            continue;
        };
        if let Some(done) = erasure::unless_gone(&key, t.run(ctx, bucket, &src).await)? {
            s.absorb(done);
        }
    }
    Ok(s)
}

/// Of each person with more than one customer file (by their postings `listed`; a bulk
/// file, indexed wide, is `reconcile`'s), the file holding their newest record when
/// customer_trusted disagrees with it: the newest consents and the shard holds an older
/// record or none, or it withdraws and the shard still holds an older one. Two files
/// processed at the same moment can each miss the other's record (its posting not written
/// yet), and the older may win. One GET per such customer file and per shard.
async fn customers_astray(
    ctx: &Ctx,
    bucket: &str,
    listed: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeSet<String>> {
    let mut persons = BTreeSet::new();
    let mut files = BTreeSet::new();
    for (h, landing) in listed {
        let theirs: Vec<&String> = landing
            .iter()
            .filter(|k| k.starts_with(Table::CustomerLanding.prefix()))
            .collect();
        if theirs.len() > 1 {
            persons.insert(h.as_str());
            files.extend(theirs);
        }
    }
    let stamp = |r: &rules::CustomerRow| r[rules::customer::LAST_UPDATE].as_long();
    let secret = &ctx.cfg.erasure_hash_key;
    // E-mail → their newest record and the file holding it.
    let mut newest: BTreeMap<String, (rules::CustomerRow, &String)> = BTreeMap::new();
    for file in files {
        let theirs = customer_landing_to_trusted::records_in(ctx, bucket, file, |email| {
            persons.contains(erasure::person_hash(secret, PersonKind::Email, email).as_str())
        })
        .await?;
        for (email, row) in theirs.rows {
            if newest
                .get(&email)
                .is_none_or(|(r, _)| stamp(&row) > stamp(r))
            {
                newest.insert(email, (row, file));
            }
        }
    }
    let mut shards: HashMap<u32, rules::Customers> = HashMap::new();
    let mut astray = BTreeSet::new();
    for (email, (row, file)) in newest {
        let shard = keys::shard_of(&email, ctx.cfg.customer_shards);
        let held = match shards.entry(shard) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(
                ctx.customer_shard(bucket, Table::CustomerTrusted, shard)
                    .await?,
            ),
        };
        let consenting = rules::consents(row[rules::customer::RESEARCH].as_long());
        let off = match held.rows.get(&email) {
            Some(current) => stamp(&row) > stamp(current),
            None => consenting,
        };
        if off {
            astray.insert(file.clone());
        }
    }
    Ok(astray)
}

/// Computes the reading files `landing` again with what their outputs feed, or, when they
/// are more than `RECOMPUTE_INLINE_LIMIT` and there is a reconcile queue, sends them there
/// one item each (the reconcile function computes each as here), so no invocation has to
/// outlast its timeout. Returns what was computed, and whether the files went to the queue
/// instead.
pub(crate) async fn compute_again(
    ctx: &Ctx,
    bucket: &str,
    landing: &BTreeSet<String>,
) -> Result<(Summary, bool)> {
    if landing.is_empty() {
        return Ok((Summary::default(), false));
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
        return Ok((Summary::default(), true));
    }
    let (done, _) = erasure::recompute(ctx, bucket, landing, true).await?;
    Ok((done, false))
}

/// The reading files the erasure index names for `persons` (their postings `listed`; how
/// many), and those among
/// them whose manifest is missing, of an earlier layout, or records for a key consulted an
/// answer it no longer gives. The manifests are read a few at a time, then each is held
/// against the shards its answers fall in (each shard read once).
async fn stale_readings(
    ctx: &Ctx,
    bucket: &str,
    persons: &BTreeSet<String>,
    listed: BTreeMap<String, Vec<String>>,
) -> Result<(usize, BTreeSet<String>)> {
    let landing = erasure::readings_of(ctx, bucket, persons, listed).await?;
    let tables: Vec<Table> = Table::landing().collect();
    let of = |key: &String| -> Option<(String, Transition, String)> {
        let src = keys::accept(bucket, key, &tables).ok()?;
        Some((key.clone(), Transition::of_landing(src.table)?, src.stem))
    };
    let manifests: Vec<(String, Rule, Option<Manifest>)> =
        stream::iter(landing.iter().filter_map(of))
            .map(|(key, t, stem)| async move {
                let m = read_manifest(ctx, bucket, t.target(), &stem).await?;
                Ok::<_, crate::Error>((key, t.rule(), m))
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
    let mut now = Now::default();
    let mut stale = BTreeSet::new();
    for (key, rule, m) in manifests {
        let fresh = match m {
            Some(m) if m.layout == LAYOUT => {
                now.current(ctx, bucket, rule, &m.lineage.refs).await?
            }
            _ => false,
        };
        if !fresh {
            stale.insert(key);
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
