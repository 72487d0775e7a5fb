//! A span document as the CLI reads it (the schema is `docs/mongo-schema.md`).

use bson::{Bson, Document};
use spanrec_mongo::encode::{decimal128_to_u64, unescape_key};

/// One span, decoded for display.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanDoc {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub service: String,
    pub start_ns: i64,
    pub duration_ns: i64,
    /// Tags with keys unescaped and values rendered (types kept in JSON).
    pub tags: Vec<(String, serde_json::Value)>,
    pub logs: Vec<LogDoc>,
    pub baggage: Vec<(String, String)>,
    /// Every reference, in order (`parent_span_id` is the first child-of).
    pub references: Vec<RefDoc>,
    /// The recording process's tags.
    pub process: Vec<(String, String)>,
}

/// One reference of a span.
#[derive(Debug, Clone, PartialEq)]
pub struct RefDoc {
    /// `child_of` or `follows_from`.
    pub kind: String,
    pub trace_id: String,
    pub span_id: String,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LogDoc {
    pub time_ns: i64,
    pub event: String,
    pub fields: Vec<(String, serde_json::Value)>,
}

fn string(doc: &Document, key: &str) -> String {
    doc.get_str(key).unwrap_or_default().to_owned()
}

fn int(doc: &Document, key: &str) -> i64 {
    doc.get_i64(key).unwrap_or_default()
}

/// A BSON value as JSON, keeping what the schema encodes: Decimal128 with
/// exponent 0 is a `u64`.
pub fn value(b: &Bson) -> serde_json::Value {
    match b {
        Bson::Int64(v) => (*v).into(),
        Bson::Int32(v) => (*v).into(),
        Bson::Double(v) => serde_json::Number::from_f64(*v)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| v.to_string().into()),
        Bson::Boolean(v) => (*v).into(),
        Bson::String(v) => v.clone().into(),
        Bson::Decimal128(d) => match decimal128_to_u64(*d) {
            Some(v) => v.into(),
            None => d.to_string().into(),
        },
        other => other.to_string().into(),
    }
}

fn fields(doc: Option<&Document>) -> Vec<(String, serde_json::Value)> {
    doc.map(|d| d.iter().map(|(k, v)| (unescape_key(k), value(v))).collect())
        .unwrap_or_default()
}

impl SpanDoc {
    /// Decodes a span document; missing fields decode as empty.
    pub fn from_document(doc: &Document) -> SpanDoc {
        let logs = doc
            .get_array("logs")
            .map(|logs| {
                logs.iter()
                    .filter_map(Bson::as_document)
                    .map(|l| LogDoc {
                        time_ns: int(l, "time_ns"),
                        event: string(l, "event"),
                        fields: fields(l.get_document("fields").ok()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let strings = |key: &str| -> Vec<(String, String)> {
            doc.get_document(key)
                .map(|b| {
                    b.iter()
                        .map(|(k, v)| (unescape_key(k), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let references = doc
            .get_array("references")
            .map(|refs| {
                refs.iter()
                    .filter_map(Bson::as_document)
                    .map(|r| RefDoc {
                        kind: string(r, "kind"),
                        trace_id: string(r, "trace_id"),
                        span_id: string(r, "span_id"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        SpanDoc {
            references,
            process: strings("process"),
            trace_id: string(doc, "trace_id"),
            span_id: string(doc, "span_id"),
            parent_span_id: doc.get_str("parent_span_id").ok().map(str::to_owned),
            name: string(doc, "name"),
            service: string(doc, "service"),
            start_ns: int(doc, "start_ns"),
            duration_ns: int(doc, "duration_ns"),
            tags: fields(doc.get_document("tags").ok()),
            logs,
            baggage: strings("baggage"),
        }
    }

    /// Whether the span is tagged as failed (`error = true`, the
    /// OpenTracing convention).
    pub fn is_error(&self) -> bool {
        self.tags
            .iter()
            .any(|(k, v)| k == "error" && v == &serde_json::Value::Bool(true))
    }

    /// The span as JSON (for `--json`).
    pub fn to_json(&self) -> serde_json::Value {
        let obj = |pairs: &[(String, serde_json::Value)]| {
            serde_json::Value::Object(pairs.iter().cloned().collect())
        };
        serde_json::json!({
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "service": self.service,
            "start_ns": self.start_ns,
            "duration_ns": self.duration_ns,
            "tags": obj(&self.tags),
            "logs": self.logs.iter().map(|l| serde_json::json!({
                "time_ns": l.time_ns,
                "event": l.event,
                "fields": obj(&l.fields),
            })).collect::<Vec<_>>(),
            "baggage": serde_json::Value::Object(
                self.baggage.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect()
            ),
        })
    }
}

/// A duration in a short human form (`850ns`, `12.3µs`, `4.56ms`, `1.20s`).
pub fn human_duration(ns: i64) -> String {
    let ns = ns.max(0) as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

/// A JSON value as shown in text output (strings unquoted).
pub fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(850), "850ns");
        assert_eq!(human_duration(12_345), "12.3µs");
        assert_eq!(human_duration(4_560_000), "4.56ms");
        assert_eq!(human_duration(1_200_000_000), "1.20s");
    }
}
