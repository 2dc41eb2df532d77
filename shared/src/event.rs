//! One `parse_event` for every way an S3 object-created notice reaches a function:
//! SQS messages wrapping an EventBridge event or an S3 notification, an EventBridge
//! "Object Created" event itself, and the classic S3 notification (`Records[]`).
//!
//! S3 URL-encodes keys in its notifications the way HTML forms do (`+` is a space, `%2B` a
//! plus), so every key is form-decoded here, once. `s3:TestEvent` yields no objects.

use serde_json::Value;

use crate::error::{Error, Result};

/// One object-created notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Bucket name.
    pub bucket: String,
    /// Decoded object key.
    pub key: String,
    /// The SQS message id it came in, for `batchItemFailures`.
    pub message_id: Option<String>,
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

/// Parses any supported invocation payload.
pub fn parse_event(payload: &Value) -> Result<ParsedEvent> {
    let Some(records) = payload.get("Records").and_then(Value::as_array) else {
        let mut out = ParsedEvent::default();
        parse_notice(payload, None, &mut out.objects)?;
        return Ok(out);
    };
    let mut out = ParsedEvent::default();
    for record in records {
        if record.get("eventSource").and_then(Value::as_str) == Some("aws:sqs") {
            out.from_sqs = true;
            let id = str_at(record, &["messageId"])
                .unwrap_or_default()
                .to_string();
            let body = str_at(record, &["body"]).unwrap_or_default();
            let parsed = serde_json::from_str::<Value>(body)
                .map_err(|e| Error::BadEvent(format!("SQS body is not JSON: {e}")))
                .and_then(|v| parse_notice(&v, Some(&id), &mut out.objects));
            if let Err(e) = parsed {
                out.unreadable.push((id, e.to_string()));
            }
        } else {
            parse_s3_record(record, None, &mut out.objects)?;
        }
    }
    Ok(out)
}

/// One notice: an EventBridge event, an S3 notification, or a test event.
fn parse_notice(v: &Value, message_id: Option<&str>, out: &mut Vec<ObjectRef>) -> Result<()> {
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(());
    }
    if let Some(records) = v.get("Records").and_then(Value::as_array) {
        for r in records {
            parse_s3_record(r, message_id, out)?;
        }
        return Ok(());
    }
    if v.get("source").and_then(Value::as_str) == Some("aws.s3") {
        let detail_type = str_at(v, &["detail-type"]).unwrap_or_default();
        if detail_type != "Object Created" {
            return Ok(());
        }
        let bucket = str_at(v, &["detail", "bucket", "name"]);
        let key = str_at(v, &["detail", "object", "key"]);
        return match (bucket, key) {
            (Some(b), Some(k)) => {
                out.push(object(b, k, message_id));
                Ok(())
            }
            _ => Err(Error::BadEvent(
                "EventBridge event without detail.bucket.name / detail.object.key".into(),
            )),
        };
    }
    Err(Error::BadEvent(
        "neither an S3 notification, an EventBridge S3 event nor an SQS batch".into(),
    ))
}

fn parse_s3_record(r: &Value, message_id: Option<&str>, out: &mut Vec<ObjectRef>) -> Result<()> {
    let name = str_at(r, &["eventName"]).unwrap_or_default();
    if !name.starts_with("ObjectCreated") {
        return Ok(());
    }
    match (
        str_at(r, &["s3", "bucket", "name"]),
        str_at(r, &["s3", "object", "key"]),
    ) {
        (Some(b), Some(k)) => {
            out.push(object(b, k, message_id));
            Ok(())
        }
        _ => Err(Error::BadEvent(
            "S3 record without s3.bucket.name / s3.object.key".into(),
        )),
    }
}

fn object(bucket: &str, raw_key: &str, message_id: Option<&str>) -> ObjectRef {
    ObjectRef {
        bucket: bucket.to_string(),
        key: decode_key(raw_key),
        message_id: message_id.map(str::to_string),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, p| v.get(*p))?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s3_notification(key: &str) -> Value {
        json!({"Records": [{
            "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "lake"}, "object": {"key": key, "size": 3}}
        }]})
    }

    fn eventbridge(key: &str) -> Value {
        json!({"version": "0", "source": "aws.s3", "detail-type": "Object Created",
               "detail": {"bucket": {"name": "lake"}, "object": {"key": key}}})
    }

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

    #[test]
    fn test_events_and_other_kinds_are_no_ops() {
        let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "lake"});
        assert!(parse_event(&test).unwrap().objects.is_empty());
        assert!(parse_event(&sqs(&[test])).unwrap().objects.is_empty());
        let mut del = eventbridge("a.json");
        del["detail-type"] = json!("Object Deleted");
        assert!(parse_event(&del).unwrap().objects.is_empty());
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
        assert_eq!(seen, 15);
        let odd = dir.join("customer_landing_to_trusted.odd-key.s3.json");
        let v: Value = serde_json::from_slice(&std::fs::read(odd).unwrap()).unwrap();
        assert_eq!(
            parse_event(&v).unwrap().objects[0].key,
            "customer/landing/my file+1 ✓.json"
        );
    }

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
}
