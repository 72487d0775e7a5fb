//! `spanrec export`: spans as files the usual viewers open.
//!
//! - `otlp-json`: an OTLP `ExportTraceServiceRequest` in the protocol's
//!   JSON mapping (OTLP specification, "JSON Protobuf Encoding": ids as
//!   hex, 64-bit integers as strings, enums as numbers, lowerCamelCase
//!   names). Collectors and Jaeger (`/api/v3`, UI upload) read it.
//! - `jaeger-json`: Jaeger's JSON trace format (what its query API returns
//!   and its UI's "JSON File" upload reads): microsecond times, typed tags,
//!   processes by id.
//! - `chrome-trace`: Chrome's trace-event format ("JSON Object Format":
//!   complete `X` events, instant `i` events for logs), for Perfetto and
//!   `chrome://tracing`; spans are laid out in lanes (`tid`) so that each
//!   lane nests properly; times are microseconds from the first span
//!   (`otherData.unix_start_ns` holds its absolute time).
//!
//! Mapping of what OTLP and Jaeger lack: baggage items become attributes
//! (tags) `baggage.<key>`; references other than the parent become links
//! (OTLP, attribute `opentracing.ref_type`) or references (Jaeger); the
//! tag `error = true` sets OTLP's status to error.

use crate::model::{RefDoc, SpanDoc};
use serde_json::{json, Map, Value};

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExportFormat {
    /// OTLP JSON (`ExportTraceServiceRequest`).
    OtlpJson,
    /// Jaeger's JSON trace format.
    JaegerJson,
    /// Chrome trace-event JSON (Perfetto, chrome://tracing).
    ChromeTrace,
}

/// `spans` in `format`, as one JSON document.
pub(crate) fn export(spans: &[SpanDoc], format: ExportFormat) -> Value {
    match format {
        ExportFormat::OtlpJson => otlp(spans),
        ExportFormat::JaegerJson => jaeger(spans),
        ExportFormat::ChromeTrace => chrome(spans),
    }
}

fn start_end(s: &SpanDoc) -> (u64, u64) {
    let start = s.start_ns.max(0) as u64;
    (start, start + s.duration_ns.max(0) as u64)
}

/// Spans grouped by (service, process tags), first appearance order.
fn by_process(spans: &[SpanDoc]) -> Vec<(&SpanDoc, Vec<&SpanDoc>)> {
    let mut groups: Vec<(&SpanDoc, Vec<&SpanDoc>)> = Vec::new();
    for s in spans {
        match groups
            .iter_mut()
            .find(|(p, _)| p.service == s.service && p.process == s.process)
        {
            Some((_, v)) => v.push(s),
            None => groups.push((s, vec![s])),
        }
    }
    groups
}

/// The references beyond the parent (the first child-of, which
/// `parent_span_id` already holds).
fn other_references(s: &SpanDoc) -> impl Iterator<Item = &RefDoc> {
    let parent = s
        .references
        .iter()
        .position(|r| Some(&r.span_id) == s.parent_span_id.as_ref() && r.trace_id == s.trace_id);
    s.references
        .iter()
        .enumerate()
        .filter(move |(i, _)| Some(*i) != parent)
        .map(|(_, r)| r)
}

fn otlp_value(v: &Value) -> Value {
    match v {
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() => json!({ "intValue": n.to_string() }),
        // A u64 above i64::MAX does not fit OTLP's int64: kept exactly as text.
        Value::Number(n) if n.is_u64() => json!({ "stringValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n.as_f64() }),
        Value::String(s) => json!({ "stringValue": s }),
        other => json!({ "stringValue": other.to_string() }),
    }
}

fn otlp_attributes<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Array(
        pairs
            .into_iter()
            .map(|(k, v)| json!({ "key": k, "value": otlp_value(&v) }))
            .collect(),
    )
}

fn otlp(spans: &[SpanDoc]) -> Value {
    let resource_spans: Vec<Value> = by_process(spans)
        .into_iter()
        .map(|(p, group)| {
            let resource = std::iter::once(("service.name", Value::from(p.service.as_str())))
                .chain(
                    p.process
                        .iter()
                        .map(|(k, v)| (k.as_str(), Value::from(v.as_str()))),
                );
            let spans: Vec<Value> = group.iter().map(|s| otlp_span(s)).collect();
            json!({
                "resource": { "attributes": otlp_attributes(resource) },
                "scopeSpans": [{ "scope": { "name": "spanrec" }, "spans": spans }],
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
}

fn otlp_span(s: &SpanDoc) -> Value {
    let (start, end) = start_end(s);
    let mut attrs: Vec<Value> = s
        .tags
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": otlp_value(v) }))
        .collect();
    attrs.extend(
        s.baggage
            .iter()
            .map(|(k, v)| json!({ "key": format!("baggage.{k}"), "value": { "stringValue": v } })),
    );
    let events: Vec<Value> = s
        .logs
        .iter()
        .map(|l| {
            json!({
                "timeUnixNano": l.time_ns.max(0).to_string(),
                "name": l.event,
                "attributes": otlp_attributes(l.fields.iter().map(|(k, v)| (k.as_str(), v.clone()))),
            })
        })
        .collect();
    let links: Vec<Value> = other_references(s)
        .map(|r| {
            json!({
                "traceId": r.trace_id,
                "spanId": r.span_id,
                "attributes": [{ "key": "opentracing.ref_type", "value": { "stringValue": r.kind } }],
            })
        })
        .collect();
    let mut span = Map::new();
    span.insert("traceId".into(), s.trace_id.clone().into());
    span.insert("spanId".into(), s.span_id.clone().into());
    if let Some(p) = &s.parent_span_id {
        span.insert("parentSpanId".into(), p.clone().into());
    }
    span.insert("name".into(), s.name.clone().into());
    // SPAN_KIND_INTERNAL: OpenTracing-style spans carry no kind.
    span.insert("kind".into(), 1.into());
    span.insert("startTimeUnixNano".into(), start.to_string().into());
    span.insert("endTimeUnixNano".into(), end.to_string().into());
    span.insert("attributes".into(), Value::Array(attrs));
    span.insert("events".into(), Value::Array(events));
    span.insert("links".into(), Value::Array(links));
    // STATUS_CODE_ERROR for the OpenTracing `error = true` tag.
    if s.is_error() {
        span.insert("status".into(), json!({ "code": 2 }));
    }
    Value::Object(span)
}

fn jaeger_tag(k: &str, v: &Value) -> Value {
    let (kind, value) = match v {
        Value::Bool(b) => ("bool", json!(b)),
        Value::Number(n) if n.is_i64() => ("int64", json!(n)),
        Value::Number(n) if n.is_u64() => ("string", json!(n.to_string())),
        Value::Number(n) => ("float64", json!(n)),
        Value::String(s) => ("string", json!(s)),
        other => ("string", json!(other.to_string())),
    };
    json!({ "key": k, "type": kind, "value": value })
}

fn jaeger(spans: &[SpanDoc]) -> Value {
    let mut traces: Vec<(&str, Vec<&SpanDoc>)> = Vec::new();
    for s in spans {
        match traces.iter_mut().find(|(t, _)| *t == s.trace_id) {
            Some((_, v)) => v.push(s),
            None => traces.push((&s.trace_id, vec![s])),
        }
    }
    let data: Vec<Value> = traces
        .into_iter()
        .map(|(trace_id, group)| {
            let owned: Vec<SpanDoc> = group.iter().map(|s| (*s).clone()).collect();
            let processes = by_process(&owned);
            let process_id = |s: &SpanDoc| {
                processes
                    .iter()
                    .position(|(p, _)| p.service == s.service && p.process == s.process)
                    .map_or("p0".to_string(), |i| format!("p{}", i + 1))
            };
            let spans: Vec<Value> = group
                .iter()
                .map(|s| {
                    let (start, end) = start_end(s);
                    let mut references: Vec<Value> = Vec::new();
                    if let Some(p) = &s.parent_span_id {
                        references.push(
                            json!({ "refType": "CHILD_OF", "traceID": s.trace_id, "spanID": p }),
                        );
                    }
                    for r in other_references(s) {
                        let kind = if r.kind == "follows_from" {
                            "FOLLOWS_FROM"
                        } else {
                            "CHILD_OF"
                        };
                        references.push(
                            json!({ "refType": kind, "traceID": r.trace_id, "spanID": r.span_id }),
                        );
                    }
                    let tags: Vec<Value> = s
                        .tags
                        .iter()
                        .map(|(k, v)| jaeger_tag(k, v))
                        .chain(s.baggage.iter().map(|(k, v)| {
                            jaeger_tag(&format!("baggage.{k}"), &Value::from(v.as_str()))
                        }))
                        .collect();
                    let logs: Vec<Value> = s
                        .logs
                        .iter()
                        .map(|l| {
                            let fields: Vec<Value> = std::iter::once(jaeger_tag(
                                "event",
                                &Value::from(l.event.as_str()),
                            ))
                            .chain(l.fields.iter().map(|(k, v)| jaeger_tag(k, v)))
                            .collect();
                            json!({ "timestamp": l.time_ns.max(0) / 1000, "fields": fields })
                        })
                        .collect();
                    json!({
                        "traceID": s.trace_id,
                        "spanID": s.span_id,
                        "operationName": s.name,
                        "references": references,
                        "startTime": start / 1000,
                        "duration": (end - start) / 1000,
                        "tags": tags,
                        "logs": logs,
                        "processID": process_id(s),
                        "warnings": null,
                    })
                })
                .collect();
            let processes: Map<String, Value> = processes
                .iter()
                .enumerate()
                .map(|(i, (p, _))| {
                    let tags: Vec<Value> = p
                        .process
                        .iter()
                        .map(|(k, v)| jaeger_tag(k, &Value::from(v.as_str())))
                        .collect();
                    (
                        format!("p{}", i + 1),
                        json!({ "serviceName": p.service, "tags": tags }),
                    )
                })
                .collect();
            json!({ "traceID": trace_id, "spans": spans, "processes": processes, "warnings": null })
        })
        .collect();
    json!({ "data": data })
}

fn chrome(spans: &[SpanDoc]) -> Value {
    let processes = by_process(spans);
    // Times relative to the first span: absolute nanoseconds since 1970
    // do not fit a double's 53 bits at microsecond resolution.
    let t0 = spans
        .iter()
        .map(|s| s.start_ns.max(0) as u64)
        .min()
        .unwrap_or(0);
    let micros = |ns: u64| ns.saturating_sub(t0) as f64 / 1000.0;
    let mut order: Vec<&SpanDoc> = spans.iter().collect();
    // Longest first among equal starts, so parents open before children.
    order.sort_by_key(|s| (s.start_ns, std::cmp::Reverse(s.duration_ns)));
    // Lanes of properly nested spans: a span goes to the first lane whose
    // innermost open span contains it (or that has none open).
    let mut lanes: Vec<Vec<u64>> = Vec::new();
    let mut events: Vec<Value> = Vec::new();
    for (i, (p, _)) in processes.iter().enumerate() {
        events.push(json!({ "name": "process_name", "ph": "M", "pid": i + 1, "args": { "name": p.service } }));
    }
    for s in order {
        let (start, end) = start_end(s);
        let pid = processes
            .iter()
            .position(|(p, _)| p.service == s.service && p.process == s.process)
            .map_or(1, |i| i + 1);
        let lane = lanes.iter_mut().position(|open| {
            while open.last().is_some_and(|&e| e <= start) {
                open.pop();
            }
            open.last().is_none_or(|&e| e >= end)
        });
        let lane = match lane {
            Some(l) => l,
            None => {
                lanes.push(Vec::new());
                lanes.len() - 1
            }
        };
        lanes[lane].push(end);
        let mut args: Map<String, Value> = s.tags.iter().cloned().collect();
        for (k, v) in &s.baggage {
            args.insert(format!("baggage.{k}"), v.clone().into());
        }
        args.insert("trace_id".into(), s.trace_id.clone().into());
        args.insert("span_id".into(), s.span_id.clone().into());
        if let Some(p) = &s.parent_span_id {
            args.insert("parent_span_id".into(), p.clone().into());
        }
        events.push(json!({
            "name": s.name, "cat": "span", "ph": "X",
            "ts": micros(start), "dur": (end - start) as f64 / 1000.0,
            "pid": pid, "tid": lane + 1, "args": args,
        }));
        for l in &s.logs {
            let args: Map<String, Value> = l.fields.iter().cloned().collect();
            events.push(json!({
                "name": l.event, "cat": "log", "ph": "i", "s": "t",
                "ts": micros(l.time_ns.max(0) as u64), "pid": pid, "tid": lane + 1, "args": args,
            }));
        }
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": { "unix_start_ns": t0.to_string() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LogDoc;

    /// A fixed trace: a server span, a child with a log and a follows-from
    /// reference, hostile strings.
    fn sample() -> Vec<SpanDoc> {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736".to_string();
        let root = SpanDoc {
            trace_id: trace.clone(),
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: None,
            name: "Client.FullStatus".into(),
            service: "apiserver".into(),
            start_ns: 1_700_000_000_000_000_000,
            duration_ns: 10_000_000,
            tags: vec![
                ("user".into(), "admin".into()),
                ("big".into(), Value::from(u64::MAX)),
                ("error".into(), true.into()),
            ],
            logs: vec![],
            baggage: vec![("tenant".into(), "t-1".into())],
            references: vec![],
            process: vec![("host".into(), "h1".into())],
        };
        let child = SpanDoc {
            span_id: "a1b2c3d4e5f60718".into(),
            parent_span_id: Some(root.span_id.clone()),
            name: "mongo.find \"machines\"\n\u{1b}[31m</script>".into(),
            start_ns: root.start_ns + 1_000_000,
            duration_ns: 4_000_000,
            tags: vec![("db.rows".into(), 3.into()), ("ratio".into(), 0.5.into())],
            logs: vec![LogDoc {
                time_ns: root.start_ns + 2_000_000,
                event: "cache.miss".into(),
                fields: vec![("key".into(), "machines".into())],
            }],
            baggage: vec![],
            references: vec![
                RefDoc {
                    kind: "child_of".into(),
                    trace_id: trace.clone(),
                    span_id: root.span_id.clone(),
                },
                RefDoc {
                    kind: "follows_from".into(),
                    trace_id: trace.clone(),
                    span_id: "1111111111111111".into(),
                },
            ],
            ..root.clone()
        };
        vec![root, child]
    }

    fn golden(format: ExportFormat, file: &str, text: &str) {
        let got = serde_json::to_string_pretty(&export(&sample(), format)).unwrap() + "\n";
        if std::env::var_os("SPANREC_BLESS").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(file);
            std::fs::write(path, &got).unwrap();
            return;
        }
        assert_eq!(got, text, "{file} changed (SPANREC_BLESS=1 rewrites it)");
    }

    #[test]
    fn jaeger_json_matches_its_golden_file() {
        golden(
            ExportFormat::JaegerJson,
            "sample.jaeger.json",
            include_str!("../tests/golden/sample.jaeger.json"),
        );
    }

    #[test]
    fn chrome_trace_matches_its_golden_file() {
        golden(
            ExportFormat::ChromeTrace,
            "sample.chrome.json",
            include_str!("../tests/golden/sample.chrome.json"),
        );
    }

    #[test]
    fn otlp_json_matches_its_golden_file() {
        golden(
            ExportFormat::OtlpJson,
            "sample.otlp.json",
            include_str!("../tests/golden/sample.otlp.json"),
        );
    }

    #[test]
    fn hostile_strings_survive_every_format_exactly() {
        let name = &sample()[1].name;
        let escaped = serde_json::to_string(name).unwrap();
        for f in [
            ExportFormat::OtlpJson,
            ExportFormat::JaegerJson,
            ExportFormat::ChromeTrace,
        ] {
            let text = serde_json::to_string(&export(&sample(), f)).unwrap();
            assert!(
                !text.contains('\n') && !text.contains('\u{1b}'),
                "{f:?}: raw control characters"
            );
            assert!(text.contains(&escaped), "{f:?}: the name, escaped");
            let back: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_string(), text, "{f:?}: parses back to the same");
        }
    }
}
