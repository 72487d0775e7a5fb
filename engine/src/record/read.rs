//! How a recorder reads a finished [`SpanRecord`]: ids, times, names, tags,
//! logs, baggage, references, truncations.

use super::ext::Ext;
use super::inherited::{Inherited, Items};
use super::packed::{Fields, RStr, References};
use super::value::{Reference, ReferenceKind, Truncations, ValueRef};
use super::*;
use std::fmt;

impl SpanRecord {
    /// The trace this span belongs to; never zero.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// This span's id; never zero.
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// The span this one is a `ChildOf`, else the first span it follows from.
    pub fn parent_span_id(&self) -> Option<u64> {
        self.references()
            .find(|r| r.kind == ReferenceKind::ChildOf)
            .or_else(|| self.references().next())
            .map(|r| r.span_id)
    }

    /// Every reference the span was started with, in the order given, then
    /// those added later.
    pub fn references(&self) -> impl ExactSizeIterator<Item = Reference> + '_ {
        let first = (self.flags & FIRST_REF != 0).then_some(Reference {
            kind: if self.flags & FIRST_REF_FOLLOWS != 0 {
                ReferenceKind::FollowsFrom
            } else {
                ReferenceKind::ChildOf
            },
            trace_id: self.trace_id,
            span_id: self.first_ref_span,
        });
        References {
            first,
            rest: self.ext_ref().map_or(&[][..], |e| &e.references).iter(),
        }
    }

    /// The operation name.
    pub fn operation_name(&self) -> &str {
        self.str(self.name())
    }

    /// Always true for records a recorder receives; unsampled spans are not
    /// recorded.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// Start time in nanoseconds since the Unix epoch (UTC).
    pub fn start_unix_nanos(&self) -> u64 {
        self.start
    }

    /// Finish time in nanoseconds since the Unix epoch (UTC).
    pub fn finish_unix_nanos(&self) -> u64 {
        self.finish
    }

    /// Finish minus start, in nanoseconds (0 if a caller-given finish time
    /// precedes the start).
    pub fn duration_nanos(&self) -> u64 {
        self.finish.saturating_sub(self.start)
    }

    /// Tags in the order first set; setting a key again replaces its value.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = (&str, ValueRef<'_>)> + '_ {
        Fields {
            first: self.inline_tags().iter(),
            rest: self.ext_ref().map_or(&[][..], |e| &e.tags).iter(),
        }
    }

    /// The value of tag `key`, if set.
    pub fn tag(&self, key: &str) -> Option<ValueRef<'_>> {
        self.tags().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Log entries in the order logged.
    pub fn logs(&self) -> impl ExactSizeIterator<Item = LogRef<'_>> + '_ {
        let ext = self.ext_ref();
        ext.map_or(&[][..], |e| &e.logs)
            .iter()
            .map(move |entry| LogRef {
                ext: ext.expect("logs exist only in an extension"),
                entry,
            })
    }

    /// Baggage items (inherited and own) in the order set.
    pub fn baggage(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        let ext = self.ext_ref();
        Baggage {
            block: ext
                .filter(|e| e.baggage_from_block)
                .and_then(|e| e.inherited.as_deref())
                .map(Inherited::items),
            own: ext.map_or(&[][..], |e| &e.baggage).iter(),
            record: self,
        }
    }

    /// What the span limits cut off this span.
    pub fn truncations(&self) -> Truncations {
        self.ext_ref().map(|e| e.truncations).unwrap_or_default()
    }
}

impl fmt::Debug for SpanRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanRecord")
            .field("trace_id", &format_args!("{:032x}", self.trace_id))
            .field("span_id", &format_args!("{:016x}", self.span_id))
            .field("name", &self.operation_name())
            .field("references", &self.references().collect::<Vec<_>>())
            .field("start_unix_nanos", &self.start_unix_nanos())
            .field("duration_nanos", &self.duration_nanos())
            .field("tags", &self.tags().collect::<Vec<_>>())
            .field("logs", &self.logs().collect::<Vec<_>>())
            .field("baggage", &self.baggage().collect::<Vec<_>>())
            .finish()
    }
}

/// One log entry of a [`SpanRecord`].
#[derive(Clone, Copy)]
pub struct LogRef<'a> {
    ext: &'a Ext,
    entry: &'a LogEntry,
}

impl<'a> LogRef<'a> {
    /// When the event happened, in nanoseconds since the Unix epoch (UTC).
    pub fn unix_nanos(&self) -> u64 {
        match self.entry.time {
            Time::UnixNanos(n) => n,
            Time::Ticks(t) => self.ext.shared.clock.ticks_to_unix_nanos(t),
        }
    }

    /// The event name.
    pub fn event(&self) -> &'a str {
        // SAFETY: the entry belongs to a record borrowed for 'a.
        unsafe { self.entry.event.get() }
    }

    /// The event's fields, in the order given.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&'a str, ValueRef<'a>)> + 'a {
        let (first, last) = self.entry.fields;
        Fields {
            first: [].iter(),
            rest: self.ext.log_fields[first as usize..last as usize].iter(),
        }
    }
}

impl fmt::Debug for LogRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogRef")
            .field("unix_nanos", &self.unix_nanos())
            .field("event", &self.event())
            .field("fields", &self.fields().collect::<Vec<_>>())
            .finish()
    }
}

/// A record's baggage: its shared block's items, or its own list.
struct Baggage<'a> {
    block: Option<Items<'a>>,
    own: std::slice::Iter<'a, (RStr, RStr)>,
    record: &'a SpanRecord,
}

impl<'a> Iterator for Baggage<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.block {
            Some(items) => items.next(),
            None => {
                let &(k, v) = self.own.next()?;
                Some((self.record.str(k), self.record.str(v)))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self
            .block
            .as_ref()
            .map_or(self.own.len(), ExactSizeIterator::len);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Baggage<'_> {}
