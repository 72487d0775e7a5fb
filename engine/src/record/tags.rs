//! How a span sets its tags: inline when the key is a literal and the value
//! needs no copy (the hot path), else in the extension, through a lean path
//! for a new literal key (`add_tag_borrowed`) or the general one
//! (replacements, owned keys and strings, limits).

use super::ext::push_noted;
use super::packed::{Field, RStr, Stored, MAX_KEY_BYTES};
use super::{ext_of, SpanRecord, Value};
use std::borrow::Cow;

impl SpanRecord {
    /// Drops the tags set before the sampling decision said "unsampled".
    pub(crate) fn clear_tags(&mut self) {
        self.tag_count = 0;
        if let Some(ext) = self.ext.as_deref_mut() {
            ext.tags.clear();
        }
    }

    /// Sets a tag, replacing the value of an earlier tag with the same key.
    #[inline(always)]
    pub(crate) fn set_tag(&mut self, key: Cow<'static, str>, value: Value<'_>) {
        // The fast path: a literal key and a value that needs no copy, with
        // room inline (so the extension holds no tags: see `Ext::tags`).
        if let Cow::Borrowed(k) = key {
            let n = usize::from(self.tag_count);
            if n < self.inline_tag_limit() && k.len() <= MAX_KEY_BYTES {
                let stored = match value {
                    Value::I64(v) => Some(Stored::I64(v)),
                    Value::U64(v) => Some(Stored::U64(v)),
                    Value::F64(v) => Some(Stored::F64(v)),
                    Value::Bool(v) => Some(Stored::Bool(v)),
                    Value::StaticStr(s) if s.len() <= usize::from(self.max_value_bytes) => {
                        Some(Stored::Str(RStr::from_static(s)))
                    }
                    _ => None,
                };
                if let Some(stored) = stored {
                    if !self.inline_tags().iter().any(|f| f.key_is(k)) {
                        self.tags[n].write(Field::new(RStr::from_static(k), stored));
                        self.tag_count += 1;
                        return;
                    }
                }
            }
        }
        self.set_tag_slow(key, value);
    }

    #[cold]
    #[inline(never)]
    fn set_tag_slow(&mut self, key: Cow<'static, str>, value: Value<'_>) {
        if let Cow::Borrowed(k) = key {
            if self.add_tag_borrowed(k, &value) {
                return;
            }
        }
        self.set_tag_general(key, value);
    }

    /// Adds a tag with a literal key that the span does not hold yet and a
    /// value that needs no `String` moved (a number, a literal, a string
    /// within the limit, copied): the extension's common case (a third
    /// tag, a borrowed string) without the general path's bookkeeping.
    /// `false` when it is not that case (nothing changed then, except that
    /// the span may have taken its extension).
    #[inline(never)]
    fn add_tag_borrowed(&mut self, k: &'static str, value: &Value<'_>) -> bool {
        let n = usize::from(self.tag_count);
        let inline_room = n < self.inline_tag_limit();
        if k.len() > MAX_KEY_BYTES || self.inline_tags().iter().any(|f| f.key_is(k)) {
            return false;
        }
        let Some(ext) = ext_of(&mut self.ext, self.tracer_id) else {
            return false;
        };
        let limits = ext.limits();
        let max_value = limits.max_value_bytes.min(u32::MAX as usize);
        // With room inline the extension holds no tags (`Ext::tags`).
        if !inline_room
            && (n + ext.tags.len() >= limits.max_tags || ext.tags.iter().any(|f| f.key_is(k)))
        {
            return false;
        }
        let stored = match *value {
            Value::I64(v) => Stored::I64(v),
            Value::U64(v) => Stored::U64(v),
            Value::F64(v) => Stored::F64(v),
            Value::Bool(v) => Stored::Bool(v),
            Value::StaticStr(s) if s.len() <= max_value => Stored::Str(RStr::from_static(s)),
            Value::Str(s) if s.len() <= max_value => Stored::Str(ext.copy_str(s)),
            _ => return false,
        };
        let field = Field::new(RStr::from_static(k), stored);
        if inline_room {
            self.tags[n].write(field);
            self.tag_count += 1;
        } else {
            push_noted(&mut ext.tags, field, &mut ext.flusher_work);
        }
        true
    }

    #[inline(never)]
    fn set_tag_general(&mut self, key: Cow<'static, str>, value: Value<'_>) {
        let n = usize::from(self.tag_count);
        let inline_limit = self.inline_tag_limit();
        let existing = self.inline_tags().iter().position(|f| f.key_is(&key));
        let Some(ext) = ext_of(&mut self.ext, self.tracer_id) else {
            return;
        };
        let limits = ext.limits();
        let (max_tags, max_value_bytes) = (limits.max_tags, limits.max_value_bytes);
        let max_value = max_value_bytes.min(u32::MAX as usize);
        // A key is held once, inline or in the extension.
        let existing_ext = match existing {
            Some(_) => None,
            None => ext.tags.iter().position(|f| f.key_is(&key)),
        };
        if existing.is_none() && existing_ext.is_none() {
            if n >= inline_limit && n + ext.tags.len() >= max_tags {
                ext.truncations.tags += 1;
                return;
            }
        } else {
            let copied = match &key {
                Cow::Owned(k) => k.len(),
                Cow::Borrowed(_) => 0,
            } + match &value {
                Value::Str(s) => s.len(),
                Value::String(s) => s.len(),
                _ => 0,
            };
            if !ext.admit_replacement(copied, max_tags.saturating_mul(max_value_bytes)) {
                return;
            }
        }
        let key = ext.store_str(key, MAX_KEY_BYTES);
        let value = ext.store_value(value, max_value);
        let field = Field::new(key, value);
        match (existing, existing_ext) {
            (Some(i), _) => {
                self.tags[i].write(field);
            }
            (None, Some(i)) => ext.tags[i] = field,
            (None, None) if n < inline_limit => {
                self.tags[n].write(field);
                self.tag_count += 1;
            }
            (None, None) => push_noted(&mut ext.tags, field, &mut ext.flusher_work),
        }
    }
}
