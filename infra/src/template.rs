//! Reads the routing table out of `template.yaml`, so the local stack is built from the
//! same file SAM deploys: for each function (its `BuildProperties.Binary`), the SQS queue
//! its event source reads, the EventBridge rule feeding that queue, the rule's key
//! patterns, and the queue's `maxReceiveCount`.

use serde_json::json;
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
    /// The rule's `detail-type`s (`Object Created`, and `Object Deleted` for the reading
    /// filters, whose outputs follow a deleted landing file).
    pub detail_types: Vec<String>,
    /// The rule's filter on `detail.deletion-type`, as written (JSON), if any.
    pub deletion_type: Option<serde_json::Value>,
    /// Records per invocation at most: the event source mapping's `BatchSize` (Lambda's
    /// default for SQS, 10, when the template leaves it out).
    pub batch_size: usize,
    /// The function's identity policy (its `Policies` statements), as written.
    pub policy: IamPolicy,
    /// Its environment variables that name a queue (`NAME: !Ref <queue logical id>`): the
    /// queues it sends to, as deployed.
    pub queue_env: BTreeMap<String, String>,
}

/// What the EventBridge rule feeding a queue matches (nothing, and no rule, for a queue
/// no rule targets).
#[derive(Debug, Clone, Default)]
struct RuleMatch {
    /// The rule's logical id.
    id: Option<String>,
    /// Its `wildcard` patterns on `detail.object.key`.
    key_patterns: Vec<String>,
    /// Its `detail-type`s.
    detail_types: Vec<String>,
    /// Its filter on `detail.deletion-type`, as written (JSON), if any.
    deletion_type: Option<serde_json::Value>,
}

/// One statement of an identity policy: `!Sub` variables left as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamStatement {
    /// `Allow` (else `Deny`).
    pub allow: bool,
    /// Its actions (`s3:GetObject`, `s3:*`).
    pub actions: Vec<String>,
    /// Its resources (ARNs, `*` a wildcard).
    pub resources: Vec<String>,
}

/// A function's identity policy from `template.yaml`: its inline `Statement` entries and
/// those of the `AWS::IAM::ManagedPolicy` resources it names (`!Ref`). The local runner
/// enforces it on every S3, Glue and SQS request ([`stedi::store::with_policy`]), as IAM
/// would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IamPolicy {
    /// The function (binary) it belongs to.
    pub function: String,
    /// Its statements.
    pub statements: Vec<IamStatement>,
}

impl IamPolicy {
    /// Reads `function`'s `Policies` list, the managed policies it names found among
    /// `resources`.
    fn parse(function: &str, policies: &Value, resources: &serde_yaml_ng::Mapping) -> IamPolicy {
        // A resource written `!GetAtt X.Arn` (a queue) is kept as `${X.Arn}`.
        let one = |v: &Value| match get_att_target(v) {
            Some(id) => Some(format!("${{{id}.Arn}}")),
            None => sub_text(v).map(str::to_string),
        };
        let strings = |v: &Value| -> Vec<String> {
            match v {
                Value::Sequence(items) => items.iter().filter_map(one).collect(),
                v => one(v).into_iter().collect(),
            }
        };
        let managed = |p: &Value| {
            let r = resources.get(ref_target(p)?.as_str())?;
            (r.get("Type").and_then(Value::as_str) == Some("AWS::IAM::ManagedPolicy"))
                .then(|| &r["Properties"]["PolicyDocument"])
        };
        let statements = policies
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                managed(p)
                    .unwrap_or(p)
                    .get("Statement")
                    .and_then(Value::as_sequence)
            })
            .flatten()
            .map(|st| IamStatement {
                allow: st.get("Effect").and_then(Value::as_str) == Some("Allow"),
                actions: st.get("Action").map(strings).unwrap_or_default(),
                resources: st.get("Resource").map(strings).unwrap_or_default(),
            })
            .collect();
        IamPolicy {
            function: function.to_string(),
            statements,
        }
    }

    /// The policy with the stack's names put in: `bucket` for `${BucketName}` and
    /// `${LakeBucket}`, its ARN for `${LakeBucket.Arn}`, `database` for `${DatabaseName}`,
    /// `aws` for `${AWS::Partition}`, any region and account (`*`), the ARN of the
    /// stack's queue for `!GetAtt <queue>.Arn` (queues are named `<queue_prefix><logical
    /// id>`) and of table `index_table` for `!GetAtt IndexTable.Arn`.
    pub fn for_stack(
        &self,
        bucket: &str,
        database: &str,
        queue_prefix: &str,
        index_table: &str,
    ) -> IamPolicy {
        let arn = format!("arn:aws:s3:::{bucket}");
        let fill = |r: &String| {
            if let Some(id) = r.strip_prefix("${").and_then(|r| r.strip_suffix(".Arn}")) {
                if id.ends_with("Queue") {
                    return format!("arn:aws:sqs:*:*:{queue_prefix}{id}");
                }
                if id == "IndexTable" {
                    return format!("arn:aws:dynamodb:*:*:table/{index_table}");
                }
            }
            r.replace("${AWS::Partition}", "aws")
                .replace("${AWS::Region}", "*")
                .replace("${AWS::AccountId}", "*")
                .replace("${BucketName}", bucket)
                .replace("${LakeBucket.Arn}", &arn)
                .replace("${LakeBucket}", bucket)
                .replace("${DatabaseName}", database)
        };
        IamPolicy {
            function: self.function.clone(),
            statements: self
                .statements
                .iter()
                .map(|st| IamStatement {
                    resources: st.resources.iter().map(fill).collect(),
                    ..st.clone()
                })
                .collect(),
        }
    }

    /// Whether some statement of `allow`'s effect names `action` (lower case: IAM compares
    /// actions without case) and `resource`.
    fn names(&self, allow: bool, action: &str, resource: &str) -> bool {
        self.statements.iter().any(|st| {
            st.allow == allow
                && st
                    .actions
                    .iter()
                    .any(|a| wildcard_match(&a.to_ascii_lowercase(), action))
                && st.resources.iter().any(|r| wildcard_match(r, resource))
        })
    }
}

impl stedi::store::Authorizer for IamPolicy {
    /// IAM's evaluation within one identity policy: an explicit deny wins, then an allow;
    /// anything else is denied.
    fn allows(&self, action: &str, resource: &str) -> bool {
        let action = action.to_ascii_lowercase();
        !self.names(false, &action, resource) && self.names(true, &action, resource)
    }

    fn name(&self) -> &str {
        &self.function
    }
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

/// The logical id a `!Ref X` (tag or mapping form) names.
fn ref_target(v: &Value) -> Option<String> {
    match v {
        Value::Tagged(t) if t.tag == "!Ref" || t.tag == "Ref" => {
            t.value.as_str().map(str::to_string)
        }
        Value::Mapping(m) => m.get("Ref").and_then(Value::as_str).map(str::to_string),
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
    // queue logical id -> what the rule targeting it matches
    let mut rules: BTreeMap<String, RuleMatch> = BTreeMap::new();
    for (id, r) in resources {
        if kind(r) != "AWS::Events::Rule" {
            continue;
        }
        let id = id.as_str().unwrap_or_default().to_string();
        let props = &r["Properties"];
        let key_patterns: Vec<String> = props["EventPattern"]["detail"]["object"]["key"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|p| p.get("wildcard").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let detail_types: Vec<String> = props["EventPattern"]["detail-type"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        let deletion_type = props["EventPattern"]["detail"]
            .get("deletion-type")
            .and_then(|v| serde_json::to_value(v).ok());
        let targets = props["Targets"].as_sequence().cloned().unwrap_or_default();
        for t in targets {
            if let Some(q) = t.get("Arn").and_then(get_att_target) {
                let rule = RuleMatch {
                    id: Some(id.clone()),
                    key_patterns: key_patterns.clone(),
                    detail_types: detail_types.clone(),
                    deletion_type: deletion_type.clone(),
                };
                rules.insert(q, rule);
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
            let RuleMatch {
                id: rule,
                key_patterns,
                detail_types,
                deletion_type,
            } = rules.get(&queue).cloned().unwrap_or_default();
            let dlq = resources
                .get(queue.as_str())
                .and_then(|q| {
                    get_att_target(&q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
                })
                .ok_or_else(|| TemplateError::Shape(format!("{queue}: no dead-letter queue")))?;
            let batch_size = match &ev["Properties"]["BatchSize"] {
                Value::Null => 10,
                v => v
                    .as_u64()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        TemplateError::Shape(format!("{binary}: BatchSize {v:?} is not 1 to 10000"))
                    })? as usize,
            };
            let queue_env = r["Properties"]["Environment"]["Variables"]
                .as_mapping()
                .into_iter()
                .flatten()
                .filter_map(|(name, value)| {
                    let target = ref_target(value)?;
                    let is_queue = resources.get(target.as_str()).map(&kind).as_deref()
                        == Some("AWS::SQS::Queue");
                    is_queue.then(|| (name.as_str().unwrap_or_default().to_string(), target))
                })
                .collect();
            out.push(Route {
                function: binary.to_string(),
                queue,
                dead_letter_queue: dlq,
                rule,
                key_patterns,
                detail_types,
                deletion_type,
                batch_size,
                policy: IamPolicy::parse(binary, &r["Properties"]["Policies"], resources),
                queue_env,
            });
        }
    }
    Ok(out)
}

/// The template's tag or mapping form of a `!Sub` string.
fn sub_text(v: &Value) -> Option<&str> {
    match v {
        Value::Tagged(t) if t.tag == "!Sub" || t.tag == "Sub" => t.value.as_str(),
        Value::Mapping(m) => m.get("Fn::Sub").and_then(Value::as_str),
        other => other.as_str(),
    }
}

fn column_list(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|cols| {
            cols.iter()
                .map(|c| {
                    format!(
                        "{} {}",
                        c["Name"].as_str().unwrap_or("?"),
                        c["Type"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Where `template.yaml` disagrees with the shared schemas and routes: every Glue table
/// (name, location, columns, partition keys, SerDe) and every function's rule patterns.
/// Empty when they agree.
pub fn drift(text: &str) -> Result<Vec<String>, TemplateError> {
    use stedi::lambda::Function;
    use stedi::schema::{Format, Table};
    let doc: Value = serde_yaml_ng::from_str(text)?;
    let mut problems = Vec::new();
    let resources = doc["Resources"].as_mapping().cloned().unwrap_or_default();
    let glue_tables: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::Glue::Table"))
        .map(|r| &r["Properties"]["TableInput"])
        .collect();
    for table in Table::ALL {
        let Some(t) = glue_tables
            .iter()
            .find(|t| t["Name"].as_str() == Some(table.name()))
        else {
            problems.push(format!("{}: no AWS::Glue::Table", table.name()));
            continue;
        };
        let want = stedi::catalog::table_input(table, "${BucketName}")
            .map_err(|e| TemplateError::Shape(e.to_string()))?;
        let sd = &t["StorageDescriptor"];
        let want_sd = want.storage_descriptor();
        let location = sub_text(&sd["Location"]).unwrap_or("");
        if Some(location) != want_sd.and_then(|s| s.location()) {
            problems.push(format!("{}: location {location}", table.name()));
        }
        let want_cols: Vec<String> = table
            .columns()
            .iter()
            .map(|c| format!("{} {}", c.name, c.ty.glue()))
            .collect();
        let cols = column_list(&sd["Columns"]);
        if cols != want_cols {
            problems.push(format!(
                "{}: columns {cols:?}, schema has {want_cols:?}",
                table.name()
            ));
        }
        let parts = column_list(&t["PartitionKeys"]);
        let want_parts: Vec<String> = if table.partitioned() {
            vec!["dt string".into()]
        } else {
            Vec::new()
        };
        if parts != want_parts {
            problems.push(format!("{}: partition keys {parts:?}", table.name()));
        }
        let serde = sd["SerdeInfo"]["SerializationLibrary"].as_str();
        let want_serde = want_sd
            .and_then(|s| s.serde_info())
            .and_then(|s| s.serialization_library());
        if serde != want_serde {
            problems.push(format!("{}: SerDe {serde:?}", table.name()));
        }
    }
    let routes = routes(text)?;
    for t in stedi::Transition::ALL {
        let Some(route) = routes.iter().find(|r| r.function == t.name()) else {
            problems.push(format!("{}: no function with an SQS event", t.name()));
            continue;
        };
        let want: Vec<String> = t
            .sources()
            .iter()
            .map(|s| {
                let suffix = match s.format() {
                    Format::JsonLines => ".json",
                    Format::Parquet => ".parquet",
                };
                // Partitioned sources fire only for their `dt=` folders, not for the
                // compacted generations beside them.
                let folder = if s.partitioned() { "dt=" } else { "" };
                format!("{}{folder}*{suffix}", s.prefix())
            })
            .collect();
        if route.key_patterns != want {
            problems.push(format!(
                "{}: rule matches {:?}, the function accepts {want:?}",
                t.name(),
                route.key_patterns
            ));
        }
        // A reading filter takes a deleted landing file's rows out (deletions of the
        // current version only, a delete marker: the removal of old versions by an erasure
        // or the lifecycle rule leaves the file as it is); the others follow new objects.
        let (types, deletion): (&[&str], _) = match t.batches() {
            true => (
                &["Object Created", "Object Deleted"],
                Some(json!([{"exists": false}, "Delete Marker Created"])),
            ),
            false => (&["Object Created"], None),
        };
        let mut have = route.detail_types.clone();
        have.sort();
        if have != types || route.deletion_type != deletion {
            problems.push(format!(
                "{}: rule matches detail-type {:?} and deletion-type {:?}, the function follows \
                 {types:?} and {deletion:?}",
                t.name(),
                route.detail_types,
                route.deletion_type
            ));
        }
    }
    let erasure = format!("{}*.json", stedi::transitions::erasure::REQUESTS_PREFIX);
    match routes
        .iter()
        .find(|r| r.function == Function::Erasure.name())
    {
        Some(r) if r.key_patterns != [erasure.clone()] => problems.push(format!(
            "erasure: rule matches {:?}, the function accepts [{erasure:?}]",
            r.key_patterns
        )),
        _ => {}
    }
    for f in [Function::Reconcile, Function::Compact, Function::Erasure] {
        if !routes
            .iter()
            .any(|r| Function::from_name(&r.function) == Some(f))
        {
            problems.push(format!("{}: no function with an SQS event", f.name()));
        }
    }
    Ok(problems)
}

/// Whether `key` matches an EventBridge `wildcard` pattern (`*` matches any run; IAM's
/// resource and action patterns read the same way).
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

    fn template() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap()
    }

    #[test]
    fn the_template_agrees_with_the_schemas_and_routes() {
        assert_eq!(drift(&template()).unwrap(), Vec::<String>::new());
        let routes = routes(&template()).unwrap();
        let names: Vec<&str> = routes.iter().map(|r| r.function.as_str()).collect();
        assert_eq!(
            names,
            [
                "customer_landing_to_trusted",
                "accelerometer_landing_to_trusted",
                "customer_trusted_to_curated",
                "step_trainer_landing_to_trusted",
                "machine_learning_trusted_to_curated",
                "reconcile",
                "compact",
                "erasure"
            ]
        );
        // The queues each function sends to, by the variable naming them: what the local
        // runner gives each invocation.
        let sends: Vec<(&str, Vec<(&str, &str)>)> = routes
            .iter()
            .map(|r| {
                let env = r.queue_env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                (r.function.as_str(), env.collect::<Vec<_>>())
            })
            .filter(|(_, env)| !env.is_empty())
            .collect();
        assert_eq!(
            sends,
            [
                (
                    "customer_landing_to_trusted",
                    vec![("RECONCILE_QUEUE_URL", "ReconcileQueue")]
                ),
                (
                    "customer_trusted_to_curated",
                    vec![("STEP_TRAINER_QUEUE_URL", "StepTrainerLandingToTrustedQueue")]
                ),
                ("reconcile", vec![("RECONCILE_QUEUE_URL", "ReconcileQueue")]),
                ("compact", vec![("COMPACT_QUEUE_URL", "CompactQueue")]),
            ]
        );
        // Every function has its folder (crate and binary of the same name), and every
        // folder is a function.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../functions");
        let mut folders: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        folders.sort();
        let mut functions: Vec<&str> = stedi::lambda::Function::all().map(|f| f.name()).collect();
        functions.sort();
        assert_eq!(folders, functions);
        let sizes: Vec<usize> = routes.iter().map(|r| r.batch_size).collect();
        assert_eq!(sizes, [10, 100, 10, 100, 10, 5, 1, 1]);
        let erasure = &routes[7];
        assert_eq!(erasure.key_patterns, ["_stedi/erasure/requests/*.json"]);
        assert_eq!(erasure.dead_letter_queue, "ErasureDeadLetterQueue");
        // The rule's pattern is checked against the function's prefix.
        let moved = template().replace(
            "wildcard: \"_stedi/erasure/requests/*.json\"",
            "wildcard: \"_stedi/erasure/*.json\"",
        );
        assert_eq!(drift(&moved).unwrap().len(), 1);
    }

    #[test]
    fn a_functions_policy_allows_what_its_statements_name_and_nothing_else() {
        use stedi::store::Authorizer;
        let routes = routes(&template()).unwrap();
        let policy = |f: &str| {
            routes
                .iter()
                .find(|r| r.function == f)
                .unwrap()
                .policy
                .for_stack("lake", "db", "p-", "index")
        };
        let obj = |key: &str| format!("arn:aws:s3:::lake/{key}");
        let accel = policy("accelerometer_landing_to_trusted");
        assert!(accel.allows("s3:GetObject", &obj("accelerometer/landing/a.json")));
        assert!(accel.allows(
            "s3:PutObject",
            &obj("accelerometer/trusted/dt=2022-01-01/b.parquet")
        ));
        assert!(accel.allows("s3:ListBucket", "arn:aws:s3:::lake"));
        // Another zone, another bucket, an action it is not given.
        assert!(!accel.allows("s3:PutObject", &obj("customer/trusted/part-00000.parquet")));
        assert!(!accel.allows(
            "s3:GetObject",
            "arn:aws:s3:::other/accelerometer/landing/a.json"
        ));
        assert!(!accel.allows("s3:DeleteObject", &obj("accelerometer/landing/a.json")));
        assert!(!accel.allows("s3:DeleteBucket", "arn:aws:s3:::lake"));
        // A managed policy a function names (`!Ref`) is part of its policy; the customer
        // function computes phone files through it, and may not touch their landing data.
        let customer = policy("customer_landing_to_trusted");
        assert!(customer.allows("s3:PutObject", &obj("accelerometer/trusted/dt=x/b.parquet")));
        assert!(customer.allows("s3:PutObject", &obj("customer/trusted/part-00001.parquet")));
        assert!(customer.allows("s3:GetObject", &obj("accelerometer/landing/a.json")));
        assert!(!customer.allows("s3:DeleteObject", &obj("accelerometer/landing/a.json")));
        assert!(!customer.allows("s3:DeleteObject", &obj("customer/landing/a.json")));
        assert!(!customer.allows("s3:PutObject", &obj("_stedi/erasure/requests/r.json")));
        // Glue: its tables' partitions, not another's, not the table itself.
        let table = |t: &str| format!("arn:aws:glue:region:account:table/db/{t}");
        assert!(accel.allows("glue:GetPartition", &table("accelerometer_trusted")));
        assert!(accel.allows("glue:GetPartition", "arn:aws:glue:region:account:catalog"));
        assert!(accel.allows(
            "glue:GetPartition",
            "arn:aws:glue:region:account:database/db"
        ));
        assert!(!accel.allows("glue:GetPartition", &table("step_trainer_trusted")));
        assert!(!accel.allows("glue:DeleteTable", &table("accelerometer_trusted")));
        // SQS: the curated function (and the customer function through its managed policy)
        // may send to the Step Trainer queue, the phone function may not.
        let queue = "arn:aws:sqs:region:account:p-StepTrainerLandingToTrustedQueue";
        assert!(policy("customer_trusted_to_curated").allows("sqs:SendMessage", queue));
        assert!(customer.allows("sqs:SendMessage", queue));
        assert!(!accel.allows("sqs:SendMessage", queue));
        // DynamoDB: the index table, for the functions that compute landing files or join
        // trusted objects, and not for compaction; its write and query, not a scan.
        let index = "arn:aws:dynamodb:region:account:table/index";
        assert!(accel.allows("dynamodb:BatchWriteItem", index));
        assert!(customer.allows("dynamodb:Query", index));
        assert!(policy("reconcile").allows("dynamodb:Query", index));
        assert!(policy("erasure").allows("dynamodb:BatchWriteItem", index));
        let ml = policy("machine_learning_trusted_to_curated");
        assert!(ml.allows("dynamodb:Query", index));
        assert!(!accel.allows("dynamodb:Scan", index));
        assert!(!accel.allows(
            "dynamodb:Query",
            "arn:aws:dynamodb:region:account:table/other"
        ));
        assert!(!policy("compact").allows("dynamodb:Query", index));
        // Actions compare without case, as IAM's do.
        assert!(accel.allows("S3:GETOBJECT", &obj("accelerometer/landing/a.json")));
        let deny = IamPolicy {
            function: "f".into(),
            statements: vec![
                IamStatement {
                    allow: true,
                    actions: vec!["s3:*".into()],
                    resources: vec!["*".into()],
                },
                IamStatement {
                    allow: false,
                    actions: vec!["s3:Get*".into()],
                    resources: vec!["arn:aws:s3:::lake/secret/*".into()],
                },
            ],
        };
        assert!(deny.allows("s3:GetObject", &obj("open/x")));
        assert!(!deny.allows("s3:GetObject", &obj("secret/x")));
        assert!(deny.allows("s3:PutObject", &obj("secret/x")));
    }

    #[test]
    fn drift_is_caught() {
        let t = template();
        let changed_route = t.replacen(
            "wildcard: \"step_trainer/landing/*.json\"",
            "wildcard: \"step_trainer/landing/*\"",
            1,
        );
        assert_eq!(
            drift(&changed_route).unwrap(),
            [
                "step_trainer_landing_to_trusted: rule matches [\"step_trainer/landing/*\"], the function accepts [\"step_trainer/landing/*.json\"]"
            ]
        );
        let changed_column = t.replacen(
            "{Name: distancefromobject, Type: int}",
            "{Name: distancefromobject, Type: bigint}",
            1,
        );
        let problems = drift(&changed_column).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("step_trainer_landing: columns"),
            "{problems:?}"
        );
        let moved = t.replacen(
            "s3://${BucketName}/customer/curated/",
            "s3://${BucketName}/customer/cur/",
            1,
        );
        assert_eq!(
            drift(&moved).unwrap(),
            ["customer_curated: location s3://${BucketName}/customer/cur/"]
        );
    }

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
