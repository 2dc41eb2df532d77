//! The one summary line per invocation, in CloudWatch Embedded Metric Format: the counts
//! become metrics (namespace `STEDI`, dimension `function`) with no extra API calls.
//!
//! Besides the rows, the line carries the requests the invocation made ([`Requests`]): S3
//! and Glue bill per request, so the cost of a function is read off its metrics.

use std::ops::{Add, AddAssign};

use serde_json::{Map, Value, json};

/// The requests one invocation (or any span of work) made, as counted by
/// `stedi::store::RequestCounts`: S3 requests by kind (each page of a listing is one LIST),
/// the bytes of GET response bodies received and of PUT bodies stored, Glue API calls and
/// SQS API calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Requests {
    /// S3 PutObject requests (conditional ones included, whether they won or not).
    pub s3_put: u64,
    /// S3 GetObject requests (a 304 or a 404 is a request too).
    pub s3_get: u64,
    /// S3 ListObjectsV2 requests (one per page).
    pub s3_list: u64,
    /// S3 HeadObject requests (none are made; kept as a metric, at 0).
    pub s3_head: u64,
    /// S3 DeleteObject requests.
    pub s3_delete: u64,
    /// Bytes of GetObject bodies received.
    pub bytes_read: u64,
    /// Bytes of PutObject bodies S3 accepted.
    pub bytes_written: u64,
    /// Glue API calls (one per page of a paginated call).
    pub glue_calls: u64,
    /// SQS API calls (reconcile's fan-out).
    pub sqs_calls: u64,
    /// DynamoDB read request units (the erasure index's queries: one per 4 KB read).
    #[serde(default)]
    pub dynamodb_read_units: u64,
    /// DynamoDB write request units (the erasure index's postings: one per item).
    #[serde(default)]
    pub dynamodb_write_units: u64,
}

impl Requests {
    /// Every count with its metric name and CloudWatch unit, in a fixed order.
    pub fn metrics(&self) -> [(&'static str, u64, &'static str); 11] {
        [
            ("s3_put", self.s3_put, "Count"),
            ("s3_get", self.s3_get, "Count"),
            ("s3_list", self.s3_list, "Count"),
            ("s3_head", self.s3_head, "Count"),
            ("s3_delete", self.s3_delete, "Count"),
            ("bytes_read", self.bytes_read, "Bytes"),
            ("bytes_written", self.bytes_written, "Bytes"),
            ("glue_calls", self.glue_calls, "Count"),
            ("sqs_calls", self.sqs_calls, "Count"),
            ("dynamodb_read_units", self.dynamodb_read_units, "Count"),
            ("dynamodb_write_units", self.dynamodb_write_units, "Count"),
        ]
    }
}

impl Add for Requests {
    type Output = Requests;

    fn add(self, o: Requests) -> Requests {
        Requests {
            s3_put: self.s3_put + o.s3_put,
            s3_get: self.s3_get + o.s3_get,
            s3_list: self.s3_list + o.s3_list,
            s3_head: self.s3_head + o.s3_head,
            s3_delete: self.s3_delete + o.s3_delete,
            bytes_read: self.bytes_read + o.bytes_read,
            bytes_written: self.bytes_written + o.bytes_written,
            glue_calls: self.glue_calls + o.glue_calls,
            sqs_calls: self.sqs_calls + o.sqs_calls,
            dynamodb_read_units: self.dynamodb_read_units + o.dynamodb_read_units,
            dynamodb_write_units: self.dynamodb_write_units + o.dynamodb_write_units,
        }
    }
}

impl AddAssign for Requests {
    fn add_assign(&mut self, o: Requests) {
        *self = *self + o;
    }
}

/// What was counted since `o` (an earlier reading of the same counters).
impl std::ops::Sub for Requests {
    type Output = Requests;
    fn sub(self, o: Requests) -> Requests {
        Requests {
            s3_put: self.s3_put.saturating_sub(o.s3_put),
            s3_get: self.s3_get.saturating_sub(o.s3_get),
            s3_list: self.s3_list.saturating_sub(o.s3_list),
            s3_head: self.s3_head.saturating_sub(o.s3_head),
            s3_delete: self.s3_delete.saturating_sub(o.s3_delete),
            bytes_read: self.bytes_read.saturating_sub(o.bytes_read),
            bytes_written: self.bytes_written.saturating_sub(o.bytes_written),
            glue_calls: self.glue_calls.saturating_sub(o.glue_calls),
            sqs_calls: self.sqs_calls.saturating_sub(o.sqs_calls),
            dynamodb_read_units: self
                .dynamodb_read_units
                .saturating_sub(o.dynamodb_read_units),
            dynamodb_write_units: self
                .dynamodb_write_units
                .saturating_sub(o.dynamodb_write_units),
        }
    }
}

/// What one invocation did. For landing transitions `rows_in = rows_out + filtered +
/// quarantined` always holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Source objects processed.
    pub sources: Vec<String>,
    /// Rows read (non-blank lines for landing files).
    pub rows_in: u64,
    /// Rows written to the target table.
    pub rows_out: u64,
    /// Rows dropped by a rule (no consent, no matching customer, superseded record).
    pub filtered: u64,
    /// Lines kept under `<zone>/quarantine/` with their reason.
    pub quarantined: u64,
    /// Objects written.
    pub outputs: Vec<String>,
    /// Objects deleted because the new run no longer produces them.
    pub deleted: Vec<String>,
    /// Conditional writes that lost a race and were retried.
    pub conflicts: u64,
    /// Objects refused or failed (with the reason).
    pub errors: Vec<String>,
    /// Wall time of the invocation in milliseconds.
    pub ms: u64,
    /// The requests the invocation made (S3, Glue, SQS) and the bytes it moved.
    pub requests: Requests,
    /// The people a landing file holds (e-mail or serial → the earliest time of their
    /// lines): what the erasure index records (by keyed hash, in the hashes' order, so
    /// this map has none). Taken by the transition, never reported.
    pub persons: crate::rules::FastMap<String, i64>,
}

impl Summary {
    /// Adds another object's counts.
    pub fn absorb(&mut self, o: Summary) {
        self.sources.extend(o.sources);
        self.rows_in += o.rows_in;
        self.rows_out += o.rows_out;
        self.filtered += o.filtered;
        self.quarantined += o.quarantined;
        self.outputs.extend(o.outputs);
        self.deleted.extend(o.deleted);
        self.conflicts += o.conflicts;
        self.errors.extend(o.errors);
        self.ms += o.ms;
        self.requests += o.requests;
    }

    /// Whether every row read is accounted for.
    pub fn balances(&self) -> bool {
        self.rows_in == self.rows_out + self.filtered + self.quarantined
    }

    /// The EMF JSON object for `function`.
    pub fn to_emf(&self, function: &str, timestamp_ms: i64) -> Value {
        let metric = |name: &str, unit: &str| json!({"Name": name, "Unit": unit});
        let requests = self.requests.metrics();
        let mut metrics = vec![
            metric("rows_in", "Count"),
            metric("rows_out", "Count"),
            metric("filtered", "Count"),
            metric("quarantined", "Count"),
            metric("conflicts", "Count"),
            metric("ms", "Milliseconds"),
        ];
        metrics.extend(requests.iter().map(|(name, _, unit)| metric(name, unit)));
        let mut line = json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "STEDI",
                    "Dimensions": [["function"]],
                    "Metrics": metrics,
                }],
            },
            "function": function,
            "sources": self.sources,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "filtered": self.filtered,
            "quarantined": self.quarantined,
            "conflicts": self.conflicts,
            "outputs": self.outputs,
            "deleted": self.deleted,
            "errors": self.errors,
            "ms": self.ms,
        });
        if let Some(fields) = line.as_object_mut() {
            let counts: Map<String, Value> = requests
                .iter()
                .map(|(name, n, _)| ((*name).to_string(), Value::from(*n)))
                .collect();
            fields.extend(counts);
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_carries_the_counts_as_metrics() {
        let mut s = Summary {
            sources: vec!["a".into()],
            rows_in: 10,
            rows_out: 6,
            filtered: 3,
            quarantined: 1,
            ..Summary::default()
        };
        assert!(s.balances());
        s.absorb(Summary {
            rows_in: 1,
            ..Summary::default()
        });
        assert!(!s.balances());
        s.ms = 12;
        let v = s.to_emf("f", 1000);
        assert_eq!(v["rows_in"], 11);
        assert_eq!(v["function"], "f");
        let metrics = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        assert_eq!(metrics.len(), 17);
        // Every metric has its value at the top level of the line, as EMF requires.
        for m in metrics {
            let name = m["Name"].as_str().unwrap();
            assert!(v[name].is_u64(), "{name} missing from {v}");
        }
    }

    #[test]
    fn request_counts_add_up_and_become_metrics() {
        let one = Requests {
            s3_put: 2,
            s3_get: 3,
            s3_list: 1,
            s3_delete: 1,
            bytes_read: 100,
            bytes_written: 40,
            glue_calls: 1,
            ..Requests::default()
        };
        let mut s = Summary {
            requests: one,
            ..Summary::default()
        };
        s.absorb(Summary {
            requests: Requests {
                s3_head: 1,
                s3_get: 1,
                bytes_read: 5,
                sqs_calls: 2,
                dynamodb_read_units: 1,
                dynamodb_write_units: 3,
                ..Requests::default()
            },
            ..Summary::default()
        });
        let r = s.requests;
        assert_eq!((r.dynamodb_read_units, r.dynamodb_write_units), (1, 3));
        assert_eq!(
            (r.s3_put, r.s3_get, r.s3_list, r.s3_head, r.s3_delete),
            (2, 4, 1, 1, 1)
        );
        assert_eq!(
            (r.bytes_read, r.bytes_written, r.glue_calls, r.sqs_calls),
            (105, 40, 1, 2)
        );
        let v = s.to_emf("f", 0);
        assert_eq!(v["s3_get"], 4);
        assert_eq!(v["bytes_read"], 105);
        assert_eq!(v["glue_calls"], 1);
        let units: Vec<(&str, &str)> = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str().unwrap()))
            .collect();
        assert!(units.contains(&("bytes_written", "Bytes")));
        assert!(units.contains(&("s3_list", "Count")));
        assert!(units.contains(&("dynamodb_write_units", "Count")));
        assert_eq!(v["dynamodb_write_units"], 3);
    }
}
