//! Configuration, read once at cold start from environment variables. Every variable has a
//! default; the README lists them all.

use crate::error::{Error, Result};

/// Runtime configuration shared by every function.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `GLUE_DATABASE` (default `stedi`): the Glue database holding the eight tables.
    pub database: String,
    /// `CONSENT_AS_OF` (default `false`): keep only readings taken at or after the
    /// customer's `sharewithresearchasofdate`.
    pub consent_as_of: bool,
    /// `MAX_LINE_BYTES` (default 1 MiB): a longer landing line is quarantined, not parsed.
    pub max_line_bytes: usize,
    /// `QUARANTINE_LINE_BYTES` (default 4096): how much of a bad line the quarantine keeps.
    pub quarantine_line_bytes: usize,
    /// `ROW_GROUP_ROWS` (default 65536): rows per Parquet row group (bounds writer memory).
    pub row_group_rows: usize,
    /// `SNAPSHOT_MAX_ATTEMPTS` (default 8): conditional-write attempts on a snapshot table
    /// before the record is failed for SQS to redeliver.
    pub snapshot_max_attempts: u32,
    /// `CUSTOMER_SHARDS` (default 256): objects customer_trusted and customer_curated (and
    /// the device index) are split into, by a hash of the e-mail (of the serial for the
    /// device index). Changing it takes effect at the next `reconcile`.
    pub customer_shards: u32,
    /// `REFERENCE_CACHE_BYTES` (default 64 MiB): how much decoded consent / device index a
    /// warm function keeps (least recently used shards are dropped first).
    pub reference_cache_bytes: usize,
    /// `RECONCILE_GROUP_BYTES` (default 16 MiB): the reconcile planner takes the customers a
    /// group of shards at a time, as many groups as the customer landing JSON has times
    /// this many bytes (with more than one, the rows are spilled by group to `/tmp`, about
    /// the size of the customer landing JSON); memory holds one group's customers. A
    /// changed pass holds the customer files written since the last pass in memory up to
    /// this many bytes, and rebuilds from landing past it.
    pub reconcile_group_bytes: u64,
    /// `RECONCILE_QUEUE_URL` (default unset): where `reconcile` fans its work items out;
    /// unset, a planning invocation runs the items itself.
    pub reconcile_queue_url: Option<String>,
    /// `STEP_TRAINER_QUEUE_URL` (default unset; `customer_trusted_to_curated` only): where
    /// Step Trainer files that waited for their device's owner are sent again once the
    /// owner becomes curated; unset, the invocation processes them itself.
    pub step_trainer_queue_url: Option<String>,
    /// `ML_WIDE_SERIALS` (default 256): a trusted object with more distinct serials than this
    /// registers once for its whole `dt` in the machine-learning join index instead of once
    /// per serial, and then joins with every object of the other side in the `dt`: for bulk
    /// files only. It must stay above the serials of one SQS batch object (the landing
    /// functions' `BatchSize`, 100, of one-device session files), or every batch object
    /// would join with the whole `dt`.
    pub ml_wide_serials: usize,
    /// `PARTITION_CACHE_SECONDS` (default 300): how long a warm function trusts that a
    /// partition it registered is still in the catalog (0: check on every write).
    pub partition_cache_seconds: u64,
    /// `COMPACT_TARGET_BYTES` (default 64 MiB): the size compaction aims each file of a
    /// `dt` at (a `dt` of this many bytes of per-source objects or less becomes one file).
    pub compact_target_bytes: u64,
    /// `COMPACT_MIN_OBJECTS` (default 16): a `dt` is compacted once this many per-source
    /// objects are not in its compacted files (and at least a tenth of those it holds).
    pub compact_min_objects: usize,
    /// `COMPACT_GRACE_SECONDS` (default 3600): how long a replaced generation stays for
    /// queries planned on it before it is deleted (0: at once).
    pub compact_grace_seconds: u64,
    /// `COMPACT_QUEUE_URL`: the compact function's own queue (its work items).
    pub compact_queue_url: Option<String>,
    /// `ERASURE_HASH_KEY` (default `stedi-erasure-index`): the secret key of the keyed hash
    /// (HMAC-SHA256) that names a person in the erasure index and in tombstones. Set your
    /// own in production (the template takes it as a NoEcho parameter): without it, anyone
    /// who can list the bucket can test whether an e-mail is in the lake.
    pub erasure_hash_key: String,
    /// `INDEX_TABLE` (default `stedi-index`): the DynamoDB table of the lake's lookup
    /// indexes (partition key `pk`, sort key `sk`, both strings; see [`crate::index`]): the
    /// erasure postings and the ML join index, a write unit per entry instead of an S3 PUT.
    pub index_table: String,
    /// `ERASURE_WIDE_PERSONS` (default 64): a landing file holding more people than this is
    /// indexed for erasure by one object listing their keyed hashes, instead of one posting
    /// per person (bulk files: one PUT instead of thousands; an erasure reads each such
    /// object).
    pub erasure_wide_persons: usize,
    /// `BATCH_OBJECT_BYTES` (default 2 MiB): the landing files of one SQS batch share one
    /// trusted object per `dt`; a file whose encoded outputs are larger than this is
    /// written as its own objects (see also `BATCH_HELD_BYTES`). 0: every file its own
    /// objects.
    pub batch_object_bytes: usize,
    /// `BATCH_HELD_BYTES` (default 16 MiB): the encoded outputs one batch holds in memory
    /// at most until it writes its objects; a file that would take it past this is
    /// written as its own objects, so memory stays bounded whatever the batch size.
    pub batch_held_bytes: usize,
    /// `GRANT_LOOKUP_LIMIT` (default 1000; `customer_landing_to_trusted`): a customer file
    /// bringing at most this many customers into customer_trusted looks up their postings
    /// (a LIST per e-mail and serial): a newer record of theirs in another file is folded
    /// in, and the readings they sent before consenting are computed again; a larger file (a
    /// bulk import, the backfill) leaves their readings to the delayed recheck
    /// (`RECHECK_DELAY_SECONDS`) and their other files to `reconcile`. 0: always so.
    pub grant_lookup_limit: usize,
    /// `RECOMPUTE_INLINE_LIMIT` (default 100; `customer_landing_to_trusted`): a consent or
    /// device change whose customers' reading files number at most this is computed again
    /// in the invocation; more (a heavy user's years of sessions) go to the reconcile queue
    /// as one item each when `RECONCILE_QUEUE_URL` is set, so no invocation has to outlast
    /// its timeout. Unset queue: always in the invocation.
    pub recompute_inline_limit: usize,
    /// `RECHECK_DELAY_SECONDS` (default 900, at most 900: SQS's longest message delay;
    /// `customer_landing_to_trusted`): after a consent or device change, the changed
    /// customers' reading files are checked again this long later by the reconcile
    /// function (a delayed `recheck` item on the reconcile queue), and any computed with an
    /// answer that is no longer current (a file computed at the same moment as the change)
    /// is computed again. Longer than the reading functions' timeout (120 s in the template)
    /// and reconcile's (600 s), so every invocation that read the old answer has finished.
    /// Unset queue: no recheck.
    pub recheck_delay_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: "stedi".into(),
            consent_as_of: false,
            max_line_bytes: 1 << 20,
            quarantine_line_bytes: 4096,
            row_group_rows: 65536,
            snapshot_max_attempts: 8,
            customer_shards: 256,
            reference_cache_bytes: 64 << 20,
            reconcile_group_bytes: 16 << 20,
            reconcile_queue_url: None,
            step_trainer_queue_url: None,
            ml_wide_serials: 256,
            partition_cache_seconds: 300,
            compact_target_bytes: 64 << 20,
            compact_min_objects: 16,
            compact_grace_seconds: 3600,
            compact_queue_url: None,
            erasure_hash_key: "stedi-erasure-index".into(),
            index_table: "stedi-index".into(),
            erasure_wide_persons: 64,
            batch_object_bytes: 2 << 20,
            batch_held_bytes: 16 << 20,
            grant_lookup_limit: 1000,
            recompute_inline_limit: 100,
            recheck_delay_seconds: 900,
        }
    }
}

impl Config {
    /// Reads the environment (unset variables take their defaults).
    pub fn from_env() -> Result<Config> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let d = Config::default();
        Ok(Config {
            database: get("GLUE_DATABASE").unwrap_or(d.database),
            consent_as_of: parse(&get, "CONSENT_AS_OF", d.consent_as_of, parse_bool)?,
            max_line_bytes: parse(&get, "MAX_LINE_BYTES", d.max_line_bytes, positive)?,
            quarantine_line_bytes: parse(
                &get,
                "QUARANTINE_LINE_BYTES",
                d.quarantine_line_bytes,
                positive,
            )?,
            row_group_rows: parse(&get, "ROW_GROUP_ROWS", d.row_group_rows, positive)?,
            snapshot_max_attempts: parse(
                &get,
                "SNAPSHOT_MAX_ATTEMPTS",
                d.snapshot_max_attempts,
                |v| positive(v).and_then(|n| u32::try_from(n).map_err(|e| e.to_string())),
            )?,
            customer_shards: parse(&get, "CUSTOMER_SHARDS", d.customer_shards, |v| {
                positive(v).and_then(|n| match u32::try_from(n) {
                    Ok(n) if n <= 65536 => Ok(n),
                    _ => Err("must be at most 65536".into()),
                })
            })?,
            reference_cache_bytes: parse(
                &get,
                "REFERENCE_CACHE_BYTES",
                d.reference_cache_bytes,
                positive,
            )?,
            reconcile_group_bytes: parse(
                &get,
                "RECONCILE_GROUP_BYTES",
                d.reconcile_group_bytes,
                |v| positive(v).map(|n| n as u64),
            )?,
            reconcile_queue_url: get("RECONCILE_QUEUE_URL").filter(|v| !v.trim().is_empty()),
            step_trainer_queue_url: get("STEP_TRAINER_QUEUE_URL").filter(|v| !v.trim().is_empty()),
            ml_wide_serials: parse(&get, "ML_WIDE_SERIALS", d.ml_wide_serials, positive)?,
            partition_cache_seconds: parse(
                &get,
                "PARTITION_CACHE_SECONDS",
                d.partition_cache_seconds,
                |v| v.parse::<u64>().map_err(|e| e.to_string()),
            )?,
            compact_target_bytes: parse(
                &get,
                "COMPACT_TARGET_BYTES",
                d.compact_target_bytes,
                |v| positive(v).map(|n| n as u64),
            )?,
            compact_min_objects: parse(
                &get,
                "COMPACT_MIN_OBJECTS",
                d.compact_min_objects,
                positive,
            )?,
            compact_grace_seconds: parse(
                &get,
                "COMPACT_GRACE_SECONDS",
                d.compact_grace_seconds,
                |v| v.parse::<u64>().map_err(|e| e.to_string()),
            )?,
            compact_queue_url: get("COMPACT_QUEUE_URL").filter(|v| !v.trim().is_empty()),
            erasure_hash_key: get("ERASURE_HASH_KEY")
                .filter(|v| !v.is_empty())
                .unwrap_or(d.erasure_hash_key),
            index_table: get("INDEX_TABLE")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or(d.index_table),
            erasure_wide_persons: parse(
                &get,
                "ERASURE_WIDE_PERSONS",
                d.erasure_wide_persons,
                |v| v.parse::<usize>().map_err(|e| e.to_string()),
            )?,
            batch_object_bytes: parse(&get, "BATCH_OBJECT_BYTES", d.batch_object_bytes, |v| {
                v.parse::<usize>().map_err(|e| e.to_string())
            })?,
            batch_held_bytes: parse(&get, "BATCH_HELD_BYTES", d.batch_held_bytes, |v| {
                v.parse::<usize>().map_err(|e| e.to_string())
            })?,
            grant_lookup_limit: parse(&get, "GRANT_LOOKUP_LIMIT", d.grant_lookup_limit, |v| {
                v.parse::<usize>().map_err(|e| e.to_string())
            })?,
            recompute_inline_limit: parse(
                &get,
                "RECOMPUTE_INLINE_LIMIT",
                d.recompute_inline_limit,
                |v| v.parse::<usize>().map_err(|e| e.to_string()),
            )?,
            recheck_delay_seconds: parse(
                &get,
                "RECHECK_DELAY_SECONDS",
                d.recheck_delay_seconds,
                |v| match v.parse::<u32>() {
                    Ok(n) if n <= 900 => Ok(n),
                    Ok(_) => Err("at most 900 (SQS's longest message delay)".into()),
                    Err(e) => Err(e.to_string()),
                },
            )?,
        })
    }
}

fn parse<T>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    f: impl Fn(&str) -> std::result::Result<T, String>,
) -> Result<T> {
    match get(name) {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => f(v.trim()).map_err(|reason| Error::Config {
            name,
            value: v.clone(),
            reason,
        }),
    }
}

fn parse_bool(v: &str) -> std::result::Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn positive(v: &str) -> std::result::Result<usize, String> {
    match v.parse::<usize>() {
        Ok(0) => Err("must be greater than 0".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_when_unset() {
        assert_eq!(cfg(&[]).unwrap(), Config::default());
    }

    #[test]
    fn reads_values() {
        let c = cfg(&[
            ("GLUE_DATABASE", "lake"),
            ("CONSENT_AS_OF", "TRUE"),
            ("MAX_LINE_BYTES", "100"),
            ("INDEX_TABLE", "lake-index"),
        ])
        .unwrap();
        assert_eq!(c.database, "lake");
        assert_eq!(c.index_table, "lake-index");
        assert!(c.consent_as_of);
        assert_eq!(c.max_line_bytes, 100);
    }

    #[test]
    fn rejects_bad_values_with_the_name() {
        let e = cfg(&[("CONSENT_AS_OF", "maybe")]).unwrap_err().to_string();
        assert_eq!(
            e,
            "bad configuration CONSENT_AS_OF=\"maybe\": expected true or false"
        );
        assert!(cfg(&[("ROW_GROUP_ROWS", "0")]).is_err());
        assert!(cfg(&[("COMPACT_MIN_OBJECTS", "0")]).is_err());
        assert!(cfg(&[("COMPACT_TARGET_BYTES", "0")]).is_err());
        let c = cfg(&[
            ("COMPACT_GRACE_SECONDS", "0"),
            ("COMPACT_TARGET_BYTES", "1000"),
            ("COMPACT_QUEUE_URL", "https://sqs/q"),
        ])
        .unwrap();
        assert_eq!(c.compact_grace_seconds, 0);
        assert_eq!(c.compact_target_bytes, 1000);
        assert_eq!(c.compact_queue_url.as_deref(), Some("https://sqs/q"));
        assert!(cfg(&[("CUSTOMER_SHARDS", "0")]).is_err());
        assert!(cfg(&[("CUSTOMER_SHARDS", "65537")]).is_err());
        assert_eq!(
            cfg(&[("CUSTOMER_SHARDS", "16")]).unwrap().customer_shards,
            16
        );
        assert!(cfg(&[("RECONCILE_GROUP_BYTES", "0")]).is_err());
        assert_eq!(
            cfg(&[("RECONCILE_GROUP_BYTES", "100000")])
                .unwrap()
                .reconcile_group_bytes,
            100_000
        );
        assert_eq!(cfg(&[]).unwrap().reconcile_group_bytes, 16 << 20);
        assert_eq!(cfg(&[]).unwrap().erasure_wide_persons, 64);
        assert_eq!(cfg(&[]).unwrap().batch_object_bytes, 2 << 20);
        assert_eq!(
            cfg(&[("BATCH_OBJECT_BYTES", "0")])
                .unwrap()
                .batch_object_bytes,
            0
        );
        assert!(cfg(&[("BATCH_OBJECT_BYTES", "8M")]).is_err());
        assert_eq!(cfg(&[]).unwrap().batch_held_bytes, 16 << 20);
        assert_eq!(
            cfg(&[("BATCH_HELD_BYTES", "1000")])
                .unwrap()
                .batch_held_bytes,
            1000
        );
        assert_eq!(
            cfg(&[("ERASURE_WIDE_PERSONS", "0")])
                .unwrap()
                .erasure_wide_persons,
            0
        );
        assert!(cfg(&[("ERASURE_WIDE_PERSONS", "-1")]).is_err());
        assert_eq!(cfg(&[]).unwrap().grant_lookup_limit, 1000);
        assert_eq!(
            cfg(&[("GRANT_LOOKUP_LIMIT", "0")])
                .unwrap()
                .grant_lookup_limit,
            0
        );
        assert!(cfg(&[("GRANT_LOOKUP_LIMIT", "many")]).is_err());
        assert_eq!(cfg(&[]).unwrap().recompute_inline_limit, 100);
        assert_eq!(
            cfg(&[("RECOMPUTE_INLINE_LIMIT", "0")])
                .unwrap()
                .recompute_inline_limit,
            0
        );
        assert!(cfg(&[("RECOMPUTE_INLINE_LIMIT", "-3")]).is_err());
        assert_eq!(cfg(&[]).unwrap().recheck_delay_seconds, 900);
        assert_eq!(
            cfg(&[("RECHECK_DELAY_SECONDS", "0")])
                .unwrap()
                .recheck_delay_seconds,
            0
        );
        assert!(cfg(&[("RECHECK_DELAY_SECONDS", "901")]).is_err());
        assert!(cfg(&[("RECHECK_DELAY_SECONDS", "-1")]).is_err());
    }
}
