//! The hand-written BSON encoder produces documents the `bson` crate parses
//! in full, with every field of the schema (no server needed).

use bson::Bson;
use spanrec::{Batch, Recorder, RecorderError, SpanLimits, Tracer, Value};
use spanrec_mongo::encode::{decimal128_to_u64, encode_span};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Encoded(Arc<Mutex<Vec<bson::Document>>>);

impl Recorder for Encoded {
    fn record(&mut self, batch: &Batch<'_>) -> Result<(), RecorderError> {
        for span in batch.iter() {
            let raw = encode_span(span, batch.process());
            check_content_hash(raw.as_bytes());
            let doc = raw
                .to_document()
                .map_err(|e| RecorderError::with_source("invalid BSON", e))?;
            self.0.lock().unwrap().push(doc);
        }
        Ok(())
    }
}

/// docs/mongo-schema.md: the last field is `hash`, an Int64 whose high 32
/// bits are the CRC-32 (IEEE) of the bytes of every element before it and
/// whose low 32 bits are their length.
fn check_content_hash(doc: &[u8]) {
    const HASH_ELEMENT: usize = 1 + 5 + 8; // type, "hash\0", i64
    let end = doc.len() - 1; // the document's trailing NUL
    let element = &doc[end - HASH_ELEMENT..end];
    assert_eq!(&element[..6], b"\x12hash\0", "hash is the last field");
    let value = i64::from_le_bytes(element[6..].try_into().unwrap()) as u64;
    let before = &doc[4..end - HASH_ELEMENT];
    assert_eq!(value >> 32, u64::from(crc32fast::hash(before)));
    assert_eq!(value & 0xffff_ffff, before.len() as u64);
}

#[test]
fn every_field_parses_back() {
    let out = Encoded::default();
    let t = Tracer::builder()
        .service_name("enc")
        .process_tag("host.name", "h1")
        .limits(SpanLimits {
            max_tags: 8,
            ..Default::default()
        })
        .recorder(out.clone())
        .build()
        .unwrap();
    let parent = t.start_span("parent");
    let mut s = t
        .span("child")
        .child_of(&parent)
        .follows_from(&parent)
        .start();
    s.set_tag("i", -1i64);
    s.set_tag("u", u64::MAX);
    s.set_tag("f", 0.5);
    s.set_tag("b", false);
    s.set_tag("$set.x", "nul\0inside");
    for i in 0..20 {
        s.set_tag(format!("extra{i}"), i);
    }
    s.set_baggage_item("user.name", "alice");
    for i in 0..12 {
        s.log("e", [("n", Value::from(i)), ("a.b", Value::from("v"))]);
    }
    s.finish();
    drop(parent);
    t.flush(Instant::now() + Duration::from_secs(10)).unwrap();
    assert_eq!(
        t.stats().recorder_errors,
        0,
        "{:?}",
        t.last_recorder_error()
    );
    let docs = out.0.lock().unwrap().clone();
    let d = docs
        .iter()
        .find(|d| d.get_str("name") == Ok("child"))
        .expect("child encoded");
    assert_eq!(d.get_array("references").unwrap().len(), 2);
    let tags = d.get_document("tags").unwrap();
    assert_eq!(tags.get("i"), Some(&Bson::Int64(-1)));
    assert!(
        matches!(tags.get("u"), Some(Bson::Decimal128(v)) if decimal128_to_u64(*v) == Some(u64::MAX))
    );
    assert_eq!(tags.get("f"), Some(&Bson::Double(0.5)));
    assert_eq!(tags.get("b"), Some(&Bson::Boolean(false)));
    assert_eq!(tags.get_str("%24set%2Ex").unwrap(), "nul\0inside");
    assert_eq!(tags.len(), 8);
    let logs = d.get_array("logs").unwrap();
    assert_eq!(logs.len(), 12);
    let last = logs[11].as_document().unwrap();
    assert_eq!(
        last.get_document("fields").unwrap().get("n"),
        Some(&Bson::Int64(11))
    );
    assert_eq!(
        d.get_document("baggage")
            .unwrap()
            .get_str("user%2Ename")
            .unwrap(),
        "alice"
    );
    assert_eq!(
        d.get_document("process")
            .unwrap()
            .get_str("host%2Ename")
            .unwrap(),
        "h1"
    );
    assert_eq!(
        d.get_document("truncated")
            .unwrap()
            .get_i32("tags")
            .unwrap(),
        17
    );
    assert!(d.get_bool("sampled").unwrap());
    let id = d.get_binary_generic("_id").unwrap();
    assert_eq!(id.len(), 24);
}
