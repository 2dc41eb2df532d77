//! The one summary line per invocation, in CloudWatch Embedded Metric Format: the counts
//! become metrics (namespace `STEDI`, dimension `function`) with no extra API calls.

use serde_json::{Value, json};

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
    }

    /// Whether every row read is accounted for.
    pub fn balances(&self) -> bool {
        self.rows_in == self.rows_out + self.filtered + self.quarantined
    }

    /// The EMF JSON object for `function`.
    pub fn to_emf(&self, function: &str, timestamp_ms: i64) -> Value {
        let metric = |name: &str, unit: &str| json!({"Name": name, "Unit": unit});
        json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "STEDI",
                    "Dimensions": [["function"]],
                    "Metrics": [
                        metric("rows_in", "Count"), metric("rows_out", "Count"),
                        metric("filtered", "Count"), metric("quarantined", "Count"),
                        metric("conflicts", "Count"), metric("ms", "Milliseconds"),
                    ],
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
        })
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
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len(),
            6
        );
    }
}
