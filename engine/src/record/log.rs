//! How a span writes log entries into its extension: all at once
//! (`Span::log`), or field by field as a visitor reads them (the `tracing`
//! bridge, which then needs no list of its own: no allocation per event).
//! Fields go to `log_fields` as they come, the entry (time, event name,
//! its range of fields) to `logs` last.

use super::ext::{push_noted, LogEntry, Time};
use super::packed::{Field, RStr, MAX_KEY_BYTES};
use super::{ext_of, SpanRecord, Value};
use std::borrow::Cow;

/// A log entry being written: its fields are added one by one
/// ([`SpanRecord::log_field`]), the entry last ([`SpanRecord::log_end`]).
///
/// Invariant: made by `log_begin` of the record it is used with, which
/// then has an extension whose `log_fields` are at least `first` long.
pub(crate) struct LogDraft {
    time: Time,
    /// The index in `log_fields` of the entry's first field.
    first: u32,
    /// Fields offered so far (those past `max_log_fields` are counted, not
    /// kept).
    offered: usize,
    /// The event name, when copied before the end (`log_event_copied`).
    event: Option<RStr>,
}

impl SpanRecord {
    /// Appends a log entry (dropped and counted beyond the limits).
    /// `time` is now when `None`.
    pub(crate) fn log<'a, K, V>(
        &mut self,
        time: Option<Time>,
        event: Cow<'static, str>,
        fields: impl IntoIterator<Item = (K, V)>,
    ) where
        K: Into<Cow<'static, str>>,
        V: Into<Value<'a>>,
    {
        let Some(mut draft) = self.log_begin(time) else {
            return;
        };
        for (key, value) in fields {
            self.log_field(&mut draft, key.into(), value.into());
        }
        self.log_end(draft, event);
    }

    /// Starts a log entry: `None` (and the entry counted as cut) when the
    /// span holds `max_logs` already, or no extension could be had.
    pub(crate) fn log_begin(&mut self, time: Option<Time>) -> Option<LogDraft> {
        let ext = ext_of(&mut self.ext, self.tracer_id)?.cold();
        if ext.logs.len() >= ext.limits().max_logs {
            ext.truncations.logs += 1;
            return None;
        }
        let time = time.unwrap_or_else(|| Time::Ticks(ext.shared.clock.now()));
        Some(LogDraft {
            time,
            first: ext.log_fields.len() as u32,
            offered: 0,
            event: None,
        })
    }

    /// Adds a field to the entry being written (counted, not kept, past
    /// `max_log_fields`; values cut to `max_value_bytes`).
    pub(crate) fn log_field(
        &mut self,
        draft: &mut LogDraft,
        key: Cow<'static, str>,
        value: Value<'_>,
    ) {
        let Some(ext) = self.ext.as_deref_mut() else {
            return;
        };
        let limits = *ext.limits();
        draft.offered += 1;
        if draft.offered > limits.max_log_fields {
            ext.truncations.log_fields += 1;
            return;
        }
        let max_value = limits.max_value_bytes.min(u32::MAX as usize);
        let key = ext.store_str(key, MAX_KEY_BYTES);
        let field = Field::new(key, ext.store_value(value, max_value));
        push_noted(&mut ext.log_fields, field, &mut ext.flusher_work);
    }

    /// Names the entry being written with a copy of `event` (in place of
    /// the name `log_end` is given).
    #[cfg(feature = "tracing")]
    pub(crate) fn log_event_copied(&mut self, draft: &mut LogDraft, event: &str) {
        if let Some(ext) = self.ext.as_deref_mut() {
            draft.event = Some(ext.copy_str(event));
        }
    }

    /// Adds the entry, named `event` unless `log_event_copied` named it.
    pub(crate) fn log_end(&mut self, draft: LogDraft, event: Cow<'static, str>) {
        let Some(ext) = self.ext.as_deref_mut() else {
            return;
        };
        let event = match draft.event {
            Some(copied) => copied,
            None => ext.store_str(event, usize::MAX),
        };
        let entry = LogEntry {
            time: draft.time,
            event,
            fields: (draft.first, ext.log_fields.len() as u32),
        };
        push_noted(&mut ext.logs, entry, &mut ext.flusher_work);
    }
}
