//! Object keys: which keys a function accepts, and the output keys derived from them.
//!
//! Outputs are named after their source object (`<prefix>dt=<dt>/<stem>.parquet`), so
//! redelivering an event overwrites what the first delivery wrote instead of appending.
//! A key that is outside the source prefix, has the wrong suffix, or whose stem would
//! escape the target prefix is refused.

use crate::error::{Error, Result};
use crate::schema::Table;

/// A source object accepted for a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceKey {
    /// The table the object belongs to.
    pub table: Table,
    /// The full key.
    pub key: String,
    /// Name the outputs are given: the path under the table prefix, without the suffix,
    /// with `/` written as `__` so every output sits directly in its partition folder.
    pub stem: String,
    /// For objects of partitioned tables, the `dt` their path names.
    pub dt: Option<String>,
}

/// Accepts `key` as an object of one of `tables`, or refuses it with the reason.
pub fn accept(bucket: &str, key: &str, tables: &[Table]) -> Result<SourceKey> {
    let refuse = |reason: String| Error::RefusedKey {
        bucket: bucket.to_string(),
        key: key.to_string(),
        reason,
    };
    let Some(table) = tables.iter().copied().find(|t| key.starts_with(t.prefix())) else {
        let want: Vec<_> = tables.iter().map(|t| t.prefix()).collect();
        return Err(refuse(format!(
            "outside the source prefix {}",
            want.join(" or ")
        )));
    };
    let rest = &key[table.prefix().len()..];
    let suffix = match table.format() {
        crate::schema::Format::JsonLines => ".json",
        crate::schema::Format::Parquet => ".parquet",
    };
    let Some(path) = rest.strip_suffix(suffix) else {
        return Err(refuse(format!("not a {suffix} object")));
    };
    let mut segments: Vec<&str> = path.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains('\\'))
    {
        return Err(refuse(
            "empty, '.', '..' or '\\' path segment: the output would escape its prefix".into(),
        ));
    }
    if segments
        .iter()
        .any(|s| s.starts_with('_') || s.starts_with('.'))
    {
        return Err(refuse("hidden path segment ('_' or '.' prefix)".into()));
    }
    let dt = if table.partitioned() {
        let first = segments.remove(0);
        let Some(dt) = first.strip_prefix("dt=").filter(|d| is_date(d)) else {
            return Err(refuse("not under a dt=YYYY-MM-DD partition".into()));
        };
        if segments.is_empty() {
            return Err(refuse("no object name under the partition".into()));
        }
        Some(dt.to_string())
    } else {
        None
    };
    Ok(SourceKey {
        table,
        key: key.to_string(),
        stem: segments.join("__"),
        dt,
    })
}

/// Where the lake keeps its bookkeeping (lineage manifests, indexes): a bucket-root prefix
/// outside every table's location, so readers that list a table's location recursively
/// (awswrangler, Glue crawlers, `aws s3 sync`) see only the table's Parquet data files.
pub const BOOKKEEPING_PREFIX: &str = "_stedi/";

/// The folder where an earlier release kept the lineage manifests of `table`'s outputs as
/// S3 objects (the ML join's side manifests are still kept there).
pub fn lineage_prefix(table: Table) -> String {
    format!("{BOOKKEEPING_PREFIX}lineage/{}/", table.name())
}

/// The folder of the lineage manifests of `table`'s outputs too large for their entry in
/// the index table (see [`crate::transitions::read_manifest`]).
pub fn manifest_body_prefix(table: Table) -> String {
    format!("{BOOKKEEPING_PREFIX}manifests/{}/", table.name())
}

/// The shard (of `shards`) a customer's e-mail, or a device's serial, falls in: FNV-1a
/// (64 bits) of the bytes, modulo the shard count. Stable across processes and releases.
pub fn shard_of(key: &str, shards: u32) -> u32 {
    shard_of_hash(fnv1a(key), shards)
}

/// [`shard_of`] a key whose [`fnv1a`] hash is `hash`.
pub fn shard_of_hash(hash: u64, shards: u32) -> u32 {
    (hash % u64::from(shards.max(1))) as u32
}

/// The 64-bit FNV-1a hash of a key: [`hash_hex`] as a number.
pub fn fnv1a(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A key's name in bookkeeping paths: 16 hex digits of its FNV-1a hash (a serial or a
/// source stem never appears in a join-index or waiting path as itself).
pub fn hash_hex(key: &str) -> String {
    hex_of(fnv1a(key))
}

/// [`hash_hex`] of a key whose [`fnv1a`] hash is `hash`.
pub fn hex_of(hash: u64) -> String {
    format!("{hash:016x}")
}

/// Step Trainer landing objects filtered because a serial had no curated owner yet:
/// `_stedi/waiting/<hash of the serial>/<stem>`, holding the landing key.
pub const WAITING_PREFIX: &str = "_stedi/waiting/";

/// The folder of the files waiting for `serial`'s owner.
pub fn waiting_prefix(serial_hash: &str) -> String {
    format!("{WAITING_PREFIX}{serial_hash}/")
}

/// The object holding shard `shard` of a sharded customer table:
/// `customer/trusted/part-00042.parquet`, directly under the table location.
pub fn shard_key(table: Table, shard: u32) -> String {
    format!("{}part-{shard:05}.parquet", table.prefix())
}

/// The shard a sharded table's object holds, if `key` is one of its shard objects.
pub fn shard_of_key(table: Table, key: &str) -> Option<u32> {
    part_number(key.strip_prefix(table.prefix())?, ".parquet")
}

/// The shard a device-index object holds, if `key` is one.
pub fn device_shard_of_key(key: &str) -> Option<u32> {
    part_number(key.strip_prefix(DEVICES_PREFIX)?, ".jsonl")
}

/// `N` of a `part-NNNNN<suffix>` name.
fn part_number(name: &str, suffix: &str) -> Option<u32> {
    let digits = name.strip_prefix("part-")?.strip_suffix(suffix)?;
    (digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Present while a reconcile planning pass has rewritten customer or device shards itself
/// (events were lost) and no pass has since checked every reading file's manifest and
/// found nothing to do: a changed pass checks them all while it is there.
pub const FULL_CHECK_DUE: &str = "_stedi/reconcile/full-check-due.json";

/// The time before which every reading file's manifest was checked by a reconcile pass
/// that found nothing to do: a changed pass reads only the manifests written since.
pub const RECONCILE_CHECKED: &str = "_stedi/reconcile/checked.json";

/// The folder of the device index (serial → consenting owners, each flagged curated or
/// not), sharded by serial.
pub const DEVICES_PREFIX: &str = "_stedi/devices/";

/// The object of device-index shard `shard`.
pub fn device_shard_key(shard: u32) -> String {
    format!("{DEVICES_PREFIX}part-{shard:05}.jsonl")
}

/// The single object the earlier layout kept a customer table in (migrated by `reconcile`).
pub fn legacy_snapshot_key(table: Table) -> String {
    format!("{}{}.parquet", table.prefix(), table.name())
}

/// The output key of `stem` in partition `dt` of `table`.
pub fn output_key(table: Table, dt: &str, stem: &str) -> String {
    format!("{}dt={dt}/{stem}.parquet", table.prefix())
}

/// The prefix of partition `dt` of `table`.
pub fn partition_prefix(table: Table, dt: &str) -> String {
    format!("{}dt={dt}/", table.prefix())
}

/// The folder of generation `generation` of partition `dt` of `table`:
/// `<table prefix>g000003/dt=<dt>/`, beside the per-source `dt=<dt>/` folders (never inside
/// one, so a reader of a partition's location never reads two generations), under the
/// table location (readers that require partition locations under it accept it), and
/// without `=` (path-inferring readers see only `dt`).
pub fn generation_prefix(table: Table, generation: u32, dt: &str) -> String {
    format!("{}g{generation:06}/dt={dt}/", table.prefix())
}

/// The generation a key prefix or key belongs to, if it is one of partition `dt` of
/// `table`.
pub fn generation_of(table: Table, dt: &str, key: &str) -> Option<u32> {
    let rest = key.strip_prefix(table.prefix())?.strip_prefix('g')?;
    let (digits, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("dt=")?.strip_prefix(dt)?;
    if !(rest.is_empty() || rest.starts_with('/'))
        || digits.len() != 6
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok()
}

/// Where a per-source object of a compacted partition is kept once its generation's grace
/// period has passed: outside the table location (readers that list it would read its rows
/// twice), under the bookkeeping prefix, by its own key.
pub fn held_key(key: &str) -> String {
    format!("{BOOKKEEPING_PREFIX}held/{key}")
}

/// A compacted file of a generation: `c-00000-of-00004.parquet` (holder `k` of `files`;
/// names of per-source copies start with `s-`, so the two never meet).
pub fn holder_key(table: Table, generation: u32, dt: &str, k: u32, files: u32) -> String {
    format!(
        "{}c-{k:05}-of-{files:05}.parquet",
        generation_prefix(table, generation, dt)
    )
}

/// A per-source object copied into a generation after it was compacted.
pub fn copy_key(table: Table, generation: u32, dt: &str, name: &str) -> String {
    format!(
        "{}s-{name}.parquet",
        generation_prefix(table, generation, dt)
    )
}

/// The name of a per-source copy key relative to its generation folder.
pub fn copy_name(file: &str) -> Option<&str> {
    file.strip_prefix("s-")?.strip_suffix(".parquet")
}

/// Whether `s` is a `YYYY-MM-DD` date.
pub fn is_date(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() && s.len() == 10
}

/// The UTC date (`YYYY-MM-DD`) of an epoch-millisecond timestamp, or `None` when it is out
/// of range.
pub fn dt_of_millis(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landing_keys_derive_stems() {
        let k = accept(
            "b",
            "accelerometer/landing/accelerometer-1691348231445.json",
            &[Table::AccelerometerLanding],
        )
        .unwrap();
        assert_eq!(k.stem, "accelerometer-1691348231445");
        assert_eq!(k.dt, None);
        assert_eq!(
            output_key(Table::AccelerometerTrusted, "2022-06-18", &k.stem),
            "accelerometer/trusted/dt=2022-06-18/accelerometer-1691348231445.parquet"
        );
        let nested = accept(
            "b",
            "customer/landing/2022/06/my file+1 你好.json",
            &[Table::CustomerLanding],
        )
        .unwrap();
        assert_eq!(nested.stem, "2022__06__my file+1 你好");
    }

    #[test]
    fn trusted_keys_carry_their_partition() {
        let k = accept(
            "b",
            "step_trainer/trusted/dt=2022-06-18/step_trainer-1.parquet",
            &[Table::StepTrainerTrusted, Table::AccelerometerTrusted],
        )
        .unwrap();
        assert_eq!(k.table, Table::StepTrainerTrusted);
        assert_eq!(k.dt.as_deref(), Some("2022-06-18"));
        assert_eq!(k.stem, "step_trainer-1");
    }

    #[test]
    fn hostile_keys_are_refused_with_a_reason() {
        let cases = [
            (
                "customer/trusted/x.json",
                "outside the source prefix customer/landing/",
            ),
            ("customer/landing/x.csv", "not a .json object"),
            ("customer/landing/../trusted/x.json", "escape its prefix"),
            ("customer/landing//x.json", "escape its prefix"),
            ("customer/landing/a\\..\\b.json", "escape its prefix"),
            ("/customer/landing/x.json", "outside the source prefix"),
            ("customer/landing/.json", "escape its prefix"),
            ("customer/landing/_tmp/x.json", "hidden path segment"),
        ];
        for (key, reason) in cases {
            let e = accept("b", key, &[Table::CustomerLanding]).unwrap_err();
            assert!(!e.is_retryable());
            assert!(e.to_string().contains(reason), "{key}: {e}");
        }
        let e = accept(
            "b",
            "accelerometer/trusted/dt=yesterday/x.parquet",
            &[Table::AccelerometerTrusted],
        )
        .unwrap_err();
        assert!(e.to_string().contains("dt=YYYY-MM-DD"), "{e}");
    }

    #[test]
    fn shards_are_stable_and_keys_round_trip() {
        // Pinned: changing the hash would move every customer to another shard.
        assert_eq!(
            shard_of("Santosh.Clayton@test.com", 256),
            shard_of("Santosh.Clayton@test.com", 256)
        );
        assert_eq!(shard_of("", 256), (0xcbf2_9ce4_8422_2325u64 % 256) as u32);
        assert_eq!(shard_of("a", 1), 0);
        assert!((0..1000).all(|i| shard_of(&format!("u{i}@x"), 7) < 7));
        let k = shard_key(Table::CustomerTrusted, 42);
        assert_eq!(k, "customer/trusted/part-00042.parquet");
        assert_eq!(shard_of_key(Table::CustomerTrusted, &k), Some(42));
        assert_eq!(shard_of_key(Table::CustomerCurated, &k), None);
        assert_eq!(
            shard_of_key(
                Table::CustomerTrusted,
                "customer/trusted/customer_trusted.parquet"
            ),
            None
        );
        assert_eq!(device_shard_key(3), "_stedi/devices/part-00003.jsonl");
        assert_eq!(device_shard_of_key(&device_shard_key(3)), Some(3));
        assert_eq!(device_shard_of_key("_stedi/devices/part-3.jsonl"), None);
        assert_eq!(
            legacy_snapshot_key(Table::CustomerCurated),
            "customer/curated/customer_curated.parquet"
        );
    }

    #[test]
    fn generations_sit_beside_the_partition_folders_and_round_trip() {
        let t = Table::AccelerometerTrusted;
        let g = generation_prefix(t, 3, "2022-06-18");
        assert_eq!(g, "accelerometer/trusted/g000003/dt=2022-06-18/");
        // Not a source object of the table (no event of it is processed as one).
        assert!(accept("b", &format!("{g}x.parquet"), &[t]).is_err());
        assert_eq!(
            held_key(&output_key(t, "2022-06-18", "a")),
            "_stedi/held/accelerometer/trusted/dt=2022-06-18/a.parquet"
        );
        assert_eq!(generation_of(t, "2022-06-18", &g), Some(3));
        let h = holder_key(t, 3, "2022-06-18", 1, 4);
        assert_eq!(h, format!("{g}c-00001-of-00004.parquet"));
        assert_eq!(generation_of(t, "2022-06-18", &h), Some(3));
        assert_eq!(generation_of(t, "2022-06-19", &g), None);
        assert_eq!(
            generation_of(Table::StepTrainerTrusted, "2022-06-18", &g),
            None
        );
        assert_eq!(generation_of(t, "2022-06-1", &g), None);
        let c = copy_key(t, 3, "2022-06-18", "a.b");
        assert_eq!(copy_name(&c[g.len()..]), Some("a.b"));
        assert_eq!(copy_name(&h[g.len()..]), None);
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(dt_of_millis(1655564444103).as_deref(), Some("2022-06-18"));
        assert_eq!(dt_of_millis(0).as_deref(), Some("1970-01-01"));
        assert_eq!(dt_of_millis(-1).as_deref(), Some("1969-12-31"));
        assert_eq!(dt_of_millis(i64::MAX), None);
        assert!(is_date("2022-06-18"));
        assert!(!is_date("2022-6-18"));
    }
}
