//! One `parse_event` for every way an S3 object-created or object-deleted notice reaches a
//! function: SQS messages wrapping an EventBridge event or an S3 notification, an
//! EventBridge "Object Created" or "Object Deleted" event itself, and the classic S3
//! notification (`Records[]`, `ObjectCreated:*` and `ObjectRemoved:*`). Both kinds name the
//! object whose outputs are to follow it: a transition reads the object as it is when it
//! runs (a deleted one takes its outputs with it), so which kind came, and in what order,
//! does not matter.
//!
//! SQS batches and EventBridge envelopes are read into the typed events of
//! `aws_lambda_events` ([`SqsEvent`], `EventBridgeEvent` with an [`S3ObjectDetail`]); of a
//! classic S3 notification only what is used is read (a record's `eventName`, then its
//! `s3` bucket and key), so hand-made notifications need nothing more. The functions answer
//! SQS batches with an [`SqsBatchResponse`]. S3 URL-encodes keys in its notifications the way
//! HTML forms do (`+` is a space, `%2B` a plus), so every key is form-decoded here, once.
//! `s3:TestEvent` and other kinds of S3 event (tagging, restore) yield no objects. An SQS message whose body is not a notice is
//! reported in [`ParsedEvent::unreadable`] (the caller logs and acknowledges it), so it
//! never fails the rest of its batch.

#[cfg(feature = "aws")]
use aws_lambda_events::eventbridge::EventBridgeEvent;
#[cfg(feature = "aws")]
use aws_lambda_events::sqs::SqsMessage;
#[cfg(feature = "aws")]
pub use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
#[cfg(feature = "aws")]
use serde::Deserialize;
#[cfg(feature = "aws")]
use serde_json::Value;

#[cfg(feature = "aws")]
use crate::error::{Error, Result};

/// One notice of an object created or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Bucket name.
    pub bucket: String,
    /// Decoded object key.
    pub key: String,
    /// The SQS message id it came in, for `batchItemFailures`.
    pub message_id: Option<String>,
    /// Whether SQS delivers the message again (`ApproximateReceiveCount` above 1): an
    /// earlier attempt may have stopped half-way.
    pub redelivered: bool,
}

#[cfg(feature = "aws")]
tokio::task_local! {
    /// Whether the object the current task processes is redelivered (see [`ObjectRef`]).
    static REDELIVERED: bool;
}

/// Runs `f` as the processing of an object that is (or is not) `redelivered`.
#[cfg(feature = "aws")]
pub async fn delivery<F: std::future::Future>(redelivered: bool, f: F) -> F::Output {
    REDELIVERED.scope(redelivered, f).await
}

/// Whether the object being processed is redelivered: a transition whose follow-up work is
/// derived from what its first write changed does that work again (false outside
/// [`delivery`]).
#[cfg(feature = "aws")]
pub fn redelivered() -> bool {
    REDELIVERED.try_with(|r| *r).unwrap_or(false)
}

/// What an invocation payload holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedEvent {
    /// The objects to process, in arrival order.
    pub objects: Vec<ObjectRef>,
    /// Whether the payload came from SQS (partial batch failures are then reported).
    pub from_sqs: bool,
    /// SQS messages whose body is not a notice we understand (acknowledged, logged).
    pub unreadable: Vec<(String, String)>,
}

/// Decodes an `application/x-www-form-urlencoded` key: `+` is a space, `%XX` a byte.
pub fn decode_key(raw: &str) -> String {
    form_urlencoded::parse(format!("k={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Encodes a key the way S3 does in its notifications (the inverse of [`decode_key`]).
pub fn encode_key(key: &str) -> String {
    form_urlencoded::byte_serialize(key.as_bytes())
        .collect::<String>()
        .replace("%2F", "/")
}

/// A classic S3 notification of one new object (what `stedi run` and the tests invoke a
/// function with), its key encoded as S3 encodes it.
pub fn s3_notification(bucket: &str, key: &str) -> serde_json::Value {
    serde_json::json!({"Records": [{
        "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": encode_key(key)}}
    }]})
}

/// The `detail` of an EventBridge event from S3 (`source: aws.s3`), as far as it is read
/// here (`aws_lambda_events` types the envelope, not this detail); also the `s3` of a
/// classic notification's record.
#[cfg(feature = "aws")]
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3ObjectDetail {
    /// The bucket.
    pub bucket: S3DetailBucket,
    /// The object.
    pub object: S3DetailObject,
}

/// `detail.bucket` of an EventBridge S3 event.
#[cfg(feature = "aws")]
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3DetailBucket {
    /// Bucket name.
    pub name: String,
}

/// `detail.object` of an EventBridge S3 event.
#[cfg(feature = "aws")]
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3DetailObject {
    /// The URL-encoded key.
    pub key: String,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// The SQS batch `payload` is, if it is one (its records come from `aws:sqs`).
#[cfg(feature = "aws")]
pub fn sqs_batch(payload: &Value) -> Result<Option<SqsEvent>> {
    let first = payload
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|r| r.first());
    if first
        .and_then(|r| r.get("eventSource"))
        .and_then(Value::as_str)
        != Some("aws:sqs")
    {
        return Ok(None);
    }
    SqsEvent::deserialize(payload)
        .map(Some)
        .map_err(|source| Error::MalformedEvent {
            context: "SQS batch".into(),
            source,
        })
}

/// Parses any supported invocation payload.
#[cfg(feature = "aws")]
pub fn parse_event(payload: &Value) -> Result<ParsedEvent> {
    if let Some(batch) = sqs_batch(payload)? {
        return Ok(parse_sqs(&batch));
    }
    let mut out = ParsedEvent::default();
    parse_notice(payload, None, &mut out.objects)?;
    Ok(out)
}

/// The objects of an SQS batch; a message that is not a notice is reported unreadable.
#[cfg(feature = "aws")]
pub fn parse_sqs(batch: &SqsEvent) -> ParsedEvent {
    let mut out = ParsedEvent {
        from_sqs: true,
        ..ParsedEvent::default()
    };
    for m in &batch.records {
        let id = m.message_id.clone().unwrap_or_default();
        let first = out.objects.len();
        let parsed = sqs_body(m).and_then(|v| parse_notice(&v, Some(&id), &mut out.objects));
        if let Err(e) = parsed {
            out.unreadable.push((id, e.to_string()));
        }
        let received = m
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|n| n.parse::<u32>().ok());
        for o in &mut out.objects[first..] {
            o.redelivered = received.is_some_and(|n| n > 1);
        }
    }
    out
}

/// An SQS message's body as JSON.
#[cfg(feature = "aws")]
pub fn sqs_body(m: &SqsMessage) -> Result<Value> {
    let body = m
        .body
        .as_deref()
        .ok_or_else(|| Error::BadEvent("SQS message without a body".into()))?;
    serde_json::from_str(body).map_err(|source| Error::MalformedEvent {
        context: "SQS body is not JSON".into(),
        source,
    })
}

/// One notice: an EventBridge event, an S3 notification, or a test event.
#[cfg(feature = "aws")]
fn parse_notice(v: &Value, message_id: Option<&str>, out: &mut Vec<ObjectRef>) -> Result<()> {
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(());
    }
    if let Some(records) = v.get("Records").and_then(Value::as_array) {
        for r in records {
            if let Some(s3) = created_or_removed(r)? {
                out.push(object(&s3.bucket.name, &s3.object.key, message_id));
            }
        }
        return Ok(());
    }
    if v.get("source").and_then(Value::as_str) == Some("aws.s3") {
        let malformed = |source| Error::MalformedEvent {
            context: "EventBridge S3 event".into(),
            source,
        };
        let ev = EventBridgeEvent::<Value>::deserialize(v).map_err(malformed)?;
        if !matches!(ev.detail_type.as_str(), "Object Created" | "Object Deleted") {
            return Ok(());
        }
        let detail = S3ObjectDetail::deserialize(&ev.detail).map_err(malformed)?;
        out.push(object(&detail.bucket.name, &detail.object.key, message_id));
        return Ok(());
    }
    Err(Error::BadEvent(
        "neither an S3 notification, an EventBridge S3 event nor an SQS batch".into(),
    ))
}

/// A record of a classic S3 notification (`Records[]`), as far as it is read here.
#[cfg(feature = "aws")]
#[derive(Deserialize)]
struct S3Record {
    /// The bucket and object (shaped as an EventBridge event's detail).
    s3: S3ObjectDetail,
}

/// The bucket and object of an S3 notification record if it is an `ObjectCreated` or
/// `ObjectRemoved` one; any other record is skipped unread.
#[cfg(feature = "aws")]
fn created_or_removed(record: &Value) -> Result<Option<S3ObjectDetail>> {
    let name = record.get("eventName").and_then(Value::as_str);
    if !name.is_some_and(|n| n.starts_with("ObjectCreated") || n.starts_with("ObjectRemoved")) {
        return Ok(None);
    }
    let r = S3Record::deserialize(record).map_err(|source| Error::MalformedEvent {
        context: "S3 notification record".into(),
        source,
    })?;
    Ok(Some(r.s3))
}

#[cfg(feature = "aws")]
fn object(bucket: &str, raw_key: &str, message_id: Option<&str>) -> ObjectRef {
    ObjectRef {
        bucket: bucket.to_string(),
        key: decode_key(raw_key),
        message_id: message_id.map(str::to_string),
        redelivered: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "aws")]
    use serde_json::{Value, json};

    #[cfg(feature = "aws")]
    fn s3_notification(key: &str) -> Value {
        json!({"Records": [{
            "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "lake"}, "object": {"key": key, "size": 3}}
        }]})
    }

    #[cfg(feature = "aws")]
    fn eventbridge(key: &str) -> Value {
        json!({"version": "0", "source": "aws.s3", "detail-type": "Object Created",
               "detail": {"bucket": {"name": "lake"}, "object": {"key": key}}})
    }

    #[cfg(feature = "aws")]
    fn sqs(bodies: &[Value]) -> Value {
        let records: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                json!({"eventSource": "aws:sqs", "messageId": format!("m{i}"),
                                 "body": b.to_string()})
            })
            .collect();
        json!({ "Records": records })
    }

    #[test]
    fn keys_are_form_decoded() {
        assert_eq!(decode_key("a+b.json"), "a b.json");
        assert_eq!(decode_key("noog%2bnork"), "noog+nork");
        assert_eq!(decode_key("noog%2Bnork"), "noog+nork");
        assert_eq!(
            decode_key("%E4%BD%A0%E5%A5%BD/%F0%9F%98%8A.json"),
            "你好/😊.json"
        );
        for k in ["a b+c/你好 😊.json", "x%y=z&w.json"] {
            assert_eq!(decode_key(&encode_key(k)), k);
        }
        assert_eq!(
            encode_key("customer/landing/a b+c.json"),
            "customer/landing/a+b%2Bc.json"
        );
    }

    #[cfg(feature = "aws")]
    #[test]
    fn every_form_yields_the_same_object() {
        let raw = "customer/landing/my+file%2B1%E2%9C%93.json";
        let want = "customer/landing/my file+1✓.json";
        for ev in [
            s3_notification(raw),
            eventbridge(raw),
            sqs(&[eventbridge(raw)]),
            sqs(&[s3_notification(raw)]),
        ] {
            let p = parse_event(&ev).unwrap();
            assert_eq!(p.objects.len(), 1, "{ev}");
            assert_eq!(p.objects[0].bucket, "lake");
            assert_eq!(p.objects[0].key, want);
        }
        let p = parse_event(&sqs(&[eventbridge(raw), eventbridge("b.json")])).unwrap();
        assert!(p.from_sqs);
        let ids: Vec<_> = p.objects.iter().map(|o| o.message_id.clone()).collect();
        assert_eq!(ids, [Some("m0".to_string()), Some("m1".to_string())]);
    }

    #[cfg(feature = "aws")]
    #[test]
    fn test_events_and_other_kinds_are_no_ops() {
        let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "lake"});
        assert!(parse_event(&test).unwrap().objects.is_empty());
        assert!(parse_event(&sqs(&[test])).unwrap().objects.is_empty());
        let mut restored = eventbridge("a.json");
        restored["detail-type"] = json!("Object Restore Completed");
        assert!(parse_event(&restored).unwrap().objects.is_empty());
        // A deletion names its object, as a creation does.
        let mut deleted = eventbridge("a+b.json");
        deleted["detail-type"] = json!("Object Deleted");
        let p = parse_event(&sqs(&[deleted])).unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.objects[0].key, "a b.json");
    }

    #[cfg(feature = "aws")]
    #[test]
    fn the_sample_events_parse_to_keys_their_function_accepts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
        let mut seen = 0;
        for t in crate::Transition::ALL {
            for form in ["s3", "eventbridge", "sqs"] {
                let path = dir.join(format!("{}.{form}.json", t.name()));
                let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                let p = parse_event(&v).unwrap();
                assert_eq!(p.objects.len(), 1, "{}", path.display());
                assert_eq!(p.from_sqs, form == "sqs");
                let o = &p.objects[0];
                crate::keys::accept(&o.bucket, &o.key, t.sources()).unwrap();
                seen += 1;
            }
        }
        assert_eq!(seen, 3 * crate::Transition::ALL.len());
        let odd = dir.join("customer_landing_to_trusted.odd-key.s3.json");
        let v: Value = serde_json::from_slice(&std::fs::read(odd).unwrap()).unwrap();
        assert_eq!(
            parse_event(&v).unwrap().objects[0].key,
            "customer/landing/my file+1 ✓.json"
        );
    }

    #[cfg(feature = "aws")]
    #[test]
    fn garbage_is_a_clear_error_and_a_bad_sqs_body_is_isolated() {
        let e = parse_event(&json!({"hello": 1})).unwrap_err();
        assert!(e.to_string().starts_with("unrecognised event"), "{e}");
        let mut batch = sqs(&[eventbridge("a.json")]);
        batch["Records"]
            .as_array_mut()
            .unwrap()
            .push(json!({"eventSource": "aws:sqs", "messageId": "bad", "body": "{not json"}));
        let p = parse_event(&batch).unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.unreadable.len(), 1);
        assert_eq!(p.unreadable[0].0, "bad");
    }

    #[cfg(feature = "aws")]
    #[test]
    fn notifications_as_aws_sends_them_are_typed() {
        // A complete S3 notification, delivered straight to SQS, and S3's test event.
        let full = json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-23T10:00:00.000Z", "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:EXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "R", "x-amz-id-2": "I"},
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
                   "bucket": {"name": "lake", "ownerIdentity": {"principalId": "A"},
                              "arn": "arn:aws:s3:::lake"},
                   "object": {"key": "customer/landing/a+b.json", "size": 3,
                              "eTag": "e", "sequencer": "0A"}}
        }]});
        let s3 = created_or_removed(&full["Records"][0]).unwrap().unwrap();
        assert_eq!(s3.object.size, Some(3));
        let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent",
                          "Time": "2026-11-23T10:00:00.000Z", "Bucket": "lake"});
        let p = parse_event(&sqs(&[full, test])).unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.objects[0].key, "customer/landing/a b.json");
        assert_eq!(p.objects[0].message_id.as_deref(), Some("m0"));
        assert!(p.unreadable.is_empty());
    }

    #[cfg(feature = "aws")]
    #[test]
    fn malformed_notices_are_errors_and_isolated_in_a_batch() {
        let no_detail = json!({"source": "aws.s3", "detail-type": "Object Created"});
        let no_key = json!({"source": "aws.s3", "detail-type": "Object Created",
                            "detail": {"bucket": {"name": "lake"}, "object": {}}});
        let bad_record = json!({"Records": [{"eventName": "ObjectCreated:Put"}]});
        for ev in [&no_detail, &no_key, &bad_record] {
            let e = parse_event(ev).unwrap_err();
            assert!(e.to_string().starts_with("unrecognised event"), "{e}");
            assert!(!e.is_retryable());
        }
        let mut batch = sqs(&[no_key, eventbridge("a.json"), json!(["not", "a", "notice"])]);
        // A message without a body at all.
        batch["Records"]
            .as_array_mut()
            .unwrap()
            .push(json!({"eventSource": "aws:sqs", "messageId": "nobody"}));
        let p = parse_event(&batch).unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.objects[0].message_id.as_deref(), Some("m1"));
        let ids: Vec<&str> = p.unreadable.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["m0", "m2", "nobody"]);
        // A batch that is not an SQS batch's shape fails as a whole.
        let e =
            parse_event(&json!({"Records": [{"eventSource": "aws:sqs", "body": 5}]})).unwrap_err();
        assert!(
            e.to_string().starts_with("unrecognised event: SQS batch"),
            "{e}"
        );
    }

    #[cfg(feature = "aws")]
    #[test]
    fn records_of_other_events_are_skipped_unread() {
        // Malformed, but not about an object created or removed: skipped, not an error.
        let tagged = json!({"eventName": "ObjectTagging:Put", "s3": 5});
        let nameless = json!({"s3": {"bucket": {}}});
        let mut removed = s3_notification("b.json")["Records"][0].clone();
        removed["eventName"] = json!("ObjectRemoved:DeleteMarkerCreated");
        let created = s3_notification("a.json")["Records"][0].clone();
        let ev = json!({"Records": [tagged, nameless, created, removed]});
        let p = parse_event(&ev).unwrap();
        let keys: Vec<&str> = p.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a.json", "b.json"]);
        // The same record as an object-created one is an error.
        let created = json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": 5}]});
        let e = parse_event(&created).unwrap_err();
        assert!(matches!(e, Error::MalformedEvent { .. }), "{e}");
        assert!(!e.is_retryable());
    }
}
