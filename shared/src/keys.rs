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

/// The output key of `stem` in partition `dt` of `table`.
pub fn output_key(table: Table, dt: &str, stem: &str) -> String {
    format!("{}dt={dt}/{stem}.parquet", table.prefix())
}

/// The prefix of partition `dt` of `table`.
pub fn partition_prefix(table: Table, dt: &str) -> String {
    format!("{}dt={dt}/", table.prefix())
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
    fn dates_are_utc() {
        assert_eq!(dt_of_millis(1655564444103).as_deref(), Some("2022-06-18"));
        assert_eq!(dt_of_millis(0).as_deref(), Some("1970-01-01"));
        assert_eq!(dt_of_millis(-1).as_deref(), Some("1969-12-31"));
        assert_eq!(dt_of_millis(i64::MAX), None);
        assert!(is_date("2022-06-18"));
        assert!(!is_date("2022-6-18"));
    }
}
