//! Text rendering: the trace tree with its waterfall, span lines, stats.

use crate::model::{human_duration, show, SpanDoc};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Width of the waterfall bar, in characters.
const BAR: usize = 40;

/// A stored string made safe for a terminal: stored values are remote
/// input, so control characters (ESC sequences, CR/LF that would forge
/// lines, C1 controls) and invisible bidi overrides are shown escaped
/// (`\u{1b}`), never written raw.
pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// An argument quoted back in an error message: its first 64 characters
/// (escaped as `{:?}` does), and its length when cut, so that a hostile
/// megabyte argument does not come back as a megabyte of message.
pub fn echo(s: &str) -> String {
    const SHOWN: usize = 64;
    match s.char_indices().nth(SHOWN) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

fn pairs(items: &[(String, serde_json::Value)]) -> String {
    items
        .iter()
        .map(|(k, v)| format!("{}={}", clean(k), clean(&show(v))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The waterfall bar of a span within [t0, t0 + total].
fn bar(start: i64, duration: i64, t0: i64, total: i64) -> String {
    let total = total.max(1) as f64;
    let from = ((start.saturating_sub(t0).max(0) as f64 / total) * BAR as f64).floor() as usize;
    let from = from.min(BAR - 1);
    let len = ((duration.max(0) as f64 / total) * BAR as f64).round() as usize;
    let len = len.clamp(1, BAR - from);
    format!(
        "{}{}{}",
        " ".repeat(from),
        "█".repeat(len),
        " ".repeat(BAR - from - len)
    )
}

/// Levels of nesting drawn as indentation; deeper spans are drawn at this
/// depth, marked `[+n]` with how much deeper they are (a trace nested
/// 100,000 deep would otherwise print lines of 300,000 characters each).
const MAX_DRAWN_DEPTH: usize = 32;

/// The tree's rows, depth first: (span, prefix of its name line, prefix of
/// its detail lines). Iterative (a trace may nest deeper than the stack
/// allows) and each span once: spans no root reaches — a cycle of parent
/// ids in a damaged log — are drawn as roots after the rest.
fn tree_rows(
    n: usize,
    children: &HashMap<Option<usize>, Vec<usize>>,
) -> Vec<(usize, String, String)> {
    let mut rows = Vec::with_capacity(n);
    let mut drawn = vec![false; n];
    // (span, name prefix, detail prefix, depth), pushed in reverse so that
    // they pop in order.
    let mut stack: Vec<(usize, String, String, usize)> = Vec::new();
    let roots = children.get(&None).map_or(&[][..], Vec::as_slice);
    stack.extend(
        roots
            .iter()
            .rev()
            .map(|&i| (i, String::new(), String::new(), 0)),
    );
    let mut next_unreached = 0;
    loop {
        let Some((i, name_prefix, detail_prefix, depth)) = stack.pop() else {
            // Whatever is left is unreachable from a root: start there.
            match (next_unreached..n).find(|&i| !drawn[i]) {
                Some(i) => {
                    next_unreached = i + 1;
                    stack.push((i, String::new(), String::new(), 0));
                    continue;
                }
                None => break,
            }
        };
        if std::mem::replace(&mut drawn[i], true) {
            continue;
        }
        if let Some(list) = children.get(&Some(i)) {
            let depth = depth + 1;
            for (k, &c) in list.iter().enumerate().rev() {
                let (name, detail) = if depth > MAX_DRAWN_DEPTH {
                    let mark = format!("[+{}] ", depth - MAX_DRAWN_DEPTH);
                    (format!("{detail_prefix}{mark}"), detail_prefix.clone())
                } else if k + 1 == list.len() {
                    (format!("{detail_prefix}└─ "), format!("{detail_prefix}   "))
                } else {
                    (format!("{detail_prefix}├─ "), format!("{detail_prefix}│  "))
                };
                stack.push((c, name, detail, depth));
            }
        }
        rows.push((i, name_prefix, detail_prefix));
    }
    rows
}

/// Renders one trace as a tree (children under parents, by start time),
/// each span with a time-proportional bar and its tags, logs and baggage.
/// Spans whose parent is not in the trace are shown as roots.
pub fn trace_tree(spans: &[SpanDoc]) -> String {
    let mut out = String::new();
    let Some(t0) = spans.iter().map(|s| s.start_ns).min() else {
        return out;
    };
    // Saturating: a damaged document's times must not overflow.
    let end = spans
        .iter()
        .map(|s| s.start_ns.saturating_add(s.duration_ns))
        .max()
        .unwrap_or(t0);
    let total = end.saturating_sub(t0);
    let ids: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let mut children: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        let parent = s
            .parent_span_id
            .as_deref()
            .and_then(|p| ids.get(p).copied());
        children.entry(parent).or_default().push(i);
    }
    for list in children.values_mut() {
        list.sort_by_key(|&i| (spans[i].start_ns, spans[i].span_id.clone()));
    }
    let services: Vec<&str> = {
        let mut v: Vec<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let _ = writeln!(
        out,
        "trace {}  {} span{}  {}  service {}",
        clean(&spans[0].trace_id),
        spans.len(),
        if spans.len() == 1 { "" } else { "s" },
        human_duration(total),
        clean(&services.join(", "))
    );
    let rows = tree_rows(spans.len(), &children);
    let width = rows
        .iter()
        .map(|(i, p, _)| p.chars().count() + clean(&spans[*i].name).chars().count())
        .max()
        .unwrap_or(0);
    for (i, prefix, detail) in &rows {
        let s = &spans[*i];
        let label = format!("{prefix}{}", clean(&s.name));
        let pad = width - label.chars().count();
        let _ = writeln!(
            out,
            "{label}{}  {:>9} |{}|{}",
            " ".repeat(pad),
            human_duration(s.duration_ns),
            bar(s.start_ns, s.duration_ns, t0, total),
            if s.is_error() { " ERROR" } else { "" }
        );
        if !s.tags.is_empty() {
            let _ = writeln!(out, "{detail}    tags: {}", pairs(&s.tags));
        }
        for log in &s.logs {
            let _ = writeln!(
                out,
                "{detail}    log +{} {}{}{}",
                human_duration(log.time_ns.saturating_sub(s.start_ns)),
                clean(&log.event),
                if log.fields.is_empty() { "" } else { " " },
                pairs(&log.fields)
            );
        }
        if !s.baggage.is_empty() {
            let b: Vec<String> = s
                .baggage
                .iter()
                .map(|(k, v)| format!("{}={}", clean(k), clean(v)))
                .collect();
            let _ = writeln!(out, "{detail}    baggage: {}", b.join(" "));
        }
    }
    out
}

/// One line per span (for `find` and `tail`).
pub fn span_line(s: &SpanDoc) -> String {
    format!(
        "{}  {}  {}  {:<24} {:>9}{}{}",
        crate::time::format_unix_nanos(s.start_ns),
        clean(&s.trace_id),
        clean(&s.span_id),
        clean(&s.name),
        human_duration(s.duration_ns),
        if s.is_error() { "  ERROR" } else { "" },
        if s.tags.is_empty() {
            String::new()
        } else {
            format!("  {}", pairs(&s.tags))
        }
    )
}

/// Per-operation statistics over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationStats {
    pub name: String,
    pub count: usize,
    pub errors: usize,
    pub p50_ns: i64,
    pub p99_ns: i64,
    pub max_ns: i64,
}

/// Counts and latency percentiles (nearest rank) per operation, busiest
/// first. Takes the spans one at a time (a cursor's worth need not fit in
/// memory: only each span's duration is kept).
pub fn operation_stats(spans: impl IntoIterator<Item = SpanDoc>) -> Vec<OperationStats> {
    let mut by_name: HashMap<String, (Vec<i64>, usize)> = HashMap::new();
    for s in spans {
        let error = s.is_error();
        let e = by_name.entry(s.name).or_default();
        e.0.push(s.duration_ns);
        e.1 += usize::from(error);
    }
    let rank = |sorted: &[i64], q: f64| {
        let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i]
    };
    let mut out: Vec<OperationStats> = by_name
        .into_iter()
        .map(|(name, (mut d, errors))| {
            d.sort_unstable();
            OperationStats {
                name,
                count: d.len(),
                errors,
                p50_ns: rank(&d, 0.50),
                p99_ns: rank(&d, 0.99),
                max_ns: d.last().copied().unwrap_or_default(),
            }
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    out
}

/// The stats as a table.
pub fn stats_table(stats: &[OperationStats]) -> String {
    let mut out = format!(
        "{:<32} {:>8} {:>7} {:>10} {:>10} {:>10}\n",
        "operation", "count", "errors", "p50", "p99", "max"
    );
    for s in stats {
        let _ = writeln!(
            out,
            "{:<32} {:>8} {:>7} {:>10} {:>10} {:>10}",
            clean(&s.name),
            s.count,
            s.errors,
            human_duration(s.p50_ns),
            human_duration(s.p99_ns),
            human_duration(s.max_ns)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, name: &str, start: i64, dur: i64) -> SpanDoc {
        SpanDoc {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            name: name.into(),
            service: "svc".into(),
            start_ns: start,
            duration_ns: dur,
            tags: vec![],
            logs: vec![],
            baggage: vec![],
            references: vec![],
            process: vec![],
        }
    }

    #[test]
    fn stored_control_characters_never_reach_the_terminal() {
        let mut evil = span("a", None, "GET \u{1b}[2J\rroot\n", 0, 10);
        evil.tags
            .push(("k\u{1b}".into(), serde_json::json!("v\u{9b}31m\u{202e}x")));
        evil.baggage.push(("b".into(), "\u{7}bell".into()));
        for text in [trace_tree(&[evil.clone()]), span_line(&evil)] {
            assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
                "{text:?}"
            );
            assert!(text.contains("\\u{1b}"), "{text:?}");
        }
        // The tree's own line breaks only: the stored newline is escaped.
        assert_eq!(span_line(&evil).lines().count(), 1);
        assert_eq!(clean("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn bars_are_proportional() {
        assert_eq!(bar(0, 100, 0, 100), "█".repeat(40));
        assert_eq!(
            bar(50, 50, 0, 100),
            format!("{}{}", " ".repeat(20), "█".repeat(20))
        );
        // Never empty, never past the end.
        assert_eq!(bar(100, 0, 0, 100).chars().filter(|&c| c == '█').count(), 1);
    }

    #[test]
    fn every_span_is_drawn_once_even_in_a_cycle() {
        // A damaged log: two spans each other's parent, one its own.
        let spans = vec![
            span("r", None, "root", 0, 100),
            span("a", Some("b"), "loop.a", 10, 10),
            span("b", Some("a"), "loop.b", 20, 10),
            span("c", Some("c"), "self", 30, 10),
        ];
        let text = trace_tree(&spans);
        for name in ["root", "loop.a", "loop.b", "self"] {
            let n = text.lines().filter(|l| l.contains(name)).count();
            assert_eq!(n, 1, "{name}: {text}");
        }
    }

    #[test]
    fn a_trace_deeper_than_the_stack_is_drawn_with_bounded_indentation() {
        let depth = 100_000;
        let spans: Vec<SpanDoc> = (0..depth)
            .map(|i| {
                let parent = (i > 0).then(|| (i - 1).to_string());
                span(&i.to_string(), parent.as_deref(), "op", i as i64, 1)
            })
            .collect();
        // A thread's default 2 MiB stack: recursing per level overflowed it.
        let text = std::thread::spawn(move || trace_tree(&spans))
            .join()
            .expect("no stack overflow");
        assert_eq!(text.lines().count(), depth + 1);
        let widest = text.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(widest < 250, "{widest}");
        assert!(text.contains(&format!("[+{}] op", depth - 1 - MAX_DRAWN_DEPTH)));
    }

    #[test]
    fn damaged_times_do_not_overflow() {
        let spans = vec![
            span("a", None, "early", i64::MIN, i64::MAX),
            span("b", Some("a"), "late", i64::MAX, i64::MAX),
        ];
        let text = trace_tree(&spans);
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn tree_nests_children_in_start_order() {
        let spans = vec![
            span("b", Some("a"), "second", 50, 10),
            span("a", None, "root", 0, 100),
            span("c", Some("a"), "first", 10, 10),
        ];
        let text = trace_tree(&spans);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("trace t  3 spans  100ns"), "{text}");
        assert!(lines[1].starts_with("root"), "{text}");
        assert!(lines[2].starts_with("├─ first"), "{text}");
        assert!(lines[3].starts_with("└─ second"), "{text}");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let spans: Vec<SpanDoc> = (1..=100)
            .map(|i| span(&i.to_string(), None, "op", 0, i))
            .collect();
        let s = &operation_stats(spans)[0];
        assert_eq!((s.count, s.p50_ns, s.p99_ns, s.max_ns), (100, 50, 99, 100));
    }
}
