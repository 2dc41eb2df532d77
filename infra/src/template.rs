//! Reads the routing table out of `template.yaml`, so the local stack is built from the
//! same file SAM deploys: for each function (its `BuildProperties.Binary`), the SQS queue
//! its event source reads, the EventBridge rule feeding that queue, the rule's key
//! patterns, and the queue's `maxReceiveCount`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::Value;

/// One function's route: bucket → rule → queue → function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Function (binary) name, e.g. `customer_landing_to_trusted`.
    pub function: String,
    /// Logical id of its queue.
    pub queue: String,
    /// Logical id of its dead-letter queue.
    pub dead_letter_queue: String,
    /// Logical id of the rule feeding the queue (none for `reconcile`, fed by itself).
    pub rule: Option<String>,
    /// The rule's `wildcard` patterns on `detail.object.key`.
    pub key_patterns: Vec<String>,
}

/// Errors reading the template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse.
    #[error("parsing template: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A resource the routes need is missing or malformed.
    #[error("template: {0}")]
    Shape(String),
}

/// Reads the routes from a template file.
pub fn routes_from_file(path: &Path) -> Result<Vec<Route>, TemplateError> {
    let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Io {
        path: path.display().to_string(),
        source,
    })?;
    routes(&text)
}

/// The logical id an `!GetAtt X.Arn` (or `Fn::GetAtt: [X, Arn]`) names.
fn get_att_target(v: &Value) -> Option<String> {
    match v {
        Value::Tagged(t) if t.tag == "!GetAtt" || t.tag == "GetAtt" => t
            .value
            .as_str()
            .map(|s| s.trim_end_matches(".Arn").to_string()),
        Value::Mapping(m) => m
            .get("Fn::GetAtt")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// Reads the routes from template text.
pub fn routes(text: &str) -> Result<Vec<Route>, TemplateError> {
    let doc: Value = serde_yaml_ng::from_str(text)?;
    let resources = doc
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or_else(|| TemplateError::Shape("no Resources".into()))?;
    let kind = |v: &Value| {
        v.get("Type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    // queue logical id -> (rule id, patterns)
    let mut rules: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (id, r) in resources {
        if kind(r) != "AWS::Events::Rule" {
            continue;
        }
        let id = id.as_str().unwrap_or_default().to_string();
        let props = &r["Properties"];
        let patterns: Vec<String> = props["EventPattern"]["detail"]["object"]["key"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|p| p.get("wildcard").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let targets = props["Targets"].as_sequence().cloned().unwrap_or_default();
        for t in targets {
            if let Some(q) = t.get("Arn").and_then(get_att_target) {
                rules.insert(q, (id.clone(), patterns.clone()));
            }
        }
    }
    let mut out = Vec::new();
    for r in resources.values() {
        if kind(r) != "AWS::Serverless::Function" {
            continue;
        }
        let Some(binary) = r["Metadata"]["BuildProperties"]["Binary"].as_str() else {
            continue;
        };
        let events = r["Properties"]["Events"]
            .as_mapping()
            .cloned()
            .unwrap_or_default();
        for ev in events.values() {
            if ev.get("Type").and_then(Value::as_str) != Some("SQS") {
                continue;
            }
            let queue = get_att_target(&ev["Properties"]["Queue"]).ok_or_else(|| {
                TemplateError::Shape(format!("{binary}: SQS event without !GetAtt queue"))
            })?;
            let (rule, key_patterns) = match rules.get(&queue).cloned() {
                Some((rule, patterns)) => (Some(rule), patterns),
                None => (None, Vec::new()),
            };
            let dlq = resources
                .get(queue.as_str())
                .and_then(|q| {
                    get_att_target(&q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
                })
                .ok_or_else(|| TemplateError::Shape(format!("{queue}: no dead-letter queue")))?;
            out.push(Route {
                function: binary.to_string(),
                queue,
                dead_letter_queue: dlq,
                rule,
                key_patterns,
            });
        }
    }
    Ok(out)
}

/// Whether `key` matches an EventBridge `wildcard` pattern (`*` matches any run).
pub fn wildcard_match(pattern: &str, key: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == key;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !key.starts_with(first) || !key[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &key[first.len()..key.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match(
            "customer/landing/*.json",
            "customer/landing/a b.json"
        ));
        assert!(wildcard_match(
            "customer/landing/*.json",
            "customer/landing/x/y.json"
        ));
        assert!(!wildcard_match(
            "customer/landing/*.json",
            "customer/landing/a.csv"
        ));
        assert!(!wildcard_match(
            "customer/landing/*.json",
            "customer/trusted/a.json"
        ));
    }
}
