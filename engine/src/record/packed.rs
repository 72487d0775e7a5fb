//! How a record stores strings and fields compactly, and the unsafe code
//! that reads them back: `RStr` (a pointer and a length under the record's
//! ownership invariant) and `Field` (a tag or log field in 24 bytes).

use super::value::{Reference, ValueRef};
use std::ptr::NonNull;

/// A string a record holds: a literal, or bytes owned by the record's `Ext`.
///
/// Invariant: `ptr..ptr+len` is valid UTF-8 that is either `'static` or
/// owned by the `Ext` of the one record holding this `RStr`: in its arena,
/// one of its `owned` strings, or the shared `Inherited` block its
/// `inherited` field holds a reference to (immutable, and never released
/// before the `Ext` is reset). That `Ext` is reset or freed only after
/// it has been detached from the record by [`SpanRecord::into_ext`], which
/// consumes the record, so the bytes outlive every read through the record;
/// a record that is leaked leaks its `Ext` and its reference to the block,
/// so the bytes stay. An `RStr` is never copied into another record (copy
/// the bytes, or point into a block that record holds too).
#[derive(Clone, Copy)]
pub(crate) struct RStr {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
}

impl RStr {
    pub(crate) const EMPTY: RStr = RStr::from_static("");

    #[inline]
    pub(crate) const fn from_static(s: &'static str) -> RStr {
        match NonNull::new(s.as_ptr().cast_mut()) {
            Some(ptr) => RStr { ptr, len: s.len() },
            None => RStr {
                ptr: NonNull::dangling(),
                len: 0,
            },
        }
    }

    pub(super) fn from_str(s: &str) -> RStr {
        RStr {
            ptr: NonNull::from(s).cast(),
            len: s.len(),
        }
    }

    /// The string.
    ///
    /// # Safety
    /// The bytes must stay alive for `'a`: `self` must be held by a record
    /// (or its `Ext`) that is borrowed for `'a` (the `RStr` invariant).
    #[inline]
    pub(super) unsafe fn get<'a>(self) -> &'a str {
        // SAFETY: valid UTF-8 by the `RStr` invariant, alive for 'a by the
        // caller's obligation.
        unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.ptr.as_ptr(), self.len))
        }
    }
}

/// The largest `n <= max` that is a char boundary of `s`.
#[inline]
pub(crate) fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut n = max;
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// A value as stored, before packing.
#[derive(Clone, Copy)]
pub(super) enum Stored {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Str(RStr),
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    I64,
    U64,
    F64,
    Bool,
    Str,
}

/// A field's value; `Field::kind` says which member is live.
#[derive(Clone, Copy)]
pub(super) union Bits {
    i: i64,
    u: u64,
    f: f64,
    b: bool,
    s: NonNull<u8>,
}

/// Keys longer than this are cut (and counted under `Truncations::values`).
pub(super) const MAX_KEY_BYTES: usize = u16::MAX as usize;
/// Names longer than this are cut (and counted under `Truncations::values`).
pub(super) const MAX_NAME_BYTES: usize = u32::MAX as usize;

/// A tag or log field in 24 bytes.
///
/// Invariant: the key (`key`, `key_len`) and, for `Kind::Str`, the value
/// (`value.s`, `value_len`) are strings under the `RStr` invariant of the
/// record that holds this field.
#[derive(Clone, Copy)]
pub(crate) struct Field {
    pub(super) key: NonNull<u8>,
    pub(super) value: Bits,
    pub(super) value_len: u32,
    pub(super) key_len: u16,
    pub(super) kind: Kind,
}

impl Field {
    /// Packs a key (at most `MAX_KEY_BYTES`) and a value (strings at most
    /// `u32::MAX` bytes: callers cut them to `max_value_bytes`, capped
    /// there).
    #[inline]
    pub(super) fn new(key: RStr, value: Stored) -> Field {
        debug_assert!(key.len <= MAX_KEY_BYTES);
        let (value, value_len, kind) = match value {
            Stored::I64(i) => (Bits { i }, 0, Kind::I64),
            Stored::U64(u) => (Bits { u }, 0, Kind::U64),
            Stored::F64(f) => (Bits { f }, 0, Kind::F64),
            Stored::Bool(b) => (Bits { b }, 0, Kind::Bool),
            Stored::Str(s) => (Bits { s: s.ptr }, s.len as u32, Kind::Str),
        };
        Field {
            key: key.ptr,
            value,
            value_len,
            key_len: key.len as u16,
            kind,
        }
    }

    #[inline]
    pub(super) fn key(&self) -> RStr {
        RStr {
            ptr: self.key,
            len: usize::from(self.key_len),
        }
    }

    #[inline]
    pub(super) fn key_is(&self, key: &str) -> bool {
        // A literal set twice is the same pointer: skip the byte compare.
        usize::from(self.key_len) == key.len()
            && (self.key.as_ptr().cast_const() == key.as_ptr()
                // SAFETY: the field is held by a record borrowed for this
                // call (the `Field` invariant).
                || same_bytes(unsafe { self.key().get() }.as_bytes(), key.as_bytes()))
    }

    /// The key and value.
    ///
    /// # Safety
    /// As for [`RStr::get`]: the field is held by a record borrowed for `'a`.
    #[inline]
    pub(super) unsafe fn get<'a>(&self) -> (&'a str, ValueRef<'a>) {
        // SAFETY: each union read matches `kind`, which `new` wrote with the
        // member; the strings live for 'a by the caller's obligation.
        unsafe {
            let value = match self.kind {
                Kind::I64 => ValueRef::I64(self.value.i),
                Kind::U64 => ValueRef::U64(self.value.u),
                Kind::F64 => ValueRef::F64(self.value.f),
                Kind::Bool => ValueRef::Bool(self.value.b),
                Kind::Str => ValueRef::Str(
                    RStr {
                        ptr: self.value.s,
                        len: self.value_len as usize,
                    }
                    .get(),
                ),
            };
            (self.key().get(), value)
        }
    }
}

/// `a == b` for slices of equal length. Keys share prefixes (`http.`), so
/// the last eight bytes tell most apart without a call to `memcmp`.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let tail = |x: &[u8]| {
        x.len()
            .checked_sub(8)
            .and_then(|at| x.get(at..))
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
    };
    match (tail(a), tail(b)) {
        (Some(x), Some(y)) if x != y => false,
        _ => a == b,
    }
}

/// Iterates a record's fields: the inline ones, then the extension's.
pub(crate) struct Fields<'a> {
    pub(super) first: std::slice::Iter<'a, Field>,
    pub(super) rest: std::slice::Iter<'a, Field>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, ValueRef<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let f = self.first.next().or_else(|| self.rest.next())?;
        // SAFETY: the slices are borrowed from a record for 'a.
        Some(unsafe { f.get() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.first.len() + self.rest.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Fields<'_> {}

/// Iterates a record's references: the inline first one, then the rest.
pub(crate) struct References<'a> {
    pub(super) first: Option<Reference>,
    pub(super) rest: std::slice::Iter<'a, Reference>,
}

impl Iterator for References<'_> {
    type Item = Reference;

    #[inline]
    fn next(&mut self) -> Option<Reference> {
        self.first.take().or_else(|| self.rest.next().copied())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.first.is_some()) + self.rest.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for References<'_> {}
